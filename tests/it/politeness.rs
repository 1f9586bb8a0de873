//! Politeness of the fetcher, observed from the server side: at most
//! `per_host_concurrency` requests in flight per host, at most
//! `global_concurrency` overall, and `per_host_delay` between two requests to
//! one host.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use feedwatch::config::HttpConfig;
use feedwatch::fetch::{FetchOutcome, FetchPolicy, Fetcher, Validators};
use url::Url;

#[derive(Default)]
struct Gauge {
    in_flight: AtomicUsize,
    max: AtomicUsize,
    starts: std::sync::Mutex<Vec<Instant>>,
}

/// A server on `ip` whose every response takes `hold` to produce, recording
/// how many requests overlap.
async fn slow_server(ip: &str, gauge: Arc<Gauge>, hold: Duration) -> String {
    async fn handle(State((g, hold)): State<(Arc<Gauge>, Duration)>) -> &'static str {
        let now = g.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        g.max.fetch_max(now, Ordering::SeqCst);
        g.starts.lock().unwrap().push(Instant::now());
        tokio::time::sleep(hold).await;
        g.in_flight.fetch_sub(1, Ordering::SeqCst);
        "<rss version=\"2.0\"><channel><title>t</title></channel></rss>"
    }
    let app = Router::new().fallback(handle).with_state((gauge, hold));
    let listener = tokio::net::TcpListener::bind(format!("{ip}:0"))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

fn http_config(per_host: usize, global: usize, delay: Duration) -> HttpConfig {
    HttpConfig {
        per_host_concurrency: per_host,
        global_concurrency: global,
        per_host_delay: delay,
        ..HttpConfig::default()
    }
}

async fn fetch_all(fetcher: Arc<Fetcher>, urls: Vec<String>) {
    let tasks: Vec<_> = urls
        .into_iter()
        .map(|u| {
            let f = fetcher.clone();
            tokio::spawn(async move {
                let url = Url::parse(&u).unwrap();
                match f
                    .get(&url, &Validators::default(), &FetchPolicy::source(&url))
                    .await
                {
                    Ok(FetchOutcome::Fetched(_)) => {}
                    other => panic!("{u}: {other:?}"),
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_more_than_per_host_concurrency_requests_reach_one_host() {
    let gauge = Arc::new(Gauge::default());
    let base = slow_server("127.0.0.1", gauge.clone(), Duration::from_millis(150)).await;
    let fetcher = Arc::new(Fetcher::new(&http_config(2, 32, Duration::ZERO)).unwrap());
    let urls = (0..8).map(|i| format!("{base}/feed/{i}")).collect();
    fetch_all(fetcher, urls).await;
    assert_eq!(gauge.max.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_global_limit_holds_across_hosts() {
    let gauges: Vec<Arc<Gauge>> = (0..3).map(|_| Arc::new(Gauge::default())).collect();
    let mut urls = Vec::new();
    // 127.0.0.0/8 is all loopback: three addresses are three hosts.
    for (i, g) in gauges.iter().enumerate() {
        let base = slow_server(
            &format!("127.0.0.{}", i + 1),
            g.clone(),
            Duration::from_millis(150),
        )
        .await;
        urls.extend((0..3).map(|j| format!("{base}/feed/{j}")));
    }
    let total = Arc::new(Gauge::default());
    // Watch the sum of in-flight requests while the fetches run.
    let watcher = {
        let (gauges, total) = (gauges.clone(), total.clone());
        tokio::spawn(async move {
            loop {
                let now: usize = gauges
                    .iter()
                    .map(|g| g.in_flight.load(Ordering::SeqCst))
                    .sum();
                total.max.fetch_max(now, Ordering::SeqCst);
                tokio::task::yield_now().await;
            }
        })
    };
    let fetcher = Arc::new(Fetcher::new(&http_config(2, 2, Duration::ZERO)).unwrap());
    fetch_all(fetcher, urls).await;
    watcher.abort();
    assert!(
        total.max.load(Ordering::SeqCst) <= 2,
        "{}",
        total.max.load(Ordering::SeqCst)
    );
    assert!(gauges.iter().all(|g| g.max.load(Ordering::SeqCst) >= 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_to_one_host_are_spaced_by_the_per_host_delay() {
    let gauge = Arc::new(Gauge::default());
    let base = slow_server("127.0.0.1", gauge.clone(), Duration::ZERO).await;
    let delay = Duration::from_millis(200);
    let fetcher = Arc::new(Fetcher::new(&http_config(4, 32, delay)).unwrap());
    let urls = (0..4).map(|i| format!("{base}/feed/{i}")).collect();
    fetch_all(fetcher, urls).await;
    let mut starts = gauge.starts.lock().unwrap().clone();
    starts.sort();
    for pair in starts.windows(2) {
        let gap = pair[1] - pair[0];
        // A little slack for timer granularity.
        assert!(gap >= delay - Duration::from_millis(20), "gap {gap:?}");
    }
}
