//! The message tree of a session. Every message has a parent (`parent_id`, null for a first
//! message); a regenerated answer is a sibling of the answer it replaces (same user message),
//! an edited message a sibling of the message it edits (same parent). The session remembers
//! the last message of the branch it shows (`current_leaf_id`); a branch is the path from a
//! root to a leaf. Tool messages hang off the reply that ran them: they are listed after it
//! but are never a branch of their own (not siblings, never a leaf).
//!
//! The shape is read whole (ids, parents and roles only: a few bytes a message) and walked in
//! memory, the same on SQLite and PostgreSQL.

use std::collections::{HashMap, HashSet};

use entity::{chat_messages, chat_sessions};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};
use uuid::Uuid;

use super::types::Role;

/// A session's messages as a tree.
#[derive(Debug, Default)]
pub struct Tree {
    /// Every message's parent.
    parents: HashMap<Uuid, Option<Uuid>>,
    /// The user and assistant messages under each parent (`None`: the roots), oldest first.
    children: HashMap<Option<Uuid>, Vec<Uuid>>,
    /// The tool messages under each reply, oldest first.
    tools: HashMap<Uuid, Vec<Uuid>>,
}

impl Tree {
    /// The tree of `session_id`.
    #[tracing::instrument(name = "db", skip_all, fields(db.operation = "chat.tree.load"))]
    pub async fn load(db: &impl ConnectionTrait, session_id: Uuid) -> Result<Self, DbErr> {
        let rows: Vec<(Uuid, Option<Uuid>, String)> = chat_messages::Entity::find()
            .select_only()
            .column(chat_messages::Column::Id)
            .column(chat_messages::Column::ParentId)
            .column(chat_messages::Column::Role)
            .filter(chat_messages::Column::SessionId.eq(session_id))
            .order_by_asc(chat_messages::Column::Id)
            .into_tuple()
            .all(db)
            .await?;
        Ok(Self::of(rows.into_iter().map(|(id, parent, role)| {
            (id, parent, role == Role::Tool.as_str())
        })))
    }

    /// From `(id, parent, is_tool)` in creation order.
    pub fn of(rows: impl IntoIterator<Item = (Uuid, Option<Uuid>, bool)>) -> Self {
        let mut tree = Self::default();
        for (id, parent, is_tool) in rows {
            tree.parents.insert(id, parent);
            match (is_tool, parent) {
                (true, Some(reply)) => tree.tools.entry(reply).or_default().push(id),
                // A tool message without a reply is nobody's: listed nowhere.
                (true, None) => {}
                (false, parent) => tree.children.entry(parent).or_default().push(id),
            }
        }
        tree
    }

    /// Whether `id` is a user or assistant message of this tree (one a branch can end at).
    fn is_node(&self, id: Uuid) -> bool {
        self.parents
            .get(&id)
            .is_some_and(|parent| self.children.get(parent).is_some_and(|c| c.contains(&id)))
    }

    pub fn parent(&self, id: Uuid) -> Option<Uuid> {
        self.parents.get(&id).copied().flatten()
    }

    /// The branch ending at `leaf`, root first (user and assistant messages only). A broken
    /// link (a parent that is gone) ends the walk instead of failing, and so does a cycle.
    pub fn branch(&self, leaf: Uuid) -> Vec<Uuid> {
        let mut path = Vec::new();
        let mut seen = HashSet::new();
        let mut at = Some(leaf);
        while let Some(id) = at {
            if !self.parents.contains_key(&id) || !seen.insert(id) {
                break;
            }
            path.push(id);
            at = self.parent(id);
        }
        path.reverse();
        path
    }

    /// `branch` with each reply's tool messages after it: what the app lists.
    pub fn with_tools(&self, branch: &[Uuid]) -> Vec<Uuid> {
        let mut listed = Vec::with_capacity(branch.len());
        for &id in branch {
            listed.push(id);
            if let Some(tools) = self.tools.get(&id) {
                listed.extend(tools);
            }
        }
        listed
    }

