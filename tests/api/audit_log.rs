//! `audit.list` over HTTP.
