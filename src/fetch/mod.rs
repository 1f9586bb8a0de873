//! The fetcher: the pipeline's first stage after the scheduler. It turns a URL
//! (and the validators of the previous poll) into bytes, politely and
//! defensively (DESIGN §2): one shared HTTP client, conditional GET, a global and
//! a per-host concurrency limit, a minimum gap between requests to one host, a
//! host-wide pause when a server says `Retry-After`, connect and total timeouts,
//! and a body cap enforced on the decompressed stream. Redirects are followed
//! here, one hop at a time, each hop a new request checked like the first
//! ([`guard`]): at most `max_redirects`, never from https down to http or to
//! another scheme, for article pages only to the source's host or its
//! `allow_hosts`, and never to a non-public address unless allowed. Response
//! heads are read through [`head`], which never panics and clamps what it reads.

pub mod guard;
pub mod head;
pub mod policy;

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use reqwest::StatusCode;
use reqwest::dns::Resolve;
use reqwest::header;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use url::Url;

use crate::config::HttpConfig;
pub use guard::FetchPolicy;
use guard::{GuardedResolver, NonPublicAddress, SystemResolver};
use head::ResponseHead;
pub use policy::parse_retry_after;

/// Installs the process-wide TLS crypto provider (ring) once. reqwest is built
/// without a provider of its own, so exactly one provider is compiled in and
/// the first TLS handshake cannot panic over an ambiguous choice.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Why a fetch produced no usable body.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FetchError {
    /// The server answered with a non-success status.
    #[error("HTTP {status}{}", retry_after.map(|d| format!(" (Retry-After {}s)", d.as_secs())).unwrap_or_default())]
    Status {
        status: u16,
        retry_after: Option<Duration>,
    },
    /// The (decompressed) body was larger than `http.max_body_bytes`.
    #[error("response body exceeds the {limit}-byte limit (http.max_body_bytes)")]
    TooLarge { limit: u64 },
    /// Connecting took longer than `http.connect_timeout`, or the whole request longer than `http.timeout`.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The connection could not be made or broke off.
    #[error("connection failed: {0}")]
    Connect(String),
    /// A redirect was refused (too many, a loop, a downgrade to another scheme,
    /// a host an article page may not come from, or a bad `Location`).
    #[error("redirect refused: {0}")]
    Redirect(String),
    /// The host is, or resolves only to, a non-public address and may not be fetched.
    #[error("{0}")]
    NonPublic(NonPublicAddress),
    /// The URL is on a host this fetch may not go to (article pages: not the source's host nor `allow_hosts`).
    #[error("host not allowed: {0}")]
    HostNotAllowed(String),
    /// Another server on this host asked us to wait (Retry-After), so no request was made.
    #[error("host {host} asked to wait until {until} (Retry-After)")]
    HostPaused { host: String, until: DateTime<Utc> },
    /// The URL cannot be fetched (not http/https, no host).
    #[error("bad URL {0}")]
    BadUrl(String),
    /// Any other transport failure.
    #[error("request failed: {0}")]
    Other(String),
}

impl FetchError {
    pub fn status(&self) -> Option<u16> {
        match self {
            FetchError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// How long the server asked us to wait, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            FetchError::Status { retry_after, .. } => *retry_after,
            FetchError::HostPaused { until, .. } => (*until - Utc::now()).to_std().ok(),
            _ => None,
        }
    }

    fn from_reqwest(e: reqwest::Error) -> FetchError {
        if let Some(refused) = guard::find_non_public(&e) {
            return FetchError::NonPublic(refused);
        }
        let text = error_chain(&e);
        if e.is_redirect() {
            FetchError::Redirect(text)
        } else if e.is_timeout() {
            FetchError::Timeout(text)
        } else if e.is_connect() {
            FetchError::Connect(text)
        } else if e.is_body() || e.is_decode() {
            FetchError::Connect(format!("body broke off: {text}"))
        } else {
            FetchError::Other(text)
        }
    }
}

use crate::telemetry::cause_chain as error_chain;

