//! Text → words, shared by the query parser and the matcher so that both sides fold text the
//! same way.
//!
//! Place in the pipeline: the matcher stage calls [`for_each_word`] once on a story's title and
//! once on its body; the query parser calls [`fold_words`] on every query word and phrase.
//!
//! The rules (DESIGN §4): Unicode words (UAX #29, `unicode-segmentation`), lowercased, with
//! diacritics folded (NFKD, combining marks dropped, plus a few letters that carry their stroke
//! or ligature in the base character: `ß ø ł đ ı æ œ þ`). Inside a word, every character that is
//! not a letter or digit after folding splits it: hyphens and apostrophes (`'`, `’`, `ʼ`), but
//! also `.` (`U.S.` → `u s`), `_` and `:`. Invisible joiners (soft hyphen, ZWJ, ZWNJ, word
//! joiner, BOM) are skipped without splitting. CJK ideographs come out one word per character,
//! as UAX #29 segments them.

use std::ops::Range;

use unicode_normalization::char::{decompose_compatible, is_combining_mark};
use unicode_segmentation::UnicodeSegmentation;

/// Calls `emit(original_byte_range, folded_word)` for every word of `text`, in order.
///
/// `buf` is scratch space reused between calls, so that tokenising a story allocates nothing
/// once the buffer has grown to the longest word. The byte range always lies on `char`
/// boundaries of `text`.
pub(crate) fn for_each_word(
    text: &str,
    buf: &mut String,
    mut emit: impl FnMut(Range<usize>, &str),
) {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b.is_ascii_alphanumeric() {
            let start = i;
            let mut upper = false;
            while i < bytes.len() && bytes[i].is_ascii_alphanumeric() {
                upper |= bytes[i].is_ascii_uppercase();
                i += 1;
            }
            if i < bytes.len() && bytes[i] >= 0x80 {
                // The word runs on into non-ASCII text: segment the whole stretch.
                i = unicode_stretch(text, start, buf, &mut emit);
            } else if upper {
                buf.clear();
                buf.extend(
                    bytes[start..i]
                        .iter()
                        .map(|c| char::from(c.to_ascii_lowercase())),
                );
                emit(start..i, buf);
            } else {
                emit(start..i, &text[start..i]);
            }
        } else if b < 0x80 {
            i += 1;
        } else {
            i = unicode_stretch(text, i, buf, &mut emit);
        }
    }
}

/// Runs the Unicode path from `start` (a word start, or a non-ASCII character after ASCII
/// punctuation) to the next ASCII whitespace, and returns where it stopped.
///
/// An ASCII run of letters and digits ended by ASCII punctuation or whitespace is a whole word
/// under UAX #29 followed by our splitting, which is why the fast path above may emit it
/// directly; only stretches that touch non-ASCII text need the segmenter. ASCII whitespace is
/// always a word boundary, so segmenting up to it gives the same words as segmenting the text.
fn unicode_stretch(
    text: &str,
    start: usize,
    buf: &mut String,
    emit: &mut impl FnMut(Range<usize>, &str),
) -> usize {
    let bytes = text.as_bytes();
    let mut end = start;
    while end < bytes.len() && !bytes[end].is_ascii_whitespace() {
        end += 1;
    }
    unicode_chunk(&text[start..end], start, buf, emit);
    end
}

/// The folded words of `text`, for the query parser and tests.
pub(crate) fn fold_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut buf = String::new();
    for_each_word(text, &mut buf, |_, w| words.push(w.to_owned()));
    words
}

fn unicode_chunk(
    chunk: &str,
    base: usize,
    buf: &mut String,
    emit: &mut impl FnMut(Range<usize>, &str),
) {
    for (offset, segment) in chunk.split_word_bound_indices() {
        let mut word = WordBuilder {
            buf: &mut *buf,
            start: None,
            end: 0,
        };
        word.buf.clear();
        for (ci, c) in segment.char_indices() {
            let from = base + offset + ci;
            let to = from + c.len_utf8();
            if c.is_ascii() {
                if c.is_ascii_alphanumeric() {
                    word.push(c.to_ascii_lowercase(), from, to);
                } else {
                    word.finish(emit);
                }
                continue;
            }
            if is_invisible_joiner(c) {
                continue;
            }
            decompose_compatible(c, |d| {
                if is_combining_mark(d) {
                    return;
                }
                for lower in d.to_lowercase() {
                    if let Some(folded) = fold_letter(lower) {
                        for f in folded.chars() {
                            word.push(f, from, to);
                        }
                    } else if lower.is_alphanumeric() && !is_apostrophe_letter(lower) {
                        word.push(lower, from, to);
                    } else {
                        word.finish(emit);
                    }
                }
            });
        }
        word.finish(emit);
    }
}

/// Accumulates one folded word and remembers which bytes of the original it came from.
struct WordBuilder<'b> {
    buf: &'b mut String,
    start: Option<usize>,
    end: usize,
}

impl WordBuilder<'_> {
    fn push(&mut self, c: char, from: usize, to: usize) {
        self.start.get_or_insert(from);
        self.end = to;
        self.buf.push(c);
    }

    fn finish(&mut self, emit: &mut impl FnMut(Range<usize>, &str)) {
        if let Some(start) = self.start.take() {
            emit(start..self.end, self.buf);
            self.buf.clear();
        }
    }
}

