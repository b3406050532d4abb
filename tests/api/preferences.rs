//! `preferences.*` over HTTP.
