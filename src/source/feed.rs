//! Feed parsing: bytes of an RSS, Atom or JSON feed become [`FeedEntry`]s
//! through feed-rs. Runs on the blocking pool (a large feed is CPU work), and
//! never panics on hostile input: every failure is a [`FeedError`] naming what
//! was wrong with the document.

use chrono::{DateTime, Utc};
use url::Url;

/// One item of a feed, before normalisation.
#[derive(Debug, Clone, Default)]
pub struct FeedEntry {
    pub guid: Option<String>,
    pub link: Option<Url>,
    pub title: Option<String>,
    pub summary_html: Option<String>,
    pub content_html: Option<String>,
    pub author: Option<String>,
    pub published: Option<DateTime<Utc>>,
    /// The feed gave no readable date; `published` is the fetch time.
    pub date_was_missing: bool,
}

/// A parsed feed.
#[derive(Debug, Clone, Default)]
pub struct ParsedFeed {
    pub title: Option<String>,
    pub entries: Vec<FeedEntry>,
}

/// Why a document is not a usable feed.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// The response had no body.
    #[error("empty body")]
    Empty,
    /// The DOCTYPE declares entities, which are refused unexpanded.
    #[error("feed declares XML entities in its DOCTYPE (refused; nothing expanded)")]
    EntityDeclaration,
    /// The body is an HTML page rather than a feed.
    #[error("not a feed: the body is an HTML page")]
    HtmlPage,
    /// feed-rs could not parse the document.
    #[error("cannot parse feed: {0}")]
    Parse(String),
}

/// Parses a feed document fetched from `feed_url` at `fetched_at`.
pub fn parse_feed(
    bytes: &[u8],
    _content_type: Option<&str>,
    feed_url: &Url,
    fetched_at: DateTime<Utc>,
) -> Result<ParsedFeed, FeedError> {
    let trimmed = bytes.trim_ascii_start();
    if trimmed.is_empty() {
        return Err(FeedError::Empty);
    }
    let head = String::from_utf8_lossy(&trimmed[..trimmed.len().min(4096)]).to_ascii_lowercase();
    if head.contains("<!entity") {
        return Err(FeedError::EntityDeclaration);
    }
    if head.starts_with("<!doctype html") || head.starts_with("<html") {
        return Err(FeedError::HtmlPage);
    }
    let parser = feed_rs::parser::Builder::new()
        .base_uri(Some(feed_url.as_str()))
        .build();
    let feed = parser
        .parse(bytes)
        .map_err(|e| FeedError::Parse(e.to_string()))?;
    let entries = feed
        .entries
        .into_iter()
        .map(|e| {
            let link = e
                .links
                .iter()
                .find(|l| l.rel.as_deref().is_none_or(|r| r == "alternate"))
                .or_else(|| e.links.first())
                .and_then(|l| feed_url.join(&l.href).ok());
            let published = e.published.or(e.updated);
            FeedEntry {
                guid: Some(e.id).filter(|s| !s.is_empty()),
                link,
                title: e.title.map(|t| t.content),
                summary_html: e.summary.map(|t| t.content),
                content_html: e.content.and_then(|c| c.body),
                author: e.authors.first().and_then(|a| a.name.clone()),
                date_was_missing: published.is_none(),
                published: Some(published.unwrap_or(fetched_at)),
            }
        })
        .collect();
    Ok(ParsedFeed {
        title: feed.title.map(|t| t.content),
        entries,
    })
}
