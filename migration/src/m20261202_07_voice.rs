//! Voice calls (LiveKit): each call (`voice_sessions`) belongs to a user and a chat session
//! and is gone with either; its transcript segments (`voice_segments`) point at the chat
//! messages they became (a segment goes with its message); `voice_webhook_events` remembers
//! the ids of LiveKit webhooks already applied. Chat messages gain `source` ("text" or
//! "voice").

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

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
                    .add_column(string(ChatMessages::Source).default("text"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(VoiceSessions::Table)
                    .col(uuid(VoiceSessions::Id).primary_key())
                    .col(uuid(VoiceSessions::UserId))
                    .col(uuid(VoiceSessions::ChatSessionId))
                    .col(string(VoiceSessions::RoomName).unique_key())
                    // SHA-256 (hex) of the call's agent credential, never the credential.
                    .col(string(VoiceSessions::AgentTokenHash).unique_key())
                    .col(string(VoiceSessions::TranscriptPreview).default(""))
                    .col(timestamp_with_time_zone(VoiceSessions::CreatedAt))
                    // Earliest start LiveKit reported (room started, the user joined).
                    .col(timestamp_with_time_zone_null(VoiceSessions::StartedAt))
                    // Earliest end signal (room finished, voice.end, the sweep).
                    .col(timestamp_with_time_zone_null(VoiceSessions::EndedAt))
                    .col(timestamp_with_time_zone_null(VoiceSessions::UserJoinedAt))
                    .col(timestamp_with_time_zone_null(VoiceSessions::UserLeftAt))
                    .col(timestamp_with_time_zone(VoiceSessions::LastActivityAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(VoiceSessions::Table, VoiceSessions::UserId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(VoiceSessions::Table, VoiceSessions::ChatSessionId)
                            .to(ChatSessions::Table, ChatSessions::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_voice_sessions_user")
                    .table(VoiceSessions::Table)
                    .col(VoiceSessions::UserId)
                    .col(VoiceSessions::Id)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_voice_sessions_open")
                    .table(VoiceSessions::Table)
                    .col(VoiceSessions::EndedAt)
                    .col(VoiceSessions::LastActivityAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(VoiceSegments::Table)
                    .col(uuid(VoiceSegments::VoiceSessionId))
                    .col(string(VoiceSegments::SegmentId))
                    .col(uuid(VoiceSegments::MessageId))
                    .col(string(VoiceSegments::Speaker))
                    .col(big_integer(VoiceSegments::StartMs))
                    .col(big_integer_null(VoiceSegments::EndMs))
                    .primary_key(
                        Index::create()
                            .col(VoiceSegments::VoiceSessionId)
                            .col(VoiceSegments::SegmentId),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(VoiceSegments::Table, VoiceSegments::VoiceSessionId)
                            .to(VoiceSessions::Table, VoiceSessions::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(VoiceSegments::Table, VoiceSegments::MessageId)
                            .to(ChatMessages::Table, ChatMessages::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_voice_segments_message")
                    .table(VoiceSegments::Table)
                    .col(VoiceSegments::MessageId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(VoiceWebhookEvents::Table)
                    .col(string(VoiceWebhookEvents::Id).primary_key())
                    .col(timestamp_with_time_zone(VoiceWebhookEvents::ReceivedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_voice_webhook_events_received")
                    .table(VoiceWebhookEvents::Table)
                    .col(VoiceWebhookEvents::ReceivedAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            VoiceWebhookEvents::Table.into_iden(),
            VoiceSegments::Table.into_iden(),
            VoiceSessions::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        manager
            .alter_table(
                Table::alter()
                    .table(ChatMessages::Table)
                    .drop_column(ChatMessages::Source)
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum ChatSessions {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum ChatMessages {
    Table,
    Id,
    Source,
}

#[derive(DeriveIden)]
enum VoiceSessions {
    Table,
    Id,
    UserId,
    ChatSessionId,
    RoomName,
    AgentTokenHash,
    TranscriptPreview,
    CreatedAt,
    StartedAt,
    EndedAt,
    UserJoinedAt,
    UserLeftAt,
    LastActivityAt,
}

#[derive(DeriveIden)]
enum VoiceSegments {
    Table,
    VoiceSessionId,
    SegmentId,
    MessageId,
    Speaker,
    StartMs,
    EndMs,
}

#[derive(DeriveIden)]
enum VoiceWebhookEvents {
    Table,
    Id,
    ReceivedAt,
}
