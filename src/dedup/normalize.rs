//! Body normalisation and the content hash (DESIGN §3): the dedup stage hashes what a
//! reader would read, so markup, whitespace, case, typographic variants and the
//! boilerplate that feeds and pages wrap around a story do not make a new version of it.
//!
//! [`normalize_body`] is also the text that [`crate::dedup::Fingerprint`] shingles.
//! Steps, in order:
//!
//! 1. leftover markup is removed: tags (block tags become line breaks), comments, and the
//!    content of `<script>`, `<style>`, `<noscript>` and `<template>`;
//! 2. character references are decoded (`&amp;`, `&#8230;`, `&#x2019;`, …);
//! 3. each line loses a WordPress/Yoast footer (`The post … appeared first on …`);
//! 4. Unicode NFKC, lowercase, curly quotes and dashes folded to ASCII, invisible
//!    characters (zero-width spaces, soft hyphens, BOM) removed;
//! 5. excerpt markers (`[…]`, `[...]`) and trailing `Read more` / `Continue reading` links
//!    are removed, and boilerplate lines (share, subscribe, follow, advertisement, …) dropped;
//! 6. whitespace, line breaks included, collapses to single spaces.

use unicode_normalization::{IsNormalized, UnicodeNormalization, is_nfkc_quick};

use crate::text::boilerplate::{remove_excerpt_markers, strip_yoast_footer};
use crate::text::entities::decode_entities;
use crate::text::markup::strip_markup;

/// Starts of lines that are site furniture, not story, when the line is short.
const BOILERPLATE_STARTS: &[&str] = &[
    "advertisement",
    "also read",
    "click here",
    "continue reading",
    "follow us",
    "like us on",
    "read more",
    "read next",
    "read the full",
    "related articles",
    "related stories",
    "related:",
    "see also",
    "share on",
    "share this",
    "share via",
    "share:",
    "sign up for",
    "sign up to",
    "subscribe",
    "support our journalism",
];

/// Words a line may have and still be judged boilerplate by its start.
const BOILERPLATE_MAX_WORDS: usize = 12;

/// Link texts that feeds append to the last line of an excerpt.
const TRAILING_LINKS: &[&str] = &["read more", "continue reading"];

/// Normalises a story body for hashing and fingerprinting (see the module docs for the
/// steps). The result is one line of lowercase words separated by single spaces.
pub fn normalize_body(text: &str) -> String {
    let stripped = strip_markup(text);
    let plain = decode_entities(&stripped);
    let mut out = String::with_capacity(plain.len());
    for line in plain.lines() {
        let line = fold_characters(strip_yoast_footer(line));
        let line = remove_excerpt_markers(&line);
        let line = strip_trailing_link(&line);
        if is_boilerplate_line(line) {
            continue;
        }
        for word in line.split_whitespace() {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(word);
        }
    }
    out
}

/// BLAKE3 of [`normalize_body`]`(text)`, as 64 lowercase hex digits: the value of
/// `stories.content_hash`.
pub fn content_hash(text: &str) -> String {
    hash_normalized(&normalize_body(text))
}

/// [`content_hash`] of a body already passed through [`normalize_body`].
pub fn hash_normalized(normalized: &str) -> String {
    blake3::hash(normalized.as_bytes()).to_hex().to_string()
}

/// NFKC, lowercase, ASCII quotes and dashes, no invisible characters.
fn fold_characters(line: &str) -> String {
    // ASCII is its own NFKC form and needs no folding: the common case, done cheaply.
    if line.is_ascii() {
        return line.to_ascii_lowercase();
    }
    if is_nfkc_quick(line.chars()) == IsNormalized::Yes {
        fold_lowercase(line.chars())
    } else {
        fold_lowercase(line.nfkc())
    }
}

