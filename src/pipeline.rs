//! The pipeline proper: poll jobs in, stored stories and outbox rows out
//! (DESIGN §1). Three stages joined by bounded channels, so a slow stage
//! back-pressures the ones before it:
//!
//! 1. **poll** — one task per claimed source (bounded by the fetcher's limits):
//!    fetch, parse on the blocking pool, emit raw stories, then a `PollDone`
//!    marker carrying the poll's outcome;
//! 2. **prepare** — normalise, key (canonical URL, content hash) and match topics;
//! 3. **store** — one writer: the new/update/duplicate verdict and the outbox
//!    rows in one transaction per story; on `PollDone` the source's validators
//!    and health are recorded — after its stories, so a crash in between makes
//!    the next poll fetch them again rather than skip them behind a 304.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinSet;
use tracing::{Instrument, debug, error, info, info_span, warn};
use url::Url;

use crate::config::{Config, EventKind, SourceConfig, SourceKind};
use crate::dedup;
use crate::extract::{self, CompiledSelectors, PageSelectors};
use crate::fetch::policy::{jittered, source_retry_delay};
use crate::fetch::{FetchError, FetchOutcome, FetchPolicy, Fetcher, Validators};
use crate::normalize::{RawStory, Story, normalize};
use crate::notify::payload::{self, SourceHealth};
use crate::source::feed::{FeedEntry, parse_feed};
use crate::store::{
    NewStory, OutboxEntry, PollRecord, SaveOutcome, SourceRow, SourceState, Store, StoreError,
};
use crate::topics::{TopicMatch, TopicSet};

/// Bound of each inter-stage channel.
const CHANNEL_BOUND: usize = 256;

/// Everything the stages share. Cheap to clone.
#[derive(Clone)]
pub struct Shared {
    pub config: Arc<Config>,
    pub store: Arc<dyn Store>,
    pub fetcher: Arc<Fetcher>,
    /// The compiled topics; SIGHUP may put a new set here, which the next story matched uses.
    pub topics: watch::Receiver<Arc<TopicSet>>,
    /// Poked when the store queues a delivery, so the notifier wakes at once.
    pub outbox_wake: Arc<Notify>,
    /// Poked when a poll is recorded, so the scheduler recomputes its next wake-up.
    pub schedule_wake: Arc<Notify>,
}

/// A configured source with what its polls need compiled once.
pub struct SourcePlan {
    pub spec: SourceConfig,
    /// The source's `[sources.select]` selectors for article pages.
    pub selectors: CompiledSelectors,
    /// `links` of an html source.
    pub links: Option<scraper::Selector>,
}

impl SourcePlan {
    /// Compiles the source's selectors; the error names the source and the selector.
    pub fn new(spec: &SourceConfig) -> anyhow::Result<SourcePlan> {
        let opt = |s: &str| (!s.trim().is_empty()).then(|| s.to_string());
        let selectors = CompiledSelectors::compile(&PageSelectors {
            title: opt(&spec.select.title),
            body: opt(&spec.select.body),
            published: opt(&spec.select.published),
            author: opt(&spec.select.author),
        })
        .map_err(|e| anyhow::anyhow!("source {:?}: {e}", spec.name()))?;
        let links = match spec.links.as_deref().map(str::trim) {
            Some(css) if !css.is_empty() => Some(
                extract::compile_link_selector(css)
                    .map_err(|e| anyhow::anyhow!("source {:?}: {e}", spec.name()))?,
            ),
            _ => None,
        };
        Ok(SourcePlan {
            spec: spec.clone(),
            selectors,
            links,
        })
    }

    /// Whether article pages at `url` may be fetched for this source: the
    /// source's own host (a leading `www.` aside, same port) or one of `allow_hosts`.
    pub fn may_follow(&self, source_url: &Url, url: &Url) -> bool {
        crate::fetch::guard::HostRule::new(source_url, &self.spec.allow_hosts).allows(url)
    }
}

