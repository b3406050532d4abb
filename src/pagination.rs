//! tRPC's pagination convention over keyset pages, shared by every paginated procedure, so the
//! app's
//! `useInfiniteQuery(….infiniteQueryOptions(input, { getNextPageParam: (p) => p.nextCursor }))`
//! drives any list the same way. Infrastructure: no domain knowledge.
//!
//! - Input: `limit`, `cursor` (absent or null for the first page) and `direction`, which tRPC's
//!   infinite helpers add to every page's input (`"forward"` for next pages, `"backward"` for
//!   previous ones). Each procedure declares the three fields itself (serde cannot flatten into
//!   an input that refuses unknown fields) and parses them here.
//! - Output: `nextCursor`, the cursor that continues in the same direction; null at the end.
//! - Forward walks the list in its documented order starting after the cursor; backward walks
//!   it the other way, starting before the cursor. Pages are keyset pages: rows added or
//!   removed elsewhere in the list never shift a later page (no duplicates, no gaps).

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Select};
use serde::Deserialize;
use uuid::Uuid;

use crate::rpc::{FieldErrors, RpcError};

/// Which way a page goes from its cursor (tRPC's `direction`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, specta::Type)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Onward in the list's order (`fetchNextPage`).
    #[default]
    Forward,
    /// Back toward the list's start (`fetchPreviousPage`).
    Backward,
}

/// The page sizes a procedure accepts.
#[derive(Debug, Clone, Copy)]
pub struct PageSize {
    pub default: u32,
    pub max: u32,
}

impl PageSize {
    /// Validates a `limit` (1 to `max`, `default` when absent); a problem is recorded under
    /// `limit`.
    pub fn parse(self, errors: &mut FieldErrors, limit: Option<u32>) -> Option<u64> {
        let limit = match limit {
            None => Ok(self.default),
            Some(n) if (1..=self.max).contains(&n) => Ok(n),
            Some(_) => Err(format!("use 1 to {}", self.max)),
        };
        errors.check("limit", limit).map(u64::from)
    }
}

/// A position in a list, as sent to the app in `nextCursor` and read back from `cursor`.
pub trait Cursor: Sized {
    fn encode(&self) -> String;
    fn decode(text: &str) -> Option<Self>;
}

/// Time-ordered ids (UUIDv7) are their own cursors.
impl Cursor for Uuid {
    fn encode(&self) -> String {
        self.to_string()
    }

    fn decode(text: &str) -> Option<Self> {
        text.parse().ok()
    }
}

/// A validated page request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest<C> {
    /// Where the page starts (exclusive); `None` for the start of the walk.
    pub cursor: Option<C>,
    pub direction: Direction,
    pub limit: u64,
}

impl<C: Cursor> PageRequest<C> {
    /// Validates the paging fields of an input; problems are recorded under `limit` and
    /// `cursor`, so they are reported with the input's other field errors.
    pub fn parse(
        errors: &mut FieldErrors,
        size: PageSize,
        limit: Option<u32>,
        cursor: Option<&str>,
        direction: Option<Direction>,
    ) -> Option<Self> {
        let limit = size.parse(errors, limit);
        let cursor = errors.check(
            "cursor",
            cursor
                .map(|text| {
                    C::decode(text)
                        .ok_or_else(|| "use the nextCursor of a previous page".to_owned())
                })
                .transpose(),
        );
        Some(Self {
            cursor: cursor?,
            direction: direction.unwrap_or_default(),
            limit: limit?,
        })
    }

    /// `parse` for an input with no other fields to check: a BAD_REQUEST naming `limit` or
    /// `cursor` when one is wrong.
    pub fn of_input(
        size: PageSize,
        limit: Option<u32>,
        cursor: Option<&str>,
        direction: Option<Direction>,
    ) -> Result<Self, RpcError> {
        let mut errors = FieldErrors::default();
        Self::parse(&mut errors, size, limit, cursor, direction).ok_or_else(|| errors.into_error())
    }

    pub fn is_forward(&self) -> bool {
        self.direction == Direction::Forward
    }

