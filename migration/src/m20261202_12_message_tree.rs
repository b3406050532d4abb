//! Messages form a tree: `chat_messages.parent_id` (null for a session's first message, and
//! for the first of an edit of it) and `chat_sessions.current_leaf_id`, the end of the branch
//! the session shows. A tool message hangs off the reply that ran it.
//!
//! Existing conversations become a single branch: each message's parent is the previous user
//! or assistant message of its session by creation order (UUIDv7 ids order by creation; a
//! tool message's previous one is the reply that ran it, saved before it), and each session's
//! current leaf its last user or assistant message.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Links every message without a parent to the previous user or assistant message of its
/// session. The same SQL on SQLite and PostgreSQL; the `(session_id, id)` index finds each.
const LINK_PARENTS: &str = "UPDATE chat_messages SET parent_id = ( \
     SELECT previous.id FROM chat_messages previous \
     WHERE previous.session_id = chat_messages.session_id \
       AND previous.id < chat_messages.id \
       AND previous.role <> 'tool' \
     ORDER BY previous.id DESC LIMIT 1) \
 WHERE parent_id IS NULL";

/// Each session's current leaf: its last user or assistant message.
const SET_LEAVES: &str = "UPDATE chat_sessions SET current_leaf_id = ( \
     SELECT last.id FROM chat_messages last \
     WHERE last.session_id = chat_sessions.id AND last.role <> 'tool' \
     ORDER BY last.id DESC LIMIT 1) \
 WHERE current_leaf_id IS NULL";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(ChatMessages::Table)
                    .add_column(uuid_null(ChatMessages::ParentId))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(ChatSessions::Table)
                    .add_column(uuid_null(ChatSessions::CurrentLeafId))
                    .to_owned(),
            )
            .await?;
        let db = manager.get_connection();
        db.execute_unprepared(LINK_PARENTS).await?;
        db.execute_unprepared(SET_LEAVES).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(ChatSessions::Table)
                    .drop_column(ChatSessions::CurrentLeafId)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(ChatMessages::Table)
                    .drop_column(ChatMessages::ParentId)
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum ChatMessages {
    Table,
    ParentId,
}

#[derive(DeriveIden)]
enum ChatSessions {
    Table,
    CurrentLeafId,
}