/// Lowercases NFKC text and folds quotes, dashes and invisible characters.
fn fold_lowercase(chars: impl Iterator<Item = char>) -> String {
    chars
        .flat_map(char::to_lowercase)
        .filter_map(|c| match c {
            '\u{2018}' | '\u{2019}' | '\u{201A}' | '\u{201B}' | '\u{2032}' => Some('\''),
            '\u{201C}' | '\u{201D}' | '\u{201E}' | '\u{201F}' | '\u{2033}' | '«' | '»' => {
                Some('"')
            }
            '\u{2010}'..='\u{2015}' | '\u{2212}' => Some('-'),
            '\u{00AD}' | '\u{200B}'..='\u{200D}' | '\u{2060}' | '\u{FEFF}' => None,
            c => Some(c),
        })
        .collect()
}

/// Removes a `read more` / `continue reading` link text that ends a line.
fn strip_trailing_link(line: &str) -> &str {
    let trimmed = line.trim_end_matches(|c: char| {
        c.is_whitespace() || matches!(c, '.' | '>' | '"' | '\u{2192}' | '\u{203A}' | ':')
    });
    for link in TRAILING_LINKS {
        if let Some(head) = trimmed.strip_suffix(link)
            && (head.is_empty() || head.ends_with(char::is_whitespace))
        {
            return head;
        }
    }
    line
}

/// Whether a normalised line is empty or site furniture (share, subscribe, …).
fn is_boilerplate_line(line: &str) -> bool {
    let line = line.trim_matches(|c: char| c.is_whitespace() || matches!(c, '|' | '-' | '*'));
    if line.is_empty() {
        return true;
    }
    line.split_whitespace().count() <= BOILERPLATE_MAX_WORDS
        && BOILERPLATE_STARTS
            .iter()
            .any(|start| line.starts_with(start))
}

#[cfg(test)]
mod tests {
    use super::*;

    const STORY: &str = "Harbour officials said on Tuesday that the new ferry pier \
        would open in March.\n\nThe pier, built at a cost of HK$1.2 billion, \
        replaces a structure damaged by a typhoon.";

    #[test]
    fn normalised_text_is_lowercase_words_separated_by_single_spaces() {
        assert_eq!(
            normalize_body("  The  Pier\n\n\tOPENS   today. "),
            "the pier opens today."
        );
    }

    #[test]
    fn markup_only_changes_keep_the_hash() {
        let marked_up = "<p>Harbour officials said on <b>Tuesday</b> that the new ferry \
            pier would open in March.</p><p>The pier, built at a cost of \
            HK$1.2&nbsp;billion, replaces a <a href=\"/typhoon\">structure</a> damaged by \
            a typhoon.</p>";
        assert_eq!(content_hash(marked_up), content_hash(STORY));
    }

    #[test]
    fn scripts_styles_and_comments_do_not_count_as_text() {
        let noisy = format!(
            "<style>p {{ color: red }}</style>{STORY}<!-- ad slot --><script \
             type=\"pmdelayedscript\">var x = '<p>not text</p>';</script>"
        );
        assert_eq!(content_hash(&noisy), content_hash(STORY));
    }

    #[test]
    fn whitespace_only_changes_keep_the_hash() {
        let spaced = STORY.replace(' ', "  \t").replace("\n\n", "\r\n \n\n\n");
        assert_eq!(content_hash(&spaced), content_hash(STORY));
    }

    #[test]
    fn case_only_changes_keep_the_hash() {
        assert_eq!(content_hash(&STORY.to_uppercase()), content_hash(STORY));
    }

    #[test]
    fn typographic_variants_keep_the_hash() {
        let plain = "The minister's \"final\" offer - rejected.";
        let fancy = "The minister\u{2019}s \u{201C}final\u{201D} offer \u{2013} re\u{00AD}jected.";
        assert_eq!(content_hash(fancy), content_hash(plain));
        let entities = "The minister&#8217;s &ldquo;final&rdquo; offer &#x2013; rejected.";
        assert_eq!(content_hash(entities), content_hash(plain));
    }

