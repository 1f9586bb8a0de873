//! The normaliser: between the parsers and dedup. A raw candidate (HTML
//! fragments, a link, a guid) becomes a [`Story`] in plain text: markup
//! removed, paragraphs kept, feed boilerplate (WordPress "[…]" excerpt
//! markers, "The post … appeared first on …" footers) stripped so it neither
//! matches topics nor perturbs content hashes, and an identity assigned — the
//! canonical URL, or `feedwatch:<source>:<guid or content hash>` for entries
//! without a link.

use chrono::{DateTime, Utc};
use url::Url;

use crate::dedup;
use crate::extract::html_to_text;
use crate::text::boilerplate::{remove_excerpt_markers, strip_yoast_footer};

/// A candidate story as a parser produced it.
#[derive(Debug, Clone)]
pub struct RawStory {
    pub source_id: i64,
    pub source_name: String,
    pub link: Option<Url>,
    pub guid: Option<String>,
    /// `<link rel=canonical>` of the article page, when one was fetched.
    pub rel_canonical: Option<Url>,
    pub title: Option<String>,
    /// Title and body may be HTML (feeds) or already plain text (extracted pages).
    pub summary_html: Option<String>,
    pub body_html: Option<String>,
    pub body_is_text: bool,
    pub author: Option<String>,
    pub published: Option<DateTime<Utc>>,
    pub fetched_at: DateTime<Utc>,
}

/// A story in plain text with its identity.
#[derive(Debug, Clone)]
pub struct Story {
    pub source_id: i64,
    pub source_name: String,
    pub url: String,
    pub canonical_url: String,
    pub title: Option<String>,
    pub summary: Option<String>,
    pub body: String,
    pub author: Option<String>,
    pub published_at: Option<DateTime<Utc>>,
    pub fetched_at: DateTime<Utc>,
}

/// Longest summary kept, in characters.
const SUMMARY_CHARS: usize = 600;

pub fn normalize(raw: RawStory) -> Story {
    let title = raw
        .title
        .as_deref()
        .map(|t| collapse(&html_to_text(t)))
        .filter(|t| !t.is_empty());
    let summary_text = raw
        .summary_html
        .as_deref()
        .map(|s| strip_feed_boilerplate(&html_to_text(s)))
        .filter(|s| !s.is_empty());
    let body = match &raw.body_html {
        Some(b) if raw.body_is_text => strip_feed_boilerplate(b),
        Some(b) => strip_feed_boilerplate(&html_to_text(b)),
        None => String::new(),
    };
    let body = if body.is_empty() {
        summary_text.clone().unwrap_or_default()
    } else {
        body
    };
    let summary = summary_text
        .or_else(|| (!body.is_empty()).then(|| body.clone()))
        .map(|s| truncate_chars(&collapse(&s), SUMMARY_CHARS));

    let (url, canonical_url) = match &raw.link {
        Some(link) => {
            let canonical = dedup::choose_canonical(link, raw.rel_canonical.as_ref());
            (link.to_string(), canonical.to_string())
        }
        None => {
            let key = raw
                .guid
                .clone()
                .filter(|g| !g.trim().is_empty())
                .unwrap_or_else(|| {
                    dedup::content_hash(&format!("{}\n{}", title.as_deref().unwrap_or(""), body))
                });
            let id = format!("feedwatch:{}:{}", raw.source_name, key.trim());
            (id.clone(), id)
        }
    };
    Story {
        source_id: raw.source_id,
        source_name: raw.source_name,
        url,
        canonical_url,
        title,
        summary,
        body,
        author: raw.author.map(|a| collapse(&a)).filter(|a| !a.is_empty()),
        published_at: raw.published,
        fetched_at: raw.fetched_at,
    }
}

/// Removes the WordPress / Yoast feed boilerplate: the "The post … appeared
/// first on …" footer and the `[…]` / `[...]` excerpt marker.
pub fn strip_feed_boilerplate(text: &str) -> String {
    let mut out: Vec<String> = Vec::new();
    for para in text.split("\n\n") {
        let p = remove_excerpt_markers(strip_yoast_footer(para));
        let p = p.trim();
        if !p.is_empty() {
            out.push(p.to_string());
        }
    }
    out.join("\n\n")
}

fn collapse(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn truncate_chars(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", s[..i].trim_end()),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(link: Option<&str>) -> RawStory {
        RawStory {
            source_id: 1,
            source_name: "asiatimes".into(),
            link: link.map(|l| Url::parse(l).unwrap()),
            guid: Some("https://asiatimes.com/?p=123".into()),
            rel_canonical: None,
            title: Some("Steel &amp; aluminium".into()),
            summary_html: Some(
                "<p>Washington raised duties on steel. Of [&hellip;]</p><p>The post Steel &amp; aluminium appeared first on Asia Times.</p>"
                    .into(),
            ),
            body_html: None,
            body_is_text: false,
            author: None,
            published: None,
            fetched_at: Utc::now(),
        }
    }

    #[test]
    fn asia_times_footers_and_excerpt_markers_are_stripped() {
        let s = normalize(raw(Some("http://www.asiatimes.com/2026/11/steel/")));
        assert_eq!(s.body, "Washington raised duties on steel. Of");
        assert_eq!(s.title.as_deref(), Some("Steel & aluminium"));
        assert_eq!(s.canonical_url, "https://asiatimes.com/2026/11/steel");
    }

    #[test]
    fn entries_without_a_link_get_a_stable_feedwatch_identity() {
        let a = normalize(raw(None));
        let b = normalize(raw(None));
        assert_eq!(
            a.canonical_url,
            "feedwatch:asiatimes:https://asiatimes.com/?p=123"
        );
        assert_eq!(a.canonical_url, b.canonical_url);
    }

    #[test]
    fn rel_canonical_wins_only_on_the_same_site() {
        let mut r = raw(Some("https://asiatimes.com/2026/11/steel/?utm_source=x"));
        r.rel_canonical =
            Some(Url::parse("http://www.asiatimes.com/2026/11/steel-tariffs/").unwrap());
        assert_eq!(
            normalize(r.clone()).canonical_url,
            "https://asiatimes.com/2026/11/steel-tariffs"
        );
        r.rel_canonical = Some(Url::parse("https://elsewhere.example/steel").unwrap());
        assert_eq!(
            normalize(r).canonical_url,
            "https://asiatimes.com/2026/11/steel"
        );
    }
}
