//! The XML prolog of a decoded feed, looked at before feed-rs sees the text
//! (second step of [`super::parse_feed`], after [`super::charset`]).
//!
//! * Security: a DOCTYPE whose internal subset declares entities (`<!ENTITY`, general or
//!   parameter, internal or `SYSTEM`) is refused before any parsing, so nothing is ever
//!   expanded or fetched. A plain DOCTYPE (`<!DOCTYPE rss PUBLIC … "…rss-0.91.dtd">`) is fine.
//!   quick-xml, under feed-rs, never expands or fetches anything itself either: a DOCTYPE
//!   found anywhere else in the document is inert.
//! * An XML declaration that names an encoding other than UTF-8 is replaced by
//!   `<?xml version="1.0" encoding="UTF-8"?>`: the text is UTF-8 now, and feed-rs would
//!   otherwise decode it a second time (or panic, when the declaration is long).
//! * Roots feed-rs would not recognise are adjusted: `<rss>` without a version or with an
//!   unusual one (`0.93`, `0.94`, `2.01`) is read as RSS 2.0, and RSS 0.90's
//!   `my.netscape.com` namespace as RSS 1.0's.
//! * An HTML page (by its DOCTYPE or its root element) is recognised, for a clear error.

use std::ops::Range;

/// What the prolog of a feed says, as far as [`super::parse_feed`] cares.
#[derive(Debug, Default)]
pub(crate) struct Prolog {
    /// The XML declaration `<?xml … ?>`, when the text starts with one.
    declaration: Option<Range<usize>>,
    /// The DOCTYPE declares entities: the feed must be refused.
    pub(crate) declares_entities: bool,
    /// The DOCTYPE is HTML's.
    html_doctype: bool,
    /// The root element's start tag.
    root: Option<RootTag>,
}

#[derive(Debug)]
struct RootTag {
    /// Qualified name as written (`rss`, `rdf:RDF`, `feed`).
    name: String,
    /// The whole start tag, `<` to `>`.
    range: Range<usize>,
}

impl Prolog {
    /// The document looks like an HTML page rather than a feed.
    /// The root element decides; without one, an HTML DOCTYPE does (a feed that carries a
    /// stray XHTML DOCTYPE above `<rss>` is still a feed).
    pub(crate) fn is_html(&self) -> bool {
        match self.root_local_name() {
            Some(n) => ["html", "head", "body"]
                .iter()
                .any(|h| n.eq_ignore_ascii_case(h)),
            None => self.html_doctype,
        }
    }

    /// The root element's name without its prefix, if a root was found.
    pub(crate) fn root_local_name(&self) -> Option<&str> {
        self.root
            .as_ref()
            .map(|r| r.name.rsplit(':').next().unwrap_or(&r.name))
    }
}

/// Scans the prolog of `text`: the declaration, comments, processing instructions and the
/// DOCTYPE, up to and including the root element's start tag.
pub(crate) fn scan_prolog(text: &str) -> Prolog {
    let b = text.as_bytes();
    let mut prolog = Prolog::default();
    let mut i = 0;
    let mut seen_markup = false;
    while i < b.len() {
        let c = b[i];
        if c != b'<' {
            // Whitespace or junk before the root: skip to the next '<'.
            match memchr(b'<', &b[i..]) {
                Some(off) => i += off,
                None => break,
            }
            continue;
        }
        let rest = &b[i..];
        if rest.starts_with(b"<?") {
            let Some(end) = find(rest, b"?>") else { break };
            let is_xml_decl = rest.len() > 5
                && rest.starts_with(b"<?xml")
                && (rest[5].is_ascii_whitespace() || rest[5] == b'?');
            if is_xml_decl && !seen_markup && prolog.declaration.is_none() {
                prolog.declaration = Some(i..i + end + 2);
            }
            i += end + 2;
        } else if rest.starts_with(b"<!--") {
            let Some(end) = find(&rest[4..], b"-->") else {
                break;
            };
            i += 4 + end + 3;
        } else if starts_with_ignore_case(rest, b"<!DOCTYPE") {
            let (len, declares_entities) = scan_doctype(rest);
            prolog.declares_entities |= declares_entities;
            let after = rest[9..].trim_ascii_start();
            prolog.html_doctype |= starts_with_ignore_case(after, b"html")
                && after.get(4).is_none_or(|c| !c.is_ascii_alphanumeric());
            match len {
                Some(len) => i += len,
                None => break,
            }
        } else if rest.len() > 1 && is_name_start(rest[1]) {
            let name_end = rest[1..]
                .iter()
                .position(|c| c.is_ascii_whitespace() || *c == b'/' || *c == b'>')
                .map_or(rest.len(), |p| p + 1);
            let tag_end = end_of_tag(rest).map_or(rest.len(), |p| p + 1);
            prolog.root = Some(RootTag {
                name: String::from_utf8_lossy(&rest[1..name_end]).into_owned(),
                range: i..i + tag_end,
            });
            break;
        } else {
            break; // CDATA or stray markup before any root: leave it to the parser
        }
        seen_markup = true;
    }
    prolog
}

