//! Charset of a fetched feed body, the first step of [`super::parse_feed`]: the raw bytes
//! become UTF-8 text before any XML or JSON parsing happens.
//!
//! Order (DESIGN §2): byte-order mark, then the XML declaration's `encoding`, then the
//! HTTP `Content-Type` charset, then detection (chardetng, helped by the feed's TLD).
//! Labels follow the WHATWG Encoding Standard (`ISO-8859-1` and `US-ASCII` mean
//! windows-1252, `GB2312` means GBK). Decoding is lossy: bytes that are invalid in the
//! chosen encoding become U+FFFD, never an error.
//!
//! Two kinds of mislabelling are repaired: a `UTF-16` label on ASCII-compatible bytes is
//! ignored (the bytes could not have been read otherwise), and a `UTF-8` label on bytes
//! that hold no valid multi-byte UTF-8 sequence at all but do hold invalid ones is taken
//! to be a legacy encoding in disguise and detected instead. A UTF-8 feed with a few
//! stray bytes stays UTF-8 with U+FFFD in their place.

use std::borrow::Cow;

use chardetng::Utf8Detection;
use encoding_rs::{Encoding, UTF_8, UTF_16BE, UTF_16LE};

use super::prolog::find;
use crate::text::charset::{
    charset_from_content_type, detect_encoding, encoding_for_label, sniff_bom,
};

/// How far into the body the XML declaration is looked for.
const DECLARATION_WINDOW: usize = 1024;

/// Decodes a feed body to UTF-8 text; returns the text and the encoding that was used.
///
/// The text still carries the original XML declaration (with its original `encoding`);
/// [`super::parse_feed`] rewrites that before parsing.
pub fn decode_feed_text(bytes: &[u8], content_type: Option<&str>) -> (String, &'static Encoding) {
    let (text, encoding) = decode_feed_text_for_tld(bytes, content_type, None);
    (text.into_owned(), encoding)
}

/// [`decode_feed_text`], with the top-level domain of the feed's host as a detection hint
/// (lower-case ASCII, e.g. `b"hk"`; anything else is ignored). Valid UTF-8 is borrowed,
/// not copied.
pub(crate) fn decode_feed_text_for_tld<'a>(
    bytes: &'a [u8],
    content_type: Option<&str>,
    tld: Option<&[u8]>,
) -> (Cow<'a, str>, &'static Encoding) {
    let tld = tld.filter(|t| {
        !t.is_empty()
            && t.iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
    });

    if let Some((encoding, bom_len)) = sniff_bom(bytes) {
        return decode_as(&bytes[bom_len..], encoding, tld);
    }
    if let Some(encoding) = sniff_utf16_without_bom(bytes) {
        return decode_as(bytes, encoding, tld);
    }
    if let Some(encoding) = declared_encoding(bytes).filter(usable_label) {
        return decode_as(bytes, encoding, tld);
    }
    if let Some(encoding) = content_type
        .and_then(charset_from_content_type)
        .filter(usable_label)
    {
        return decode_as(bytes, encoding, tld);
    }
    if let Ok(text) = std::str::from_utf8(bytes) {
        return (Cow::Borrowed(text), UTF_8);
    }
    let encoding = detect_encoding(bytes, tld, Utf8Detection::Allow);
    decode_as(bytes, encoding, tld)
}

/// The encoding named in the XML declaration at the start of `bytes`, if any.
pub(crate) fn declared_encoding(bytes: &[u8]) -> Option<&'static Encoding> {
    let window = &bytes[..bytes.len().min(DECLARATION_WINDOW)];
    let start = window.iter().position(|b| !b.is_ascii_whitespace())?;
    let decl = &window[start..];
    if !decl.starts_with(b"<?xml") {
        return None;
    }
    let end = find(decl, b"?>")?;
    let decl = &decl[..end];
    let at = find(decl, b"encoding")?;
    let rest = &decl[at + b"encoding".len()..];
    let rest = rest.trim_ascii_start();
    let rest = rest.strip_prefix(b"=")?.trim_ascii_start();
    let quote = *rest.first()?;
    if quote != b'"' && quote != b'\'' {
        return None;
    }
    let value = &rest[1..];
    let close = value.iter().position(|b| *b == quote)?;
    encoding_for_label(&value[..close])
}

/// Labels that can describe bytes we reached without a BOM: not UTF-16 (the bytes are
/// ASCII-compatible, or we could not have read the label). The "replacement" encoding
/// never gets here: `crate::text::charset` reads its labels as unknown.
fn usable_label(encoding: &&'static Encoding) -> bool {
    *encoding != UTF_16LE && *encoding != UTF_16BE
}

/// UTF-16 without a BOM shows itself by `<` next to a zero byte.
fn sniff_utf16_without_bom(bytes: &[u8]) -> Option<&'static Encoding> {
    match bytes {
        [b'<', 0, x, 0, ..] if x.is_ascii() && *x != 0 => Some(UTF_16LE),
        [0, b'<', 0, x, ..] if x.is_ascii() && *x != 0 => Some(UTF_16BE),
        _ => None,
    }
}

