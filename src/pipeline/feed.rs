//! Polling a feed source: a conditional GET, the feed parsed on the blocking
//! pool, the cheap check against the store, then each new or changed entry —
//! with its article page fetched when the source asks for full text or the feed
//! gives only an excerpt — handed to preparation. A page that fails is tried
//! again on later polls (the feed's validators wait meanwhile) before the entry
//! is stored from the feed's own text.

use chrono::{DateTime, Utc};
use tracing::{info, warn};
use url::Url;

use super::page::{MAX_PAGE_ATTEMPTS, MAX_PAGES_PER_POLL, fetch_article};
use super::prepare::{self, Candidate, Known, entry_hash, feed_story, identity};
use super::{Answer, Fetched, PollFailure, PollJob, Polled, Shared, fetch_source};
use crate::config::SourceConfig;
use crate::normalize::RawStory;
use crate::source::feed::{FeedEntry, parse_feed};
use crate::store::PageFailure;
use crate::text::boilerplate::has_excerpt_marker;

/// Polls a feed source once, filling `polled` with what it produced.
pub(super) async fn poll(
    shared: &Shared,
    job: &PollJob,
    polled: &mut Polled,
) -> Result<Fetched, PollFailure> {
    let fetched_at = polled.polled_at;
    let (url, fetched) = match fetch_source(shared, job).await? {
        Answer::NotModified(answer) => return Ok(answer),
        Answer::Body(url, body) => (url, body),
    };
    let status = i32::from(fetched.status);
    let new_validators = fetched.validators.clone();
    let feed_url = fetched.final_url.clone();
    let name = job.plan.spec.name();
    // Parsing and hashing the entries (which may be megabytes each) are CPU work:
    // both run on the blocking pool.
    let parsed = tokio::task::spawn_blocking(move || {
        parse_feed(
            &fetched.body,
            fetched.content_type.as_deref(),
            &feed_url,
            fetched_at,
        )
        .map(|feed| {
            feed.entries
                .into_iter()
                .map(|entry| {
                    let hash = entry_hash(&entry);
                    (entry, hash)
                })
                .collect::<Vec<_>>()
        })
    })
    .await
    .map_err(|e| PollFailure::new(Some(status), format!("feed parser crashed: {e}")))?
    .map_err(|e| PollFailure::new(Some(status), e.to_string()))?;

    // The cheap check: one read for the whole feed.
    let entries: Vec<_> = parsed
        .into_iter()
        .map(|(entry, hash)| {
            let id = identity(name, entry.link.as_ref(), entry.guid.as_deref());
            (entry, hash, id)
        })
        .collect();
    let canonical: Vec<String> = entries
        .iter()
        .filter_map(|(_, _, id)| id.as_ref().map(|id| id.0.clone()))
        .collect();
    let urls: Vec<String> = entries
        .iter()
        .filter_map(|(_, _, id)| id.as_ref().and_then(|id| id.1.clone()))
        .collect();
    let pages: Vec<String> = entries
        .iter()
        .filter_map(|(e, _, _)| wants_page(&job.plan.spec, e).map(Url::to_string))
        .collect();
    let context = shared
        .store
        .poll_context(job.row.id, &canonical, &urls, &pages)
        .await
        .map_err(|e| PollFailure::new(Some(status), format!("cannot read the store: {e}")))?;
    let known = Known::new(context);

    let total = entries.len();
    let mut complete = true;
    let mut pages_fetched = 0;
    let mut candidates = Vec::new();
    for (entry, hash, id) in entries {
        if id.as_ref().is_some_and(|id| known.unchanged(id, &hash)) {
            polled.unchanged += 1;
            continue;
        }
        let raw = match wants_page(&job.plan.spec, &entry).cloned() {
            Some(link) if job.plan.may_follow(&url, &link) => {
                if pages_fetched >= MAX_PAGES_PER_POLL {
                    complete = false;
                    continue;
                }
                pages_fetched += 1;
                let attempts = known.page_attempts(&link);
                match fetch_article(shared, &job.plan, &link).await {
                    Ok((article, final_url)) => {
                        if attempts > 0 {
                            polled.pages_done.push(link.to_string());
                        }
                        with_full_text(job, entry, article, final_url, fetched_at)
                    }
                    Err(error) if attempts + 1 >= MAX_PAGE_ATTEMPTS => {
                        warn!(url = %link, attempts = attempts + 1, %error, "article page given up; the feed's own text is stored");
                        polled.pages_done.push(link.to_string());
                        feed_story(job.row.id, name, entry, fetched_at)
                    }
                    Err(error) => {
                        warn!(url = %link, %error, "article page not fetched; tried again on the next poll");
                        polled.page_failures.push(PageFailure {
                            url: link.to_string(),
                            error,
                        });
                        complete = false;
                        continue;
                    }
                }
            }
            _ => feed_story(job.row.id, name, entry, fetched_at),
        };
        candidates.push(Candidate {
            raw,
            raw_hash: Some(hash),
        });
    }
    if pages_fetched >= MAX_PAGES_PER_POLL && !complete {
        info!(
            limit = MAX_PAGES_PER_POLL,
            "page limit reached; the rest waits for the next poll"
        );
    }
    polled.stories = prepare::prepare_all(shared, &job.snapshot.topics, candidates).await;
    info!(
        entries = total,
        unchanged = polled.unchanged,
        prepared = polled.stories.len(),
        status,
        complete,
        "polled"
    );
    Ok(Fetched {
        status,
        validators: new_validators,
        complete,
    })
}

