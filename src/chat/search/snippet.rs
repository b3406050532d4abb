//! Excerpts around the matched words, cut from the message text with the tokenizer the index
//! uses, so both backends answer alike.

use search_terms::{Query, Word};

/// Roughly a line of text.
const SNIPPET_WORDS: usize = 16;
/// Matches tried as the centre of the excerpt: a text holding the word thousands of times
/// needs no more.
const MAX_CENTRES: usize = 256;

/// A one-line excerpt of about [`SNIPPET_WORDS`] words around the best cluster of matches,
/// matched words in `**` (the text's own `**`, Markdown bold, removed first so the two cannot
/// be confused), `…` where the text goes on.
pub fn snippet(text: &str, query: &Query) -> String {
    let words: Vec<Word> = search_terms::words(text).collect();
    let hits: Vec<bool> = words.iter().map(|w| query.matches(&w.folded)).collect();
    let (start, end) = window(&words, &hits, query);
    let Some((first, last)) = words
        .get(start)
        .zip(end.checked_sub(1).and_then(|i| words.get(i)))
    else {
        return String::new();
    };
    let from = if start == 0 { 0 } else { first.range.start };
    let to = if end == words.len() {
        text.len()
    } else {
        last.range.end
    };
    let mut out = String::new();
    if start > 0 {
        out.push('…');
    }
    let mut at = from;
    for (word, &hit) in words[start..end].iter().zip(&hits[start..end]) {
        out.push_str(&text[at..word.range.start].replace("**", ""));
        let shown = &text[word.range.clone()];
        if hit {
            out.push_str("**");
            out.push_str(shown);
            out.push_str("**");
        } else {
            out.push_str(shown);
        }
        at = word.range.end;
    }
    out.push_str(&text[at..to].replace("**", ""));
    if end < words.len() {
        out.push('…');
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The words to show, `start..end`: the window of [`SNIPPET_WORDS`] centred on a match that
/// covers the most query words, then the most matches; the earliest such.
fn window(words: &[Word], hits: &[bool], query: &Query) -> (usize, usize) {
    let count = words.len();
    if count <= SNIPPET_WORDS {
        return (0, count);
    }
    let place = |centre: usize| {
        let start = centre
            .saturating_sub((SNIPPET_WORDS - 1) / 2)
            .min(count - SNIPPET_WORDS);
        (start, start + SNIPPET_WORDS)
    };
    let score = |(start, end): (usize, usize)| {
        let shown = &words[start..end];
        let covered = query
            .words()
            .iter()
            .filter(|q| shown.iter().any(|w| w.folded.starts_with(q.as_str())))
            .count();
        let matches = hits[start..end].iter().filter(|&&hit| hit).count();
        (covered, matches)
    };
    let mut best = (place(0), (0, 0));
    for centre in (0..count).filter(|&i| hits[i]).take(MAX_CENTRES) {
        let candidate = place(centre);
        let candidate_score = score(candidate);
        if candidate_score > best.1 {
            best = (candidate, candidate_score);
        }
    }
    best.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut(text: &str, query: &str) -> String {
        snippet(text, &Query::new(1, query))
    }

    #[test]
    fn short_texts_are_whole_with_matches_marked() {
        assert_eq!(
            cut("Quarterly budget review", "budget review"),
            "Quarterly **budget** **review**"
        );
        assert_eq!(
            cut("Can we meet on Friday instead?", "MEET"),
            "Can we **meet** on Friday instead?"
        );
        assert_eq!(cut("Le café est fermé", "cafe"), "Le **café** est fermé");
        assert_eq!(cut("", "meet"), "");
    }

    #[test]
    fn own_bold_is_removed_and_lines_joined() {
        assert_eq!(
            cut("see **bold**\n\nthen  meet at noon", "meet"),
            "see bold then **meet** at noon"
        );
    }

    #[test]
    fn long_texts_are_cut_around_the_match() {
        let filler = (1..=40)
            .map(|i| format!("word{i}"))
            .collect::<Vec<_>>()
            .join(" ");
        let text = format!("{filler} the **important** meeting\n\nis at noon {filler}");
        let excerpt = cut(&text, "meeting");
        assert!(
            excerpt.contains("important **meeting** is at noon"),
            "{excerpt}"
        );
        assert!(
            excerpt.starts_with('…') && excerpt.ends_with('…'),
            "{excerpt}"
        );
        assert_eq!(excerpt.split_whitespace().count(), SNIPPET_WORDS);
        let start = cut(&format!("Meeting {filler}"), "meet");
        assert!(
            start.starts_with("**Meeting** word1") && start.ends_with('…'),
            "{start}"
        );
    }

    #[test]
    fn the_window_covering_most_words_wins() {
        let filler = "x ".repeat(30);
        let text = format!("apple {filler} apple banana {filler}");
        let excerpt = cut(&text, "apple banana");
        assert!(excerpt.contains("**apple** **banana**"), "{excerpt}");
    }
}