/// A source claimed for one poll.
#[derive(Clone)]
pub struct PollJob {
    pub row: SourceRow,
    pub plan: Arc<SourcePlan>,
}

/// Most article pages fetched in one poll of a source; the rest wait for the next.
const MAX_PAGES_PER_POLL: usize = 50;

/// How a poll ended, before it is recorded.
#[derive(Clone)]
struct PollEnd {
    job: PollJob,
    polled_at: DateTime<Utc>,
    result: Result<PollSuccess, PollFailure>,
}

#[derive(Clone)]
struct PollSuccess {
    status: i32,
    validators: Validators,
}

#[derive(Debug, Clone)]
struct PollFailure {
    status: Option<i32>,
    message: String,
    retry_after: Option<Duration>,
    /// No request was made: the host asked every client to wait until then (another
    /// source's 429 or 503). Not a failure of this source.
    deferred_until: Option<DateTime<Utc>>,
}

impl PollFailure {
    /// A failure of the source's own poll, with no Retry-After.
    fn new(status: Option<i32>, message: impl Into<String>) -> PollFailure {
        PollFailure {
            status,
            message: message.into(),
            retry_after: None,
            deferred_until: None,
        }
    }
}

enum Item {
    Story(Box<RawStory>),
    Done(Box<PollEnd>),
}

enum Ready {
    Story(Box<(Story, NewStory, Vec<TopicMatch>)>),
    Done(Box<PollEnd>),
}

/// What a pipeline run did, for `once` and logs.
#[derive(Debug, Default)]
pub struct PipelineStats {
    pub polls_ok: AtomicUsize,
    pub polls_failed: AtomicUsize,
    pub stories_new: AtomicUsize,
    pub stories_updated: AtomicUsize,
    pub stories_duplicate: AtomicUsize,
    pub stories_unchanged: AtomicUsize,
    pub deliveries_queued: AtomicUsize,
}

/// Runs the three stages over the jobs received on `jobs` until that channel
/// closes and everything in flight is stored (or, after retries, given up to
/// be fetched again by the next poll).
pub async fn run(shared: Shared, mut jobs: mpsc::Receiver<PollJob>, stats: Arc<PipelineStats>) {
    let (item_tx, item_rx) = mpsc::channel::<Item>(CHANNEL_BOUND);
    let (ready_tx, ready_rx) = mpsc::channel::<Ready>(CHANNEL_BOUND);

    let poll_shared = shared.clone();
    let poller = tokio::spawn(async move {
        let mut polls = JoinSet::new();
        while let Some(job) = jobs.recv().await {
            // Bound the number of polls in flight; the fetcher bounds requests.
            while polls.len() >= poll_shared.config.http.global_concurrency {
                polls.join_next().await;
            }
            let span = info_span!("poll", source = %job.plan.spec.name(), url = %job.row.url);
            polls.spawn(poll_source(poll_shared.clone(), job, item_tx.clone()).instrument(span));
        }
        while polls.join_next().await.is_some() {}
    });

    let prep_topics = shared.topics.clone();
    let preparer = tokio::spawn(prepare_stage(item_rx, ready_tx, prep_topics));
    store_stage(shared, ready_rx, stats).await;
    // The store stage ends when its input closes, i.e. after the other two.
    if let Err(e) = poller.await {
        error!(error = %e, "poll stage failed");
    }
    if let Err(e) = preparer.await {
        error!(error = %e, "prepare stage failed");
    }
}

async fn poll_source(shared: Shared, job: PollJob, out: mpsc::Sender<Item>) {
    let polled_at = Utc::now();
    let result = catching_panics(job.plan.spec.name(), async {
        match job.plan.spec.kind {
            SourceKind::Feed => poll_feed(&shared, &job, polled_at, &out).await,
            SourceKind::Html => poll_listing(&shared, &job, polled_at, &out).await,
        }
    })
    .await;
    let _ = out
        .send(Item::Done(Box::new(PollEnd {
            job,
            polled_at,
            result,
        })))
        .await;
}

