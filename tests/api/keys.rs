//! `apiKeys.*` and envelope encryption over HTTP.
