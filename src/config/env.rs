//! Reading one variable: present or not, parsed, or a `ConfigError` naming it.

use std::str::FromStr;
use std::time::Duration;

use super::ConfigError;

pub(super) struct Env<'a>(pub(super) &'a dyn Fn(&str) -> Option<String>);

impl Env<'_> {
    pub(super) fn get(&self, var: &str) -> Option<String> {
        (self.0)(var)
            .map(|value| value.trim().to_owned())
            .filter(|value| !value.is_empty())
    }

    pub(super) fn parse_with<T>(
        &self,
        var: &'static str,
        default: T,
        parse: impl Fn(&str) -> Option<T>,
        expected: &str,
    ) -> Result<T, ConfigError> {
        match self.get(var) {
            None => Ok(default),
            Some(value) => parse(&value).ok_or_else(|| ConfigError {
                var,
                message: format!("expected {expected}, got {value:?}"),
            }),
        }
    }

    pub(super) fn parse<T: FromStr>(
        &self,
        var: &'static str,
        default: &str,
        expected: &str,
    ) -> Result<T, ConfigError> {
        let value = self.get(var).unwrap_or_else(|| default.to_owned());
        value.parse().map_err(|_| ConfigError {
            var,
            message: format!("expected {expected}, got {value:?}"),
        })
    }

    pub(super) fn parse_positive<T: FromStr + Default + PartialOrd + ToString>(
        &self,
        var: &'static str,
        default: T,
    ) -> Result<T, ConfigError> {
        let parse = |value: &str| value.parse::<T>().ok().filter(|n| *n > T::default());
        self.parse_with(var, default, parse, "a whole number above zero")
    }

    /// A positive whole number of seconds.
    pub(super) fn seconds(&self, var: &'static str, default: u64) -> Result<Duration, ConfigError> {
        self.parse_positive(var, default).map(Duration::from_secs)
    }
}

impl Env<'_> {
    /// A daily limit: a whole number (0 allows nothing) or `unlimited` (`None`).
    pub(super) fn limit(
        &self,
        var: &'static str,
        default: Option<u64>,
    ) -> Result<Option<u64>, ConfigError> {
        let parse = |value: &str| {
            if value.eq_ignore_ascii_case("unlimited") {
                Some(None)
            } else {
                value.parse::<u64>().ok().map(Some)
            }
        };
        self.parse_with(var, default, parse, "a whole number or `unlimited`")
    }

    /// An http(s) base URL; every external service's is configurable so tests can stand in.
    pub(super) fn url(&self, var: &'static str, default: &str) -> Result<String, ConfigError> {
        let value = self.get(var).unwrap_or_else(|| default.to_owned());
        let valid =
            reqwest::Url::parse(&value).is_ok_and(|url| matches!(url.scheme(), "http" | "https"));
        if valid {
            Ok(value)
        } else {
            Err(ConfigError {
                var,
                message: format!("expected an http(s) URL, got {value:?}"),
            })
        }
    }
}

pub(super) fn parse_bool(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Some(true),
        "false" | "0" | "no" => Some(false),
        _ => None,
    }
}
