//! How text becomes search-index terms, shared by the migration that builds the chat search
//! index and by the server that maintains and queries it (one tokenizer, so a query always
//! finds what was indexed).
//!
//! Words are runs of letters and digits, folded: lowercased, Latin accents removed ("Café" and
//! "cafe" are one word), cut to [`MAX_WORD_CHARS`]. Every indexed term and every query term
//! starts with its owner's tag, so each user's terms are a range of their own in the index:
//! a search reads the caller's posting lists only, whatever other users have written.
//!
//! The tag is 64 bits of the owner's id (13 base-32 characters). Two users could share one
//! (about one chance in 2^64 per pair): queries also filter by the owner's id, so that costs
//! time, never privacy. Changing anything here changes the index format: add a migration
//! that reindexes.

use std::collections::HashMap;
use std::ops::Range;

use unicode_normalization::UnicodeNormalization as _;

/// Longer words are cut to a prefix, which still matches the whole word.
pub const MAX_WORD_CHARS: usize = 64;
/// More words narrow a search little but make it slower.
pub const MAX_QUERY_WORDS: usize = 12;
/// Distinct terms of one document, in bytes: past it new words are not indexed (the words
/// already seen still count). Keeps a PostgreSQL tsvector far below its 1 MiB limit even for
/// the longest message of single-character words.
const MAX_TERM_BYTES: usize = 256 * 1024;
/// PostgreSQL keeps positions up to 16383 and at most 256 of them per lexeme.
const MAX_POSITION: usize = 16_383;
const MAX_POSITIONS_PER_TERM: usize = 256;
/// Characters of the owner's tag.
pub const TAG_CHARS: usize = 13;
const TAG_ALPHABET: &[u8; 32] = b"0123456789abcdefghijklmnopqrstuv";

/// One word of a text: where it is, and the form it is indexed and searched under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Word {
    pub range: Range<usize>,
    pub folded: String,
}

/// The words of `text` in order (byte ranges into `text`).
pub fn words(text: &str) -> impl Iterator<Item = Word> + '_ {
    let base = text.as_ptr() as usize;
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty())
        .filter_map(move |word| {
            let start = word.as_ptr() as usize - base;
            let folded = fold(word);
            (!folded.is_empty()).then(|| Word {
                range: start..start + word.len(),
                folded,
            })
        })
}

/// Lowercase, without the combining accents of Latin, Greek and Cyrillic letters (other
/// scripts' marks carry meaning and stay), at most [`MAX_WORD_CHARS`] characters. Never holds
/// ASCII punctuation or spaces, which the index formats use as separators.
pub fn fold(word: &str) -> String {
    word.to_lowercase()
        .nfd()
        .filter(|c| !('\u{300}'..='\u{36f}').contains(c))
        .filter(|c| !c.is_ascii() || c.is_ascii_alphanumeric())
        .take(MAX_WORD_CHARS)
        .collect()
}

/// The owner's tag: 64 bits of the id (both halves mixed, so any UUID version spreads well),
/// in base 32.
pub fn owner_tag(owner: u128) -> String {
    let bits = (owner >> 64) as u64 ^ owner as u64;
    (0..TAG_CHARS)
        .rev()
        .map(|i| char::from(TAG_ALPHABET[((bits >> (i * 5)) & 31) as usize]))
        .collect()
}

/// A text as index terms: each distinct word, tagged, with the positions it occurs at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// Tagged terms in order of first occurrence, with their 1-based positions.
    terms: Vec<(String, Vec<usize>)>,
    /// The indexed words in text order, as indexes into `terms`.
    sequence: Vec<usize>,
}