/// Runs a poll of `source`. A panic in a poll is a bug, but it must not lose
/// the poll: it becomes a failure (recorded like any other, so it counts toward
/// `source.failing`), logged at error with the source's name.
async fn catching_panics(
    source: &str,
    poll: impl std::future::Future<Output = Result<PollSuccess, PollFailure>>,
) -> Result<PollSuccess, PollFailure> {
    use futures_util::FutureExt;
    std::panic::AssertUnwindSafe(poll)
        .catch_unwind()
        .await
        .unwrap_or_else(|panic| {
            let message = panic_message(panic.as_ref());
            error!(source, panic = %message, "internal error while polling; the poll is recorded as failed");
            Err(PollFailure::new(
                None,
                format!("internal error while polling: {message}"),
            ))
        })
}

/// The text a panic was raised with.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string())
}

async fn poll_feed(
    shared: &Shared,
    job: &PollJob,
    fetched_at: DateTime<Utc>,
    out: &mpsc::Sender<Item>,
) -> Result<PollSuccess, PollFailure> {
    let url = Url::parse(&job.row.url)
        .map_err(|e| PollFailure::new(None, format!("bad URL {:?}: {e}", job.row.url)))?;
    let validators = Validators {
        etag: job.row.etag.clone(),
        last_modified: job.row.last_modified.clone(),
    };
    let fetched = match shared
        .fetcher
        .get(&url, &validators, &FetchPolicy::source(&url))
        .await
    {
        Ok(FetchOutcome::NotModified) => {
            debug!("not modified");
            return Ok(PollSuccess {
                status: 304,
                validators,
            });
        }
        Ok(FetchOutcome::Fetched(f)) => f,
        Err(e) => return Err(fetch_failure(e)),
    };
    let status = i32::from(fetched.status);
    let new_validators = fetched.validators.clone();
    let feed_url = fetched.final_url.clone();
    let parsed = tokio::task::spawn_blocking(move || {
        parse_feed(
            &fetched.body,
            fetched.content_type.as_deref(),
            &feed_url,
            fetched_at,
        )
    })
    .await
    .map_err(|e| PollFailure::new(Some(status), format!("feed parser crashed: {e}")))?
    .map_err(|e| PollFailure::new(Some(status), e.to_string()))?;
    let entries = parsed.entries.len();
    for entry in parsed.entries {
        let raw = match wants_page(&job.plan.spec, &entry) {
            Some(link) if job.plan.may_follow(&url, link) => {
                match with_full_text(shared, job, &entry, link.clone(), fetched_at).await {
                    PageOutcome::Story(raw) => *raw,
                    PageOutcome::Known => continue,
                    PageOutcome::Failed => feed_story(job, entry, fetched_at),
                }
            }
            _ => feed_story(job, entry, fetched_at),
        };
        if out.send(Item::Story(Box::new(raw))).await.is_err() {
            break;
        }
    }
    info!(entries, status, "polled");
    Ok(PollSuccess {
        status,
        validators: new_validators,
    })
}

