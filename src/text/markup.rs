//! Markup by tag name, and a string-level tag stripper. Text leaves markup two ways in
//! this crate, and both read the lists here, so that a block, a hidden element or a piece
//! of page furniture is the same thing to each:
//!
//! * article extraction ([`crate::extract`]) parses pages with html5ever and walks the DOM:
//!   pages are large, broken and deeply nested, and their references need a real decoder;
//! * [`strip_markup`] works on the string, for text that is short or already rendered: HTML
//!   feed titles, and the dedup stage's input (hashed for every story, where a parse per
//!   story would be wasted and whose output must stay stable for stored content hashes).

/// Paragraph-level elements: each starts and ends a block of text of its own.
pub(crate) const BLOCK_TAGS: &[&str] = &[
    "address",
    "article",
    "blockquote",
    "body",
    "caption",
    "center",
    "dd",
    "details",
    "div",
    "dl",
    "dt",
    "fieldset",
    "figcaption",
    "figure",
    "footer",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "header",
    "hgroup",
    "hr",
    "html",
    "legend",
    "li",
    "main",
    "ol",
    "p",
    "pre",
    "section",
    "summary",
    "table",
    "tbody",
    "tfoot",
    "thead",
    "tr",
    "ul",
];

/// Elements that separate words without being a block of their own: a line break, table
/// cells, and the sectioning elements that extraction drops whole as furniture (`aside`,
/// `nav`) but that end a line where their text is kept, as by [`strip_markup`].
pub(crate) const SEPARATOR_TAGS: &[&str] = &["aside", "br", "nav", "td", "th"];

/// Elements whose content is never text a reader sees: code, styles, templates.
pub(crate) const HIDDEN_TAGS: &[&str] = &["script", "style", "noscript", "template"];

/// Elements that a reader sees but that are never article text: embedded or interactive
/// widgets, navigation and document metadata. Extraction leaves them out with
/// [`HIDDEN_TAGS`].
pub(crate) const FURNITURE_TAGS: &[&str] = &[
    "iframe", "nav", "aside", "form", "button", "svg", "head", "title", "select", "textarea",
    "input", "object", "embed", "canvas", "audio", "video", "map", "math", "dialog", "link",
    "meta", "option", "datalist", "frameset", "frame",
];

/// Removes tags and comments from `text`: block and separator tags become line breaks,
/// hidden elements go with their content, other tags go and their text stays. A `<` that
/// does not open a tag is kept as text; an unclosed hidden element hides the rest.
/// Character references are left for [`crate::text::entities::decode_entities`].
pub(crate) fn strip_markup(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('<') {
        out.push_str(&rest[..open]);
        let after = &rest[open..];
        if let Some(comment) = after.strip_prefix("<!--") {
            rest = comment.find("-->").map_or("", |end| &comment[end + 3..]);
            continue;
        }
        let Some(tag) = parse_tag(after) else {
            out.push('<');
            rest = &after[1..];
            continue;
        };
        rest = &after[tag.len..];
        let name = tag.name.as_str();
        if BLOCK_TAGS.contains(&name) || SEPARATOR_TAGS.contains(&name) {
            out.push('\n');
        }
        if !tag.closing && HIDDEN_TAGS.contains(&name) {
            rest = skip_past_end_tag(rest, name);
        }
    }
    out.push_str(rest);
    out
}

/// A tag found at the start of some text.
struct Tag {
    /// Lowercase name (`p`, `br`, `!doctype`, …).
    name: String,
    /// Whether it is an end tag (`</p>`).
    closing: bool,
    /// Bytes from `<` to `>` inclusive.
    len: usize,
}

/// Reads the tag at the start of `text` (which starts with `<`), or `None` when the `<` is
/// not followed by a tag name (e.g. `a < b`) or the tag is never closed.
fn parse_tag(text: &str) -> Option<Tag> {
    let body = &text[1..];
    let (closing, body) = match body.strip_prefix('/') {
        Some(rest) => (true, rest),
        None => (false, body),
    };
    let first = body.chars().next()?;
    if !(first.is_ascii_alphabetic() || first == '!' || first == '?') {
        return None;
    }
    let name_len = body
        .find(|c: char| c.is_whitespace() || c == '>' || c == '/')
        .unwrap_or(body.len());
    let name = body[..name_len].to_ascii_lowercase();
    let end = text.find('>')?;
    Some(Tag {
        name,
        closing,
        len: end + 1,
    })
}

/// The text after the end tag `</name>`, or nothing when the element is never closed.
fn skip_past_end_tag<'a>(text: &'a str, name: &str) -> &'a str {
    let lower = text.to_ascii_lowercase();
    let needle = format!("</{name}");
    match lower.find(&needle) {
        // `to_ascii_lowercase` keeps byte offsets, so they index `text` as well.
        Some(start) => text[start..]
            .find('>')
            .map_or("", |end| &text[start + end + 1..]),
        None => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_go_text_stays_and_hidden_elements_go_with_their_content() {
        let cases = [
            // Block and separator tags end a line; inline tags just vanish.
            (
                "<p>un<b>believ</b>able</p>a<br/>b<td>c</td>",
                "\nunbelievable\na\nb\nc\n",
            ),
            // Comments and hidden elements go, whatever their case or attributes.
            (
                "a<!-- x --><SCRIPT type=x>if (a<b) {}</Script>b<style>p{}</style>",
                "ab",
            ),
            // An unclosed hidden element hides the rest.
            ("Visible <script>var hidden = 1;", "Visible "),
            // A `<` that opens no tag is text.
            ("x < 2 and x<y, 3 <4", "x < 2 and x<y, 3 <4"),
            ("a <b unclosed", "a <b unclosed"),
            // References are left for the decoder.
            ("<i>&lt;b&gt;</i>", "&lt;b&gt;"),
        ];
        for (html, text) in cases {
            assert_eq!(strip_markup(html), text, "{html}");
        }
    }

    #[test]
    fn hidden_furniture_and_block_tags_are_disjoint() {
        for tag in HIDDEN_TAGS.iter().chain(FURNITURE_TAGS) {
            assert!(!BLOCK_TAGS.contains(tag), "{tag}");
        }
        for tag in HIDDEN_TAGS {
            assert!(!FURNITURE_TAGS.contains(tag), "{tag}");
        }
    }
}
