//! Feed parsing: the first half of the `parser` stage for `kind = "feed"` sources
//! (DESIGN §1–2). The fetcher hands over the raw body with its `Content-Type`; this module
//! turns it into a [`ParsedFeed`] of candidate stories ([`FeedEntry`]) for the normaliser.
//! It is pure and synchronous (no I/O); call it on `spawn_blocking` for large bodies.
//!
//! Steps:
//! 1. [`decode_feed_text`]: BOM → XML declaration → HTTP charset → detection, to UTF-8.
//! 2. The prolog is checked and adjusted (`prolog`): a DOCTYPE that declares entities is
//!    refused ([`FeedError::EntityDeclaration`]), an HTML page is named as such, the
//!    declaration's `encoding` is rewritten to `UTF-8` (feed-rs would decode again; a
//!    stray second declaration is neutralised for the same reason), and an `<rss>` root
//!    without a usable version is read as RSS 2.0.
//! 3. feed-rs 3.0 parses RSS 0.9x/1.0/2.0, Atom or JSON Feed. Relative links are resolved
//!    against `xml:base`, else the feed URL. When feed-rs fails, a repair fitting the
//!    failure is tried (`repair`: bare `&` escaped, an Atom text `type="text/plain"` read
//!    as `text`, feed-rs panic triggers defused), then the first error is reported, with
//!    its line for malformed XML.
//! 4. Each entry becomes a [`FeedEntry`], in document order. Nothing is dropped for lack
//!    of a link, a title or a date (but feed-rs itself skips RSS 1.0 items without a link).
//!
//! Dates: feed-rs's timestamps go through our lenient reader (`crate::text::dates`, shared
//! with article extraction), which reads the RFC 822/ISO 8601 shapes seen in feeds, month
//! names in several languages and zone names. A date without a zone is taken in the zone
//! of the channel's own date (`date`), else UTC.
//! `published` is the entry's publication date, else its update date. An entry with no
//! readable date gets `fetched_at` and `date_was_missing = true`. A date more than one day
//! after `fetched_at` is clamped to `fetched_at` (`date_was_missing` stays `false`: the
//! feed did state a date, just an impossible one).
//!
//! Panics: feed-rs 3.0 panics on some inputs, e.g. an author with an e-mail next to a
//! multi-byte character (`王小明（wang@example.com）`) or an `<itunes:duration>` too long
//! for a `u64`. The call is wrapped in `catch_unwind`; after a panic the known triggers
//! are defused (`repair`) and the parse is tried once more, else the feed is refused with
//! [`FeedError::ParserPanicked`]. This needs the default `panic = "unwind"`. The panic
//! message still goes to the panic hook (stderr).

mod charset;
mod date;
mod prolog;
mod repair;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::panic::{AssertUnwindSafe, catch_unwind};

use chrono::{DateTime, Duration, FixedOffset, Utc};
use feed_rs::model::{self, Feed, Text};
use feed_rs::parser::{Builder, ParseErrorKind, ParseFeedError};
use url::Url;

use crate::text::dates;
use crate::text::entities::decode_entities;
use crate::text::markup::strip_markup;

pub use charset::decode_feed_text;

/// One item of a feed: a candidate story, before normalisation and de-duplication.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedEntry {
    /// The entry's own identifier (`<guid>`, Atom `<id>`, JSON `id`), trimmed; `None` when
    /// the feed gives none (no identifier is made up here).
    pub guid: Option<String>,
    /// The entry's page: the first `alternate` (or plain RSS `<link>`) link, resolved
    /// against `xml:base` or the feed URL; only `http`/`https` links are kept.
    pub link: Option<Url>,
    /// The title as text (entities decoded, whitespace trimmed); `None` if absent or empty.
    pub title: Option<String>,
    /// `<description>`/`<summary>` as HTML (plain-text summaries are HTML-escaped).
    pub summary_html: Option<String>,
    /// `<content:encoded>`/`<content>`/`content_html` as HTML (plain text is escaped);
    /// `None` for out-of-line or binary content. Not parsed here, whatever its size.
    pub content_html: Option<String>,
    /// The first author's (or `dc:creator`'s) name, else e-mail; the feed's author if the
    /// entry has none.
    pub author: Option<String>,
    /// Publication time in UTC: always set, see `date_was_missing`.
    pub published: Option<DateTime<Utc>>,
    /// The feed gave no readable date: `published` is the fetch time.
    pub date_was_missing: bool,
}

