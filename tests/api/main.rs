//! Black-box tests: each starts the real server on a random port against a fresh database
//! (SQLite always; PostgreSQL too when `ALIAS_TEST_POSTGRES_URL` is set) and calls it over HTTP.

mod fake_providers;
mod helpers;
mod id_provider;
mod tcp_proxy;

mod audit_log;
mod auth;
mod bindings;
mod body_limit;
mod chat;
mod chat_follow;
mod keys;
mod preferences;
mod rpc_batch_stream;
mod rpc_legacy;
mod rpc_protocol;
mod system;
mod timestamps;