/// The entry's page, when its full text should be fetched: always with
/// `full_text = true`, otherwise when the feed gives no body or only an excerpt.
fn wants_page<'e>(spec: &SourceConfig, entry: &'e FeedEntry) -> Option<&'e Url> {
    let link = entry.link.as_ref()?;
    if spec.full_text {
        return Some(link);
    }
    let has_body = entry
        .content_html
        .as_deref()
        .is_some_and(|c| !c.trim().is_empty());
    if has_body {
        return None;
    }
    let summary = entry.summary_html.as_deref().unwrap_or("");
    let excerpt = summary.trim().is_empty() || has_excerpt_marker(summary);
    excerpt.then_some(link)
}

/// The story from an entry's page, keeping the feed's title, date and author where
/// the page lacks them; the feed's own text when the page has no body.
fn with_full_text(
    job: &PollJob,
    entry: FeedEntry,
    article: crate::extract::Article,
    final_url: Url,
    fetched_at: DateTime<Utc>,
) -> RawStory {
    if article.body.trim().is_empty() {
        return feed_story(job.row.id, job.plan.spec.name(), entry, fetched_at);
    }
    RawStory {
        source_id: job.row.id,
        source_name: job.plan.spec.name().to_string(),
        link: Some(final_url),
        guid: entry.guid,
        rel_canonical: article.canonical_url,
        title: entry.title.or(article.title),
        summary_html: entry.summary_html.or(article.description),
        body_html: Some(article.body),
        body_is_text: true,
        author: entry.author.or(article.author),
        published: if entry.date_was_missing {
            article.published.or(entry.published)
        } else {
            entry.published
        },
        fetched_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::plan::plan_of as plan;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    fn entry(content: Option<&str>, summary: Option<&str>) -> FeedEntry {
        FeedEntry {
            guid: None,
            link: Some(url("https://asiatimes.com/2026/11/x/")),
            title: Some("t".into()),
            summary_html: summary.map(str::to_string),
            content_html: content.map(str::to_string),
            author: None,
            published: None,
            date_was_missing: true,
        }
    }

    #[test]
    fn pages_are_fetched_for_excerpts_and_full_text_sources_only() {
        let feed = plan(
            "[[sources]]\nname = \"a\"\nkind = \"feed\"\nurl = \"https://asiatimes.com/feed/\"\n",
        );
        let full = plan(
            "[[sources]]\nname = \"a\"\nkind = \"feed\"\nurl = \"https://asiatimes.com/feed/\"\nfull_text = true\n",
        );
        let body = entry(Some("<p>The whole story.</p>"), Some("Short."));
        let excerpt = entry(None, Some("<p>It began [&#8230;]</p>"));
        let plain = entry(None, Some("<p>A complete short item.</p>"));
        let bare = entry(None, None);
        assert!(wants_page(&feed.spec, &body).is_none());
        assert!(wants_page(&feed.spec, &excerpt).is_some());
        assert!(wants_page(&feed.spec, &plain).is_none());
        assert!(wants_page(&feed.spec, &bare).is_some());
        assert!(wants_page(&full.spec, &body).is_some());
    }
}
