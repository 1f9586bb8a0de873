//! The notifier: the last stage. It reads the outbox (`deliveries`), never the
//! pipeline, so an alert committed with its story survives any crash between
//! "stored" and "sent". Due deliveries are claimed (the claim moves
//! `next_attempt_at` forward and commits before the request), POSTed with
//! Standard Webhooks headers, and recorded as delivered, retried with
//! exponential backoff and jitter (honouring `Retry-After`), or dead.

pub mod payload;
pub mod redact;
pub mod signing;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures_util::StreamExt;
use reqwest::StatusCode;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::{Config, DeliveryConfig, WebhookFormat};
use crate::fetch::policy::{backoff, parse_retry_after};
use crate::store::{Delivery, DeliveryResult, Store, StoreResult};
use signing::SigningKey;

/// One configured webhook, ready to send to. Its URL is a credential: only
/// [`redact::redact_webhook_url`]'s form of it is ever shown.
#[derive(Clone)]
struct Target {
    url: String,
    key: SigningKey,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("url", &redact::redact_webhook_url(&self.url))
            .finish_non_exhaustive()
    }
}

/// What one pass over the outbox did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeliveryStats {
    pub delivered: usize,
    pub retried: usize,
    pub dead: usize,
}

/// Sends due deliveries. Build once; cheap to share.
pub struct Notifier {
    client: reqwest::Client,
    config: DeliveryConfig,
    /// The webhooks in force; a reload puts a new set here, which the next batch takes.
    webhooks: std::sync::RwLock<Arc<Webhooks>>,
    /// The deliveries claimed and not yet sent, for a shutdown to hand back.
    claims: Claims,
    /// This run of the daemon (`<instance>/<run>`), which its delivery claims carry.
    owner: String,
    /// How long a claim lasts unless the daemon renews it (`daemon.lease`).
    lease: Duration,
}

/// The configured webhooks, ready to send to: the set a reload swaps whole.
pub struct Webhooks {
    targets: HashMap<String, Target>,
    /// The webhooks' names, sorted: the deliveries the notifier claims.
    names: Vec<String>,
    /// Requests under way per webhook; a webhook kept by a reload keeps its semaphore.
    per_webhook: HashMap<String, Arc<Semaphore>>,
}

/// The deliveries a notifier holds claims on and has not finished: what a shutdown
/// releases (and, of those under way when its grace ends, names as abandoned).
#[derive(Default)]
struct Claims(std::sync::Mutex<HashMap<uuid::Uuid, Claim>>);

/// One held claim: the webhook (for the log) and whether its request went out. The
/// claim itself is named in the store by the notifier's owner, which renewals keep
/// (they move the claim's expiry, so the expiry cannot name it).
struct Claim {
    webhook: String,
    started: bool,
}

impl Claims {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<uuid::Uuid, Claim>> {
        // A panic elsewhere while holding the lock leaves a map that is still whole.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn hold(&self, batch: &[Delivery]) {
        let mut claims = self.lock();
        for d in batch {
            claims.insert(
                d.id,
                Claim {
                    webhook: d.webhook.clone(),
                    started: false,
                },
            );
        }
    }

    fn start(&self, id: uuid::Uuid) {
        if let Some(claim) = self.lock().get_mut(&id) {
            claim.started = true;
        }
    }

    fn finish(&self, id: uuid::Uuid) {
        self.lock().remove(&id);
    }

    fn take(&self) -> Vec<(uuid::Uuid, Claim)> {
        self.lock().drain().collect()
    }
}

impl Webhooks {
    /// The webhooks of `config`, each with its signing key parsed; `running`'s
    /// semaphores are kept for the names it shares with `config`.
    fn build(
        config: &Config,
        running: Option<&Webhooks>,
        concurrency: usize,
    ) -> anyhow::Result<Webhooks> {
        let mut targets = HashMap::new();
        let mut per_webhook = HashMap::new();
        for w in &config.webhooks {
            let key = SigningKey::parse(&w.secret)
                .map_err(|e| anyhow::anyhow!("webhook {:?}: {e}", w.name()))?;
            targets.insert(
                w.name().to_string(),
                Target {
                    url: w.url.clone(),
                    key,
                },
            );
            let limit = running
                .and_then(|r| r.per_webhook.get(w.name()).cloned())
                .unwrap_or_else(|| Arc::new(Semaphore::new(concurrency)));
            per_webhook.insert(w.name().to_string(), limit);
        }
        let mut names: Vec<String> = targets.keys().cloned().collect();
        names.sort();
        Ok(Webhooks {
            targets,
            names,
            per_webhook,
        })
    }

