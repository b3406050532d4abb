//! The full procedure tree: each tRPC path prefix is one domain folder under `src/`.

use crate::context::App;
use crate::rpc;

/// Every procedure of the API. `system.health` lives in `src/system/`, and so on.
pub fn router() -> rpc::Router<App> {
    rpc::Router::new()
        .nest("system", crate::system::router())
        .nest("auth", crate::auth::router())
        .nest("users", crate::users::router())
        .nest("users", crate::portability::router())
        .nest("apiKeys", crate::keys::router())
        .nest("preferences", crate::preferences::router())
        .nest("audit", crate::audit::router())
        .nest("chat", crate::chat::router())
        // Share links live in their own domain (above chat) under chat's prefix.
        .nest("chat.shares", crate::shares::router())
        .nest("projects", crate::projects::router())
        .nest("files", crate::files::router())
        .nest("integrations", crate::integrations::router())
        .nest("mail", crate::mail::router())
        .nest("usage", crate::usage::router())
        .nest("voice", crate::voice::router())
}
