//! The application state every procedure shares, and the full procedure tree: each tRPC path
//! prefix is one domain folder under `src/`.

use std::sync::Arc;

use sea_orm::DatabaseConnection;

use crate::auth::Auth;
use crate::chat::Generations;
use crate::config::Config;
use crate::crypto::KeyVault;
use crate::db::Backend;
use crate::rpc;

pub struct AppState {
    pub db: DatabaseConnection,
    pub backend: Backend,
    pub config: Config,
    pub auth: Auth,
    /// Seals and opens users' API keys.
    pub vault: Arc<dyn KeyVault>,
    /// Chat replies being written (and recently written), for resuming and stopping.
    pub chats: Generations,
    /// For calls to other services (identity providers' keys, AI providers).
    pub http: reqwest::Client,
}

pub type App = Arc<AppState>;

/// What a procedure receives: the state plus the calling request (client IP, headers).
pub type Ctx = rpc::Context<App>;

/// Every procedure of the API. `system.health` lives in `src/system/`, and so on.
pub fn router() -> rpc::Router<App> {
    rpc::Router::new()
        .nest("system", crate::system::router())
        .nest("auth", crate::auth::router())
        .nest("users", crate::users::router())
        .nest("apiKeys", crate::keys::router())
        .nest("preferences", crate::preferences::router())
        .nest("audit", crate::audit::router())
        .nest("chat", crate::chat::router())
}
