//! Repairs and workarounds around feed-rs, for [`super::parse_feed`]: stray XML
//! declarations are neutralised before every parse (they make quick-xml switch decoders,
//! or panic); the rest is used only after feed-rs has failed on a feed: escaping bare
//! `&` (the commonest breakage of hand-made feeds), reading an unknown Atom text type as
//! `text`, defusing inputs that make feed-rs 3.0 panic, and locating an XML error by line
//! for the error message.

use quick_xml::Reader;
use quick_xml::events::Event;

use super::prolog::{find, is_name_start};

/// Elements whose text feed-rs 3.0 reads with `Person::parse`, which panics when an
/// e-mail address sits next to a multi-byte character (`王小明（wang@example.com）`).
const PERSON_ELEMENTS: &[&str] = &["dc:creator", "author", "managingEditor", "webMaster"];

/// Elements whose text feed-rs 3.0 reads as a duration, which panics on a digit run too
/// long for a `u64` or on non-ASCII digits.
const DURATION_ELEMENTS: &[&str] = &["itunes:duration"];

/// Escapes every `&` that does not start a character or entity reference, outside CDATA
/// sections, comments and processing instructions. `None` when there is none to escape.
pub(crate) fn escape_bare_ampersands(text: &str) -> Option<String> {
    let b = text.as_bytes();
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut i = 0;
    while let Some(off) = b[i..].iter().position(|c| *c == b'&' || *c == b'<') {
        i += off;
        if b[i] == b'<' {
            let skip_to = [
                (&b"<![CDATA["[..], &b"]]>"[..]),
                (b"<!--", b"-->"),
                (b"<?", b"?>"),
            ]
            .iter()
            .find(|(open, _)| b[i..].starts_with(open))
            .map(|(open, close)| {
                find(&b[i + open.len()..], close)
                    .map_or(b.len(), |p| i + open.len() + p + close.len())
            });
            i = skip_to.unwrap_or(i + 1);
            continue;
        }
        if !starts_reference(&b[i..]) {
            let o = out.get_or_insert_with(|| String::with_capacity(text.len() + 64));
            o.push_str(&text[copied..i]);
            o.push_str("&amp;");
            copied = i + 1;
        }
        i += 1;
    }
    let mut o = out?;
    o.push_str(&text[copied..]);
    Some(o)
}

/// `&name;`, `&#123;` or `&#x1F;` at the start of `b`.
fn starts_reference(b: &[u8]) -> bool {
    let body = &b[1..];
    let end = body.iter().take(32).position(|c| *c == b';');
    let Some(end) = end else { return false };
    let name = &body[..end];
    match name {
        [] => false,
        [b'#', b'x' | b'X', hex @ ..] => !hex.is_empty() && hex.iter().all(u8::is_ascii_hexdigit),
        [b'#', dec @ ..] => !dec.is_empty() && dec.iter().all(u8::is_ascii_digit),
        [first, rest @ ..] => {
            is_name_start(*first)
                && rest
                    .iter()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b':'))
        }
    }
}

/// Where the first well-formedness error of `text` is: its 1-based line and a description.
/// `None` if quick-xml finds the document well-formed.
pub(crate) fn locate_xml_error(text: &str) -> Option<(usize, String)> {
    let mut reader = Reader::from_str(text);
    reader.config_mut().check_end_names = true;
    let mut open: Vec<String> = Vec::new();
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) => open.push(e.name().as_ref().to_owned()),
            Ok(Event::End(_)) => {
                open.pop();
            }
            Ok(Event::Eof) => {
                let name = open.last()?;
                return Some((
                    line_of(text, text.trim_end().len()),
                    format!("document ends inside <{name}> (truncated?)"),
                ));
            }
            Ok(_) => {}
            Err(e) => {
                let pos = usize::try_from(reader.error_position()).unwrap_or(text.len());
                return Some((line_of(text, pos.min(text.len())), e.to_string()));
            }
        }
    }
}

/// The 1-based line of byte offset `pos`.
pub(crate) fn line_of(text: &str, pos: usize) -> usize {
    1 + text.as_bytes()[..pos]
        .iter()
        .filter(|c| **c == b'\n')
        .count()
}

