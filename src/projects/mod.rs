//! `projects.*`: named groups of chats with instructions the assistant follows in each of
//! them. A chat joins a project with `chat.sessions.create/update { projectId }`; the reply
//! reads the project's instructions (`chat`'s `projects.rs`); `users.export` lists them.
//! Projects sit above `chat`:
//! deleting one may delete its chats through chat's own deletion.

mod store;

use entity::projects;
use sea_orm::{DatabaseConnection, DbErr};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use self::store::ProjectChanges;
use crate::context::{App, Ctx};
use crate::guard::{SignedIn, signed_in};
use crate::pagination::{Direction, PageRequest, PageSize};
use crate::rpc::{FieldErrors, Router, RpcError, Timestamp, internal, present};
use crate::text;

pub fn router() -> Router<App> {
    Router::new()
        .query("list", signed_in(list))
        .mutation("create", signed_in(create))
        .mutation("update", signed_in(update))
        .mutation("delete", signed_in(delete))
}

const MAX_NAME_CHARS: usize = 100;
/// Long enough for a brief with examples (ChatGPT's project instructions allow 8,000 too);
/// they go along with every reply in the project, so they cost tokens each time.
const MAX_INSTRUCTIONS_CHARS: usize = 8_000;
const PROJECT_PAGE: PageSize = PageSize {
    default: 50,
    max: 100,
};

#[derive(Debug, Clone, Serialize, specta::Type)]
#[serde(rename_all = "camelCase")]
pub struct Project {
    pub id: Uuid,
    pub name: String,
    /// Added to the system prompt of every chat in the project ("" for none).
    pub instructions: String,
    /// `#rrggbb` (lower case), or null.
    pub color: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl From<projects::Model> for Project {
    fn from(row: projects::Model) -> Self {
        Self {
            id: row.id,
            name: row.name,
            instructions: row.instructions,
            color: row.color,
            created_at: row.created_at.into(),
            updated_at: row.updated_at.into(),
        }
    }
}

/// 1 to 100 characters on one line, trimmed.
fn parse_name(raw: &str) -> Result<String, String> {
    let name = raw.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(format!("use 1 to {MAX_NAME_CHARS} characters"));
    }
    text::check_single_line(name).map(|()| name.to_owned())
}

/// Up to 8,000 characters of plain text (line breaks allowed), trimmed.
fn parse_instructions(raw: &str) -> Result<String, String> {
    let instructions = raw.trim();
    if instructions.chars().count() > MAX_INSTRUCTIONS_CHARS {
        return Err(format!("use at most {MAX_INSTRUCTIONS_CHARS} characters"));
    }
    text::check_plain(instructions).map(|()| instructions.to_owned())
}

/// `#rrggbb` in hex digits of either case, kept in lower case.
fn parse_color(raw: &str) -> Result<String, String> {
    match raw.trim().strip_prefix('#') {
        Some(hex) if hex.len() == 6 && hex.chars().all(|c| c.is_ascii_hexdigit()) => {
            Ok(format!("#{}", hex.to_ascii_lowercase()))
        }
        _ => Err("use a colour as #rrggbb, e.g. #3b82f6".to_owned()),
    }
}

/// A new project's fields, checked.
pub struct ProjectFields {
    name: String,
    instructions: String,
    color: Option<String>,
}

/// Every project of the user, oldest first (for the account's export).
pub async fn all_of(db: &DatabaseConnection, user_id: Uuid) -> Result<Vec<Project>, DbErr> {
    let rows = store::all_of(db, user_id).await?;
    Ok(rows.into_iter().map(Project::from).collect())
}

fn not_found() -> RpcError {
    RpcError::not_found("No such project.")
}

/// A row deleted between reading and writing it is as gone as one never found.
fn gone_or_internal(doing: &'static str) -> impl Fn(DbErr) -> RpcError {
    move |error| match error {
        DbErr::RecordNotUpdated => not_found(),
        error => internal(doing)(error),
    }
}

async fn owned_project(
    ctx: &Ctx,
    caller: &SignedIn,
    id: Uuid,
) -> Result<projects::Model, RpcError> {
    store::find_owned(&ctx.state.db, caller.user.id, id)
        .await
        .map_err(internal("load a project"))?
        .ok_or_else(not_found)
}

#[derive(Deserialize, specta::Type)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListProjectsInput {
    /// 1 to 100 (default 50).
    #[serde(default)]
    limit: Option<u32>,
    /// The `nextCursor` of a previous page; absent or null for the first page.
    #[serde(default)]
    cursor: Option<String>,
    /// `forward` (default): older projects after the cursor. `backward`: newer ones.
    #[serde(default)]
    direction: Option<Direction>,
}

#[derive(Serialize, specta::Type)]
#[serde(rename_all = "camelCase")]
pub struct ProjectPage {
    /// Newest first.
    projects: Vec<Project>,
    /// The next page's `cursor`, in the same direction; null at the end.
    next_cursor: Option<String>,
}

