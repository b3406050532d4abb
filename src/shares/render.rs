//! The HTML of share pages: a snapshot's messages with their Markdown rendered
//! (`pulldown-cmark`) and sanitised (`ammonia`), and the small pages for links that are gone.
//! Raw HTML in a message is shown as text, never as markup; every other value is escaped.
//! The one stylesheet is inline and allowed by its hash (see [`style_hash`]), so the page's
//! Content-Security-Policy can refuse every other style and all scripts.

use std::collections::HashSet;
use std::sync::LazyLock;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use pulldown_cmark::{CodeBlockKind, Event, Options, Parser, Tag, TagEnd};
use sha2::{Digest, Sha256};

use super::snapshot::SharedMessage;
use crate::text::escape_html;

const STYLE: &str = "\
:root{color-scheme:light dark;--muted:#6b7280;--user:#eef2ff;--line:#e5e7eb}\
@media (prefers-color-scheme:dark){:root{--muted:#9ca3af;--user:#1e1b4b;--line:#374151}}\
body{font:16px/1.55 system-ui,-apple-system,sans-serif;max-width:46rem;margin:0 auto;padding:1rem;\
overflow-wrap:anywhere}\
h1{font-size:1.4rem;margin:.5rem 0}\
.meta,footer,.who{color:var(--muted);font-size:.85rem}\
article{border-top:1px solid var(--line);padding:.75rem .5rem}\
article.user{background:var(--user);border-radius:.5rem}\
pre{overflow-x:auto;padding:.5rem;border:1px solid var(--line);border-radius:.35rem}\
code{font-family:ui-monospace,monospace;font-size:.9em}\
table{border-collapse:collapse;display:block;overflow-x:auto}\
td,th{border:1px solid var(--line);padding:.25rem .5rem}\
blockquote{margin:0;padding-left:1rem;border-left:3px solid var(--line)}";

/// `'sha256-…'`, the CSP source that allows the page's inline stylesheet and nothing else.
pub fn style_hash() -> &'static str {
    static HASH: LazyLock<String> =
        LazyLock::new(|| format!("'sha256-{}'", STANDARD.encode(Sha256::digest(STYLE))));
    &HASH
}

/// The page of a live link.
pub struct SharePage<'a> {
    pub title: &'a str,
    pub shared_at: DateTime<Utc>,
    pub messages: &'a [SharedMessage],
}

pub fn share_page(page: &SharePage<'_>) -> String {
    let title = escape_html(page.title);
    let count = page.messages.len();
    let mut body = format!(
        "<header><h1>{title}</h1><p class=\"meta\">A conversation shared on {shared} · \
         {count} message{plural}</p></header><main>",
        shared = when(page.shared_at),
        plural = if count == 1 { "" } else { "s" },
    );
    for message in page.messages {
        body.push_str(&article(message));
    }
    body.push_str(
        "</main><footer><p>A read-only copy of a conversation with the ALIAS assistant, as it \
         was when it was shared. Messages are the participants' own words; nothing here was \
         checked.</p></footer>",
    );
    document(&title, &body)
}

/// A page for a link that cannot be shown (unknown, revoked, expired, too many views).
pub fn status_page(heading: &str, explanation: &str) -> String {
    let heading = escape_html(heading);
    let body = format!(
        "<main><h1>{heading}</h1><p>{}</p></main>",
        escape_html(explanation)
    );
    document(&heading, &body)
}

/// `title` and `body` are HTML already.
fn document(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"robots\" content=\"noindex, nofollow, noarchive\">\
         <meta name=\"referrer\" content=\"no-referrer\">\
         <meta property=\"og:type\" content=\"article\">\
         <meta property=\"og:site_name\" content=\"ALIAS\">\
         <meta property=\"og:title\" content=\"{title}\">\
         <title>{title}</title><style>{STYLE}</style></head><body>{body}</body></html>"
    )
}

fn article(message: &SharedMessage) -> String {
    let (class, who) = if message.is_user() {
        ("user", "User".to_owned())
    } else {
        match &message.model {
            Some(model) => ("assistant", format!("Assistant · {}", escape_html(model))),
            None => ("assistant", "Assistant".to_owned()),
        }
    };
    format!(
        "<article class=\"{class}\"><p class=\"who\">{who} · <time datetime=\"{iso}\">{at}\
         </time></p>{content}</article>",
        iso = message.created_at.to_rfc3339(),
        at = when(message.created_at),
        content = markdown(&message.content),
    )
}