    /// The message's siblings, itself included, oldest first; a tool message is alone.
    pub fn siblings(&self, id: Uuid) -> Vec<Uuid> {
        match self
            .parents
            .get(&id)
            .and_then(|parent| self.children.get(parent))
        {
            Some(siblings) if siblings.contains(&id) => siblings.clone(),
            _ => vec![id],
        }
    }

    /// The leaf reached from `id` by following the latest child at each step (a tool message
    /// starts from its reply).
    pub fn latest_leaf_under(&self, id: Uuid) -> Uuid {
        let mut at = if self.is_node(id) {
            id
        } else {
            self.parent(id).unwrap_or(id)
        };
        let mut seen = HashSet::from([at]);
        while let Some(&next) = self.children.get(&Some(at)).and_then(|c| c.last()) {
            if !seen.insert(next) {
                break;
            }
            at = next;
        }
        at
    }

    /// The latest leaf from the latest root: where a session without a (valid) current leaf
    /// stands.
    pub fn latest_leaf(&self) -> Option<Uuid> {
        let root = *self.children.get(&None)?.last()?;
        Some(self.latest_leaf_under(root))
    }

    /// The session's current leaf, or the latest leaf when it has none (or a stale one).
    pub fn current_leaf(&self, session: &chat_sessions::Model) -> Option<Uuid> {
        session
            .current_leaf_id
            .filter(|&leaf| self.is_node(leaf))
            .or_else(|| self.latest_leaf())
    }

    /// `id` and everything under it (tool messages included).
    pub fn subtree(&self, id: Uuid) -> Vec<Uuid> {
        let mut found = Vec::new();
        let mut seen = HashSet::new();
        let mut stack = vec![id];
        while let Some(at) = stack.pop() {
            if !seen.insert(at) {
                continue;
            }
            found.push(at);
            stack.extend(self.children.get(&Some(at)).into_iter().flatten());
            stack.extend(self.tools.get(&at).into_iter().flatten());
        }
        found
    }

    /// Where the session stands once `removed` are gone (their children, if any stay, moved
    /// up to the nearest remaining ancestor): its leaf when that stays, else the latest leaf
    /// under the nearest remaining ancestor of the removed leaf (or from the latest remaining
    /// root).
    fn leaf_after_removal(&self, leaf: Option<Uuid>, removed: &HashSet<Uuid>) -> Option<Uuid> {
        let leaf = leaf?;
        if !removed.contains(&leaf) {
            return Some(leaf);
        }
        let remaining = Self::of(self.rows_without(removed));
        match self.surviving_ancestor(leaf, removed) {
            Some(ancestor) => Some(remaining.latest_leaf_under(ancestor)),
            None => remaining.latest_leaf(),
        }
    }

    /// `(id, parent, is_tool)` of every message not in `removed`, in creation order, each
    /// under its nearest remaining ancestor.
    fn rows_without(&self, removed: &HashSet<Uuid>) -> Vec<(Uuid, Option<Uuid>, bool)> {
        let mut rows: Vec<_> = self
            .parents
            .keys()
            .filter(|id| !removed.contains(id))
            .map(|&id| (id, self.surviving_ancestor(id, removed), !self.is_node(id)))
            .collect();
        rows.sort_by_key(|&(id, ..)| id);
        rows
    }

    /// The nearest ancestor of `id` not in `removed` (`None`: none is left, a new root).
    fn surviving_ancestor(&self, id: Uuid, removed: &HashSet<Uuid>) -> Option<Uuid> {
        let mut at = self.parent(id);
        let mut seen = HashSet::new();
        while let Some(ancestor) = at {
            if !removed.contains(&ancestor) {
                return Some(ancestor);
            }
            if !seen.insert(ancestor) {
                return None;
            }
            at = self.parent(ancestor);
        }
        None
    }
}