/// `text` with every XML declaration after the first one turned into an ordinary
/// processing instruction (`<?xml-stray …?>`). quick-xml, under feed-rs, switches its
/// decoder on each declaration's `encoding`, and panics when that happens far into the
/// document. The declarations are found by quick-xml itself, so CDATA, comments,
/// attribute values and DOCTYPEs are skipped exactly as feed-rs will skip them; the scan
/// runs only when `<?xml` appears past the start at all. `None` when there is no stray
/// declaration.
pub(crate) fn neutralise_stray_declarations(text: &str) -> Option<String> {
    let leading = text.len() - text.trim_start().len();
    let after_first = leading + text[leading..].chars().next().map_or(0, char::len_utf8);
    if !text[after_first..].contains("<?xml") {
        return None;
    }
    let mut reader = Reader::from_str(text);
    let mut strays: Vec<usize> = Vec::new();
    let mut last_error_at = None;
    loop {
        match reader.read_event() {
            Ok(Event::Decl(declaration)) => {
                let end = usize::try_from(reader.buffer_position()).unwrap_or(0);
                // `<?` + content + `?>`
                let start = end.saturating_sub(declaration.len() + 4);
                if start != leading && text.get(start..start + 5) == Some("<?xml") {
                    strays.push(start);
                }
            }
            Ok(Event::Eof) => break,
            Ok(_) => {}
            // The slice reader is stricter than the one feed-rs uses (a bare `&` stops
            // it): read on past errors, as long as it advances.
            Err(_) => {
                let at = reader.buffer_position();
                if last_error_at == Some(at) {
                    break;
                }
                last_error_at = Some(at);
            }
        }
    }
    if strays.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(text.len() + 6 * strays.len());
    let mut copied = 0;
    for start in strays {
        out.push_str(&text[copied..start]);
        out.push_str("<?xml-stray");
        copied = start + 5;
    }
    out.push_str(&text[copied..]);
    Some(out)
}

/// Length of the tag (or `<!DOCTYPE …>`) at the start of `b`, `<` to `>`, quotes
/// respected; 1 if `b` does not start one, all of `b` if it is unterminated.
fn tag_length(b: &[u8]) -> usize {
    if !b
        .get(1)
        .is_some_and(|c| is_name_start(*c) || *c == b'/' || *c == b'!')
    {
        return 1;
    }
    let mut quote: Option<u8> = None;
    for (i, c) in b.iter().enumerate().skip(1) {
        match (quote, *c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, b'"' | b'\'') => quote = Some(*c),
            (None, b'>') => return i + 1,
            _ => {}
        }
    }
    b.len()
}

/// `text` with every `type="{mime}"` attribute (as feed-rs reported it for an Atom text
/// construct it does not know, e.g. `text/plain`) replaced by `type="html"` when the type
/// names HTML, else `type="text"`. `None` if the attribute is not found.
pub(crate) fn replace_text_construct_type(text: &str, mime: &str) -> Option<String> {
    let replacement = if mime.to_ascii_lowercase().contains("html") {
        "type=\"html\""
    } else {
        "type=\"text\""
    };
    let mut out = text.to_owned();
    let mut changed = false;
    for quote in ['"', '\''] {
        let needle = format!("type={quote}{mime}{quote}");
        if out.contains(&needle) {
            out = out.replace(&needle, replacement);
            changed = true;
        }
    }
    changed.then_some(out)
}

/// `text` with the known panic triggers of feed-rs 3.0 defused: in the text of person
/// elements that hold an `@` next to non-ASCII text or character references, a space is
/// put between ASCII and non-ASCII characters and around references; durations that are
/// not plain ASCII `H:M:S` of sane length are emptied. `None` when there is nothing to
/// defuse.
pub(crate) fn defuse_feed_rs_panics(text: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len() + 64);
    let mut changed = false;
    let mut copied = 0;
    let mut at = 0;
    while let Some(off) = text[at..].find('<') {
        let open_at = at + off;
        at = open_at + 1;
        let Some((name, content)) = element_text_at(text, open_at) else {
            continue;
        };
        let c = &text[content.clone()];
        let replacement = if PERSON_ELEMENTS.contains(&name) {
            (c.contains('@') && (!c.is_ascii() || c.contains('&')))
                .then(|| space_out_wide_characters(c))
        } else if DURATION_ELEMENTS.contains(&name) {
            let sane = c.len() <= 16
                && c.bytes().all(|b| {
                    b.is_ascii_digit() || b == b':' || b == b'.' || b.is_ascii_whitespace()
                });
            (!sane).then(String::new)
        } else {
            None
        };
        if let Some(r) = replacement.filter(|r| r != c) {
            out.push_str(&text[copied..content.start]);
            out.push_str(&r);
            copied = content.end;
            at = content.end;
            changed = true;
        }
    }
    if !changed {
        return None;
    }
    out.push_str(&text[copied..]);
    Some(out)
}

