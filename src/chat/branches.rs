//! The message tree's procedures: `chat.messages.list` (the current branch),
//! `chat.regenerate` and `chat.edit` (new branches, asked like `chat.send`) and
//! `chat.branches.select`. The tree itself is `tree.rs`.

use entity::chat_messages;
use serde::Deserialize;
use uuid::Uuid;

use super::access::owned_session;
use super::attachments;
use super::send::{self, Ask, Parent, Prompt, SentMessage};
use super::store;
use super::tree::{self, Tree};
use super::types::{ChatSession, Message, Role};
use super::{MESSAGE_PAGE, MessagePage};
use crate::context::Ctx;
use crate::guard::SignedIn;
use crate::pagination::{Direction, PageRequest};
use crate::providers::AiProvider;
use crate::rpc::{FieldErrors, RpcError, internal};
use crate::usage;

fn no_message() -> RpcError {
    RpcError::not_found("No such message.")
}

/// One of the caller's messages, or NOT_FOUND.
async fn owned_message(
    ctx: &Ctx,
    caller: &SignedIn,
    id: Uuid,
) -> Result<chat_messages::Model, RpcError> {
    store::find_message(&ctx.state.db, caller.user.id, id)
        .await
        .map_err(internal("load a chat message"))?
        .ok_or_else(no_message)
}

#[derive(Deserialize, specta::Type)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListMessagesInput {
    session_id: Uuid,
    /// 1 to 100 (default 50).
    #[serde(default)]
    limit: Option<u32>,
    /// A message id: the `nextCursor` of a previous page, or any message's (e.g. a search
    /// hit's). The page starts next to it, without it. Absent or null: from the newest
    /// message (forward) or the oldest (backward).
    #[serde(default)]
    cursor: Option<String>,
    /// `forward` (default, `fetchNextPage`): older messages, so pages walk back from the
    /// newest and new messages never shift them. `backward` (`fetchPreviousPage`): newer ones.
    #[serde(default)]
    direction: Option<Direction>,
}

/// `chat.messages.list`: the session's current branch, root to leaf (each reply's tool
/// messages after it), each message with its `parentId`, `siblingIds` and `siblingIndex`.
pub(super) async fn list_messages(
    ctx: Ctx,
    caller: SignedIn,
    input: ListMessagesInput,
) -> Result<MessagePage, RpcError> {
    let page = PageRequest::<Uuid>::of_input(
        MESSAGE_PAGE,
        input.limit,
        input.cursor.as_deref(),
        input.direction,
    )?;
    let session = owned_session(&ctx, &caller, input.session_id).await?;
    let db = &ctx.state.db;
    let tree = Tree::load(db, session.id)
        .await
        .map_err(internal("load a chat's messages"))?;
    let listed = tree
        .current_leaf(&session)
        .map(|leaf| tree.with_tools(&tree.branch(leaf)))
        .unwrap_or_default();
    let (mut ids, next_cursor) = page.finish(walk(&listed, &page), |id| *id);
    if page.is_forward() {
        ids.reverse();
    }
    let rows = store::messages_by_ids(db, session.id, ids.clone())
        .await
        .map_err(internal("list chat messages"))?;
    let mut messages: Vec<Message> = rows.into_iter().map(Message::from).collect();
    // In branch order (creation order too, but the branch decides).
    messages.sort_by_key(|message| ids.iter().position(|&id| id == message.id));
    for message in &mut messages {
        message.sibling_ids = tree.siblings(message.id);
        message.sibling_index = message
            .sibling_ids
            .iter()
            .position(|&id| id == message.id)
            .and_then(|at| u32::try_from(at).ok())
            .unwrap_or_default();
    }
    attachments::show(&ctx, caller.user.id, &mut messages).await?;
    Ok(MessagePage {
        messages,
        next_cursor,
    })
}