/// Validators of the previous successful fetch, for a conditional GET.
#[derive(Debug, Clone, Default)]
pub struct Validators {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

/// A successful response.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub status: u16,
    /// Where the body came from after redirects.
    pub final_url: Url,
    pub content_type: Option<String>,
    pub validators: Validators,
    pub body: Bytes,
}

/// The result of a fetch that did not fail.
#[derive(Debug, Clone)]
pub enum FetchOutcome {
    /// 304: nothing changed since the validators were issued.
    NotModified,
    Fetched(Fetched),
}

/// The shared HTTP client with its politeness state. Build once per daemon.
pub struct Fetcher {
    /// Connects only to public addresses (its resolver drops the others).
    public_client: reqwest::Client,
    /// Connects anywhere: for the source's own configured host, or everything
    /// with `http.allow_private_networks`.
    any_client: reqwest::Client,
    allow_private_networks: bool,
    max_redirects: usize,
    backoff_max: Duration,
    max_body_bytes: u64,
    global: Arc<Semaphore>,
    per_host_concurrency: usize,
    hosts: Mutex<HashMap<String, Arc<Semaphore>>>,
    pacing: Option<DefaultKeyedRateLimiter<String>>,
    paused: Mutex<HashMap<String, DateTime<Utc>>>,
}

/// Why the redirect to `next` must not be followed, given the URLs visited so far
/// (the first request's included), or `None` to follow it: more than `max` hops, a
/// loop, or a scheme other than http(s) or a step down from https to http.
fn redirect_refusal(visited: &[Url], next: &Url, max: usize) -> Option<String> {
    let previous = visited.last()?;
    if visited.len() > max {
        return Some(format!("more than {max} redirects"));
    }
    if visited.contains(next) {
        return Some(format!("redirect loop at {next}"));
    }
    match (previous.scheme(), next.scheme()) {
        (_, "https") | ("http", "http") => None,
        (from, to) => Some(format!("{from} to {to} redirect to {next}")),
    }
}

impl Fetcher {
    pub fn new(config: &HttpConfig) -> Result<Fetcher, FetchError> {
        Fetcher::with_resolver(config, Arc::new(SystemResolver))
    }

    /// A fetcher whose host names are resolved by `lookup` instead of the
    /// system resolver (tests map public-looking names to loopback with it);
    /// the non-public address rule applies to what `lookup` returns.
    pub fn with_resolver(
        config: &HttpConfig,
        lookup: Arc<dyn Resolve>,
    ) -> Result<Fetcher, FetchError> {
        install_crypto_provider();
        let builder = || {
            reqwest::Client::builder()
                .user_agent(config.user_agent.clone())
                .connect_timeout(config.connect_timeout)
                .timeout(config.timeout)
                // Redirects are followed by `get`, each hop checked like the first.
                .redirect(reqwest::redirect::Policy::none())
                .gzip(true)
                .brotli(true)
                .deflate(true)
        };
        let build_error = |e: reqwest::Error| {
            FetchError::Other(format!("cannot build HTTP client: {}", error_chain(&e)))
        };
        let public_client = builder()
            .dns_resolver(Arc::new(GuardedResolver::new(lookup.clone())))
            .build()
            .map_err(build_error)?;
        let any_client = builder()
            .dns_resolver(lookup)
            .build()
            .map_err(build_error)?;
        let pacing = pacing_quota(config.per_host_delay).map(RateLimiter::keyed);
        Ok(Fetcher {
            public_client,
            any_client,
            allow_private_networks: config.allow_private_networks,
            max_redirects: config.max_redirects,
            backoff_max: config.backoff_max,
            max_body_bytes: config.max_body_bytes,
            global: Arc::new(Semaphore::new(config.global_concurrency)),
            per_host_concurrency: config.per_host_concurrency,
            hosts: Mutex::new(HashMap::new()),
            pacing,
            paused: Mutex::new(HashMap::new()),
        })
    }