/// The JSON Feed text with the panic trigger of feed-rs 3.0 defused in author names
/// (see [`defuse_feed_rs_panics`]). `None` when there is nothing to defuse.
pub(crate) fn defuse_json_feed_panics(text: &str) -> Option<String> {
    fn defuse_authors(value: &mut serde_json::Value, changed: &mut bool) {
        let Some(object) = value.as_object_mut() else {
            return;
        };
        for key in ["author", "authors"] {
            let people: Vec<&mut serde_json::Value> = match object.get_mut(key) {
                Some(serde_json::Value::Array(list)) => list.iter_mut().collect(),
                Some(one @ serde_json::Value::Object(_)) => vec![one],
                _ => continue,
            };
            for person in people {
                if let Some(serde_json::Value::String(name)) = person.get_mut("name")
                    && name.contains('@')
                    && !name.is_ascii()
                {
                    let spaced = space_out_wide_characters(name);
                    *changed |= spaced != *name;
                    *name = spaced;
                }
            }
        }
    }
    let mut feed: serde_json::Value = serde_json::from_str(text).ok()?;
    let mut changed = false;
    defuse_authors(&mut feed, &mut changed);
    if let Some(serde_json::Value::Array(items)) = feed.get_mut("items") {
        for item in items {
            defuse_authors(item, &mut changed);
        }
    }
    changed.then(|| serde_json::to_string(&feed).ok()).flatten()
}

/// At `open_at`, a start tag `<name …>`: the element's name and the range of the text
/// that follows it up to the next start or end tag. That is what feed-rs reads as the
/// element's text (it joins text and CDATA across comments, processing instructions and
/// DOCTYPEs), whether or not the element is properly closed.
fn element_text_at(text: &str, open_at: usize) -> Option<(&str, std::ops::Range<usize>)> {
    let rest = &text[open_at + 1..];
    let name_len = rest.find(|c: char| c.is_ascii_whitespace() || c == '>' || c == '/')?;
    let name = &rest[..name_len];
    if name.is_empty()
        || name.len() > 32
        || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b':')
    {
        return None;
    }
    let tag_len = rest.find('>')?;
    if rest[..tag_len].ends_with('/') {
        return None;
    }
    let start = open_at + 1 + tag_len + 1;
    let b = text.as_bytes();
    let mut end = start;
    while end < b.len() {
        match b[end..].iter().position(|c| *c == b'<') {
            None => end = b.len(),
            Some(p) => {
                end += p;
                let rest = &b[end..];
                let skip = [
                    (&b"<![CDATA["[..], &b"]]>"[..]),
                    (b"<!--", b"-->"),
                    (b"<?", b"?>"),
                ]
                .iter()
                .find(|(open, _)| rest.starts_with(open))
                .map(|(open, close)| {
                    find(&rest[open.len()..], close)
                        .map_or(rest.len(), |q| open.len() + q + close.len())
                });
                match skip {
                    Some(len) => end += len,
                    None if rest.starts_with(b"<!") => end += tag_length(rest),
                    None => break,
                }
            }
        }
    }
    Some((name, start..end))
}

