//! From a Gmail `messages.get` answer to what is stored: headers, date and plain text (HTML
//! converted), with control characters removed and the text trimmed to a budget.

use base64::Engine as _;
use chrono::{DateTime, Utc};

use crate::google::{Message, MessagePart};

/// A message as stored.
pub struct Parsed {
    pub gmail_id: String,
    pub thread_id: String,
    pub from: String,
    pub to: String,
    pub cc: String,
    pub subject: String,
    pub date: DateTime<Utc>,
    pub labels: String,
    pub snippet: String,
    pub body: String,
}

pub fn parse(message: Message, body_chars: usize) -> Parsed {
    let header = |name: &str| {
        message
            .payload
            .as_ref()
            .and_then(|part| {
                part.headers
                    .iter()
                    .find(|header| header.name.eq_ignore_ascii_case(name))
            })
            .map(|header| clean(&header.value, 2000))
            .unwrap_or_default()
    };
    let date = message
        .internal_date
        .as_deref()
        .and_then(|ms| ms.parse::<i64>().ok())
        .and_then(DateTime::from_timestamp_millis)
        .unwrap_or_else(Utc::now);
    let body = message
        .payload
        .as_ref()
        .and_then(|part| {
            find_text(part, "text/plain")
                .or_else(|| find_text(part, "text/html").map(|html| html_to_text(&html)))
        })
        .unwrap_or_default();
    Parsed {
        from: header("From"),
        to: header("To"),
        cc: header("Cc"),
        subject: header("Subject"),
        date,
        labels: message.label_ids.join(" "),
        snippet: clean(&decode_entities(&message.snippet), 1000),
        body: clean(&body, body_chars),
        gmail_id: message.id,
        thread_id: message.thread_id,
    }
}

/// The first part of `mime_type`, depth first, decoded.
fn find_text(part: &MessagePart, mime_type: &str) -> Option<String> {
    if part.mime_type.eq_ignore_ascii_case(mime_type) {
        let data = part.body.as_ref()?.data.as_deref()?;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(data.trim_end_matches('='))
            .ok()?;
        return Some(String::from_utf8_lossy(&bytes).into_owned());
    }
    part.parts
        .iter()
        .find_map(|child| find_text(child, mime_type))
}

/// Keeps line breaks and tabs, drops other control characters, collapses blank runs, and
/// cuts at `max_chars`.
fn clean(text: &str, max_chars: usize) -> String {
    let mut out = String::new();
    let mut blank_lines = 0;
    for line in text.lines() {
        let line: String = line
            .chars()
            .filter(|c| *c == '\t' || !c.is_control())
            .collect();
        let line = line.trim_end();
        if line.trim().is_empty() {
            blank_lines += 1;
            if blank_lines > 1 {
                continue;
            }
        } else {
            blank_lines = 0;
        }
        out.push_str(line);
        out.push('\n');
    }
    let trimmed = out.trim();
    match trimmed.char_indices().nth(max_chars) {
        Some((end, _)) => trimmed[..end].to_owned(),
        None => trimmed.to_owned(),
    }
}

/// Readable text from HTML: scripts and styles dropped, block ends as line breaks, tags
/// removed, common entities decoded.
fn html_to_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len() / 2);
    let mut rest = html;
    while let Some(start) = rest.find('<') {
        out.push_str(&rest[..start]);
        let tag_text = &rest[start + 1..];
        let Some(end) = tag_text.find('>') else {
            rest = "";
            break;
        };
        let tag = tag_text[..end].trim().to_ascii_lowercase();
        let name: String = tag
            .trim_start_matches('/')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect();
        rest = &tag_text[end + 1..];
        if (name == "script" || name == "style") && !tag.starts_with('/') {
            let close = format!("</{name}");
            rest = match rest.to_ascii_lowercase().find(&close) {
                Some(at) => rest[at..].find('>').map_or("", |gt| &rest[at + gt + 1..]),
                None => "",
            };
            continue;
        }
        if matches!(
            name.as_str(),
            "br" | "p" | "div" | "li" | "tr" | "h1" | "h2" | "h3" | "h4" | "blockquote"
        ) {
            out.push('\n');
        }
    }
    out.push_str(rest);
    decode_entities(&out)
}

fn decode_entities(text: &str) -> String {
    text.replace("&nbsp;", " ")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&#x27;", "'")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_becomes_text() {
        let html = "<html><style>p{color:red}</style><p>Hi&nbsp;Dana,</p><div>The <b>board</b> deck &amp; notes</div><script>alert(1)</script>";
        assert_eq!(
            clean(&html_to_text(html), 100),
            "Hi Dana,\n\nThe board deck & notes"
        );
    }

    #[test]
    fn text_is_cut_at_the_budget() {
        assert_eq!(clean("héllo wörld", 5), "héllo");
    }
}
