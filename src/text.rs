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

/// `text` as HTML text or an attribute value (quoted with `"` or `'`): the five characters
/// that could end one or start markup are escaped.
pub fn escape_html(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
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

    #[test]
    fn html_escaping_leaves_no_markup() {
        assert_eq!(
            escape_html(r#"<img src=x onerror="alert('1')"> & co"#),
            "&lt;img src=x onerror=&quot;alert(&#39;1&#39;)&quot;&gt; &amp; co"
        );
    }
}
