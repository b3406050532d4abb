//! `chat.*`: sessions, messages, streamed AI replies that persist and resume, and search.

pub mod search;
