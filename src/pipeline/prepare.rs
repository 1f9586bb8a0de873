//! Between parsing and the store: the cheap check, then story preparation. An
//! entry the store already holds unchanged (the same identity and the same hash
//! of the entry as served) is skipped before any work is spent on it; the rest
//! are normalised, keyed (canonical URL, content hash), fingerprinted and
//! matched against the topics — CPU-heavy work that runs on the blocking pool,
//! at most one poll's batch per core at once, never on a runtime thread.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use url::Url;

use super::Shared;
use crate::dedup;
use crate::normalize::{RawStory, normalize};
use crate::source::feed::FeedEntry;
use crate::store::{NewStory, PollContext, PreparedStory};
use crate::topics::TopicSet;

/// A story to prepare, with the hash of the entry it came from.
pub(crate) struct Candidate {
    pub raw: RawStory,
    pub raw_hash: Option<String>,
}

/// The hash of a feed entry as served: what the cheap check compares. A date the
/// feed did not give (the fetch time stands in) is left out, or every poll would
/// see a new entry.
pub(crate) fn entry_hash(entry: &FeedEntry) -> String {
    let mut hasher = blake3::Hasher::new();
    let mut field = |value: Option<&str>| {
        let bytes = value.unwrap_or("").as_bytes();
        hasher.update(&(bytes.len() as u64).to_le_bytes());
        hasher.update(bytes);
    };
    field(entry.link.as_ref().map(Url::as_str));
    field(entry.guid.as_deref());
    field(entry.title.as_deref());
    field(entry.summary_html.as_deref());
    field(entry.content_html.as_deref());
    field(entry.author.as_deref());
    let published = entry
        .published
        .filter(|_| !entry.date_was_missing)
        .map(|p| p.timestamp_micros().to_string());
    field(published.as_deref());
    hasher.finalize().to_hex()[..32].to_string()
}

/// The identity a story from this link or guid will be stored under, as far as it
/// is known before normalising: `(canonical URL, URL)`. An entry with neither (its
/// identity is its content hash) has none, and is always prepared.
pub(crate) fn identity(
    source_name: &str,
    link: Option<&Url>,
    guid: Option<&str>,
) -> Option<(String, Option<String>)> {
    if let Some(link) = link {
        return Some((
            dedup::canonicalize_url(link).to_string(),
            Some(link.to_string()),
        ));
    }
    let guid = guid.map(str::trim).filter(|g| !g.is_empty())?;
    Some((format!("feedwatch:{source_name}:{guid}"), None))
}

/// What the store holds of a poll's identities, for the cheap check.
pub(crate) struct Known {
    /// Stored raw hash by canonical URL and by URL.
    by_canonical: HashMap<String, Option<String>>,
    by_url: HashMap<String, Option<String>>,
    page_attempts: HashMap<String, i32>,
}

impl Known {
    pub fn new(context: PollContext) -> Known {
        let mut by_canonical = HashMap::with_capacity(context.known.len());
        let mut by_url = HashMap::with_capacity(context.known.len());
        for story in context.known {
            by_url.insert(story.url, story.raw_hash.clone());
            by_canonical.insert(story.canonical_url, story.raw_hash);
        }
        Known {
            by_canonical,
            by_url,
            page_attempts: context.page_attempts,
        }
    }

    /// The stored raw hash of the story under this identity, if one is stored.
    fn stored(&self, (canonical, url): &(String, Option<String>)) -> Option<&Option<String>> {
        self.by_canonical
            .get(canonical)
            .or_else(|| url.as_ref().and_then(|u| self.by_url.get(u)))
    }

    /// Whether a story is stored under this identity.
    pub fn holds(&self, identity: &(String, Option<String>)) -> bool {
        self.stored(identity).is_some()
    }

    /// Whether the story under this identity is stored from an entry with this hash.
    pub fn unchanged(&self, identity: &(String, Option<String>), raw_hash: &str) -> bool {
        self.stored(identity)
            .is_some_and(|stored| stored.as_deref() == Some(raw_hash))
    }

    /// Failed fetches of this article page so far.
    pub fn page_attempts(&self, url: &Url) -> i32 {
        self.page_attempts.get(url.as_str()).copied().unwrap_or(0)
    }
}