fn feed_story(job: &PollJob, entry: FeedEntry, fetched_at: DateTime<Utc>) -> RawStory {
    RawStory {
        source_id: job.row.id,
        source_name: job.plan.spec.name().to_string(),
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
    let excerpt = summary.trim().is_empty()
        || summary.contains("[&#8230;]")
        || summary.contains("[…]")
        || summary.contains("[...]")
        || summary.contains("[&hellip;]");
    excerpt.then_some(link)
}

enum PageOutcome {
    Story(Box<RawStory>),
    /// Already stored: not fetched again (pages are fetched once).
    Known,
    /// The page could not be had; the feed's own text is used.
    Failed,
}

/// Fetches an entry's page and builds the story from its full text, keeping the
/// feed's title, date and author where the page lacks them.
async fn with_full_text(
    shared: &Shared,
    job: &PollJob,
    entry: &FeedEntry,
    link: Url,
    fetched_at: DateTime<Utc>,
) -> PageOutcome {
    match fetch_article(shared, job, &link).await {
        ArticleOutcome::Known => PageOutcome::Known,
        ArticleOutcome::Failed => PageOutcome::Failed,
        ArticleOutcome::Article(article, final_url) => {
            let article = *article;
            if article.body.trim().is_empty() {
                return PageOutcome::Failed;
            }
            PageOutcome::Story(Box::new(RawStory {
                source_id: job.row.id,
                source_name: job.plan.spec.name().to_string(),
                link: Some(final_url),
                guid: entry.guid.clone(),
                rel_canonical: article.canonical_url,
                title: entry.title.clone().or(article.title),
                summary_html: entry.summary_html.clone().or(article.description),
                body_html: Some(article.body),
                body_is_text: true,
                author: entry.author.clone().or(article.author),
                published: if entry.date_was_missing {
                    article.published.or(entry.published)
                } else {
                    entry.published
                },
                fetched_at,
            }))
        }
    }
}

enum ArticleOutcome {
    Article(Box<extract::Article>, Url),
    Known,
    Failed,
}

/// Fetches and extracts one article page unless a story from it is stored.
async fn fetch_article(shared: &Shared, job: &PollJob, link: &Url) -> ArticleOutcome {
    let canonical = dedup::canonicalize_url(link);
    match shared
        .store
        .story_exists(link.as_str(), canonical.as_str())
        .await
    {
        Ok(true) => return ArticleOutcome::Known,
        Ok(false) => {}
        Err(e) => {
            warn!(url = %link, error = %e, "cannot check whether the page is stored");
            return ArticleOutcome::Failed;
        }
    }
    // The page and every hop it redirects to keep to the source's host rule.
    let policy = match Url::parse(&job.row.url) {
        Ok(source_url) => FetchPolicy::article(&source_url, &job.plan.spec.allow_hosts),
        Err(_) => return ArticleOutcome::Failed,
    };
    let page = match shared
        .fetcher
        .get(link, &Validators::default(), &policy)
        .await
    {
        Ok(FetchOutcome::Fetched(page)) => page,
        Ok(FetchOutcome::NotModified) => return ArticleOutcome::Failed,
        Err(e) => {
            warn!(url = %link, error = %e, "article page not fetched");
            return ArticleOutcome::Failed;
        }
    };
    let plan = job.plan.clone();
    let final_url = page.final_url.clone();
    let page_url = page.final_url.clone();
    let article = tokio::task::spawn_blocking(move || {
        let html = extract::decode_page(&page.body, page.content_type.as_deref());
        extract::extract_article(&html, &page_url, &plan.selectors)
    })
    .await;
    match article {
        Ok(article) => ArticleOutcome::Article(Box::new(article), final_url),
        Err(e) => {
            warn!(url = %link, error = %e, "article extraction failed");
            ArticleOutcome::Failed
        }
    }
}

/// Polls an html source: the listing page's links on allowed hosts, each new
/// one fetched and extracted as a story.
async fn poll_listing(
    shared: &Shared,
    job: &PollJob,
    fetched_at: DateTime<Utc>,
    out: &mpsc::Sender<Item>,
) -> Result<PollSuccess, PollFailure> {
    let url = Url::parse(&job.row.url)
        .map_err(|e| PollFailure::new(None, format!("bad URL {:?}: {e}", job.row.url)))?;
    let Some(selector) = job.plan.links.clone() else {
        return Err(PollFailure::new(
            None,
            "html source without a `links` selector",
        ));
    };
    let validators = Validators {
        etag: job.row.etag.clone(),
        last_modified: job.row.last_modified.clone(),
    };
    let page = match shared
        .fetcher
        .get(&url, &validators, &FetchPolicy::source(&url))
        .await
    {
        Ok(FetchOutcome::NotModified) => {
            return Ok(PollSuccess {
                status: 304,
                validators,
            });
        }
        Ok(FetchOutcome::Fetched(f)) => f,
        Err(e) => return Err(fetch_failure(e)),
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
    let mut fetched = 0;
    for link in allowed {
        if fetched >= MAX_PAGES_PER_POLL {
            info!(
                limit = MAX_PAGES_PER_POLL,
                "page limit reached; the rest waits for the next poll"
            );
            break;
        }
        let (article, final_url) = match fetch_article(shared, job, &link).await {
            ArticleOutcome::Known => continue,
            ArticleOutcome::Failed => {
                fetched += 1;
                continue;
            }
            ArticleOutcome::Article(a, u) => (*a, u),
        };
        fetched += 1;
        let raw = RawStory {
            source_id: job.row.id,
            source_name: job.plan.spec.name().to_string(),
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
        };
        if out.send(Item::Story(Box::new(raw))).await.is_err() {
            break;
        }
    }
    info!(links = found, pages = fetched, status, "polled listing");
    Ok(PollSuccess {
        status,
        validators: new_validators,
    })
}

fn fetch_failure(e: FetchError) -> PollFailure {
    PollFailure {
        status: e.status().map(i32::from),
        retry_after: e.retry_after(),
        message: e.to_string(),
        deferred_until: match e {
            FetchError::HostPaused { until, .. } => Some(until),
            _ => None,
        },
    }
}

async fn prepare_stage(
    mut input: mpsc::Receiver<Item>,
    output: mpsc::Sender<Ready>,
    topics: watch::Receiver<Arc<TopicSet>>,
) {
    while let Some(item) = input.recv().await {
        let ready = match item {
            Item::Done(end) => Ready::Done(end),
            Item::Story(raw) => {
                let story = normalize(*raw);
                let topics = topics.borrow().clone();
                let matches = topics.match_story(story.title.as_deref().unwrap_or(""), &story.body);
                let new = key_story(&story);
                Ready::Story(Box::new((story, new, matches)))
            }
        };
        if output.send(ready).await.is_err() {
            return;
        }
    }
}

/// Computes the dedup keys of a story for the store.
fn key_story(story: &Story) -> NewStory {
    let fingerprint = dedup::Fingerprint::of(story.title.as_deref().unwrap_or(""), &story.body);
    NewStory {
        source_id: story.source_id,
        url: story.url.clone(),
        canonical_url: story.canonical_url.clone(),
        title: story.title.clone(),
        summary: story.summary.clone(),
        body: story.body.clone(),
        author: story.author.clone(),
        published_at: story.published_at,
        fetched_at: story.fetched_at,
        content_hash: dedup::content_hash(&story.body),
        simhash: Some(fingerprint.simhash_i64()),
        band_keys: fingerprint.band_keys(),
        fingerprint: Some(fingerprint.to_bytes()),
    }
}

/// How a store write is retried before it is given up: the database may be
/// restarting or briefly unreachable, which must not cost a story or an alert.
fn store_retry() -> backon::ExponentialBuilder {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(250))
        .with_max_delay(Duration::from_secs(5))
        .with_max_times(4)
        .with_jitter()
}

async fn store_stage(shared: Shared, mut input: mpsc::Receiver<Ready>, stats: Arc<PipelineStats>) {
    use backon::Retryable;
    let window =
        chrono::Duration::from_std(shared.config.dedup.window).unwrap_or(chrono::Duration::days(7));
    // Sources with a story that could not be stored in their current poll: that
    // poll is recorded as failed, so its validators do not advance and the next
    // poll fetches the story again.
    let mut unsaved: HashMap<i64, String> = HashMap::new();
    while let Some(ready) = input.recv().await {
        match ready {
            Ready::Story(boxed) => {
                let (story, new, matches) = *boxed;
                let alerts = |id: i64| build_story_alerts(&shared.config, id, &story, &matches);
                let mine = new
                    .fingerprint
                    .as_deref()
                    .and_then(|b| dedup::Fingerprint::from_bytes(b).ok());
                let near_dup = |stored: &[u8]| match (&mine, dedup::Fingerprint::from_bytes(stored))
                {
                    (Some(mine), Ok(theirs)) => mine.is_near_duplicate(&theirs),
                    _ => false,
                };
                let saved = (|| {
                    shared
                        .store
                        .save_story(&new, &matches, Utc::now() - window, &near_dup, &alerts)
                })
                .retry(store_retry())
                .notify(|e: &StoreError, wait| {
                    warn!(url = %story.url, error = %e, ?wait, "cannot store story; retrying")
                })
                .await;
                let outcome = match saved {
                    Ok(outcome) => outcome,
                    Err(e) => {
                        error!(url = %story.url, error = %e, "story not stored; its source will fetch it again");
                        unsaved.insert(story.source_id, e.to_string());
                        continue;
                    }
                };
                record_outcome(&stats, &story, &matches, outcome);
                if let SaveOutcome::New { deliveries, .. } = outcome
                    && deliveries > 0
                {
                    stats
                        .deliveries_queued
                        .fetch_add(deliveries, Ordering::Relaxed);
                    shared.outbox_wake.notify_one();
                }
            }
            Ready::Done(end) => {
                let mut end = *end;
                if let Some(error) = unsaved.remove(&end.job.row.id) {
                    let status = end.result.as_ref().ok().map(|ok| ok.status);
                    end.result = Err(PollFailure::new(
                        status,
                        format!("stories could not be stored: {error}"),
                    ));
                }
                let name = end.job.plan.spec.name().to_string();
                let recorded = (|| finish_poll(&shared, &stats, &end))
                    .retry(store_retry())
                    .notify(|e: &StoreError, wait| {
                        warn!(source = %name, error = %e, ?wait, "cannot record poll; retrying")
                    })
                    .await;
                if let Err(e) = recorded {
                    error!(source = %name, error = %e, "poll not recorded; the source is polled again when its lease ends");
                }
            }
        }
    }
}

fn record_outcome(
    stats: &PipelineStats,
    story: &Story,
    matches: &[TopicMatch],
    outcome: SaveOutcome,
) {
    let topics: Vec<&str> = matches.iter().map(|m| m.topic.as_str()).collect();
    let label = match outcome {
        SaveOutcome::New { .. } => "new",
        SaveOutcome::Updated { .. } => "updated",
        SaveOutcome::Duplicate { near: false, .. } => "duplicate",
        SaveOutcome::Duplicate { near: true, .. } => "near_duplicate",
        SaveOutcome::Unchanged { .. } => "unchanged",
    };
    metrics::counter!("feedwatch_stories_total", "outcome" => label).increment(1);
    for topic in &topics {
        if matches!(
            outcome,
            SaveOutcome::New { .. } | SaveOutcome::Duplicate { .. }
        ) {
            metrics::counter!("feedwatch_matches_total", "topic" => topic.to_string()).increment(1);
        }
    }
    match outcome {
        SaveOutcome::New { id, deliveries } => {
            stats.stories_new.fetch_add(1, Ordering::Relaxed);
            info!(story = id, source = %story.source_name, url = %story.url, ?topics, deliveries, "new story");
        }
        SaveOutcome::Updated { id } => {
            stats.stories_updated.fetch_add(1, Ordering::Relaxed);
            info!(story = id, url = %story.url, "story updated");
        }
        SaveOutcome::Duplicate { id, of, near } => {
            stats.stories_duplicate.fetch_add(1, Ordering::Relaxed);
            info!(story = id, duplicate_of = of, near, url = %story.url, "duplicate story");
        }
        SaveOutcome::Unchanged { .. } => {
            stats.stories_unchanged.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The outbox rows for a new story: one per webhook that wants any of its
/// topics, unless the story is older than that webhook's `max_age`.
fn build_story_alerts(
    config: &Config,
    story_id: i64,
    story: &Story,
    matches: &[TopicMatch],
) -> Vec<OutboxEntry> {
    let now = Utc::now();
    config
        .webhooks
        .iter()
        .filter(|w| w.wants_event(EventKind::StoryMatched))
        .filter(|w| {
            let age = story.published_at.map(|p| now - p).unwrap_or_default();
            age.to_std().map(|a| a <= w.max_age).unwrap_or(true)
        })
        .filter_map(|w| {
            let topics: Vec<&TopicMatch> =
                matches.iter().filter(|m| w.wants_topic(&m.topic)).collect();
            (!topics.is_empty()).then(|| OutboxEntry {
                webhook: w.name().to_string(),
                payload: payload::story_matched(w.format, story_id, story, &topics, now),
            })
        })
        .collect()
}

async fn finish_poll(
    shared: &Shared,
    stats: &PipelineStats,
    end: &PollEnd,
) -> Result<(), StoreError> {
    let config = &shared.config;
    let interval = config.interval_of(&end.job.plan.spec);
    let now = Utc::now();
    if let Err(PollFailure {
        deferred_until: Some(until),
        message,
        ..
    }) = &end.result
    {
        // Another source's 429/503 paused the host before this one's request went
        // out: nothing was asked of the server, so the source's streak, validators
        // and health events are untouched; it is simply polled once the pause ends
        // (spread a little, so the host's sources do not all return at once).
        let at = (*until).max(now) + to_chrono(jittered(Duration::from_secs(5)));
        info!(source = %end.job.plan.spec.name(), until = %at, "host paused; poll deferred");
        shared
            .store
            .defer_poll(end.job.row.id, at, &format!("not polled: {message}"))
            .await?;
        stats.polls_failed.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(
            "feedwatch_polls_total",
            "source" => end.job.plan.spec.name().to_string(),
            "outcome" => "deferred",
        )
        .increment(1);
        shared.schedule_wake.notify_one();
        return Ok(());
    }
    let record = match &end.result {
        Ok(ok) => PollRecord {
            source_id: end.job.row.id,
            polled_at: end.polled_at,
            status: Some(ok.status),
            error: None,
            etag: ok.validators.etag.clone(),
            last_modified: ok.validators.last_modified.clone(),
            next_poll_at: now + to_chrono(jittered(interval)),
            state: SourceState::Active,
        },
        Err(fail) => {
            let failures = u32::try_from(end.job.row.consecutive_failures).unwrap_or(0) + 1;
            let state = match fail.status {
                Some(403) => SourceState::Blocked,
                Some(410) => SourceState::Gone,
                _ => SourceState::Active,
            };
            if state == SourceState::Gone {
                error!(source = %end.job.plan.spec.name(), "the server says the feed is gone (HTTP 410); source disabled until its URL changes");
            } else {
                warn!(source = %end.job.plan.spec.name(), error = %fail.message, failures, "poll failed");
            }
            let wait = source_retry_delay(
                failures,
                interval,
                config.http.backoff_max,
                fail.retry_after,
            );
            PollRecord {
                source_id: end.job.row.id,
                polled_at: end.polled_at,
                status: fail.status,
                error: Some(fail.message.clone()),
                etag: None,
                last_modified: None,
                next_poll_at: now + to_chrono(wait),
                state,
            }
        }
    };
    let change = shared.store.finish_poll(&record).await?;
    // Counted once recorded: a retried `finish_poll` must not count the poll twice.
    match record.error {
        None => stats.polls_ok.fetch_add(1, Ordering::Relaxed),
        Some(_) => stats.polls_failed.fetch_add(1, Ordering::Relaxed),
    };
    metrics::counter!(
        "feedwatch_polls_total",
        "source" => end.job.plan.spec.name().to_string(),
        "outcome" => if record.error.is_none() { "ok" } else { "failed" },
    )
    .increment(1);
    shared.schedule_wake.notify_one();
    let threshold = i32::try_from(config.defaults.failing_after).unwrap_or(i32::MAX);
    let event = if change.before < threshold && change.after >= threshold {
        Some(EventKind::SourceFailing)
    } else if change.before >= threshold && change.after == 0 {
        Some(EventKind::SourceRecovered)
    } else {
        None
    };
    if let Some(event) = event {
        let since = change.since.unwrap_or(end.polled_at);
        let health = SourceHealth {
            id: end.job.row.id,
            name: end.job.plan.spec.name(),
            url: &end.job.row.url,
            consecutive_failures: change.after.max(change.before),
            since: Some(since),
            last_error: record.error.as_deref(),
        };
        let entries: Vec<OutboxEntry> = config
            .webhooks
            .iter()
            .filter(|w| w.wants_event(event))
            .map(|w| OutboxEntry {
                webhook: w.name().to_string(),
                payload: payload::source_event(w.format, event.as_str(), &health, now),
            })
            .collect();
        let key = format!(
            "{}:{}:{}",
            event.as_str(),
            end.job.row.id,
            since.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        );
        info!(source = %end.job.plan.spec.name(), event = event.as_str(), "source health changed");
        if !entries.is_empty()
            && shared
                .store
                .enqueue_source_event(event.as_str(), &key, end.job.row.id, &entries, now)
                .await?
                > 0
        {
            shared.outbox_wake.notify_one();
        }
    }
    Ok(())
}

fn to_chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::days(365))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(toml_source: &str) -> SourcePlan {
        let config =
            Config::from_toml(toml_source, std::path::Path::new("t.toml"), |_| None).unwrap();
        SourcePlan::new(&config.sources[0]).unwrap()
    }

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn article_links_stay_on_the_source_host_unless_allowed() {
        let p = plan(
            "[[sources]]\nname = \"a\"\nkind = \"html\"\nurl = \"https://www.asiatimes.com/china/\"\nlinks = \"a\"\n",
        );
        let src = url("https://www.asiatimes.com/china/");
        assert!(p.may_follow(&src, &url("https://asiatimes.com/2026/11/story/")));
        assert!(
            !p.may_follow(&src, &url("http://www.asiatimes.com/2026/11/story/")),
            "another port (80 vs 443) is another host"
        );
        assert!(!p.may_follow(&src, &url("https://partner.example.com/x")));
        assert!(!p.may_follow(&src, &url("http://127.0.0.1:8080/admin")));
        assert!(!p.may_follow(&src, &url("ftp://asiatimes.com/file")));

        let p = plan(
            "[[sources]]\nname = \"a\"\nkind = \"html\"\nurl = \"https://asiatimes.com/\"\nlinks = \"a\"\nallow_hosts = [\"cdn.asiatimes.com\", \"127.0.0.1:9000\"]\n",
        );
        let src = url("https://asiatimes.com/");
        assert!(p.may_follow(&src, &url("https://cdn.asiatimes.com/a")));
        assert!(p.may_follow(&src, &url("http://127.0.0.1:9000/a")));
        assert!(!p.may_follow(&src, &url("http://127.0.0.1:9001/a")));
    }

    #[tokio::test]
    async fn a_panicking_poll_becomes_a_failure_that_names_it() {
        let failed = catching_panics("hkfp", async {
            if std::hint::black_box(true) {
                panic!("a header the server did not send");
            }
            Ok(PollSuccess {
                status: 200,
                validators: Validators::default(),
            })
        })
        .await;
        let failure = failed.err().expect("a failure, not a panic");
        assert_eq!(
            failure.message,
            "internal error while polling: a header the server did not send"
        );
        assert_eq!(
            (failure.status, failure.retry_after, failure.deferred_until),
            (None, None, None),
            "an ordinary failure of the source's own poll"
        );
        let ok = catching_panics("hkfp", async {
            Ok(PollSuccess {
                status: 200,
                validators: Validators::default(),
            })
        })
        .await;
        assert_eq!(ok.ok().map(|s| s.status), Some(200));
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