/// The ids of a page of `listed` (a branch, oldest first) in walk order, one more than the
/// page: forward from the newest (older than the cursor), backward from the oldest (newer
/// than the cursor). Ids along a branch grow (a message is made after its parent), so a
/// cursor off the branch (a search hit in another one) still places the page.
fn walk(listed: &[Uuid], page: &PageRequest<Uuid>) -> Vec<Uuid> {
    let take = usize::try_from(page.rows_to_read()).unwrap_or(usize::MAX);
    let cursor = page.cursor;
    if page.is_forward() {
        listed
            .iter()
            .rev()
            .filter(|&&id| cursor.is_none_or(|cursor| id < cursor))
            .take(take)
            .copied()
            .collect()
    } else {
        listed
            .iter()
            .filter(|&&id| cursor.is_none_or(|cursor| id > cursor))
            .take(take)
            .copied()
            .collect()
    }
}

#[derive(Deserialize, specta::Type)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegenerateInput {
    /// The assistant message to answer again; absent: the session's current leaf (which must
    /// be an answer).
    #[serde(default)]
    message_id: Option<Uuid>,
    /// The session; needed without `messageId`, and checked against it with one.
    #[serde(default)]
    session_id: Option<Uuid>,
    /// As `chat.send`'s: sending it again never answers twice.
    client_message_id: Uuid,
    /// Defaults to the user's preference.
    #[serde(default)]
    provider: Option<AiProvider>,
    /// Defaults to the user's preference (or the provider's default model).
    #[serde(default)]
    model: Option<String>,
}

/// `chat.regenerate`: a new answer to the user message an answer replies to, beside it (a
/// sibling), written from the same history; the session switches to it. Answers like
/// `chat.send`: `{ userMessage (the message answered), replyMessageId }`, followed with
/// `chat.follow`.
pub(super) async fn regenerate(
    ctx: Ctx,
    caller: SignedIn,
    input: RegenerateInput,
) -> Result<SentMessage, RpcError> {
    usage::limit_sends(&ctx, caller.user.id).await?;
    let mut errors = FieldErrors::default();
    send::check_model(&mut errors, input.model.as_deref());
    if input.message_id.is_none() && input.session_id.is_none() {
        errors.check::<()>(
            "messageId",
            Err("give the answer to regenerate (or the sessionId of its chat)".to_owned()),
        );
    }
    if !errors.is_empty() {
        return Err(errors.into_error());
    }
    let answer = match (input.message_id, input.session_id) {
        (Some(id), _) => owned_message(&ctx, &caller, id).await?,
        (None, Some(session_id)) => {
            let session = owned_session(&ctx, &caller, session_id).await?;
            let tree = Tree::load(&ctx.state.db, session.id)
                .await
                .map_err(internal("load a chat's messages"))?;
            let leaf = tree.current_leaf(&session).ok_or_else(|| {
                RpcError::bad_request("This chat has no answer to regenerate yet.")
            })?;
            owned_message(&ctx, &caller, leaf).await?
        }
        (None, None) => return Err(no_message()),
    };
    if input.session_id.is_some_and(|id| id != answer.session_id) {
        return Err(no_message());
    }
    let not_an_answer = || {
        let mut errors = FieldErrors::default();
        errors.check::<()>(
            "messageId",
            Err("regenerate an assistant's answer to a message (edit your own messages with chat.edit)".to_owned()),
        );
        errors.into_error()
    };
    if answer.role != Role::Assistant.as_str() {
        return Err(not_an_answer());
    }
    // A spoken answer (a voice call's) replies to no message.
    let Some(asked) = answer.reply_to else {
        return Err(not_an_answer());
    };
    let user_message = owned_message(&ctx, &caller, asked).await?;
    let session = owned_session(&ctx, &caller, answer.session_id).await?;
    let ask = Ask {
        session,
        client_message_id: input.client_message_id,
        provider: input.provider,
        model: input.model,
        prompt: Prompt::Again(Box::new(user_message)),
    };
    send::ask(&ctx, caller, ask).await
}