/// Length of the DOCTYPE at the start of `b` (`None` if unterminated), and whether its
/// internal subset declares an entity.
fn scan_doctype(b: &[u8]) -> (Option<usize>, bool) {
    let mut i = 9;
    let mut quote: Option<u8> = None;
    let mut in_subset = false;
    let mut declares = false;
    while i < b.len() {
        let c = b[i];
        if let Some(q) = quote {
            if c == q {
                quote = None;
            }
            i += 1;
            continue;
        }
        match c {
            b'"' | b'\'' => quote = Some(c),
            b'[' => in_subset = true,
            b']' => in_subset = false,
            b'<' if in_subset => {
                let rest = &b[i..];
                if rest.starts_with(b"<!--") {
                    match find(&rest[4..], b"-->") {
                        Some(end) => {
                            i += 4 + end + 3;
                            continue;
                        }
                        None => return (None, declares),
                    }
                }
                if starts_with_ignore_case(rest, b"<!ENTITY") {
                    declares = true;
                }
            }
            b'>' if !in_subset => return (Some(i + 1), declares),
            _ => {}
        }
        i += 1;
    }
    // Unterminated: refuse if an entity declaration appears anywhere in what follows.
    let declares = declares || contains_ignore_case(b, b"<!ENTITY");
    (None, declares)
}

/// `text` rewritten so feed-rs reads it as intended: the declaration says UTF-8, an unversioned `<rss>` says 2.0, RSS 0.90's namespace becomes RSS 1.0's. Line
/// numbers are unchanged. Returns `None` when nothing needs rewriting.
pub(crate) fn rewrite_for_feed_rs(text: &str, prolog: &Prolog) -> Option<String> {
    let mut edits: Vec<(Range<usize>, String)> = Vec::new();
    if let Some(decl) = &prolog.declaration {
        let declaration = &text[decl.clone()];
        let says_utf8 = attribute_value(declaration, "encoding")
            .is_some_and(|v| declaration[v].eq_ignore_ascii_case("utf-8"));
        let mentions_encoding = declaration.matches("encoding").count();
        if mentions_encoding > 1 || (mentions_encoding == 1 && !says_utf8) {
            // The whole declaration is replaced (quick-xml reads `encoding` even where the
            // attribute syntax is broken); its line breaks are kept for error lines.
            let newlines = "\n".repeat(declaration.matches('\n').count());
            edits.push((
                decl.clone(),
                format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>{newlines}"),
            ));
        }
    }
    if let Some(root) = &prolog.root {
        let tag = &text[root.range.clone()];
        let local = root.name.rsplit(':').next().unwrap_or(&root.name);
        if local == "rss" {
            match attribute_value(tag, "version") {
                Some(v) => {
                    let known = ["2.0", "0.91", "0.92", ""];
                    if !known.contains(&&tag[v.clone()]) {
                        edits.push((
                            root.range.start + v.start..root.range.start + v.end,
                            "2.0".to_owned(),
                        ));
                    }
                }
                None => {
                    let at = root.range.start + 1 + root.name.len();
                    edits.push((at..at, " version=\"2.0\"".to_owned()));
                }
            }
        } else if local == "RDF" {
            const RSS_090: &str = "http://my.netscape.com/rdf/simple/0.9/";
            if let Some(p) = tag.find(RSS_090) {
                let at = root.range.start + p;
                edits.push((
                    at..at + RSS_090.len(),
                    "http://purl.org/rss/1.0/".to_owned(),
                ));
            }
        }
    }
    if edits.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(text.len() + 16);
    let mut last = 0;
    for (range, replacement) in edits {
        out.push_str(&text[last..range.start]);
        out.push_str(&replacement);
        last = range.end;
    }
    out.push_str(&text[last..]);
    Some(out)
}

/// The byte range (within `tag`) of the value of attribute `name`, quotes excluded.
fn attribute_value(tag: &str, name: &str) -> Option<Range<usize>> {
    let b = tag.as_bytes();
    let mut from = 0;
    while let Some(p) = tag[from..].find(name) {
        let at = from + p;
        from = at + name.len();
        let preceded_by_space = at > 0 && b[at - 1].is_ascii_whitespace();
        let mut j = at + name.len();
        while j < b.len() && b[j].is_ascii_whitespace() {
            j += 1;
        }
        if !preceded_by_space || b.get(j) != Some(&b'=') {
            continue;
        }
        j += 1;
        while j < b.len() && b[j].is_ascii_whitespace() {
            j += 1;
        }
        let quote = *b.get(j)?;
        if quote != b'"' && quote != b'\'' {
            return None;
        }
        let close = memchr(quote, &b[j + 1..])?;
        return Some(j + 1..j + 1 + close);
    }
    None
}

