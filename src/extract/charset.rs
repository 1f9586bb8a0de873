//! Page bytes → `String`: the first step after fetching an HTML page (a listing
//! page or an article), before any parsing.
//!
//! The encoding is decided in the order browsers use (DESIGN §2): a byte-order
//! mark, then the `charset` of the HTTP `Content-Type`, then a `<meta charset>` or
//! `<meta http-equiv="Content-Type">` within the first 1024 bytes, then statistical
//! detection (chardetng). Decoding is lossy: bytes that do not decode become U+FFFD.

use chardetng::Utf8Detection;
use encoding_rs::{Encoding, UTF_8, UTF_16BE, UTF_16LE, X_USER_DEFINED};

use crate::text::charset::{
    charset_from_content_type, detect_encoding, encoding_for_label, sniff_bom,
};

/// How far into the page a `<meta>` charset declaration is looked for.
const META_PRESCAN_BYTES: usize = 1024;

/// Decodes a fetched page to a `String` (see the module docs for the order).
pub fn decode_page(bytes: &[u8], content_type: Option<&str>) -> String {
    if let Some((encoding, bom_len)) = sniff_bom(bytes) {
        return decode_with(encoding, &bytes[bom_len..]);
    }
    let encoding = content_type
        .and_then(charset_from_content_type)
        .or_else(|| charset_from_meta(bytes))
        .unwrap_or_else(|| detect(bytes));
    decode_with(encoding, bytes)
}

fn decode_with(encoding: &'static Encoding, bytes: &[u8]) -> String {
    let (text, _had_errors) = encoding.decode_without_bom_handling(bytes);
    text.into_owned()
}

/// The encoding declared by a `<meta>` element near the start of the page
/// (a simplified form of the WHATWG prescan).
pub(crate) fn charset_from_meta(bytes: &[u8]) -> Option<&'static Encoding> {
    let head = &bytes[..bytes.len().min(META_PRESCAN_BYTES)];
    let mut pos = 0;
    while pos < head.len() {
        if head[pos..].starts_with(b"<!--") {
            pos = find(head, pos + 4, b"-->").map_or(head.len(), |end| end + 3);
            continue;
        }
        if head[pos] == b'<' && starts_with_ignore_case(&head[pos + 1..], b"meta") {
            let tag_end = find(head, pos, b">").unwrap_or(head.len());
            if let Some(encoding) = charset_from_meta_tag(&head[pos + 5..tag_end]) {
                // WHATWG: a UTF-16 declaration in the page itself means UTF-8
                // (the page could not have been read this far otherwise).
                if encoding == UTF_16BE || encoding == UTF_16LE {
                    return Some(UTF_8);
                }
                if encoding == X_USER_DEFINED {
                    return Some(encoding_rs::WINDOWS_1252);
                }
                return Some(encoding);
            }
            pos = tag_end;
            continue;
        }
        pos += 1;
    }
    None
}

/// Reads `charset=…` or `http-equiv=content-type content="…charset=…"` from the
/// attribute text of one `<meta …>` tag.
fn charset_from_meta_tag(attrs: &[u8]) -> Option<&'static Encoding> {
    let attrs = String::from_utf8_lossy(attrs).to_ascii_lowercase();
    let mut charset = None;
    let mut content = None;
    let mut is_content_type = false;
    for (name, value) in attribute_pairs(&attrs) {
        match name.as_str() {
            "charset" if charset.is_none() => charset = Some(value),
            "content" if content.is_none() => content = Some(value),
            "http-equiv" => is_content_type = value.trim() == "content-type",
            _ => {}
        }
    }
    if let Some(label) = charset {
        return encoding_for_label(label.trim().as_bytes());
    }
    if is_content_type {
        let content = content?;
        let at = content.find("charset")?;
        let rest = content[at + "charset".len()..].trim_start();
        let rest = rest.strip_prefix('=')?.trim_start();
        let label: String = rest
            .trim_start_matches(['"', '\''])
            .chars()
            .take_while(|c| !matches!(c, ';' | '"' | '\'') && !c.is_whitespace())
            .collect();
        return encoding_for_label(label.as_bytes());
    }
    None
}