    #[test]
    fn compatibility_characters_are_nfkc_folded() {
        assert_eq!(normalize_body("ＡＢＣ ﬁnance ①"), "abc finance 1");
    }

    #[test]
    fn a_changed_sentence_changes_the_hash() {
        let edited = STORY.replace("would open in March", "would open in April");
        assert_ne!(content_hash(&edited), content_hash(STORY));
    }

    #[test]
    fn hash_is_blake3_hex_of_the_normalised_text() {
        let hash = content_hash("Hello   <i>World</i>");
        assert_eq!(hash, blake3::hash(b"hello world").to_hex().to_string());
        assert_eq!(hash.len(), 64);
    }

    #[test]
    fn yoast_footer_run_into_the_excerpt_is_dropped() {
        let feed = "Ports are busier than ever. Of [&#8230;]The post Ports boom as \
            exports surge appeared first on Asia Times.";
        assert_eq!(normalize_body(feed), "ports are busier than ever. of");
    }

    #[test]
    fn yoast_footer_on_its_own_line_is_dropped() {
        let feed = format!(
            "{STORY}\nThe post Ferry pier opens appeared first on Hong Kong Free Press HKFP."
        );
        assert_eq!(content_hash(&feed), content_hash(STORY));
    }

    #[test]
    fn a_title_starting_with_the_post_does_not_leave_half_a_footer() {
        let feed = "Sorting centres reopen. […]The post The post office strike ends \
            appeared first on Asia Times.";
        assert_eq!(normalize_body(feed), "sorting centres reopen.");
    }

    #[test]
    fn the_post_inside_a_sentence_is_kept() {
        let text = "She left the post after two years and now runs a school.";
        assert_eq!(
            normalize_body(text),
            "she left the post after two years and now runs a school."
        );
    }

    #[test]
    fn excerpt_markers_are_dropped() {
        for marker in ["[…]", "[...]", "[&#8230;]", "[&hellip;]"] {
            assert_eq!(
                normalize_body(&format!("The fleet sails at dawn {marker}")),
                "the fleet sails at dawn",
                "{marker}"
            );
        }
    }

    #[test]
    fn boilerplate_lines_are_dropped() {
        let wrapped = format!(
            "Advertisement\n{STORY}\nRead more\nShare this:\nShare on Facebook | Share on X\n\
             Subscribe to our newsletter\nSign up for our daily briefing\nFollow us on Instagram\n\
             Related stories"
        );
        assert_eq!(content_hash(&wrapped), content_hash(STORY));
    }

    #[test]
    fn a_trailing_read_more_link_is_dropped() {
        assert_eq!(
            normalize_body("Tariffs rise again. Read more »"),
            "tariffs rise again."
        );
        assert_eq!(
            normalize_body("Tariffs rise again … Continue reading →"),
            "tariffs rise again ..."
        );
    }

    #[test]
    fn long_lines_that_start_like_boilerplate_are_kept() {
        let line = "Subscribers to the city's bike-share scheme will pay more from \
            July under a revised fee schedule published on Monday.";
        assert!(normalize_body(line).starts_with("subscribers to the city's"));
        let short = "Share prices fell sharply.";
        assert_eq!(normalize_body(short), "share prices fell sharply.");
    }

    #[test]
    fn a_less_than_sign_in_text_is_not_markup() {
        assert_eq!(
            normalize_body("Growth was < 2% and x<y held."),
            "growth was < 2% and x<y held."
        );
    }

    #[test]
    fn an_unknown_entity_is_kept_as_written() {
        assert_eq!(normalize_body("AT&T &bogus; R&D"), "at&t &bogus; r&d");
    }

    #[test]
    fn an_unclosed_script_hides_the_rest() {
        assert_eq!(normalize_body("Visible <script>var hidden = 1;"), "visible");
    }
}
