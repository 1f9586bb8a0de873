//! Local HTTP servers on loopback: a site that serves feeds and pages (with
//! ETag/Last-Modified so conditional GETs can be observed) and a webhook
//! receiver that records every request and lets a test await a count.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use tokio::sync::watch;

/// One resource of the test site.
#[derive(Clone)]
pub struct Resource {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
    pub etag: Option<String>,
    pub headers: Vec<(String, String)>,
    /// How long the answer takes (the request is recorded when it arrives).
    pub delay: Option<Duration>,
}

impl Resource {
    pub fn ok(content_type: &str, body: impl Into<Vec<u8>>) -> Resource {
        let body = body.into();
        let etag = format!(
            "\"{}\"",
            blake3::hash(&body).to_hex().as_str()[..16].to_owned()
        );
        Resource {
            status: 200,
            content_type: content_type.to_string(),
            body,
            etag: Some(etag),
            headers: Vec::new(),
            delay: None,
        }
    }

    pub fn status(status: u16) -> Resource {
        Resource {
            status,
            content_type: "text/plain".into(),
            body: format!("status {status}").into_bytes(),
            etag: None,
            headers: Vec::new(),
            delay: None,
        }
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Resource {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// The same resource, answered only after `delay` (a slow server; a poll in flight).
    pub fn with_delay(mut self, delay: Duration) -> Resource {
        self.delay = Some(delay);
        self
    }
}

/// A request the site saw.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    pub path: String,
    pub headers: HeaderMap,
    pub status: u16,
    /// When it arrived.
    pub at: std::time::Instant,
}

struct SiteState {
    resources: Mutex<HashMap<String, Resource>>,
    /// Answers for the next requests, whatever their path (first in, first out).
    next: Mutex<std::collections::VecDeque<Resource>>,
    seen: Mutex<Vec<SeenRequest>>,
    count: watch::Sender<usize>,
}

/// A local website.
#[derive(Clone)]
pub struct Site {
    pub addr: SocketAddr,
    state: Arc<SiteState>,
}

impl Site {
    pub async fn start() -> Site {
        let state = Arc::new(SiteState {
            resources: Mutex::new(HashMap::new()),
            next: Mutex::new(std::collections::VecDeque::new()),
            seen: Mutex::new(Vec::new()),
            count: watch::channel(0).0,
        });
        let app = Router::new().fallback(serve).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Site { addr, state }
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base())
    }

    pub fn put(&self, path: &str, resource: Resource) {
        self.state
            .resources
            .lock()
            .unwrap()
            .insert(path.to_string(), resource);
    }

    /// Answers the next request with `resource`, whatever its path (then the
    /// site serves its resources again).
    pub fn answer_next(&self, resource: Resource) {
        self.state.next.lock().unwrap().push_back(resource);
    }

    pub fn requests(&self) -> Vec<SeenRequest> {
        self.state.seen.lock().unwrap().clone()
    }

    pub fn requests_to(&self, path: &str) -> Vec<SeenRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }

    /// Waits until `path` was requested at least `n` times; panics after `timeout`.
    pub async fn wait_for_requests(&self, path: &str, n: usize, timeout: Duration) {
        let mut rx = self.state.count.subscribe();
        let seen = || self.requests_to(path).len();
        tokio::time::timeout(timeout, rx.wait_for(|_| seen() >= n))
            .await
            .unwrap_or_else(|_| panic!("{path} requested {} times, expected {n}", seen()))
            .unwrap();
    }
}