    /// How many rows to read: one more than the page, which tells whether another follows.
    pub fn rows_to_read(&self) -> u64 {
        self.limit.saturating_add(1)
    }

    /// Cuts rows read (in walk order, at most `rows_to_read`) to the page, and gives the
    /// cursor of the next page in the same direction: its last row's, or `None` at the end.
    pub fn finish<R>(
        &self,
        mut rows: Vec<R>,
        position: impl Fn(&R) -> C,
    ) -> (Vec<R>, Option<String>) {
        let more = rows.len() as u64 > self.limit;
        rows.truncate(usize::try_from(self.limit).unwrap_or(usize::MAX));
        let next_cursor = more
            .then(|| rows.last().map(|row| position(row).encode()))
            .flatten();
        (rows, next_cursor)
    }
}

impl<C: Cursor> PageRequest<C> {
    /// `finish` for a list shown in its own order whichever way it is walked: a backward
    /// page, read in reverse, is turned back.
    pub fn finish_in_list_order<R>(
        &self,
        rows: Vec<R>,
        position: impl Fn(&R) -> C,
    ) -> (Vec<R>, Option<String>) {
        let (mut rows, next_cursor) = self.finish(rows, position);
        if !self.is_forward() {
            rows.reverse();
        }
        (rows, next_cursor)
    }
}

impl PageRequest<Uuid> {
    /// Bounds a query to this page of a list kept newest first by a time-ordered id (UUIDv7)
    /// column: forward reads older rows than the cursor, backward newer ones, both in walk
    /// order (so a backward page comes oldest first).
    pub fn newest_first<E: EntityTrait>(&self, select: Select<E>, id: E::Column) -> Select<E> {
        let select = select.limit(self.rows_to_read());
        match (self.is_forward(), self.cursor) {
            (true, None) => select.order_by_desc(id),
            (true, Some(cursor)) => select.order_by_desc(id).filter(id.lt(cursor)),
            (false, None) => select.order_by_asc(id),
            (false, Some(cursor)) => select.order_by_asc(id).filter(id.gt(cursor)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIZE: PageSize = PageSize {
        default: 20,
        max: 100,
    };

    #[test]
    fn paging_fields_are_validated_together() {
        let mut errors = FieldErrors::default();
        let page = PageRequest::<Uuid>::parse(&mut errors, SIZE, Some(0), Some("nope"), None);
        assert!(page.is_none());
        let error = errors.into_error();
        let fields = error.field_errors.unwrap_or_default();
        assert!(fields.contains_key("limit") && fields.contains_key("cursor"));

        let mut errors = FieldErrors::default();
        let id = Uuid::now_v7();
        let page = PageRequest::<Uuid>::parse(
            &mut errors,
            SIZE,
            None,
            Some(&id.to_string()),
            Some(Direction::Backward),
        );
        assert_eq!(
            page,
            Some(PageRequest {
                cursor: Some(id),
                direction: Direction::Backward,
                limit: 20
            })
        );
    }

    #[test]
    fn a_page_ends_with_the_cursor_of_the_next_only_when_there_is_one() {
        let request = PageRequest::<Uuid> {
            cursor: None,
            direction: Direction::Forward,
            limit: 2,
        };
        let ids: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
        let (rows, next) = request.finish(ids.clone(), |id| *id);
        assert_eq!(rows, ids[..2]);
        assert_eq!(next, Some(ids[1].to_string()));
        let (rows, next) = request.finish(ids[..2].to_vec(), |id| *id);
        assert_eq!(rows.len(), 2);
        assert_eq!(next, None);
    }

    #[test]
    fn direction_reads_trpc_names() {
        let forward: Result<Direction, _> = serde_json::from_str("\"forward\"");
        let backward: Result<Direction, _> = serde_json::from_str("\"backward\"");
        assert_eq!(forward.ok(), Some(Direction::Forward));
        assert_eq!(backward.ok(), Some(Direction::Backward));
        assert!(serde_json::from_str::<Direction>("\"sideways\"").is_err());
    }
}