/// The session's current leaf, its row locked until the transaction ends (PostgreSQL; a
/// SQLite write transaction holds the whole database), so concurrent sends chain up instead of
/// both following the same message.
#[tracing::instrument(name = "db", skip_all, fields(db.operation = "chat.tree.locked_leaf"))]
pub async fn locked_leaf(
    db: &impl ConnectionTrait,
    session_id: Uuid,
) -> Result<Option<Uuid>, DbErr> {
    let leaf: Option<Option<Uuid>> = chat_sessions::Entity::find_by_id(session_id)
        .select_only()
        .column(chat_sessions::Column::CurrentLeafId)
        .lock_exclusive()
        .into_tuple()
        .one(db)
        .await?;
    Ok(leaf.flatten())
}

/// Makes `leaf` the session's current leaf.
#[tracing::instrument(name = "db", skip_all, fields(db.operation = "chat.tree.set_leaf"))]
pub async fn set_leaf(
    db: &impl ConnectionTrait,
    session_id: Uuid,
    leaf: Option<Uuid>,
) -> Result<(), DbErr> {
    chat_sessions::Entity::update_many()
        .col_expr(chat_sessions::Column::CurrentLeafId, Expr::value(leaf))
        .filter(chat_sessions::Column::Id.eq(session_id))
        .exec(db)
        .await
        .map(drop)
}

/// Deletes `id` and its subtree (other branches under it, tool messages); when the current
/// branch went with it, the session moves to the latest branch under the nearest remaining
/// ancestor. How many messages went. Call it inside a transaction.
#[tracing::instrument(name = "db", skip_all, fields(db.operation = "chat.tree.delete_subtree"))]
pub async fn delete_subtree(
    db: &impl ConnectionTrait,
    session: &chat_sessions::Model,
    id: Uuid,
) -> Result<u64, DbErr> {
    let tree = Tree::load(db, session.id).await?;
    let removed: HashSet<Uuid> = tree.subtree(id).into_iter().collect();
    let leaf = tree.leaf_after_removal(tree.current_leaf(session), &removed);
    let gone = chat_messages::Entity::delete_many()
        .filter(chat_messages::Column::SessionId.eq(session.id))
        .filter(chat_messages::Column::Id.is_in(removed.iter().copied()))
        .exec(db)
        .await?
        .rows_affected;
    set_leaf(db, session.id, leaf).await?;
    Ok(gone)
}

/// Before `ids` are deleted on their own (voice turns leaving a transcript): their children
/// move up to the nearest ancestor that stays, so the branches through them close up, and a
/// current leaf among them moves up likewise.
#[tracing::instrument(name = "db", skip_all, fields(db.operation = "chat.tree.close_up"))]
pub async fn close_up(
    db: &impl ConnectionTrait,
    session: &chat_sessions::Model,
    ids: &[Uuid],
) -> Result<(), DbErr> {
    let tree = Tree::load(db, session.id).await?;
    let removed: HashSet<Uuid> = ids.iter().copied().collect();
    for (&child, &parent) in &tree.parents {
        let moves = parent.is_some_and(|p| removed.contains(&p)) && !removed.contains(&child);
        if moves {
            let ancestor = tree.surviving_ancestor(child, &removed);
            set_parent(db, child, ancestor).await?;
        }
    }
    let leaf = tree.leaf_after_removal(tree.current_leaf(session), &removed);
    set_leaf(db, session.id, leaf).await
}

async fn set_parent(
    db: &impl ConnectionTrait,
    id: Uuid,
    parent: Option<Uuid>,
) -> Result<(), DbErr> {
    chat_messages::Entity::update_many()
        .col_expr(chat_messages::Column::ParentId, Expr::value(parent))
        .filter(chat_messages::Column::Id.eq(id))
        .exec(db)
        .await
        .map(drop)
}

/// Where a message said at a time (a voice turn, whose id carries when it was said) goes on
/// the session's current branch: after the last message said before it; the message that
/// followed there (if any) now follows it. Returns its parent; the caller inserts it, then
/// calls `follow_up`.
pub struct TimedPlace {
    pub parent: Option<Uuid>,
    /// The branch's next message, to re-parent under the new one; `None`: it ends the branch.
    pub next: Option<Uuid>,
}

