//! Polling an html source: the listing page fetched (conditionally), its article
//! links found with the source's `links` selector and kept to the source's host
//! or `allow_hosts`, and each link the store does not hold fetched and extracted
//! as a story. The listing's validators advance only when every link on it was
//! handled: links over the per-poll cap, and pages that failed (until they are
//! given up), are fetched by later polls instead of being hidden behind a 304.

use tracing::{debug, info, warn};
use url::Url;

use super::page::{MAX_PAGE_ATTEMPTS, MAX_PAGES_PER_POLL, fetch_article};
use super::prepare::{self, Candidate, Known, identity};
use super::{Answer, Fetched, PollFailure, PollJob, Polled, Shared, fetch_source};
use crate::extract;
use crate::normalize::RawStory;
use crate::store::PageFailure;

/// Polls an html source once, filling `polled` with what it produced.
pub(super) async fn poll(
    shared: &Shared,
    job: &PollJob,
    polled: &mut Polled,
) -> Result<Fetched, PollFailure> {
    let fetched_at = polled.polled_at;
    let Some(selector) = job.plan.links.clone() else {
        return Err(PollFailure::new(
            None,
            "html source without a `links` selector",
        ));
    };
    let (url, page) = match fetch_source(shared, job).await? {
        Answer::NotModified(answer) => return Ok(answer),
        Answer::Body(url, body) => (url, body),
    };
    let status = i32::from(page.status);
    let new_validators = page.validators.clone();
    let page_url = page.final_url.clone();
    let links = tokio::task::spawn_blocking(move || {
        let html = extract::decode_page(&page.body, page.content_type.as_deref());
        extract::extract_links(&html, &page_url, &selector)
    })
    .await
    .map_err(|e| PollFailure::new(Some(status), format!("listing page parser crashed: {e}")))?;
    let found = links.len();
    let (allowed, refused): (Vec<Url>, Vec<Url>) = links
        .into_iter()
        .partition(|l| job.plan.may_follow(&url, l));
    if !refused.is_empty() {
        debug!(refused = refused.len(), first = %refused[0], "links to hosts not in allow_hosts skipped");
    }

    // The cheap check: one read for the whole listing.
    let name = job.plan.spec.name();
    let ids: Vec<(String, Option<String>)> = allowed
        .iter()
        .filter_map(|link| identity(name, Some(link), None))
        .collect();
    let canonical: Vec<String> = ids.iter().map(|id| id.0.clone()).collect();
    let urls: Vec<String> = allowed.iter().map(Url::to_string).collect();
    let context = shared
        .store
        .poll_context(job.row.id, &canonical, &urls, &urls)
        .await
        .map_err(|e| PollFailure::new(Some(status), format!("cannot read the store: {e}")))?;
    let known = Known::new(context);

    let mut complete = true;
    let mut pages_fetched = 0;
    let mut candidates = Vec::new();
    for (link, id) in allowed.into_iter().zip(ids) {
        // Article pages are fetched once: a stored link is done.
        if known.holds(&id) {
            polled.unchanged += 1;
            continue;
        }
        let attempts = known.page_attempts(&link);
        if attempts >= MAX_PAGE_ATTEMPTS {
            continue;
        }
        if pages_fetched >= MAX_PAGES_PER_POLL {
            complete = false;
            continue;
        }
        pages_fetched += 1;
        let (article, final_url) = match fetch_article(shared, &job.plan, &link).await {
            Ok(page) => page,
            Err(error) => {
                if attempts + 1 >= MAX_PAGE_ATTEMPTS {
                    warn!(url = %link, attempts = attempts + 1, %error, "article page given up");
                } else {
                    warn!(url = %link, %error, "article page not fetched; tried again on the next poll");
                    complete = false;
                }
                polled.page_failures.push(PageFailure {
                    url: link.to_string(),
                    error,
                });
                continue;
            }
        };
        if attempts > 0 {
            polled.pages_done.push(link.to_string());
        }
        candidates.push(Candidate {
            raw: RawStory {
                source_id: job.row.id,
                source_name: name.to_string(),
                link: Some(final_url),
                guid: None,
                rel_canonical: article.canonical_url,
                title: article.title,
                summary_html: article.description,
                body_html: Some(article.body),
                body_is_text: true,
                author: article.author,
                published: Some(article.published.unwrap_or(fetched_at)),
                fetched_at,
            },
            raw_hash: None,
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
        links = found,
        pages = pages_fetched,
        unchanged = polled.unchanged,
        status,
        complete,
        "polled listing"
    );
    Ok(Fetched {
        status,
        validators: new_validators,
        complete,
    })
}