fn decode_as<'a>(
    bytes: &'a [u8],
    encoding: &'static Encoding,
    tld: Option<&[u8]>,
) -> (Cow<'a, str>, &'static Encoding) {
    if encoding == UTF_8 {
        return decode_labelled_utf8(bytes, tld);
    }
    let (text, _had_errors) = encoding.decode_without_bom_handling(bytes);
    (text, encoding)
}

/// Bytes said to be UTF-8. Valid: as is. Invalid, with no valid multi-byte sequence at
/// all: a legacy encoding under a wrong label, so detect. Otherwise lossy UTF-8.
fn decode_labelled_utf8<'a>(
    bytes: &'a [u8],
    tld: Option<&[u8]>,
) -> (Cow<'a, str>, &'static Encoding) {
    if let Ok(text) = std::str::from_utf8(bytes) {
        return (Cow::Borrowed(text), UTF_8);
    }
    let mut valid_non_ascii = false;
    let mut invalid = false;
    for chunk in bytes.utf8_chunks() {
        valid_non_ascii |= !chunk.valid().is_ascii();
        invalid |= !chunk.invalid().is_empty();
        if valid_non_ascii {
            break;
        }
    }
    if invalid && !valid_non_ascii {
        let encoding = detect_encoding(bytes, tld, Utf8Detection::Deny);
        let (text, _had_errors) = encoding.decode_without_bom_handling(bytes);
        return (text, encoding);
    }
    (String::from_utf8_lossy(bytes), UTF_8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(text: &str, encoding: &'static Encoding) -> Vec<u8> {
        let (bytes, _, unmappable) = encoding.encode(text);
        assert!(!unmappable, "test text must be representable");
        bytes.into_owned()
    }

    #[test]
    fn a_bom_wins_over_every_label() {
        let mut bytes = vec![0xFF, 0xFE];
        bytes.extend(
            "<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><rss/>"
                .encode_utf16()
                .flat_map(u16::to_le_bytes),
        );
        let (text, encoding) = decode_feed_text(&bytes, Some("text/xml; charset=big5"));
        assert_eq!(encoding, UTF_16LE);
        assert!(text.starts_with("<?xml"));
    }

    #[test]
    fn the_xml_declaration_wins_over_the_http_charset() {
        let bytes = encode(
            "<?xml version='1.0' encoding='windows-1252'?><t>café</t>",
            encoding_rs::WINDOWS_1252,
        );
        let (text, encoding) = decode_feed_text(&bytes, Some("application/rss+xml; charset=utf-8"));
        assert_eq!(encoding, encoding_rs::WINDOWS_1252);
        assert!(text.contains("café"));
    }

    #[test]
    fn the_http_charset_is_used_when_the_declaration_has_none() {
        let bytes = encode("<?xml version=\"1.0\"?><t>中文</t>", encoding_rs::GBK);
        let (text, encoding) = decode_feed_text(&bytes, Some("text/xml; charset=\"gb2312\""));
        assert_eq!(encoding, encoding_rs::GBK);
        assert!(text.contains("中文"));
    }

    #[test]
    fn a_utf16_label_on_ascii_bytes_is_ignored() {
        let (text, encoding) =
            decode_feed_text(b"<?xml version='1.0' encoding='utf-16'?><t>x</t>", None);
        assert_eq!(encoding, UTF_8);
        assert!(text.ends_with("<t>x</t>"));
    }

    #[test]
    fn utf8_with_a_few_stray_bytes_stays_utf8_lossily() {
        let mut bytes = "<?xml version='1.0' encoding='utf-8'?><t>naïve "
            .as_bytes()
            .to_vec();
        bytes.extend([0xFF, 0xFE]);
        bytes.extend(b"</t>");
        let (text, encoding) = decode_feed_text(&bytes, None);
        assert_eq!(encoding, UTF_8);
        assert!(text.contains("naïve \u{FFFD}"));
    }

    #[test]
    fn a_utf8_label_on_pure_windows_1252_bytes_is_detected_instead() {
        let body = "<?xml version='1.0' encoding='utf-8'?><rss><t>Déjà vu à la café, \
                    élève fâché, señor</t></rss>";
        let bytes = encode(body, encoding_rs::WINDOWS_1252);
        let (text, encoding) = decode_feed_text(&bytes, None);
        assert_ne!(encoding, UTF_8);
        assert!(text.contains("Déjà vu"), "{text}");
    }

    #[test]
    fn utf16_without_a_bom_is_sniffed() {
        let bytes: Vec<u8> = "<rss/>".encode_utf16().flat_map(u16::to_be_bytes).collect();
        let (text, encoding) = decode_feed_text(&bytes, None);
        assert_eq!(encoding, UTF_16BE);
        assert_eq!(text, "<rss/>");
    }

    #[test]
    fn unknown_labels_fall_through_to_detection() {
        let (text, encoding) =
            decode_feed_text(b"<?xml version='1.0' encoding='bogus-9'?><t>x</t>", None);
        assert_eq!(encoding, UTF_8);
        assert!(text.ends_with("<t>x</t>"));
    }
}