    /// The webhooks' names, sorted.
    pub fn names(&self) -> &[String] {
        &self.names
    }
}

/// How many deliveries one claim takes.
const CLAIM_BATCH: i64 = 64;

impl Notifier {
    /// A notifier whose claims name `owner`, the run of the daemon it works for
    /// (`<instance>/<run>`, see [`crate::pipeline::Scheduler::holder`]).
    pub fn new(config: &Config, owner: String) -> anyhow::Result<Notifier> {
        crate::fetch::install_crypto_provider();
        let client = reqwest::Client::builder()
            .user_agent(config.http.user_agent.clone())
            .connect_timeout(config.delivery.timeout)
            .timeout(config.delivery.timeout)
            // A redirected POST would arrive as a GET: a 3xx is an error (DESIGN §6).
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let webhooks = Webhooks::build(config, None, config.delivery.concurrency)?;
        Ok(Notifier {
            client,
            config: config.delivery.clone(),
            webhooks: std::sync::RwLock::new(Arc::new(webhooks)),
            claims: Claims::default(),
            owner,
            lease: config.daemon.lease,
        })
    }

    /// The webhooks of `config`, checked and ready for [`Notifier::set_webhooks`];
    /// those the running set has too keep their concurrency limits, and new ones get
    /// the `delivery.concurrency` the notifier started with (a restart-only setting).
    pub fn webhooks_for(&self, config: &Config) -> anyhow::Result<Webhooks> {
        Webhooks::build(config, Some(&self.webhooks()), self.config.concurrency)
    }

    /// Puts `webhooks` in place of the running set: the next batch claimed is theirs.
    /// Requests under way finish with the set they started with.
    pub fn set_webhooks(&self, webhooks: Webhooks) {
        *self
            .webhooks
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(webhooks);
    }

