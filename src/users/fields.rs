//! Account fields parsed once at the edge: past here an `Email` is normalized and valid.

use crate::text;

/// A normalized email address: trimmed and lower-cased, so comparisons ignore case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let email = raw.trim().to_lowercase();
        let valid = email.len() <= 254
            && !email.chars().any(|c| c.is_whitespace() || c.is_control())
            && email.split_once('@').is_some_and(|(local, domain)| {
                !local.is_empty()
                    && local.len() <= 64
                    && !domain.contains('@')
                    && domain.split('.').count() >= 2
                    && domain.split('.').all(|label| !label.is_empty())
            });
        if valid {
            Ok(Self(email))
        } else {
            Err("enter a valid email address".to_owned())
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// A person's name as shown in the app: trimmed, 1 to 100 characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayName(String);

impl DisplayName {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let name = raw.trim();
        let length = name.chars().count();
        if length == 0 {
            Err("enter a name".to_owned())
        } else if length > 100 {
            Err("use at most 100 characters".to_owned())
        } else {
            text::check_single_line(name).map(|()| Self(name.to_owned()))
        }
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

pub fn parse_avatar_url(raw: &str) -> Result<String, String> {
    text::check_single_line(raw)?;
    let valid = raw.len() <= 2048
        && reqwest::Url::parse(raw)
            .is_ok_and(|url| url.scheme() == "https" && url.host().is_some());
    if valid {
        Ok(raw.to_owned())
    } else {
        Err("use an https URL of at most 2048 characters".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalized_and_checked() {
        assert_eq!(
            Email::parse("  Ada@Example.COM ").map(Email::into_string),
            Ok("ada@example.com".to_owned())
        );
        for bad in [
            "",
            "ada",
            "ada@",
            "@example.com",
            "ada@example",
            "a da@example.com",
            "a@b@c.com",
            "ada@.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(
            DisplayName::parse("  Ada ").map(DisplayName::into_string),
            Ok("Ada".to_owned())
        );
        assert!(DisplayName::parse("   ").is_err());
        assert!(DisplayName::parse(&"x".repeat(101)).is_err());
    }

    #[test]
    fn avatars_must_be_https() {
        assert!(parse_avatar_url("https://cdn.example.com/a.png").is_ok());
        assert!(parse_avatar_url("http://cdn.example.com/a.png").is_err());
        assert!(parse_avatar_url("javascript:alert(1)").is_err());
    }
}
