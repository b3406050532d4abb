//! Checks every domain applies to free text from clients before storing it.

/// Text people write: any character but controls, except line breaks and tabs. Controls have
/// no place in it, break logs and displays, and PostgreSQL refuses NUL outright.
pub fn check_plain(text: &str) -> Result<(), String> {
    if text
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\t'))
    {
        Err("remove control characters (only line breaks and tabs are allowed)".to_owned())
    } else {
        Ok(())
    }
}

/// A one-line value (a name, a URL): no control characters at all.
pub fn check_single_line(text: &str) -> Result<(), String> {
    if text.chars().any(char::is_control) {
        Err("remove line breaks, tabs and other control characters".to_owned())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_line_breaks_and_tabs_pass_in_plain_text() {
        assert!(check_plain("two\nlines\tand a tab").is_ok());
        for bad in ["nul\u{0}", "bell\u{7}", "cr\r", "del\u{7f}", "c1\u{85}"] {
            assert!(check_plain(bad).is_err(), "{bad:?}");
        }
        assert!(check_single_line("Ada Lovelace").is_ok());
        assert!(check_single_line("two\nlines").is_err());
    }
}