/// Letters whose diacritic is part of the base character, so NFKD leaves them alone.
fn fold_letter(c: char) -> Option<&'static str> {
    Some(match c {
        'ß' => "ss",
        'ø' => "o",
        'ł' => "l",
        'đ' => "d",
        'ı' => "i",
        'æ' => "ae",
        'œ' => "oe",
        'þ' => "th",
        _ => return None,
    })
}

/// Characters that count as letters in Unicode but are written as apostrophes.
fn is_apostrophe_letter(c: char) -> bool {
    matches!(c, '\u{02BC}' | '\u{02BB}' | '\u{02BD}')
}

/// Format characters that sit inside a word without separating it.
fn is_invisible_joiner(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}' | '\u{200C}' | '\u{200D}' | '\u{2060}' | '\u{FEFF}'
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<String> {
        fold_words(text)
    }

    fn spans(text: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut buf = String::new();
        for_each_word(text, &mut buf, |range, w| {
            out.push((text[range].to_owned(), w.to_owned()))
        });
        out
    }

    #[test]
    fn words_are_lowercased_and_punctuation_is_dropped() {
        assert_eq!(
            words("Trump's TARIFFS, again!"),
            ["trump", "s", "tariffs", "again"]
        );
    }

    #[test]
    fn hyphens_split_words() {
        assert_eq!(words("feed-in tariff"), ["feed", "in", "tariff"]);
        assert_eq!(words("counter‑drone"), ["counter", "drone"]); // U+2011 non-breaking hyphen
        assert_eq!(words("anti–dumping"), ["anti", "dumping"]); // en dash
    }

    #[test]
    fn straight_and_curly_apostrophes_split_words() {
        assert_eq!(words("ship's"), ["ship", "s"]);
        assert_eq!(words("ship’s"), ["ship", "s"]);
        assert_eq!(words("Hawaiʻi ship\u{02BC}s"), ["hawai", "i", "ship", "s"]);
        assert_eq!(words("‘extremely hard’"), ["extremely", "hard"]);
    }

    #[test]
    fn diacritics_are_folded() {
        assert_eq!(
            words("Gökberk Türkiye café naïve"),
            ["gokberk", "turkiye", "cafe", "naive"]
        );
        assert_eq!(words("Łódź Straße Ørsted"), ["lodz", "strasse", "orsted"]);
        assert_eq!(words("İstanbul"), ["istanbul"]);
    }

    #[test]
    fn compatibility_forms_are_folded() {
        assert_eq!(words("ﬁnal ＴＡＲＩＦＦ"), ["final", "tariff"]);
    }

    #[test]
    fn abbreviations_with_dots_split_into_letters() {
        assert_eq!(words("U.S. tariffs"), ["u", "s", "tariffs"]);
    }

    #[test]
    fn cjk_passes_through_one_word_per_ideograph() {
        assert_eq!(
            words("中国关税 tariffs"),
            ["中", "国", "关", "税", "tariffs"]
        );
        assert_eq!(words("日本の関税"), ["日", "本", "の", "関", "税"]);
        assert!(!words("한국 관세").is_empty());
    }

    #[test]
    fn soft_hyphens_do_not_split_words() {
        assert_eq!(words("tar\u{00AD}iff"), ["tariff"]);
    }

    #[test]
    fn original_byte_ranges_cover_the_source_word() {
        assert_eq!(
            spans("Gökberk’s laser"),
            [
                ("Gökberk".to_owned(), "gokberk".to_owned()),
                ("s".to_owned(), "s".to_owned()),
                ("laser".to_owned(), "laser".to_owned())
            ]
        );
    }

    #[test]
    fn empty_and_symbol_only_text_has_no_words() {
        assert!(words("").is_empty());
        assert!(words(" -- … «» 🙂 ").is_empty());
    }
}

#[cfg(test)]
mod proptests {
    use proptest::prelude::*;

    use super::*;

    /// Every chunk through the Unicode path: what the fast path must agree with.
    fn slow_words(text: &str) -> Vec<(Range<usize>, String)> {
        let mut out = Vec::new();
        let mut buf = String::new();
        let mut start = 0;
        for (i, c) in text
            .char_indices()
            .chain(std::iter::once((text.len(), ' ')))
        {
            if c.is_ascii_whitespace() {
                if start < i {
                    unicode_chunk(&text[start..i], start, &mut buf, &mut |r, w: &str| {
                        out.push((r, w.to_owned()))
                    });
                }
                start = i + 1;
            }
        }
        out
    }

    proptest! {
        #[test]
        fn the_ascii_fast_path_agrees_with_the_unicode_path(
            text in "[a-zA-Z0-9 .,'’\\-_:éÉ\u{0301}ß中国の한\u{00AD}\n]{0,40}"
        ) {
            let mut fast = Vec::new();
            let mut buf = String::new();
            for_each_word(&text, &mut buf, |r, w| fast.push((r, w.to_owned())));
            prop_assert_eq!(fast, slow_words(&text));
        }

        #[test]
        fn tokenising_arbitrary_text_never_panics(text in "\\PC{0,80}") {
            let mut buf = String::new();
            for_each_word(&text, &mut buf, |r, _| assert!(text.is_char_boundary(r.start) && text.is_char_boundary(r.end)));
        }
    }
}