    fn webhooks(&self) -> Arc<Webhooks> {
        self.webhooks
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Attempts every delivery due now, once each. What fails stays pending.
    pub async fn deliver_due(&self, store: &dyn Store) -> StoreResult<DeliveryStats> {
        self.deliver_due_until(store, &CancellationToken::new())
            .await
    }

    /// [`Notifier::deliver_due`] until `stop`: from then on nothing more is claimed,
    /// and of a claimed batch only the attempts already under way go on; the rest
    /// stay claimed in [`Notifier::release_claims`]'s care.
    async fn deliver_due_until(
        &self,
        store: &dyn Store,
        stop: &CancellationToken,
    ) -> StoreResult<DeliveryStats> {
        let mut stats = DeliveryStats::default();
        while !stop.is_cancelled() {
            // Each batch is claimed and sent with the webhooks in force when it starts.
            let hooks = self.webhooks();
            if hooks.names.is_empty() {
                break;
            }
            let now = Utc::now();
            let lease = now
                + chrono::Duration::from_std(self.lease).unwrap_or(chrono::Duration::minutes(1));
            let batch = store
                .claim_due_deliveries(&self.owner, &hooks.names, now, lease, CLAIM_BATCH)
                .await?;
            if batch.is_empty() {
                break;
            }
            self.claims.hold(&batch);
            let results: Vec<StoreResult<Option<DeliveryResult>>> =
                futures_util::stream::iter(batch)
                    .map(|d| self.attempt(store, &hooks, d, stop))
                    .buffer_unordered(self.config.concurrency * hooks.names.len())
                    .collect()
                    .await;
            for r in results {
                match r? {
                    Some(DeliveryResult::Delivered { .. }) => stats.delivered += 1,
                    Some(DeliveryResult::Retry { .. }) => stats.retried += 1,
                    Some(DeliveryResult::Dead { .. }) => stats.dead += 1,
                    None => {}
                }
            }
        }
        Ok(stats)
    }

    /// Sends one claimed delivery and records the outcome, unless `stop` comes first
    /// (`None`: not attempted, still claimed).
    async fn attempt(
        &self,
        store: &dyn Store,
        hooks: &Webhooks,
        d: Delivery,
        stop: &CancellationToken,
    ) -> StoreResult<Option<DeliveryResult>> {
        let result = match hooks.targets.get(&d.webhook) {
            Some(target) => {
                let _permit = match hooks.per_webhook.get(&d.webhook) {
                    Some(s) => tokio::select! {
                        biased;
                        _ = stop.cancelled() => return Ok(None),
                        permit = s.clone().acquire_owned() => permit.ok(),
                    },
                    None => None,
                };
                if stop.is_cancelled() {
                    return Ok(None);
                }
                self.claims.start(d.id);
                let result = self.send(target, &d).await;
                self.claims.finish(d.id);
                result
            }
            None => {
                self.claims.finish(d.id);
                DeliveryResult::Retry {
                    status_code: None,
                    error: format!("webhook {:?} is not configured", d.webhook),
                    next_attempt_at: Utc::now() + chrono::Duration::hours(1),
                }
            }
        };
        if let DeliveryResult::Delivered { .. } = &result {
            // Story (or event) stored to its 2xx, retries included.
            let latency = (Utc::now() - d.created_at).num_milliseconds().max(0) as f64 / 1000.0;
            metrics::histogram!("feedwatch_delivery_latency_seconds", "webhook" => d.webhook.clone())
                .record(latency);
        }
        let outcome = match &result {
            DeliveryResult::Delivered { .. } => "delivered",
            DeliveryResult::Retry { .. } => "retry",
            DeliveryResult::Dead { .. } => "dead",
        };
        metrics::counter!("feedwatch_deliveries_total", "webhook" => d.webhook.clone(), "outcome" => outcome)
            .increment(1);
        match &result {
            DeliveryResult::Delivered { status_code } => {
                info!(delivery = %d.id, webhook = %d.webhook, event = %d.event, status = status_code, "delivered")
            }
            DeliveryResult::Retry {
                error,
                next_attempt_at,
                ..
            } => {
                warn!(delivery = %d.id, webhook = %d.webhook, attempt = d.attempts + 1, %error, next = %next_attempt_at, "delivery failed, will retry")
            }
            DeliveryResult::Dead { error, .. } => {
                warn!(delivery = %d.id, webhook = %d.webhook, attempt = d.attempts + 1, %error, "delivery dead")
            }
        }
        store.record_delivery(d.id, &result, Utc::now()).await?;
        Ok(Some(result))
    }

    /// Hands back every delivery this notifier still holds a claim on — those claimed
    /// but never attempted, and those whose attempt a shutdown cut off (logged, by id
    /// and webhook, as abandoned) — so that the next daemon sends them at once.
    /// Call it once the notifier has stopped.
    pub async fn release_claims(&self, store: &dyn Store) {
        let held = self.claims.take();
        if held.is_empty() {
            return;
        }
        let mut not_started = 0usize;
        for (id, claim) in &held {
            if claim.started {
                warn!(delivery = %id, webhook = %claim.webhook, "shutdown grace elapsed; abandoning the delivery under way (it is sent again by the next start)");
            } else {
                not_started += 1;
            }
        }
        let ids: Vec<uuid::Uuid> = held.iter().map(|(id, _)| *id).collect();
        let released = match store
            .release_deliveries(&ids, &self.owner, Utc::now())
            .await
        {
            Ok(n) => n,
            Err(e) => {
                warn!(error = %e, deliveries = ids.len(), "cannot release claimed deliveries; their claims lapse on their own (or go back when the daemon releases its leases)");
                0
            }
        };
        info!(
            released,
            not_started,
            abandoned = held.len() - not_started,
            "released the claimed deliveries that were not sent"
        );
    }

    async fn send(&self, target: &Target, d: &Delivery) -> DeliveryResult {
        let timestamp = Utc::now().timestamp();
        let id = d.id.hyphenated().to_string();
        let mut request = self
            .client
            .post(&target.url)
            .header("content-type", "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", timestamp.to_string())
            .body(d.payload.clone());
        if let Some(sig) = target.key.sign(&id, timestamp, &d.payload) {
            request = request.header("webhook-signature", sig);
        }
        let attempt = u32::try_from(d.attempts).unwrap_or(0) + 1;
        match request.send().await {
            Ok(resp) if resp.status().is_success() => DeliveryResult::Delivered {
                status_code: i32::from(resp.status().as_u16()),
            },
            Ok(resp) => {
                let status = resp.status();
                let retry_after =
                    parse_retry_after(resp.headers(), Utc::now(), self.config.backoff_max);
                let error = format!("receiver answered HTTP {status}");
                if is_retryable(status) {
                    self.retry_or_dead(attempt, Some(status.as_u16()), error, retry_after)
                } else {
                    DeliveryResult::Dead {
                        status_code: Some(i32::from(status.as_u16())),
                        error: if status.is_redirection() {
                            format!("{error} (redirects are not followed)")
                        } else {
                            error
                        },
                    }
                }
            }
            Err(e) => {
                let kind = if e.is_timeout() {
                    "timed out"
                } else {
                    "connection failed"
                };
                // reqwest's errors quote the URL, which is the webhook's credential.
                let cause = redact::scrub(&error_chain(&e.without_url()), [target.url.as_str()]);
                debug!(webhook = %d.webhook, error = %cause, "webhook request failed");
                self.retry_or_dead(attempt, None, format!("{kind}: {cause}"), None)
            }
        }
    }

    fn retry_or_dead(
        &self,
        attempt: u32,
        status: Option<u16>,
        error: String,
        retry_after: Option<Duration>,
    ) -> DeliveryResult {
        let status_code = status.map(i32::from);
        if attempt >= self.config.max_attempts {
            return DeliveryResult::Dead {
                status_code,
                error: format!("{error}; gave up after {attempt} attempts"),
            };
        }
        let mut wait = backoff(attempt, self.config.backoff_base, self.config.backoff_max);
        if let Some(ra) = retry_after {
            wait = wait.max(ra.min(self.config.backoff_max));
        }
        DeliveryResult::Retry {
            status_code,
            error,
            next_attempt_at: Utc::now()
                + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::hours(6)),
        }
    }

