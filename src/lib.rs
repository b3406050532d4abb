//! alias-server: the backend of the ALIAS assistant app, served over tRPC's wire protocol.

pub mod app;
pub mod audit;
pub mod auth;
pub mod bindings;
pub mod cache;
pub mod chat;
pub mod config;
pub mod context;
pub mod crypto;
pub mod db;
pub mod guard;
pub mod health;
pub mod keys;
pub mod master_key;
pub mod preferences;
pub mod providers;
pub mod rate_limit;
pub mod reason;
pub mod rpc;
pub mod secret_file;
pub mod security;
pub mod startup;
pub mod streams;
pub mod system;
pub mod telemetry;
pub mod users;