    fn host_slot(&self, host: &str) -> Arc<Semaphore> {
        let mut hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
        hosts
            .entry(host.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_host_concurrency)))
            .clone()
    }

    fn paused_until(&self, host: &str) -> Option<DateTime<Utc>> {
        let mut paused = self.paused.lock().unwrap_or_else(|p| p.into_inner());
        match paused.get(host) {
            Some(until) if *until > Utc::now() => Some(*until),
            Some(_) => {
                paused.remove(host);
                None
            }
            None => None,
        }
    }

    fn pause_host(&self, host: &str, wait: Duration) {
        let until = policy::after(Utc::now(), wait.min(self.backoff_max));
        let mut paused = self.paused.lock().unwrap_or_else(|p| p.into_inner());
        let entry = paused.entry(host.to_string()).or_insert(until);
        if *entry < until {
            *entry = until;
        }
    }

    /// GETs `url`, conditionally when `validators` are given, following
    /// redirects itself: the first URL and every hop are checked against
    /// `policy` and the fetcher's rules, and each hop is a new request that
    /// waits its turn at its own host.
    pub async fn get(
        &self,
        url: &Url,
        validators: &Validators,
        policy: &FetchPolicy,
    ) -> Result<FetchOutcome, FetchError> {
        let mut visited: Vec<Url> = Vec::new();
        let mut current = url.clone();
        loop {
            if !visited.is_empty()
                && let Some(reason) = redirect_refusal(&visited, &current, self.max_redirects)
            {
                return Err(FetchError::Redirect(reason));
            }
            if let Some(reason) = policy.host_refusal(&current) {
                return Err(if visited.is_empty() {
                    FetchError::HostNotAllowed(reason)
                } else {
                    FetchError::Redirect(format!("to {current}: {reason}"))
                });
            }
            let (response, permits) = self.request(&current, validators, policy).await?;
            let status = response.status();
            let head =
                ResponseHead::read(response.headers(), &current, Utc::now(), self.backoff_max);
            if is_followed_redirect(status)
                && let Some(location) = head.location
            {
                drop(response);
                drop(permits);
                let next = location.map_err(|why| {
                    FetchError::Redirect(format!("{status} from {current}: {why}"))
                })?;
                visited.push(std::mem::replace(&mut current, next));
                continue;
            }
            return self.finish(response, head, current, permits).await;
        }
    }

    /// Sends one request for `url` (one hop), after the politeness waits; the
    /// permits are held until the caller is done with the response.
    async fn request(
        &self,
        url: &Url,
        validators: &Validators,
        policy: &FetchPolicy,
    ) -> Result<(reqwest::Response, [OwnedSemaphorePermit; 2]), FetchError> {
        let host = host_key(url)?;
        let client = if self.allow_private_networks || policy.is_trusted_host(url) {
            &self.any_client
        } else {
            // IP literals never reach the resolver: they are checked here.
            if let Some(refused) = guard::literal_refusal(url) {
                return Err(FetchError::NonPublic(refused));
            }
            &self.public_client
        };
        if let Some(until) = self.paused_until(&host) {
            return Err(FetchError::HostPaused { host, until });
        }
        let host_permit = self
            .host_slot(&host)
            .acquire_owned()
            .await
            .map_err(|_| FetchError::Other("fetcher closed".into()))?;
        let global_permit = self
            .global
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| FetchError::Other("fetcher closed".into()))?;
        if let Some(pacing) = &self.pacing {
            pacing.until_key_ready(&host).await;
        }
        // Checked again: a request that held the host's slot while this one
        // waited may have been told to back off (429/503 with Retry-After).
        if let Some(until) = self.paused_until(&host) {
            return Err(FetchError::HostPaused { host, until });
        }
        let mut request = client.get(url.clone());
        if let Some(etag) = &validators.etag {
            request = request.header(header::IF_NONE_MATCH, etag);
        }
        if let Some(lm) = &validators.last_modified {
            request = request.header(header::IF_MODIFIED_SINCE, lm);
        }
        let response = request.send().await.map_err(FetchError::from_reqwest)?;
        Ok((response, [host_permit, global_permit]))
    }

    /// The last hop's response: 304, an error status (a 429/503 with
    /// `Retry-After` pauses the host), or a body read up to the cap.
    async fn finish(
        &self,
        mut response: reqwest::Response,
        head: ResponseHead,
        final_url: Url,
        _permits: [OwnedSemaphorePermit; 2],
    ) -> Result<FetchOutcome, FetchError> {
        let status = response.status();
        if status == StatusCode::NOT_MODIFIED {
            return Ok(FetchOutcome::NotModified);
        }
        if !status.is_success() {
            if matches!(status.as_u16(), 429 | 503)
                && let Some(wait) = head.retry_after
            {
                self.pause_host(&host_key(&final_url)?, wait);
            }
            return Err(FetchError::Status {
                status: status.as_u16(),
                retry_after: head.retry_after,
            });
        }
        if let Some(len) = head.content_length
            && len > self.max_body_bytes
            && !head.encoded
        {
            return Err(FetchError::TooLarge {
                limit: self.max_body_bytes,
            });
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(FetchError::from_reqwest)? {
            if (body.len() + chunk.len()) as u64 > self.max_body_bytes {
                return Err(FetchError::TooLarge {
                    limit: self.max_body_bytes,
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(FetchOutcome::Fetched(Fetched {
            status: status.as_u16(),
            final_url,
            content_type: head.content_type,
            validators: head.validators,
            body: Bytes::from(body),
        }))
    }
}

/// The statuses whose `Location` is followed (a GET stays a GET on each).
fn is_followed_redirect(status: StatusCode) -> bool {
    matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308)
}

fn pacing_quota(delay: Duration) -> Option<Quota> {
    Quota::with_period(delay).map(|q| q.allow_burst(NonZeroU32::MIN))
}

/// The politeness key of a URL: its host and port.
pub fn host_key(url: &Url) -> Result<String, FetchError> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(FetchError::BadUrl(format!("{url}: not http(s)")));
    }
    let host = url
        .host_str()
        .ok_or_else(|| FetchError::BadUrl(format!("{url}: no host")))?;
    Ok(match url.port_or_known_default() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls(list: &[&str]) -> Vec<Url> {
        list.iter().map(|u| Url::parse(u).unwrap()).collect()
    }

    #[test]
    fn redirects_never_step_down_from_https_or_leave_http() {
        let next = |u: &str| Url::parse(u).unwrap();
        let cases = [
            (&["http://a.test/feed"][..], "https://a.test/feed", None),
            (&["http://a.test/feed"][..], "http://b.test/feed", None),
            (&["https://a.test/feed"][..], "https://b.test/feed", None),
            (
                &["https://a.test/feed"][..],
                "http://a.test/feed",
                Some("https to http redirect to http://a.test/feed"),
            ),
            (
                &["http://a.test/", "https://a.test/"][..],
                "http://a.test/x",
                Some("https to http"),
            ),
            (
                &["http://a.test/feed"][..],
                "ftp://a.test/feed.xml",
                Some("http to ftp"),
            ),
            (
                &["https://a.test/feed"][..],
                "file:///etc/passwd",
                Some("https to file"),
            ),
            (
                &["http://a.test/a", "http://a.test/b"][..],
                "http://a.test/a",
                Some("redirect loop at http://a.test/a"),
            ),
        ];
        for (visited, to, refused) in cases {
            let got = redirect_refusal(&urls(visited), &next(to), 5);
            match refused {
                None => assert_eq!(got, None, "{visited:?} -> {to}"),
                Some(reason) => assert!(
                    got.as_deref().is_some_and(|g| g.starts_with(reason)),
                    "{visited:?} -> {to}: {got:?}"
                ),
            }
        }
    }

    #[test]
    fn five_hops_are_followed_and_a_sixth_is_refused() {
        let hops: Vec<String> = (0..=6).map(|n| format!("http://a.test/{n}")).collect();
        let visited = |n: usize| urls(&hops[..n].iter().map(String::as_str).collect::<Vec<_>>());
        let to = |n: usize| Url::parse(&hops[n]).unwrap();
        // The first request plus four redirects visited: the fifth redirect is allowed.
        assert_eq!(redirect_refusal(&visited(5), &to(5), 5), None);
        assert_eq!(
            redirect_refusal(&visited(6), &to(6), 5).as_deref(),
            Some("more than 5 redirects")
        );
    }
}