/// A parsed feed: its title and its entries in document order.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedFeed {
    /// The feed's (channel's) title, trimmed; `None` if absent or empty.
    pub title: Option<String>,
    /// Entries in the order the document lists them.
    pub entries: Vec<FeedEntry>,
}

/// Why a fetched body could not be read as a feed.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// The body is empty or only whitespace.
    #[error("empty body")]
    EmptyBody,
    /// The DOCTYPE declares entities; refused so that nothing is expanded or fetched.
    #[error("feed declares XML entities in its DOCTYPE (refused)")]
    EntityDeclaration,
    /// The body is an HTML page (an error page, a login wall, a home page).
    #[error("not a feed: looks like an HTML page")]
    HtmlPage,
    /// The body is neither XML nor JSON.
    #[error("not a feed: the body is neither XML nor JSON")]
    NotXmlOrJson,
    /// Well-formed markup, but not RSS, RDF or Atom.
    #[error("not a feed: {0}")]
    NotAFeed(String),
    /// The XML is not well-formed (truncated, mismatched tags, a bad reference, …).
    #[error("malformed XML at line {line}: {message}")]
    MalformedXml {
        /// 1-based line of the first error, as far as it can be told.
        line: usize,
        /// What is wrong there.
        message: String,
    },
    /// JSON that is not a JSON Feed: bad syntax, missing fields, wrong types, version.
    #[error("invalid JSON feed: {0}")]
    InvalidJson(String),
    /// The feed is well-formed but feed-rs could not make sense of some part of it.
    #[error("feed could not be parsed: {0}")]
    Unparseable(String),
    /// feed-rs panicked on this body; the panic was contained and the feed refused.
    #[error("feed parser crashed on this input (contained; feed refused)")]
    ParserPanicked,
}

/// Parses of one XML feed: the first, and up to three after repairs.
const MAX_ATTEMPTS: usize = 4;

/// How far in the future a date may lie before it is clamped to the fetch time.
const FUTURE_TOLERANCE: Duration = Duration::days(1);

/// Parses a fetched feed body (RSS 0.9x/1.0/2.0, Atom or JSON Feed).
///
/// `content_type` is the HTTP header value (its `charset` is used when the document
/// declares none); `feed_url` is the URL the body came from (the base for relative links,
/// and a hint for charset detection); `fetched_at` stands in for missing dates.
pub fn parse_feed(
    bytes: &[u8],
    content_type: Option<&str>,
    feed_url: &Url,
    fetched_at: DateTime<Utc>,
) -> Result<ParsedFeed, FeedError> {
    let tld = feed_url
        .host_str()
        .and_then(|h| h.rsplit('.').next())
        .map(str::as_bytes);
    let (text, _encoding) = charset::decode_feed_text_for_tld(bytes, content_type, tld);

    let start = text
        .find(|c: char| !(c.is_whitespace() || c == '\u{feff}' || c == '\0'))
        .ok_or(FeedError::EmptyBody)?;
    // Text before the document (a PHP warning, a stray banner) is skipped when a feed
    // follows it closely.
    let start = match text.as_bytes()[start] {
        b'<' | b'{' | b'[' => start,
        _ => start + feed_start_after_junk(&text[start..]).unwrap_or(0),
    };
    // Error lines count from the top of the body, skipped lines included.
    let skipped_lines = repair::line_of(&text, start) - 1;
    let body = &text[start..];

    let feed = match body.as_bytes()[0] {
        b'{' | b'[' => parse_json(body, feed_url)?,
        b'<' => match parse_xml(body, feed_url, skipped_lines)? {
            Some(feed) => feed,
            None => {
                return Ok(ParsedFeed {
                    title: None,
                    entries: Vec::new(),
                });
            }
        },
        _ => {
            if prolog::scan_prolog(body).is_html() {
                return Err(FeedError::HtmlPage);
            }
            return Err(FeedError::NotXmlOrJson);
        }
    };
    Ok(to_parsed_feed(feed, feed_url, fetched_at))
}

/// Where an XML feed starts in `text` that begins with something else: the first
/// `<?xml`, `<rss`, `<feed` or `<rdf:RDF` within the first 4 KiB.
fn feed_start_after_junk(text: &str) -> Option<usize> {
    let mut window = text.len().min(4096);
    while !text.is_char_boundary(window) {
        window -= 1;
    }
    ["<?xml", "<rss", "<feed", "<rdf:RDF"]
        .iter()
        .filter_map(|marker| text[..window].find(marker))
        .min()
}

