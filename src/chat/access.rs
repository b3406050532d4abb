//! The caller's chat, or NOT_FOUND: one answer for a chat that does not exist and one that is
//! someone else's, for every chat procedure.

use uuid::Uuid;

use super::store;
use crate::context::Ctx;
use crate::guard::SignedIn;
use crate::rpc::{RpcError, internal};

pub fn not_found() -> RpcError {
    RpcError::not_found("No such chat.")
}

pub async fn owned_session(
    ctx: &Ctx,
    caller: &SignedIn,
    id: Uuid,
) -> Result<entity::chat_sessions::Model, RpcError> {
    store::find_session(&ctx.state.db, caller.user.id, id)
        .await
        .map_err(internal("load a chat session"))?
        .ok_or_else(not_found)
}