fn end_of_tag(b: &[u8]) -> Option<usize> {
    let mut quote: Option<u8> = None;
    for (i, c) in b.iter().enumerate() {
        match (quote, *c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, b'"' | b'\'') => quote = Some(*c),
            (None, b'>') => return Some(i),
            _ => {}
        }
    }
    None
}

pub(crate) fn is_name_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c == b':' || c >= 0x80
}

fn memchr(needle: u8, haystack: &[u8]) -> Option<usize> {
    haystack.iter().position(|c| *c == needle)
}

pub(crate) fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn starts_with_ignore_case(b: &[u8], prefix: &[u8]) -> bool {
    b.len() >= prefix.len() && b[..prefix.len()].eq_ignore_ascii_case(prefix)
}

fn contains_ignore_case(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entity_declaration_in_the_internal_subset_is_flagged() {
        let doc = "<?xml version=\"1.0\"?>\n<!DOCTYPE rss [\n <!ENTITY a \"aaaa\">\n]>\n<rss/>";
        assert!(scan_prolog(doc).declares_entities);
    }

    #[test]
    fn a_parameter_entity_and_odd_case_are_flagged() {
        let doc = "<!DOCTYPE r [<!-- ] > --><!entity % p SYSTEM 'http://x/y.dtd'> %p;]><r/>";
        assert!(scan_prolog(doc).declares_entities);
    }

    #[test]
    fn a_plain_public_doctype_is_not_flagged() {
        let doc = "<?xml version=\"1.0\"?><!DOCTYPE rss PUBLIC \"-//Netscape Communications//DTD RSS 0.91//EN\" \
                   \"http://my.netscape.com/publish/formats/rss-0.91.dtd\"><rss version=\"0.91\"/>";
        let prolog = scan_prolog(doc);
        assert!(!prolog.declares_entities);
        assert_eq!(prolog.root_local_name(), Some("rss"));
    }

    #[test]
    fn an_unterminated_doctype_with_an_entity_is_flagged() {
        assert!(scan_prolog("<!DOCTYPE x [ <!ENTITY y 'z'").declares_entities);
    }

    #[test]
    fn an_html_page_is_recognised_by_doctype_or_root() {
        assert!(scan_prolog("<!doctype html><html><body>x</body></html>").is_html());
        assert!(scan_prolog("\n<HTML lang=en><p>x").is_html());
        assert!(!scan_prolog("<rss version=\"2.0\"></rss>").is_html());
        assert!(!scan_prolog("<!DOCTYPE html PUBLIC \"x\" \"y\"><rss><channel/></rss>").is_html());
    }

    #[test]
    fn the_declared_encoding_is_rewritten_to_utf8() {
        let doc = "<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?>\n<rss version=\"2.0\"/>";
        let out = rewrite_for_feed_rs(doc, &scan_prolog(doc));
        assert_eq!(
            out.as_deref(),
            Some("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<rss version=\"2.0\"/>")
        );
    }

    #[test]
    fn a_broken_declaration_naming_an_encoding_is_replaced_whole() {
        let doc =
            "<?xml version=\"1.0\" xml:base=\"x\"encoding=\"ISO-8859-1\"\n?><rss version=\"2.0\"/>";
        let out = rewrite_for_feed_rs(doc, &scan_prolog(doc));
        assert_eq!(
            out.as_deref(),
            Some("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<rss version=\"2.0\"/>")
        );
    }

    #[test]
    fn an_unversioned_rss_root_becomes_rss_2() {
        let doc = "<rss xml:base=\"http://example.test/\"><channel/></rss>";
        let out = rewrite_for_feed_rs(doc, &scan_prolog(doc));
        assert_eq!(
            out.as_deref(),
            Some("<rss version=\"2.0\" xml:base=\"http://example.test/\"><channel/></rss>")
        );
        let doc = "<rss version='0.94'><channel/></rss>";
        let out = rewrite_for_feed_rs(doc, &scan_prolog(doc));
        assert_eq!(out.as_deref(), Some("<rss version='2.0'><channel/></rss>"));
    }

    #[test]
    fn nothing_is_rewritten_in_a_plain_utf8_feed() {
        let doc = "<?xml version=\"1.0\" encoding=\"utf-8\"?><rss version=\"2.0\"/>";
        assert_eq!(rewrite_for_feed_rs(doc, &scan_prolog(doc)), None);
    }
}
