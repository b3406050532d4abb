//! Schema migrations, applied in order at start-up (`alias-server migrate` runs them alone).

pub use sea_orm_migration::prelude::*;

mod m20261122_000001_auth;
mod m20261122_000002_keys_and_preferences;
mod m20261122_000003_chat;
mod m20261122_000004_chat_search;
mod m20261202_01_message_errors;
mod m20261202_02_search_per_user;
mod m20261202_03_email_verification;
mod m20261202_03_password_attempts;
mod m20261202_04_files;
mod m20261202_05_gmail;
mod m20261202_06_message_files;
mod m20261202_07_voice;
mod m20261202_08_usage;
mod m20261202_11_email_token_binding;
mod m20261202_12_message_tree;
mod m20261202_13_projects_and_shares;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261122_000001_auth::Migration),
            Box::new(m20261122_000002_keys_and_preferences::Migration),
            Box::new(m20261122_000003_chat::Migration),
            Box::new(m20261122_000004_chat_search::Migration),
            Box::new(m20261202_01_message_errors::Migration),
            Box::new(m20261202_02_search_per_user::Migration),
            Box::new(m20261202_04_files::Migration),
            Box::new(m20261202_03_password_attempts::Migration),
            Box::new(m20261202_03_email_verification::Migration),
            Box::new(m20261202_06_message_files::Migration),
            Box::new(m20261202_05_gmail::Migration),
            Box::new(m20261202_08_usage::Migration),
            Box::new(m20261202_11_email_token_binding::Migration),
            Box::new(m20261202_07_voice::Migration),
            Box::new(m20261202_12_message_tree::Migration),
            Box::new(m20261202_13_projects_and_shares::Migration),
        ]
    }
}
