//! The pieces of charset handling that feeds and pages share, used by the first step of
//! both parsers (raw bytes → text): byte-order mark sniffing, label → encoding lookup
//! (also for a `Content-Type`'s `charset`), and statistical detection with chardetng. The order of the rules, and
//! what each kind of body does with a label, stay with the parsers: feeds read their XML
//! declaration (`source::feed`), pages their `<meta>` tags ([`crate::extract`]).

use chardetng::{EncodingDetector, Iso2022JpDetection, Utf8Detection};
use encoding_rs::Encoding;

/// Bytes given to the charset detector; more adds time, not accuracy.
const DETECTION_WINDOW: usize = 1 << 20;

/// The encoding a byte-order mark at the start of `bytes` names, and the mark's length.
pub(crate) fn sniff_bom(bytes: &[u8]) -> Option<(&'static Encoding, usize)> {
    Encoding::for_bom(bytes)
}

/// The encoding named by the `charset` parameter of a `Content-Type` header value
/// (WHATWG labels: `ISO-8859-1` is windows-1252, `GB2312` is GBK). A label of the
/// "replacement" encoding (`ISO-2022-KR`, `HZ-GB-2312`, …) gives `None`, here and in
/// [`encoding_for_label`]: it would decode the whole body to one U+FFFD, so the next rule
/// decides instead.
pub(crate) fn charset_from_content_type(content_type: &str) -> Option<&'static Encoding> {
    content_type.split(';').skip(1).find_map(|param| {
        let (name, value) = param.split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("charset") {
            return None;
        }
        let value = value.trim().trim_matches(|c| c == '"' || c == '\'');
        encoding_for_label(value.as_bytes())
    })
}

/// The encoding a label names (WHATWG labels, surrounding ASCII whitespace ignored). The
/// "replacement" encoding's labels give `None`: see [`charset_from_content_type`].
pub(crate) fn encoding_for_label(label: &[u8]) -> Option<&'static Encoding> {
    Encoding::for_label(label).filter(|e| *e != encoding_rs::REPLACEMENT)
}

/// Guesses the encoding of `bytes` from their first [`DETECTION_WINDOW`] bytes, helped by
/// the top-level domain of their host (lower-case ASCII, e.g. `b"hk"`) when known.
pub(crate) fn detect_encoding(
    bytes: &[u8],
    tld: Option<&[u8]>,
    utf8: Utf8Detection,
) -> &'static Encoding {
    let mut detector = EncodingDetector::new(Iso2022JpDetection::Deny);
    let window = &bytes[..bytes.len().min(DETECTION_WINDOW)];
    detector.feed(window, true);
    detector.guess(tld, utf8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_charset_parameter_is_read_in_any_case_and_quoting() {
        for value in [
            "text/html; charset=utf-8",
            "text/html;CHARSET=\"UTF-8\"",
            "text/xml; q=1; charset=' utf-8 '",
        ] {
            assert_eq!(
                charset_from_content_type(value),
                Some(encoding_rs::UTF_8),
                "{value}"
            );
        }
        assert_eq!(
            charset_from_content_type("text/html; charset=iso-8859-1"),
            Some(encoding_rs::WINDOWS_1252)
        );
    }

    #[test]
    fn unknown_missing_and_replacement_labels_give_none() {
        for value in [
            "text/html",
            "text/html; charset=bogus",
            "charset=utf-8",
            "text/html; charset=iso-2022-kr",
        ] {
            assert_eq!(charset_from_content_type(value), None, "{value}");
        }
    }

    #[test]
    fn legacy_bytes_are_detected_and_the_tld_helps() {
        let (bytes, _, _) = encoding_rs::GBK.encode("香港政府今日宣布新的房屋政策，市民反應熱烈。");
        assert_eq!(
            detect_encoding(&bytes, Some(b"cn"), Utf8Detection::Allow),
            encoding_rs::GBK
        );
    }
}