#[derive(Deserialize, specta::Type)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EditInput {
    /// The user message to edit.
    message_id: Uuid,
    /// The new text, as `chat.send`'s.
    content: String,
    /// As `chat.send`'s: sending it again never answers twice.
    client_message_id: Uuid,
    /// As `chat.send`'s; absent: the files the edited message carried (those not deleted).
    #[serde(default)]
    file_ids: Option<Vec<Uuid>>,
    #[serde(default)]
    provider: Option<AiProvider>,
    #[serde(default)]
    model: Option<String>,
}

/// `chat.edit`: a new version of a user message beside it (a sibling: same parent) and its
/// answer; the session switches to it. Answers and streams like `chat.send`.
pub(super) async fn edit(
    ctx: Ctx,
    caller: SignedIn,
    input: EditInput,
) -> Result<SentMessage, RpcError> {
    usage::limit_sends(&ctx, caller.user.id).await?;
    let original = owned_message(&ctx, &caller, input.message_id).await?;
    let file_ids = match input.file_ids {
        Some(ids) => ids,
        None => attachments::kept_file_ids(&ctx.state.db, caller.user.id, original.id)
            .await
            .map_err(internal("load a message's files"))?,
    };
    let mut errors = FieldErrors::default();
    if original.role != Role::User.as_str() {
        errors.check::<()>(
            "messageId",
            Err("edit one of your messages (regenerate answers with chat.regenerate)".to_owned()),
        );
    }
    let content = errors.check(
        "content",
        send::parse_content(&input.content, !file_ids.is_empty()),
    );
    send::check_model(&mut errors, input.model.as_deref());
    errors.check("fileIds", attachments::check_ids(&file_ids));
    let (Some(content), true) = (content, errors.is_empty()) else {
        return Err(errors.into_error());
    };
    let ask = Ask {
        session: owned_session(&ctx, &caller, original.session_id).await?,
        client_message_id: input.client_message_id,
        provider: input.provider,
        model: input.model,
        prompt: Prompt::New {
            content,
            file_ids,
            parent: Parent::Under(original.parent_id),
        },
    };
    send::ask(&ctx, caller, ask).await
}

#[derive(Deserialize, specta::Type)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SelectBranchInput {
    /// Any message of the branch to show (a sibling's id, from `siblingIds`).
    message_id: Uuid,
}

/// `chat.branches.select`: shows the branch through a message: from it, the latest child at
/// each step, down to a leaf (the newest continuation of that version). Answers the session
/// with its new `currentLeafId`; `chat.messages.list` then lists that branch, and the next
/// message sent follows it.
pub(super) async fn select(
    ctx: Ctx,
    caller: SignedIn,
    input: SelectBranchInput,
) -> Result<ChatSession, RpcError> {
    let message = owned_message(&ctx, &caller, input.message_id).await?;
    let session = owned_session(&ctx, &caller, message.session_id).await?;
    let db = &ctx.state.db;
    let tree = Tree::load(db, session.id)
        .await
        .map_err(internal("load a chat's messages"))?;
    let leaf = tree.latest_leaf_under(message.id);
    tree::set_leaf(db, session.id, Some(leaf))
        .await
        .map_err(internal("select a chat branch"))?;
    Ok(ChatSession::from(entity::chat_sessions::Model {
        current_leaf_id: Some(leaf),
        ..session
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_walk_the_branch_both_ways() {
        let listed: Vec<Uuid> = (0..5).map(|_| Uuid::now_v7()).collect();
        let page = |cursor, direction| PageRequest {
            cursor,
            direction,
            limit: 2,
        };
        let newest = walk(&listed, &page(None, Direction::Forward));
        assert_eq!(newest, [listed[4], listed[3], listed[2]]);
        let older = walk(&listed, &page(Some(listed[3]), Direction::Forward));
        assert_eq!(older, [listed[2], listed[1], listed[0]]);
        let newer = walk(&listed, &page(Some(listed[1]), Direction::Backward));
        assert_eq!(newer, [listed[2], listed[3], listed[4]]);
        let off_branch = Uuid::now_v7();
        assert!(walk(&listed, &page(Some(off_branch), Direction::Backward)).is_empty());
        assert_eq!(
            walk(&listed, &page(Some(off_branch), Direction::Forward)).len(),
            3
        );
    }
}