/// `projects.list`
async fn list(
    ctx: Ctx,
    caller: SignedIn,
    input: ListProjectsInput,
) -> Result<ProjectPage, RpcError> {
    let page = PageRequest::<Uuid>::of_input(
        PROJECT_PAGE,
        input.limit,
        input.cursor.as_deref(),
        input.direction,
    )?;
    let rows = store::list(&ctx.state.db, caller.user.id, &page)
        .await
        .map_err(internal("list projects"))?;
    let (rows, next_cursor) = page.finish_in_list_order(rows, |row| row.id);
    Ok(ProjectPage {
        projects: rows.into_iter().map(Project::from).collect(),
        next_cursor,
    })
}

#[derive(Deserialize, specta::Type)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateProjectInput {
    /// 1 to 100 characters, one line.
    name: String,
    /// At most 8,000 characters (default: none).
    #[serde(default)]
    instructions: Option<String>,
    /// `#rrggbb`.
    #[serde(default)]
    color: Option<String>,
}

/// `projects.create`
async fn create(
    ctx: Ctx,
    caller: SignedIn,
    input: CreateProjectInput,
) -> Result<Project, RpcError> {
    let mut errors = FieldErrors::default();
    let name = errors.check("name", parse_name(&input.name));
    let instructions = errors.check(
        "instructions",
        parse_instructions(input.instructions.as_deref().unwrap_or_default()),
    );
    let color = errors.check("color", input.color.as_deref().map(parse_color).transpose());
    let (Some(name), Some(instructions), Some(color)) = (name, instructions, color) else {
        return Err(errors.into_error());
    };
    let fields = ProjectFields {
        name,
        instructions,
        color,
    };
    let project = store::insert(&ctx.state.db, caller.user.id, fields)
        .await
        .map_err(internal("create a project"))?;
    Ok(project.into())
}

#[derive(Deserialize, specta::Type)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateProjectInput {
    id: Uuid,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    instructions: Option<String>,
    /// `#rrggbb`; `null` removes the colour; left out, it stays.
    #[serde(default, deserialize_with = "present")]
    #[specta(type = Option<String>, optional)]
    color: Option<Option<String>>,
}

/// `projects.update`: the fields given change; chats already in the project follow the new
/// instructions from their next reply.
async fn update(
    ctx: Ctx,
    caller: SignedIn,
    input: UpdateProjectInput,
) -> Result<Project, RpcError> {
    let mut errors = FieldErrors::default();
    let changes = ProjectChanges {
        name: input
            .name
            .and_then(|name| errors.check("name", parse_name(&name))),
        instructions: input
            .instructions
            .and_then(|text| errors.check("instructions", parse_instructions(&text))),
        color: input
            .color
            .and_then(|color| errors.check("color", color.as_deref().map(parse_color).transpose())),
    };
    if !errors.is_empty() {
        return Err(errors.into_error());
    }
    let project = owned_project(&ctx, &caller, input.id).await?;
    let updated = store::update(&ctx.state.db, project, changes)
        .await
        .map_err(gone_or_internal("update a project"))?;
    Ok(updated.into())
}

#[derive(Deserialize, specta::Type)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeleteProjectInput {
    id: Uuid,
    /// true: its chats are deleted too (as `chat.sessions.delete` deletes them). Left out or
    /// false: they stay, in no project.
    #[serde(default)]
    delete_sessions: Option<bool>,
}

/// `projects.delete`
async fn delete(ctx: Ctx, caller: SignedIn, input: DeleteProjectInput) -> Result<(), RpcError> {
    let project = owned_project(&ctx, &caller, input.id).await?;
    if input.delete_sessions.unwrap_or(false) {
        crate::chat::delete_project_sessions(&ctx, caller.user.id, project.id).await?;
    }
    store::delete(&ctx.state.db, project.id)
        .await
        .map_err(internal("delete a project"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_single_lines_of_1_to_100_characters() {
        assert_eq!(
            parse_name("  Trip to Lisbon "),
            Ok("Trip to Lisbon".to_owned())
        );
        assert!(parse_name("   ").is_err());
        assert!(parse_name(&"é".repeat(100)).is_ok());
        assert!(parse_name(&"é".repeat(101)).is_err());
        assert!(parse_name("two\nlines").is_err());
    }

    #[test]
    fn instructions_may_be_empty_or_up_to_the_limit() {
        assert_eq!(parse_instructions(""), Ok(String::new()));
        assert!(parse_instructions("Answer in French.\n\tBe brief.").is_ok());
        assert!(parse_instructions(&"a".repeat(MAX_INSTRUCTIONS_CHARS)).is_ok());
        assert!(parse_instructions(&"a".repeat(MAX_INSTRUCTIONS_CHARS + 1)).is_err());
        assert!(parse_instructions("nul\u{0}").is_err());
    }

    #[test]
    fn colours_are_six_hex_digits_kept_in_lower_case() {
        assert_eq!(parse_color("#3B82F6"), Ok("#3b82f6".to_owned()));
        for bad in ["3b82f6", "#3b82f", "#3b82f6a", "#gggggg", "red", "#"] {
            assert!(parse_color(bad).is_err(), "{bad}");
        }
    }
}