fn parse_json(body: &str, feed_url: &Url) -> Result<Feed, FeedError> {
    if body.starts_with('[') {
        return Err(FeedError::InvalidJson(
            "the body is a JSON array; a JSON Feed is an object".to_owned(),
        ));
    }
    let mut attempt: Cow<'_, str> = Cow::Borrowed(body);
    for _ in 0..MAX_ATTEMPTS {
        let repaired = match run_feed_rs(&attempt, feed_url, None) {
            Ok(Ok(feed)) => return Ok(feed),
            // "1.1", "http://jsonfeed.org/version/1": version 1 under another spelling.
            Ok(Err(ParseFeedError::JsonUnsupportedVersion(v)))
                if is_json_feed_1_in_disguise(&v) =>
            {
                with_json_feed_version(&attempt, "https://jsonfeed.org/version/1.1")
                    .ok_or_else(|| FeedError::InvalidJson(format!("unsupported version {v:?}")))?
            }
            Ok(Err(error)) => return Err(json_error(error)),
            Err(panicked) => repair::defuse_json_feed_panics(&attempt).ok_or(panicked)?,
        };
        attempt = Cow::Owned(repaired);
    }
    Err(FeedError::ParserPanicked)
}

fn json_error(error: ParseFeedError) -> FeedError {
    match error {
        ParseFeedError::JsonSerde(e) => FeedError::InvalidJson(e.to_string()),
        ParseFeedError::JsonUnsupportedVersion(v) => {
            FeedError::InvalidJson(format!("unsupported version {v:?}"))
        }
        ParseFeedError::ParseError(ParseErrorKind::NoFeedRoot) => {
            FeedError::InvalidJson("no JSON object found".to_owned())
        }
        other => unparseable(other),
    }
}

/// Version strings that mean JSON Feed 1.x though feed-rs only knows
/// `https://jsonfeed.org/version/1…`.
fn is_json_feed_1_in_disguise(version: &str) -> bool {
    let v = version.trim().trim_end_matches('/');
    v == "1"
        || v.starts_with("1.")
        || v.starts_with("http://jsonfeed.org/version/1")
        || v.starts_with("https://www.jsonfeed.org/version/1")
}

/// The JSON text with its top-level `version` replaced.
fn with_json_feed_version(body: &str, version: &str) -> Option<String> {
    let mut value: serde_json::Value = serde_json::from_str(body).ok()?;
    let object = value.as_object_mut()?;
    object.insert("version".to_owned(), serde_json::Value::from(version));
    serde_json::to_string(&value).ok()
}

/// `Ok(None)`: a well-formed `<rss>` without a `<channel>`, an empty feed rather than an
/// error (feedparser and gofeed read it so too).
fn parse_xml(body: &str, feed_url: &Url, skipped_lines: usize) -> Result<Option<Feed>, FeedError> {
    let prolog = prolog::scan_prolog(body);
    if prolog.declares_entities {
        return Err(FeedError::EntityDeclaration);
    }
    if prolog.is_html() {
        return Err(FeedError::HtmlPage);
    }
    let rewritten = prolog::rewrite_for_feed_rs(body, &prolog);
    let text = rewritten.as_deref().unwrap_or(body);
    let neutralised = repair::neutralise_stray_declarations(text);
    let text = neutralised.as_deref().unwrap_or(text);
    let offset = date::channel_offset(text);

    // The first attempt is on the text as it is; each failure may allow one repair
    // (`repair`) and another attempt. The first error is the one reported.
    let mut attempt: Cow<'_, str> = Cow::Borrowed(text);
    let mut first_error: Option<ParseFeedError> = None;
    for _ in 0..MAX_ATTEMPTS {
        let repaired = match run_feed_rs(&attempt, feed_url, offset) {
            Ok(Ok(feed)) => return Ok(Some(feed)),
            Ok(Err(ParseFeedError::ParseError(ParseErrorKind::NoFeedRoot)))
                if prolog.root_local_name() == Some("rss")
                    && repair::locate_xml_error(text).is_none() =>
            {
                return Ok(None);
            }
            Ok(Err(error)) => {
                let repaired = match &error {
                    // Bare '&' is the commonest breakage of hand-made feeds.
                    ParseFeedError::XmlReader(_) => repair::escape_bare_ampersands(&attempt),
                    ParseFeedError::ParseError(ParseErrorKind::UnknownMimeType {
                        mime, ..
                    }) => repair::replace_text_construct_type(&attempt, mime),
                    _ => None,
                };
                first_error.get_or_insert(error);
                repaired
            }
            Err(_panicked) => repair::defuse_feed_rs_panics(&attempt),
        };
        match repaired {
            // A repair may let quick-xml read further, up to a declaration the first
            // scan (stopped by the error) did not see.
            Some(next) => {
                attempt = Cow::Owned(repair::neutralise_stray_declarations(&next).unwrap_or(next));
            }
            None => break,
        }
    }
    Err(match first_error {
        Some(error) => describe_xml_failure(error, &prolog, text, skipped_lines),
        None => FeedError::ParserPanicked,
    })
}

