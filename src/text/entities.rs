//! Character references (`&amp;`, `&#8217;`, `&#x2019;`, `&hellip;`) in text whose markup
//! was removed by string handling rather than by an HTML parser: feed titles written as
//! HTML (the feed parser) and the text the dedup stage hashes. Article extraction does not
//! use it: html5ever decodes every reference while it parses a page.
//!
//! Numeric references and the named ones news markup uses are decoded. An unknown name, a
//! reference to NUL, to a surrogate or past U+10FFFF, and a `&` with no `;` within
//! [`MAX_REFERENCE_LEN`] bytes are left as written. `&nbsp;` is U+00A0, as in HTML; the
//! dedup stage folds it to a space like any other no-break space.

use std::borrow::Cow;

/// Longest reference name read between `&` and `;`: every HTML entity name fits
/// (`CounterClockwiseContourIntegral` is 31), and so do zero-padded numbers.
const MAX_REFERENCE_LEN: usize = 32;

/// Decodes the character references in `text`; borrows when it has no `&`.
pub(crate) fn decode_entities(text: &str) -> Cow<'_, str> {
    if !text.contains('&') {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        let decoded = after
            .bytes()
            .take(MAX_REFERENCE_LEN + 1)
            .position(|b| b == b';')
            .and_then(|semi| reference_char(&after[..semi]).map(|c| (c, semi)));
        match decoded {
            Some((c, semi)) => {
                out.push(c);
                rest = &after[semi + 1..];
            }
            None => {
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// The character a reference (the part between `&` and `;`) stands for.
fn reference_char(name: &str) -> Option<char> {
    if let Some(number) = name.strip_prefix('#') {
        let code = match number.strip_prefix(['x', 'X']) {
            Some(hex) => u32::from_str_radix(hex, 16).ok()?,
            None => number.parse().ok()?,
        };
        return char::from_u32(code).filter(|c| *c != '\0');
    }
    Some(match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        "nbsp" => '\u{A0}',
        "ndash" => '–',
        "mdash" => '—',
        "hellip" => '…',
        "lsquo" => '‘',
        "rsquo" => '’',
        "ldquo" => '“',
        "rdquo" => '”',
        "laquo" => '«',
        "raquo" => '»',
        "copy" => '©',
        "reg" => '®',
        "trade" => '™',
        "euro" => '€',
        "pound" => '£',
        "yen" => '¥',
        "deg" => '°',
        "middot" => '·',
        "bull" => '•',
        "times" => '×',
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_and_numeric_references_are_decoded() {
        assert_eq!(
            decode_entities("Fish &amp; chips &#8211; &lt;hot&gt; &#x2019;&#X41; &hellip;"),
            "Fish & chips – <hot> ’A …"
        );
    }

    #[test]
    fn a_no_break_space_stays_a_no_break_space() {
        assert_eq!(
            decode_entities("HK$1.2&nbsp;billion"),
            "HK$1.2\u{A0}billion"
        );
    }

    #[test]
    fn unknown_names_and_bare_ampersands_are_kept_as_written() {
        assert_eq!(
            decode_entities("AT&T &bogus; R&D &amp"),
            "AT&T &bogus; R&D &amp"
        );
    }

    #[test]
    fn references_to_nul_surrogates_or_past_unicode_are_kept_as_written() {
        assert_eq!(
            decode_entities("&#0; &#x0; &#xD800; &#1114112;"),
            "&#0; &#x0; &#xD800; &#1114112;"
        );
    }

    #[test]
    fn a_reference_longer_than_any_entity_name_is_not_read() {
        let longest = format!("&#{}65;", "0".repeat(MAX_REFERENCE_LEN - 3));
        assert_eq!(decode_entities(&longest), "A");
        let too_long = format!("&#{}65;", "0".repeat(MAX_REFERENCE_LEN - 2));
        assert_eq!(decode_entities(&too_long), too_long);
    }

    #[test]
    fn text_without_references_is_borrowed() {
        assert!(matches!(decode_entities("plain"), Cow::Borrowed("plain")));
    }
}