impl Document {
    pub fn new(owner: u128, text: &str) -> Self {
        let tag = owner_tag(owner);
        let mut terms: Vec<(String, Vec<usize>)> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut sequence = Vec::new();
        let mut bytes = 0;
        for word in words(text) {
            let slot = match index.get(&word.folded) {
                Some(&slot) => slot,
                None if bytes >= MAX_TERM_BYTES => continue,
                None => {
                    bytes += TAG_CHARS + word.folded.len();
                    terms.push((format!("{tag}{}", word.folded), Vec::new()));
                    index.insert(word.folded, terms.len() - 1);
                    terms.len() - 1
                }
            };
            sequence.push(slot);
            let position = sequence.len().min(MAX_POSITION);
            let positions = &mut terms[slot].1;
            if positions.len() < MAX_POSITIONS_PER_TERM && positions.last() != Some(&position) {
                positions.push(position);
            }
        }
        Self { terms, sequence }
    }

    /// No words: nothing to index.
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// For an SQLite FTS5 table with the `ascii` tokenizer: the terms in text order, separated
    /// by spaces (terms hold no ASCII separator; other characters are part of a token there).
    pub fn fts5_text(&self) -> String {
        let mut text = String::new();
        for &slot in &self.sequence {
            if !text.is_empty() {
                text.push(' ');
            }
            text.push_str(&self.terms[slot].0);
        }
        text
    }