/// Runs feed-rs on UTF-8 text; the outer error is a contained panic.
fn run_feed_rs(
    text: &str,
    feed_url: &Url,
    default_offset: Option<FixedOffset>,
) -> Result<Result<Feed, ParseFeedError>, FeedError> {
    let parser = Builder::new()
        .base_uri(Some(feed_url.as_str()))
        // No identifier is invented for entries without one: `guid` stays `None`.
        .id_generator(|_links, _title, _uri| String::new())
        .timestamp_parser(move |text| dates::read_date(text, default_offset))
        .build();
    catch_unwind(AssertUnwindSafe(|| parser.parse(text.as_bytes())))
        .map_err(|_| FeedError::ParserPanicked)
}

fn describe_xml_failure(
    error: ParseFeedError,
    prolog: &prolog::Prolog,
    text: &str,
    skipped_lines: usize,
) -> FeedError {
    match error {
        ParseFeedError::XmlReader(xml_error) => {
            let (line, message) = repair::locate_xml_error(text)
                .unwrap_or_else(|| (repair::line_of(text, text.len()), xml_error.to_string()));
            FeedError::MalformedXml {
                line: line + skipped_lines,
                message,
            }
        }
        ParseFeedError::ParseError(ParseErrorKind::NoFeedRoot) => {
            // feed-rs stops at the first problem; a syntax error further on is more useful
            // to report than "no feed root" when there is one.
            if let Some((line, message)) = repair::locate_xml_error(text)
                && prolog.root_local_name().is_none()
            {
                return FeedError::MalformedXml {
                    line: line + skipped_lines,
                    message,
                };
            }
            FeedError::NotAFeed(match prolog.root_local_name() {
                Some(root) => format!("root element <{root}> is not RSS, RDF or Atom"),
                None => "no root element".to_owned(),
            })
        }
        other => unparseable_at(other, text, skipped_lines),
    }
}

fn unparseable(error: ParseFeedError) -> FeedError {
    FeedError::Unparseable(error.to_string())
}

/// feed-rs's errors carry byte positions; a line reads better.
fn unparseable_at(error: ParseFeedError, text: &str, skipped_lines: usize) -> FeedError {
    let position = match &error {
        ParseFeedError::ParseError(
            ParseErrorKind::UnknownMimeType { position, .. }
            | ParseErrorKind::MissingContent { position, .. }
            | ParseErrorKind::UnknownEnumVariant { position, .. }
            | ParseErrorKind::IllegalState { position, .. },
        ) => usize::try_from(*position).ok(),
        _ => None,
    };
    match position {
        Some(p) if p <= text.len() => FeedError::Unparseable(format!(
            "{error} (line {})",
            repair::line_of(text, p) + skipped_lines
        )),
        _ => unparseable(error),
    }
}

// ---------------------------------------------------------------------------------------
// feed-rs model → ParsedFeed

fn to_parsed_feed(feed: Feed, feed_url: &Url, fetched_at: DateTime<Utc>) -> ParsedFeed {
    let feed_author = first_person_name(&feed.authors);
    let title = feed.title.as_ref().and_then(text_as_plain);
    let entries = feed
        .entries
        .into_iter()
        .map(|entry| to_feed_entry(entry, feed_author.as_deref(), feed_url, fetched_at))
        .collect();
    ParsedFeed { title, entries }
}

fn to_feed_entry(
    entry: model::Entry,
    feed_author: Option<&str>,
    feed_url: &Url,
    fetched_at: DateTime<Utc>,
) -> FeedEntry {
    let (published, date_was_missing) = match entry.published.or(entry.updated) {
        Some(date)
            if fetched_at
                .checked_add_signed(FUTURE_TOLERANCE)
                .is_some_and(|limit| date > limit) =>
        {
            (fetched_at, false)
        }
        Some(date) => (date, false),
        None => (fetched_at, true),
    };
    FeedEntry {
        guid: non_empty(&entry.id),
        link: entry_link(&entry.links, feed_url),
        title: entry.title.as_ref().and_then(text_as_plain),
        summary_html: entry.summary.as_ref().and_then(text_as_html),
        content_html: entry.content.and_then(content_as_html),
        author: first_person_name(&entry.authors).or_else(|| feed_author.map(str::to_owned)),
        published: Some(published),
        date_was_missing,
    }
}

