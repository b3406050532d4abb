//! Black-box tests: each starts the real server on a random port against a fresh database
//! (SQLite always; PostgreSQL too when `ALIAS_TEST_POSTGRES_URL` is set) and calls it over HTTP.

mod fake_google;
mod fake_providers;
mod helpers;
mod id_provider;
mod log_capture;
mod smtp_server;
mod tcp_proxy;

mod account_lock;
mod account_security;
mod accounts;
mod audit_log;
mod auth;
mod bindings;
mod body_limit;
mod chat;
mod chat_branches;
mod chat_export;
mod chat_failures;
mod chat_files;
mod chat_follow;
mod chat_search;
mod db_faults;
mod email;
mod files;
mod files_images;
mod files_s3;
mod gmail;
mod gmail_connect;
mod gmail_sync;
mod id_token_outage;
mod input_hygiene;
mod instances;
mod key_faults;
mod keys;
mod preferences;
mod private_files;
mod rpc_batch_stream;
mod rpc_legacy;
mod rpc_protocol;
mod slow_clients;
mod system;
mod timestamps;
mod usage;
mod voice;