async fn serve(State(state): State<Arc<SiteState>>, uri: Uri, headers: HeaderMap) -> Response {
    let at = std::time::Instant::now();
    let path = uri.path().to_string();
    let next = state.next.lock().unwrap().pop_front();
    let resource = next.or_else(|| state.resources.lock().unwrap().get(&path).cloned());
    let delay = resource.as_ref().and_then(|r| r.delay);
    let response = match resource {
        None => Response::builder()
            .status(404)
            .body(Body::from("not found"))
            .unwrap(),
        Some(r) => {
            let not_modified = r.status == 200
                && r.etag.is_some()
                && headers
                    .get("if-none-match")
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| Some(v) == r.etag.as_deref());
            if not_modified {
                Response::builder().status(304).body(Body::empty()).unwrap()
            } else {
                let mut b = Response::builder()
                    .status(r.status)
                    .header("content-type", &r.content_type);
                if let Some(etag) = &r.etag {
                    b = b.header("etag", etag);
                }
                for (k, v) in &r.headers {
                    b = b.header(k, v);
                }
                b.body(Body::from(r.body.clone())).unwrap()
            }
        }
    };
    let n = {
        let mut seen = state.seen.lock().unwrap();
        seen.push(SeenRequest {
            path,
            headers,
            status: response.status().as_u16(),
            at,
        });
        seen.len()
    };
    state.count.send_replace(n);
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    response
}

/// A webhook request as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: String,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).expect("webhook body is JSON")
    }
}

struct ReceiverState {
    received: Mutex<Vec<Received>>,
    count: watch::Sender<usize>,
    /// Statuses to answer with, in order; 200 once they run out.
    script: Mutex<Vec<u16>>,
    /// How long each answer takes (a slow receiver).
    delay: Mutex<Duration>,
}

/// A webhook receiver.
#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    state: Arc<ReceiverState>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        Self::start_scripted(Vec::new()).await
    }

    /// A receiver that answers with `statuses` in turn, then 200.
    pub async fn start_scripted(statuses: Vec<u16>) -> Receiver {
        Self::start_scripted_on("127.0.0.1:0".parse().unwrap(), statuses).await
    }

    /// [`Receiver::start_scripted`] listening on `addr` (e.g. a port a webhook
    /// URL already names, which refused connections until now).
    pub async fn start_scripted_on(addr: SocketAddr, statuses: Vec<u16>) -> Receiver {
        let (count, _) = watch::channel(0);
        let state = Arc::new(ReceiverState {
            received: Mutex::new(Vec::new()),
            count,
            script: Mutex::new(statuses.into_iter().rev().collect()),
            delay: Mutex::new(Duration::ZERO),
        });
        let app = Router::new().fallback(receive).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Makes each answer from now on take `delay` (the request is recorded on arrival).
    pub fn set_delay(&self, delay: Duration) {
        *self.state.delay.lock().unwrap() = delay;
    }

    /// The distinct `webhook-id`s received so far.
    pub fn webhook_ids(&self) -> std::collections::BTreeSet<String> {
        self.received()
            .iter()
            .map(|r| r.header("webhook-id").to_string())
            .collect()
    }

    /// Waits until `n` distinct webhook ids arrived; panics after `timeout`.
    pub async fn wait_for_ids(&self, n: usize, timeout: Duration) {
        let mut rx = self.state.count.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|_| self.webhook_ids().len() >= n))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "webhook receiver got {} distinct deliveries, expected {n} within {timeout:?}",
                    self.webhook_ids().len()
                )
            })
            .unwrap();
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    /// Waits until at least `n` requests arrived; panics after `timeout`.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let mut rx = self.state.count.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|c| *c >= n))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "webhook receiver got {} requests, expected {n} within {timeout:?}",
                    self.received().len()
                )
            })
            .unwrap();
        self.received()
    }
}

async fn receive(
    State(state): State<Arc<ReceiverState>>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    assert_eq!(method, Method::POST, "webhooks are POSTed");
    state.received.lock().unwrap().push(Received {
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    let n = state.received.lock().unwrap().len();
    state.count.send_replace(n);
    let status = state.script.lock().unwrap().pop().unwrap_or(200);
    let delay = *state.delay.lock().unwrap();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    StatusCode::from_u16(status).unwrap()
}