/// Spaces between ASCII and non-ASCII characters, and around character references
/// (which may stand for non-ASCII characters), except next to existing whitespace.
fn space_out_wide_characters(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    let mut previous_wide: Option<bool> = None;
    let mut rest = s;
    while let Some(c) = rest.chars().next() {
        let reference_len = (c == '&')
            .then(|| rest.find(';').filter(|end| *end <= 32))
            .flatten()
            .map(|end| end + 1);
        let (unit, wide) = match reference_len {
            Some(len) => (&rest[..len], true),
            None => (&rest[..c.len_utf8()], !c.is_ascii()),
        };
        let space = c.is_whitespace();
        if let Some(prev) = previous_wide
            && (prev != wide || (wide && reference_len.is_some()))
            && !space
            && !out.ends_with(char::is_whitespace)
        {
            out.push(' ');
        }
        out.push_str(unit);
        previous_wide = if space { None } else { Some(wide) };
        rest = &rest[unit.len()..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_ampersands_are_escaped_outside_cdata() {
        let doc = "<t>Fish & Chips &amp; more &#60;3 &#x3C;</t><![CDATA[a & b]]><!-- c & d -->";
        assert_eq!(
            escape_bare_ampersands(doc).as_deref(),
            Some("<t>Fish &amp; Chips &amp; more &#60;3 &#x3C;</t><![CDATA[a & b]]><!-- c & d -->")
        );
        assert_eq!(escape_bare_ampersands("<t>&amp;</t>"), None);
    }

    #[test]
    fn the_line_of_an_xml_error_is_found() {
        let doc = "<rss>\n<channel>\n<title>x</titel>\n</channel></rss>";
        let (line, message) = locate_xml_error(doc).expect("an error");
        assert_eq!(line, 3, "{message}");
        let (line, message) = locate_xml_error("<rss>\n<channel>\n<item>").expect("an error");
        assert_eq!(line, 3);
        assert!(message.contains("<item>"), "{message}");
        assert_eq!(locate_xml_error("<rss/>"), None);
    }

    #[test]
    fn an_email_next_to_full_width_brackets_is_spaced_out() {
        let doc =
            "<item><dc:creator>王小明（wang@example.com）</dc:creator><title>é</title></item>";
        assert_eq!(
            defuse_feed_rs_panics(doc).as_deref(),
            Some(
                "<item><dc:creator>王小明（ wang@example.com ）</dc:creator><title>é</title></item>"
            )
        );
        assert_eq!(
            defuse_feed_rs_panics("<dc:creator>王小明</dc:creator>"),
            None
        );
    }

    #[test]
    fn stray_declarations_become_plain_processing_instructions() {
        let doc = "<?xml version='1.0'?><rss><title><?xml encoding='utf-16'?>x</title>\
                   <![CDATA[<?xml kept?>]]></rss>";
        assert_eq!(
            neutralise_stray_declarations(doc).as_deref(),
            Some(
                "<?xml version='1.0'?><rss><title><?xml-stray encoding='utf-16'?>x</title>\
                 <![CDATA[<?xml kept?>]]></rss>"
            )
        );
        assert_eq!(
            neutralise_stray_declarations("<?xml version='1.0'?><rss/>"),
            None
        );
        assert_eq!(neutralise_stray_declarations(""), None);
        assert_eq!(
            neutralise_stray_declarations("王<?xml ?>").as_deref(),
            Some("王<?xml-stray ?>")
        );
    }

    #[test]
    fn an_unknown_text_construct_type_becomes_text() {
        let doc = "<title type=\"text/plain\">a</title><summary type='text/plain'>b</summary>";
        assert_eq!(
            replace_text_construct_type(doc, "text/plain").as_deref(),
            Some("<title type=\"text\">a</title><summary type=\"text\">b</summary>")
        );
        assert_eq!(replace_text_construct_type(doc, "image/png"), None);
    }

    #[test]
    fn a_json_author_with_an_email_in_full_width_brackets_is_spaced_out() {
        let doc =
            r#"{"authors":[{"name":"王（a@b.cd）"}],"items":[{"author":{"name":"李（c@d.ef）"}}]}"#;
        let out = defuse_json_feed_panics(doc).expect("defused");
        assert!(out.contains("王（ a@b.cd ）"), "{out}");
        assert!(out.contains("李（ c@d.ef ）"), "{out}");
        assert_eq!(
            defuse_json_feed_panics(r#"{"authors":[{"name":"Ann"}]}"#),
            None
        );
    }

    #[test]
    fn an_absurd_duration_is_emptied() {
        let unclosed = "<itunes:duration>٤٥:٠٠<itunes:duration>";
        assert_eq!(
            defuse_feed_rs_panics(unclosed).as_deref(),
            Some("<itunes:duration><itunes:duration>")
        );
        let doc = "<itunes:duration>99999999999999999999999</itunes:duration>";
        assert_eq!(
            defuse_feed_rs_panics(doc).as_deref(),
            Some("<itunes:duration></itunes:duration>")
        );
        assert_eq!(
            defuse_feed_rs_panics("<itunes:duration>1:02:03</itunes:duration>"),
            None
        );
    }
}