    /// Delivers until `cancel`: wakes when a new delivery is queued (`wake`) or
    /// the next pending one falls due. From `cancel` on nothing more is claimed and
    /// only the attempts under way finish; [`Notifier::release_claims`] hands back
    /// the rest.
    pub async fn run(&self, store: Arc<dyn Store>, wake: Arc<Notify>, cancel: CancellationToken) {
        loop {
            let hooks = self.webhooks();
            // With no webhook (yet: a reload may add some, and wakes this) the task
            // still lives as long as the daemon, which takes a stage that ends early
            // for one that died.
            let sleep_for = if hooks.names.is_empty() {
                Duration::from_secs(60)
            } else {
                if let Err(e) = self.deliver_due_until(store.as_ref(), &cancel).await {
                    warn!(error = %e, "outbox pass failed; retrying shortly");
                }
                if cancel.is_cancelled() {
                    return;
                }
                match store.next_delivery_due(&hooks.names).await {
                    Ok(Some(next)) => (next - Utc::now())
                        .to_std()
                        .unwrap_or(Duration::ZERO)
                        .clamp(Duration::from_millis(50), Duration::from_secs(60)),
                    Ok(None) => Duration::from_secs(60),
                    Err(e) => {
                        warn!(error = %e, "cannot read the outbox");
                        Duration::from_secs(5)
                    }
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = wake.notified() => {}
                _ = tokio::time::sleep(sleep_for) => {}
            }
        }
    }
}

use crate::telemetry::cause_chain as error_chain;

/// 408, 429 and 5xx are worth retrying; other statuses are final.
pub fn is_retryable(status: StatusCode) -> bool {
    status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
}

/// Whether `format` wants Standard Webhooks headers only (all formats carry them).
pub fn format_name(format: WebhookFormat) -> &'static str {
    match format {
        WebhookFormat::Json => "json",
        WebhookFormat::Slack => "slack",
        WebhookFormat::Discord => "discord",
    }
}