/// `name=value` pairs of a tag's attribute text (quoted or bare values).
fn attribute_pairs(attrs: &str) -> Vec<(String, String)> {
    let bytes = attrs.as_bytes();
    let mut pairs = Vec::new();
    let mut i = 0;
    let is_space = |b: u8| b.is_ascii_whitespace() || b == b'/';
    while i < bytes.len() {
        while i < bytes.len() && is_space(bytes[i]) {
            i += 1;
        }
        let name_start = i;
        while i < bytes.len() && !is_space(bytes[i]) && bytes[i] != b'=' {
            i += 1;
        }
        let name = attrs[name_start..i].to_string();
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let mut value = String::new();
        if i < bytes.len() && bytes[i] == b'=' {
            i += 1;
            while i < bytes.len() && bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            if i < bytes.len() && (bytes[i] == b'"' || bytes[i] == b'\'') {
                let quote = bytes[i];
                let start = i + 1;
                let end = bytes[start..]
                    .iter()
                    .position(|&b| b == quote)
                    .map_or(bytes.len(), |p| start + p);
                value = attrs[start..end].to_string();
                i = end + 1;
            } else {
                let start = i;
                while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
                    i += 1;
                }
                value = attrs[start..i].to_string();
            }
        }
        if !name.is_empty() {
            pairs.push((name, value));
        } else {
            i += 1;
        }
    }
    pairs
}

/// Guesses the encoding of undeclared bytes; valid UTF-8 is taken as UTF-8.
fn detect(bytes: &[u8]) -> &'static Encoding {
    if std::str::from_utf8(bytes).is_ok() {
        return UTF_8;
    }
    detect_encoding(bytes, None, Utf8Detection::Allow)
}

fn find(haystack: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    if from >= haystack.len() {
        return None;
    }
    haystack[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| from + p)
}

fn starts_with_ignore_case(bytes: &[u8], prefix: &[u8]) -> bool {
    bytes.len() >= prefix.len() && bytes[..prefix.len()].eq_ignore_ascii_case(prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_utf8_bom_wins_over_a_wrong_header() {
        let bytes = b"\xEF\xBB\xBF<p>caf\xC3\xA9</p>";
        assert_eq!(
            decode_page(bytes, Some("text/html; charset=iso-8859-1")),
            "<p>café</p>"
        );
    }

    #[test]
    fn a_utf16_bom_is_honoured() {
        let mut bytes = vec![0xFF, 0xFE];
        for unit in "<p>hé</p>".encode_utf16() {
            bytes.extend_from_slice(&unit.to_le_bytes());
        }
        assert_eq!(decode_page(&bytes, None), "<p>hé</p>");
    }

    #[test]
    fn the_http_header_charset_wins_over_the_meta_tag() {
        let bytes = b"<meta charset=\"utf-8\"><p>caf\xE9</p>";
        assert_eq!(
            decode_page(bytes, Some("text/html; charset=\"ISO-8859-1\"")),
            "<meta charset=\"utf-8\"><p>café</p>"
        );
    }

    #[test]
    fn a_meta_http_equiv_declaration_is_read() {
        let bytes =
            b"<html><head><meta http-equiv='Content-Type' content='text/html; charset=windows-1252'><p>\x93q\x94</p>";
        assert!(decode_page(bytes, Some("text/html")).contains("<p>\u{201c}q\u{201d}</p>"));
    }

    #[test]
    fn a_meta_charset_after_the_first_kilobyte_is_not_read() {
        let mut bytes = b"<html><head>".to_vec();
        bytes.extend(std::iter::repeat_n(b' ', 1100));
        bytes.extend_from_slice(b"<meta charset=\"koi8-r\">");
        assert_eq!(charset_from_meta(&bytes), None);
    }

    #[test]
    fn a_meta_tag_inside_a_comment_is_ignored() {
        let bytes = b"<!-- <meta charset=\"koi8-r\"> --><meta charset=\"gbk\">";
        assert_eq!(charset_from_meta(bytes), Some(encoding_rs::GBK));
    }

    #[test]
    fn a_utf16_meta_declaration_means_utf8() {
        assert_eq!(charset_from_meta(b"<meta charset=utf-16>"), Some(UTF_8));
    }

    #[test]
    fn undeclared_valid_utf8_is_utf8() {
        assert_eq!(
            decode_page("<p>日本語</p>".as_bytes(), None),
            "<p>日本語</p>"
        );
    }

    #[test]
    fn undeclared_legacy_bytes_are_detected() {
        let (bytes, _, _) = encoding_rs::SHIFT_JIS
            .encode("<p>これは日本語の文章です。東京で新しい店が開きました。</p>");
        assert_eq!(
            decode_page(&bytes, Some("text/html")),
            "<p>これは日本語の文章です。東京で新しい店が開きました。</p>"
        );
    }

    #[test]
    fn an_unknown_label_falls_through_to_the_next_rule() {
        let bytes = b"<meta charset=\"latin-9000\"><p>caf\xC3\xA9</p>";
        assert!(decode_page(bytes, Some("text/html; charset=bogus")).contains("café"));
    }

    #[test]
    fn invalid_bytes_become_replacement_characters() {
        assert_eq!(
            decode_page(b"<meta charset=utf-8>a\xFFb", None),
            "<meta charset=utf-8>a\u{fffd}b"
        );
    }
}