/// Prepares a poll's candidates on the blocking pool. A panic in there is resumed
/// here, so the poll is recorded as failed rather than half stored.
pub(crate) async fn prepare_all(
    shared: &Shared,
    topics: &Arc<TopicSet>,
    candidates: Vec<Candidate>,
) -> Vec<PreparedStory> {
    if candidates.is_empty() {
        return Vec::new();
    }
    let _permit = shared.prepare_permits.acquire().await;
    let topics = topics.clone();
    let prepared = tokio::task::spawn_blocking(move || {
        candidates
            .into_iter()
            .map(|c| prepare(c.raw, c.raw_hash, &topics))
            .collect()
    })
    .await;
    match prepared {
        Ok(prepared) => prepared,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// Normalises, keys, fingerprints and matches one story.
pub(crate) fn prepare(raw: RawStory, raw_hash: Option<String>, topics: &TopicSet) -> PreparedStory {
    let story = normalize(raw);
    let title = story.title.as_deref().unwrap_or("");
    let matches = topics.match_story(title, &story.body);
    // Normalised once for both the exact key and the near-duplicate fingerprint.
    let normalized = dedup::normalize_body(&story.body);
    let fingerprint = dedup::Fingerprint::of_normalized(title, &normalized);
    PreparedStory {
        story: NewStory {
            content_hash: dedup::hash_normalized(&normalized),
            raw_hash,
            fingerprint: Some(fingerprint.to_bytes()),
            band_keys: fingerprint.band_keys(),
            source_id: story.source_id,
            source_name: story.source_name,
            url: story.url,
            canonical_url: story.canonical_url,
            title: story.title,
            summary: story.summary,
            body: story.body,
            author: story.author,
            published_at: story.published_at,
            fetched_at: story.fetched_at,
        },
        matches,
    }
}

/// A story from a feed entry's own text.
pub(crate) fn feed_story(
    source_id: i64,
    source_name: &str,
    entry: FeedEntry,
    fetched_at: DateTime<Utc>,
) -> RawStory {
    RawStory {
        source_id,
        source_name: source_name.to_string(),
        link: entry.link,
        guid: entry.guid,
        rel_canonical: None,
        title: entry.title,
        summary_html: entry.summary_html,
        body_html: entry.content_html,
        body_is_text: false,
        author: entry.author,
        published: entry.published,
        fetched_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> FeedEntry {
        FeedEntry {
            guid: Some("g1".into()),
            link: Some(Url::parse("https://hongkongfp.com/2026/12/04/a/?utm_source=x").unwrap()),
            title: Some("Tariffs".into()),
            summary_html: Some("<p>Short.</p>".into()),
            content_html: Some("<p>Long.</p>".into()),
            author: None,
            published: Some(Utc::now()),
            date_was_missing: false,
        }
    }

    #[test]
    fn an_entry_hash_changes_with_what_the_feed_serves_but_not_with_a_stand_in_date() {
        let a = entry();
        assert_eq!(entry_hash(&a), entry_hash(&a.clone()));
        let edited = FeedEntry {
            content_html: Some("<p>Longer.</p>".into()),
            ..a.clone()
        };
        assert_ne!(entry_hash(&a), entry_hash(&edited));
        // Fields are length-prefixed: text moved between two fields is a change.
        let moved = FeedEntry {
            summary_html: Some("<p>Short.</p><p>Long.</p>".into()),
            content_html: Some(String::new()),
            ..a.clone()
        };
        assert_ne!(entry_hash(&a), entry_hash(&moved));
        let undated = FeedEntry {
            date_was_missing: true,
            ..a.clone()
        };
        let later = FeedEntry {
            published: Some(Utc::now() + chrono::Duration::minutes(10)),
            ..undated.clone()
        };
        assert_eq!(entry_hash(&undated), entry_hash(&later));
    }

    #[test]
    fn the_identity_known_before_normalising_is_the_one_normalising_gives() {
        let topics = TopicSet::compile(&[]).unwrap();
        let e = entry();
        let id = identity("hkfp", e.link.as_ref(), e.guid.as_deref()).unwrap();
        let prepared = prepare(feed_story(1, "hkfp", e.clone(), Utc::now()), None, &topics);
        assert_eq!(id.0, prepared.story.canonical_url);
        let linkless = FeedEntry { link: None, ..e };
        let id = identity("hkfp", None, linkless.guid.as_deref()).unwrap();
        let prepared = prepare(feed_story(1, "hkfp", linkless, Utc::now()), None, &topics);
        assert_eq!(id.0, prepared.story.canonical_url);
        assert!(identity("hkfp", None, Some("  ")).is_none());
    }
}