/// The entry's page: an Atom `alternate` link first, else the first plain link (RSS
/// `<link>`, JSON `url`). Comment links and typed non-HTML links (enclosures, JSON
/// attachments) are never chosen.
fn entry_link(links: &[model::Link], feed_url: &Url) -> Option<Url> {
    let is_page = |l: &&model::Link| {
        l.target.is_none()
            && l.media_type
                .as_deref()
                .is_none_or(|t| t.contains("html") || t.is_empty())
    };
    let chosen = links
        .iter()
        .filter(is_page)
        .find(|l| l.rel.as_deref() == Some("alternate"))
        .or_else(|| links.iter().filter(is_page).find(|l| l.rel.is_none()))?;
    let href = chosen.href.trim();
    let url = Url::parse(href).or_else(|_| feed_url.join(href)).ok()?;
    matches!(url.scheme(), "http" | "https").then_some(url)
}

fn first_person_name(people: &[model::Person]) -> Option<String> {
    people.iter().find_map(|p| {
        p.name
            .as_deref()
            .and_then(non_empty)
            .or_else(|| p.email.as_deref().and_then(non_empty))
    })
}

/// A text construct as plain text: HTML titles (Atom `type="html"`/`"xhtml"`) lose their
/// tags and have their character references decoded.
fn text_as_plain(text: &Text) -> Option<String> {
    let media_type = text.content_type.to_string();
    if media_type.contains("html") {
        non_empty(&html_title_to_text(&text.content))
    } else {
        non_empty(&text.content)
    }
}

/// A text construct as HTML: HTML and XHTML as they are, plain text escaped.
fn text_as_html(text: &Text) -> Option<String> {
    let media_type = text.content_type.to_string();
    if media_type.starts_with("text/plain") {
        non_empty(&escape_html(&text.content))
    } else {
        non_empty(&text.content)
    }
}

/// Inline content as HTML: HTML and XHTML as they are, other text escaped; out-of-line
/// (`src`) and binary (base64) content give `None`.
fn content_as_html(content: model::Content) -> Option<String> {
    let body = content.body?;
    let media_type = content.content_type.to_string();
    if media_type.contains("html") {
        non_empty(&body)
    } else if media_type.starts_with("text/") {
        non_empty(&escape_html(&body))
    } else {
        None
    }
}

fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            _ => out.push(c),
        }
    }
    out
}

/// Trimmed and cleaned of control characters; `None` if nothing is left. C0 controls that
/// XML 1.0 forbids are dropped (they arrive through character references or sloppy
/// generators); C1 controls (U+0080–U+009F, e.g. from `&#146;`) are read as the
/// windows-1252 characters their authors meant (`’`), as HTML parsers do.
fn non_empty(s: &str) -> Option<String> {
    let t = s.trim();
    if t.is_empty() {
        return None;
    }
    if !t
        .chars()
        .any(|c| is_forbidden_control(c) || is_c1_control(c))
    {
        return Some(t.to_owned());
    }
    let cleaned: String = t
        .chars()
        .filter(|c| !is_forbidden_control(*c))
        .map(|c| {
            if is_c1_control(c) {
                windows_1252_char(c)
            } else {
                c
            }
        })
        .collect();
    let cleaned = cleaned.trim();
    (!cleaned.is_empty()).then(|| cleaned.to_owned())
}

fn is_forbidden_control(c: char) -> bool {
    (c < ' ' && !matches!(c, '\t' | '\n' | '\r')) || matches!(c, '\u{FFFE}' | '\u{FFFF}')
}

fn is_c1_control(c: char) -> bool {
    ('\u{80}'..='\u{9F}').contains(&c)
}

/// The windows-1252 character for the byte value of a C1 control (itself if undefined).
fn windows_1252_char(c: char) -> char {
    let byte = [c as u32 as u8];
    let (decoded, _) = encoding_rs::WINDOWS_1252.decode_without_bom_handling(&byte);
    decoded.chars().next().unwrap_or(c)
}

/// Tags removed, character references decoded: enough for a title, not a document.
fn html_title_to_text(html: &str) -> String {
    decode_entities(&strip_markup(html)).into_owned()
}