fn when(at: DateTime<Utc>) -> String {
    at.format("%-d %B %Y, %H:%M UTC").to_string()
}

/// Markdown as sanitised HTML. Raw HTML becomes text (a block of it is shown as code), and an
/// image becomes a link to it (the page loads nothing from elsewhere).
pub fn markdown(text: &str) -> String {
    let options = Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH;
    let events = Parser::new_ext(text, options).map(|event| match event {
        Event::Html(html) | Event::InlineHtml(html) => Event::Text(html),
        Event::Start(Tag::HtmlBlock) => Event::Start(Tag::CodeBlock(CodeBlockKind::Indented)),
        Event::End(TagEnd::HtmlBlock) => Event::End(TagEnd::CodeBlock),
        Event::Start(Tag::Image {
            link_type,
            dest_url,
            title,
            id,
        }) => Event::Start(Tag::Link {
            link_type,
            dest_url,
            title,
            id,
        }),
        Event::End(TagEnd::Image) => Event::End(TagEnd::Link),
        other => other,
    });
    let mut html = String::new();
    pulldown_cmark::html::push_html(&mut html, events);
    SANITIZER.clean(&html).to_string()
}

/// Ammonia's safe defaults, narrowed: no images, links only to the web and mail, and links
/// open without telling the target where they came from.
static SANITIZER: LazyLock<ammonia::Builder<'static>> = LazyLock::new(|| {
    let mut builder = ammonia::Builder::default();
    builder
        .rm_tags(["img"])
        .url_schemes(HashSet::from(["http", "https", "mailto"]))
        .link_rel(Some("nofollow noopener noreferrer"));
    builder
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_is_rendered() {
        let html = markdown(
            "# Plan\n\n**bold** and `code`\n\n- one\n- two\n\n| a | b |\n|---|---|\n| 1 | 2 |",
        );
        for part in [
            "<h1>Plan</h1>",
            "<strong>bold</strong>",
            "<code>code</code>",
            "<li>one</li>",
            "<td>1</td>",
        ] {
            assert!(html.contains(part), "{part} in {html}");
        }
    }

    #[test]
    fn raw_html_is_shown_as_text_never_markup() {
        for hostile in [
            "<script>window.__pwned = 1</script>",
            "Look: <img src=x onerror=\"window.__pwned=1\"> here",
            "<iframe src=\"https://evil.example\"></iframe>",
            "<a href=\"javascript:alert(1)\">x</a>",
        ] {
            let html = markdown(hostile);
            assert!(!html.contains("<script"), "{html}");
            assert!(!html.contains("<img"), "{html}");
            assert!(!html.contains("<iframe"), "{html}");
            assert!(!html.contains("<a href=\"javascript"), "{html}");
            assert!(html.contains("&lt;"), "shown as text: {html}");
        }
    }

    #[test]
    fn links_stay_on_the_web_and_images_become_links() {
        let html = markdown(
            "[site](https://example.com) [bad](javascript:alert(1)) ![chart](https://example.com/c.png)",
        );
        assert!(html.contains("href=\"https://example.com\""), "{html}");
        assert!(
            html.contains("rel=\"nofollow noopener noreferrer\""),
            "{html}"
        );
        assert!(!html.contains("javascript:"), "{html}");
        assert!(!html.contains("<img"), "{html}");
        assert!(html.contains(">chart</a>"), "{html}");
    }

    #[test]
    fn the_title_is_escaped_everywhere() {
        let page = share_page(&SharePage {
            title: "\"><script>alert(1)</script>",
            shared_at: Utc::now(),
            messages: &[],
        });
        assert!(!page.contains("<script>alert"), "{page}");
        assert!(page.contains("content=\"&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;\""));
    }

    #[test]
    fn the_style_hash_is_the_inline_stylesheet_s() {
        let page = status_page("Gone", "Revoked.");
        let start = page.find("<style>").map_or(0, |at| at + "<style>".len());
        let end = page.find("</style>").unwrap_or(start);
        let digest = STANDARD.encode(Sha256::digest(&page[start..end]));
        assert_eq!(style_hash(), format!("'sha256-{digest}'"));
    }
}
