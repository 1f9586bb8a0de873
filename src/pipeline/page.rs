//! Article pages: a feed entry's full text, or a listing's link. The page is
//! fetched with the source's fetcher rules and extracted (selectors, JSON-LD,
//! OpenGraph, the main-text heuristic) on the blocking pool, since `scraper`'s
//! DOM is neither `Send` nor cheap.

use std::sync::Arc;

use url::Url;

use super::{Shared, SourcePlan};
use crate::extract::{self, Article};
use crate::fetch::{FetchOutcome, FetchPolicy, Validators};

/// Most article pages fetched in one poll of a source; the rest wait for the next
/// poll, and the source's validators wait with them.
pub(crate) const MAX_PAGES_PER_POLL: usize = 50;

/// Fetches of one page that may fail, over as many polls, before it is given up
/// (a feed entry is then stored from its own text, a listing's link is skipped).
pub(crate) const MAX_PAGE_ATTEMPTS: i32 = 3;

/// Fetches and extracts one article page; the error says why it could not be had.
pub(crate) async fn fetch_article(
    shared: &Shared,
    plan: &Arc<SourcePlan>,
    link: &Url,
) -> Result<(Article, Url), String> {
    // The page and every hop it redirects to keep to the source's host rule.
    let source_url = Url::parse(&plan.spec.url)
        .map_err(|e| format!("bad source URL {:?}: {e}", plan.spec.url))?;
    let policy = FetchPolicy::article(&source_url, &plan.spec.allow_hosts);
    let started = std::time::Instant::now();
    let fetched = shared
        .fetcher
        .get(link, &Validators::default(), &policy)
        .await;
    metrics::histogram!("feedwatch_fetch_duration_seconds", "kind" => "page")
        .record(started.elapsed().as_secs_f64());
    let page = match fetched {
        Ok(FetchOutcome::Fetched(page)) => page,
        Ok(FetchOutcome::NotModified) => {
            return Err("304 Not Modified to an unconditional request".into());
        }
        Err(e) => return Err(e.to_string()),
    };
    let plan = plan.clone();
    let final_url = page.final_url.clone();
    tokio::task::spawn_blocking(move || {
        let html = extract::decode_page(&page.body, page.content_type.as_deref());
        let article = extract::extract_article(&html, &page.final_url, &plan.selectors);
        (article, page.final_url)
    })
    .await
    .map_err(|e| format!("article extraction failed at {final_url}: {e}"))
}