#[tracing::instrument(name = "db", skip_all, fields(db.operation = "chat.tree.place_in_time"))]
pub async fn place_in_time(
    db: &impl ConnectionTrait,
    session: &chat_sessions::Model,
    id: Uuid,
) -> Result<TimedPlace, DbErr> {
    let tree = Tree::load(db, session.id).await?;
    let branch = tree
        .current_leaf(session)
        .map(|leaf| tree.branch(leaf))
        .unwrap_or_default();
    let after = branch.iter().take_while(|&&on| on < id).count();
    Ok(TimedPlace {
        parent: after.checked_sub(1).and_then(|at| branch.get(at).copied()),
        next: branch.get(after).copied(),
    })
}

/// Completes `place_in_time` once message `id` is saved.
#[tracing::instrument(name = "db", skip_all, fields(db.operation = "chat.tree.follow_up"))]
pub async fn follow_up(
    db: &impl ConnectionTrait,
    session_id: Uuid,
    id: Uuid,
    place: &TimedPlace,
) -> Result<(), DbErr> {
    match place.next {
        Some(next) => set_parent(db, next, Some(id)).await,
        None => set_leaf(db, session_id, Some(id)).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<Uuid> {
        (0..n).map(|_| Uuid::now_v7()).collect()
    }

    /// u0 → a1 → u2 → a3; a1' (regenerated, with a tool message) beside a1; u2' (edited)
    /// beside u2 with its answer a4.
    fn sample() -> (Tree, Vec<Uuid>) {
        let id = ids(9);
        let (u0, a1, u2, a3, a1b, tool, u2b, a4) =
            (id[0], id[1], id[2], id[3], id[4], id[5], id[6], id[7]);
        let tree = Tree::of([
            (u0, None, false),
            (a1, Some(u0), false),
            (u2, Some(a1), false),
            (a3, Some(u2), false),
            (a1b, Some(u0), false),
            (tool, Some(a1b), true),
            (u2b, Some(a1), false),
            (a4, Some(u2b), false),
        ]);
        (tree, id)
    }

    #[test]
    fn branches_siblings_and_latest_leaves() {
        let (tree, id) = sample();
        assert_eq!(tree.branch(id[3]), [id[0], id[1], id[2], id[3]]);
        assert_eq!(tree.siblings(id[1]), [id[1], id[4]]);
        assert_eq!(tree.siblings(id[6]), [id[2], id[6]]);
        assert_eq!(tree.siblings(id[5]), [id[5]], "a tool message is alone");
        assert_eq!(tree.latest_leaf_under(id[0]), id[4]);
        assert_eq!(tree.latest_leaf_under(id[1]), id[7]);
        assert_eq!(
            tree.latest_leaf_under(id[5]),
            id[4],
            "from the tool's reply"
        );
        assert_eq!(tree.latest_leaf(), Some(id[4]));
        assert_eq!(tree.with_tools(&tree.branch(id[4])), [id[0], id[4], id[5]]);
        let mut subtree = tree.subtree(id[1]);
        subtree.sort();
        assert_eq!(subtree, [id[1], id[2], id[3], id[6], id[7]]);
    }

    #[test]
    fn removing_the_current_branch_moves_to_the_latest_remaining_one() {
        let (tree, id) = sample();
        let removed: HashSet<Uuid> = tree.subtree(id[6]).into_iter().collect();
        assert_eq!(
            tree.leaf_after_removal(Some(id[7]), &removed),
            Some(id[3]),
            "the other edit's branch"
        );
        assert_eq!(tree.leaf_after_removal(Some(id[3]), &removed), Some(id[3]));
        let everything: HashSet<Uuid> = tree.subtree(id[0]).into_iter().collect();
        assert_eq!(tree.leaf_after_removal(Some(id[3]), &everything), None);
    }

    #[test]
    fn cycles_and_broken_links_end_walks() {
        let id = ids(3);
        let tree = Tree::of([
            (id[0], Some(id[1]), false),
            (id[1], Some(id[0]), false),
            (id[2], Some(Uuid::nil()), false),
        ]);
        assert_eq!(tree.branch(id[0]).len(), 2);
        assert_eq!(tree.branch(id[2]), [id[2]]);
        assert_eq!(tree.latest_leaf(), None, "no root");
    }
}