    /// A PostgreSQL `tsvector` literal (`'term':1,4 'other':2`), to cast with `::tsvector`:
    /// the terms are taken as they are, no parser or dictionary in between.
    pub fn tsvector(&self) -> String {
        self.terms
            .iter()
            .map(|(term, positions)| {
                let positions = positions
                    .iter()
                    .map(usize::to_string)
                    .collect::<Vec<_>>()
                    .join(",");
                format!("{}:{positions}", quote_lexeme(term))
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// A search: the distinct words of the query (at most [`MAX_QUERY_WORDS`]), each to be found
/// as a prefix of a word of the same owner's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    tag: String,
    words: Vec<String>,
}

impl Query {
    pub fn new(owner: u128, text: &str) -> Self {
        let mut found: Vec<String> = Vec::new();
        for word in words(text) {
            if !found.contains(&word.folded) {
                found.push(word.folded);
                if found.len() == MAX_QUERY_WORDS {
                    break;
                }
            }
        }
        Self {
            tag: owner_tag(owner),
            words: found,
        }
    }

    /// The folded words searched for.
    pub fn words(&self) -> &[String] {
        &self.words
    }

    /// No words: matches nothing.
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// Whether a folded word of a text matches one of the query's.
    pub fn matches(&self, folded: &str) -> bool {
        self.words
            .iter()
            .any(|word| folded.starts_with(word.as_str()))
    }

    /// An FTS5 expression requiring every word as a prefix: `"tagmeet"* "tagnoon"*`. A quoted
    /// string is always a plain phrase to FTS5 (never AND, NEAR, a column filter, ...).
    pub fn fts5_match(&self) -> String {
        self.words
            .iter()
            .map(|word| format!("\"{}{}\"*", self.tag, word))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// A `tsquery` literal requiring every word as a prefix (`'tagmeet':* & 'tagnoon':*`), to
    /// cast with `::tsquery`.
    pub fn tsquery(&self) -> String {
        self.words
            .iter()
            .map(|word| format!("{}:*", quote_lexeme(&format!("{}{word}", self.tag))))
            .collect::<Vec<_>>()
            .join(" & ")
    }
}

/// A lexeme in PostgreSQL's tsvector/tsquery syntax: quoted, `'` doubled, `\` escaped (folded
/// words hold neither, but nothing here relies on that).
fn quote_lexeme(lexeme: &str) -> String {
    format!("'{}'", lexeme.replace('\\', "\\\\").replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: u128 = 0x0192_aaaa_bbbb_7ccc_8ddd_eeee_ffff_0001;
    const BOB: u128 = 0x0192_aaaa_bbbb_7ccc_8ddd_eeee_ffff_0002;

    fn folded(text: &str) -> Vec<String> {
        words(text).map(|word| word.folded).collect()
    }

    fn query(text: &str) -> Vec<String> {
        Query::new(ALICE, text).words().to_vec()
    }

    #[test]
    fn words_are_runs_of_letters_and_digits_folded() {
        assert_eq!(folded("Meet me at 9am!"), ["meet", "me", "at", "9am"]);
        assert_eq!(folded("don't stop"), ["don", "t", "stop"]);
        assert_eq!(folded("naïve CAFÉ, Straße"), ["naive", "cafe", "straße"]);
        assert_eq!(folded("日本語 テキスト"), ["日本語", "テキスト"]);
        assert_eq!(folded("привет,мир Ёлка"), ["привет", "мир", "елка"]);
        assert_eq!(folded("🎉party🎉"), ["party"]);
        let text = "Hi, Zoë!";
        let ranges: Vec<_> = words(text).map(|word| &text[word.range]).collect();
        assert_eq!(ranges, ["Hi", "Zoë"]);
    }

    #[test]
    fn syntax_is_not_a_word() {
        for text in [
            "", "   ", "\"", "*", "'", ":", "&", "!", "(", ")", "|", "<->", "🎉", "''", "\\", "-",
            "^", "{}", "+", "\"*\"", ":*", "\0", "\u{345}",
        ] {
            assert!(query(text).is_empty(), "{text:?} has no words");
        }
        assert_eq!(
            query("NEAR(\"meet\" noon, 3) AND x:*"),
            ["near", "meet", "noon", "3", "and", "x"]
        );
    }

    #[test]
    fn query_words_are_distinct_capped_and_cut() {
        assert_eq!(query("Meet meet MEET noon"), ["meet", "noon"]);
        let many = (0..100)
            .map(|i| format!("w{i}"))
            .collect::<Vec<_>>()
            .join(" ");
        let found = query(&many);
        assert_eq!(found.len(), MAX_QUERY_WORDS);
        assert_eq!(found.first().map(String::as_str), Some("w0"));
        assert_eq!(query(&"é".repeat(10_000)), ["e".repeat(MAX_WORD_CHARS)]);
        assert_eq!(query(&"a ".repeat(5_000)), ["a"]);
    }

    #[test]
    fn tags_are_per_owner_and_fixed_length() {
        let alice = owner_tag(ALICE);
        assert_eq!(alice.len(), TAG_CHARS);
        assert!(alice.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(alice, owner_tag(BOB));
        assert_eq!(owner_tag(0), "0".repeat(TAG_CHARS));
        assert_eq!(owner_tag(u128::from(u64::MAX)), "fvvvvvvvvvvvv");
    }

    #[test]
    fn documents_tag_every_term() {
        let tag = owner_tag(ALICE);
        let doc = Document::new(ALICE, "Meet at noon, then MEET again");
        assert_eq!(
            doc.fts5_text(),
            format!("{tag}meet {tag}at {tag}noon {tag}then {tag}meet {tag}again")
        );
        assert_eq!(
            doc.tsvector(),
            format!("'{tag}meet':1,5 '{tag}at':2 '{tag}noon':3 '{tag}then':4 '{tag}again':6")
        );
        assert!(Document::new(ALICE, "🎉 !!").is_empty());
        assert_eq!(Document::new(ALICE, "").tsvector(), "");
    }

    #[test]
    fn huge_documents_stay_bounded() {
        let many: String = (0..60_000).map(|i| format!("w{i} ")).collect();
        let doc = Document::new(ALICE, &many);
        assert!(
            doc.tsvector().len() < 600 * 1024,
            "{}",
            doc.tsvector().len()
        );
        let repeated = "same ".repeat(50_000);
        let doc = Document::new(ALICE, &repeated);
        let literal = doc.tsvector();
        assert_eq!(literal.matches(',').count(), MAX_POSITIONS_PER_TERM - 1);
    }

    #[test]
    fn queries_are_tagged_prefixes() {
        let tag = owner_tag(ALICE);
        let query = Query::new(ALICE, "Meet \"noon\"");
        assert_eq!(query.fts5_match(), format!("\"{tag}meet\"* \"{tag}noon\"*"));
        assert_eq!(query.tsquery(), format!("'{tag}meet':* & '{tag}noon':*"));
        assert!(query.matches("meeting"));
        assert!(!query.matches("greet"));
        assert!(Query::new(ALICE, "").fts5_match().is_empty());
        assert_eq!(quote_lexeme(r"o'k\"), r"'o''k\\'");
    }
}
