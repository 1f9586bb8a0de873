//! Runs every real-world feed in the shared corpus through the daemon's fetch-and-parse path
//! — served from a loopback HTTP server as `application/xml` (or `application/feed+json`)
//! without a charset, fetched with `fetch::Fetcher` under the default `[http]` limits, then
//! `source::feed::parse_feed` with the response's content type — and reports what parsed,
//! what failed and why, and where an expected parse ships beside a
//! feed (feed-rs `.serde.json`, gofeed `.json`/`_expected.json`), how ours compares on entry
//! count, titles, links and published dates. Then scores the feedparser date vectors.
//!
//! `cargo run --release --example feed_corpus -- ../shared/data/realworld/feeds`

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use feedwatch::config::HttpConfig;
use feedwatch::fetch::{FetchOutcome, FetchPolicy, Fetcher, Validators};
use feedwatch::source::feed::{FeedError, ParsedFeed, parse_feed};
use serde_json::Value;
use url::Url;

/// Corpus files that must be refused, with the reason the corpus gives.
const MUST_FAIL: &[(&str, &str)] = &[
    (
        "feed-rs__rss_2.0_invalid_1.xml",
        "truncated by a server error (feed-rs test asserts is_err)",
    ),
    ("gofeed__universal_empty_feed.xml", "empty document"),
    (
        "gofeed__universal_unknown_feed.xml",
        "XML that is not a feed",
    ),
    ("gofeed__universal_invalid.json", "JSON that is not a feed"),
    (
        "feedparser__illformed_rss_empty_document.xml",
        "empty document",
    ),
];

enum Expectation {
    Parse,
    Fail(&'static str),
    /// feedparser marks the file ill-formed ("bozo"): parsing it or refusing it are both fine.
    Either(String),
}

#[tokio::main]
async fn main() {
    let root = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../shared/data/realworld/feeds"
            ))
        });
    let fetched_at = Utc
        .with_ymd_and_hms(2026, 11, 28, 12, 0, 0)
        .single()
        .unwrap_or_default();

    let mut files: Vec<PathBuf> = Vec::new();
    for dir in ["feed-rs", "gofeed", "feedparser", "RSParser", "trafilatura"] {
        let Ok(read) = fs::read_dir(root.join(dir)) else {
            eprintln!("missing folder {}", root.join(dir).display());
            continue;
        };
        let mut names: Vec<PathBuf> = read.flatten().map(|e| e.path()).collect();
        names.sort();
        files.extend(names.into_iter().filter(|p| is_feed_input(p)));
    }

    let server = serve(root.clone()).await;
    let fetcher = Fetcher::new(&HttpConfig {
        per_host_delay: Duration::ZERO,
        ..HttpConfig::default()
    })
    .expect("an HTTP client");

    let mut parsed = 0;
    let mut failed = 0;
    let mut correct = 0;
    let mut wrong = 0;
    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
    let mut compared = 0;
    let mut mismatches = 0;
    for path in &files {
        let name = file_name(path);
        let relative = path.strip_prefix(&root).unwrap_or(path);
        let local = server
            .join(&relative.to_string_lossy())
            .expect("a corpus path is a URL path");
        let fetched = match fetcher
            .get(&local, &Validators::default(), &FetchPolicy::source(&local))
            .await
        {
            Ok(FetchOutcome::Fetched(f)) => f,
            Ok(FetchOutcome::NotModified) => {
                println!("{name}: 304 on an unconditional GET");
                continue;
            }
            Err(e) => {
                println!("{name}: FETCH FAILED: {e}");
                wrong += 1;
                continue;
            }
        };
        let expectation = expectation(&name, &fetched.body);
        // Relative links resolve against the feed's own site, as the expected parses do.
        let feed_url = corpus_url(&name);
        let result = parse_feed(
            &fetched.body,
            fetched.content_type.as_deref(),
            &feed_url,
            fetched_at,
        );
        let verdict = match (&result, &expectation) {
            (Ok(_), Expectation::Parse) | (Err(_), Expectation::Fail(_)) => "ok",
            (_, Expectation::Either(_)) => "ok (ill-formed: either outcome accepted)",
            _ => "WRONG",
        };
        if verdict == "WRONG" {
            wrong += 1;
        } else {
            correct += 1;
        }
        match &result {
            Ok(feed) => {
                parsed += 1;
                let missing_dates = feed.entries.iter().filter(|e| e.date_was_missing).count();
                println!(
                    "{name}: parsed, {} entries ({} without a readable date), title {:?} [{verdict}]",
                    feed.entries.len(),
                    missing_dates,
                    feed.title
                        .as_deref()
                        .map(|t| truncate(t, 50))
                        .unwrap_or_default(),
                );
            }
            Err(e) => {
                failed += 1;
                *errors.entry(error_kind(e)).or_default() += 1;
                println!("{name}: FAILED: {e} [{verdict}]");
            }
        }
        match &expectation {
            Expectation::Fail(why) => println!("    expected to fail: {why}"),
            Expectation::Either(expect) => println!("    feedparser expects: {expect}"),
            Expectation::Parse => {}
        }
        if let (Ok(feed), Some(expected)) = (&result, expected_entries(path)) {
            compared += 1;
            let found = compare(feed, &expected);
            if found.is_empty() {
                println!(
                    "    matches the expected parse ({} entries)",
                    expected.len()
                );
            } else {
                mismatches += 1;
                for m in found {
                    println!("    MISMATCH {m}");
                }
            }
        }
    }

    println!();
    println!(
        "{} feed files: {parsed} parsed, {failed} failed; {correct} as expected, {wrong} not",
        files.len()
    );
    for (kind, n) in &errors {
        println!("  failed with {kind}: {n}");
    }
    println!(
        "{compared} files have an expected parse beside them: {} match, {mismatches} differ",
        compared - mismatches
    );

    let vectors = root.join("feedparser/feedparser__date_parser_vectors.json");
    match fs::read(&vectors) {
        Ok(bytes) => score_date_vectors(&bytes, fetched_at),
        Err(e) => println!("date vectors unreadable: {e}"),
    }
}

/// Serves the files under `root` on a loopback port, each as its kind of feed, and returns
/// the base URL.
async fn serve(root: PathBuf) -> Url {
    use axum::extract::Path as UrlPath;
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;

    let app = axum::Router::new().route(
        "/{*file}",
        axum::routing::get(move |UrlPath(file): UrlPath<String>| {
            let root = root.clone();
            async move {
                if file.split('/').any(|part| part == "..") {
                    return StatusCode::NOT_FOUND.into_response();
                }
                let content_type = if file.ends_with(".json") {
                    "application/feed+json"
                } else {
                    "application/xml"
                };
                match tokio::fs::read(root.join(&file)).await {
                    Ok(body) => ([(header::CONTENT_TYPE, content_type)], body).into_response(),
                    Err(_) => StatusCode::NOT_FOUND.into_response(),
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let addr = listener.local_addr().expect("the bound address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    Url::parse(&format!("http://{addr}/")).expect("a loopback URL")
}

/// Feed inputs: XML/RSS/Atom files, and JSON files that are feeds rather than expected
/// outputs (feed-rs `.serde.json`, gofeed `_expected.json` and `.json` beside an `.xml`)
/// or the date vectors.
fn is_feed_input(path: &Path) -> bool {
    let name = file_name(path);
    if name.ends_with(".xml") || name.ends_with(".rss") || name.ends_with(".atom") {
        return true;
    }
    if !name.ends_with(".json") {
        return false;
    }
    if name.ends_with(".serde.json")
        || name.ends_with("_expected.json")
        || name.contains("date_parser_vectors")
    {
        return false;
    }
    !path.with_extension("xml").exists()
}

fn expectation(name: &str, bytes: &[u8]) -> Expectation {
    if let Some((_, why)) = MUST_FAIL.iter().find(|(n, _)| *n == name) {
        return Expectation::Fail(why);
    }
    if name.starts_with("feedparser__") {
        let head = String::from_utf8_lossy(&bytes[..bytes.len().min(2048)]).into_owned();
        if let Some(at) = head.find("Expect:") {
            let expect = head[at + 7..]
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_owned();
            if expect.starts_with("bozo") {
                return Expectation::Either(expect);
            }
        }
    }
    Expectation::Parse
}

/// A plausible URL for a corpus file (the base for relative links).
fn corpus_url(name: &str) -> Url {
    let url = format!("https://feeds.example.test/{name}");
    Url::parse(&url)
        .unwrap_or_else(|_| Url::parse("https://feeds.example.test/").expect("valid literal"))
}

struct ExpectedEntry {
    title: Option<String>,
    link: Option<String>,
    published: Option<DateTime<Utc>>,
}

/// The expected entries shipped beside `path`, in a common shape.
fn expected_entries(path: &Path) -> Option<Vec<ExpectedEntry>> {
    let name = file_name(path);
    let stem = name
        .rsplit_once('.')
        .map_or(name.as_str(), |(s, _)| s)
        .to_owned();
    let dir = path.parent()?;
    let candidates = [
        dir.join(format!("{stem}.serde.json")),
        dir.join(format!("{stem}_expected.json")),
        dir.join(format!("{stem}.json")),
    ];
    let expected_path = candidates
        .into_iter()
        .find(|p| p.exists() && p.as_path() != path)?;
    let value: Value = serde_json::from_slice(&fs::read(&expected_path).ok()?).ok()?;
    if let Some(entries) = value.get("entries").and_then(Value::as_array) {
        // feed-rs model
        return Some(
            entries
                .iter()
                .map(|e| ExpectedEntry {
                    title: e
                        .pointer("/title/content")
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                    link: e.get("links").and_then(Value::as_array).and_then(|links| {
                        links
                            .iter()
                            .find(|l| {
                                matches!(
                                    l.get("rel").and_then(Value::as_str),
                                    None | Some("alternate")
                                )
                            })
                            .and_then(|l| l.get("href").and_then(Value::as_str))
                            .map(str::to_owned)
                    }),
                    published: ["published", "updated"]
                        .iter()
                        .find_map(|k| e.get(*k).and_then(Value::as_str).and_then(rfc3339)),
                })
                .collect(),
        );
    }
    let items = value.get("items").and_then(Value::as_array)?;
    Some(
        items
            .iter()
            .map(|i| ExpectedEntry {
                title: i.get("title").and_then(Value::as_str).map(str::to_owned),
                link: ["link", "url"]
                    .iter()
                    .find_map(|k| i.get(*k).and_then(Value::as_str))
                    .map(str::to_owned),
                published: ["publishedParsed", "date_published"]
                    .iter()
                    .find_map(|k| i.get(*k).and_then(Value::as_str).and_then(rfc3339)),
            })
            .collect(),
    )
}

fn compare(feed: &ParsedFeed, expected: &[ExpectedEntry]) -> Vec<String> {
    let mut out = Vec::new();
    if feed.entries.len() != expected.len() {
        out.push(format!(
            "entry count: ours {}, expected {}",
            feed.entries.len(),
            expected.len()
        ));
    }
    for (i, (ours, exp)) in feed.entries.iter().zip(expected).enumerate() {
        let exp_title = exp
            .title
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty());
        if ours.title.as_deref() != exp_title {
            out.push(format!(
                "entry {i} title: ours {:?}, expected {exp_title:?}",
                ours.title
            ));
        }
        let our_link = ours.link.as_ref().map(Url::as_str);
        let exp_link = exp.link.as_deref().and_then(|l| Url::parse(l.trim()).ok());
        if our_link != exp_link.as_ref().map(Url::as_str) {
            out.push(format!(
                "entry {i} link: ours {our_link:?}, expected {:?}",
                exp.link
            ));
        }
        let our_date = (!ours.date_was_missing).then_some(ours.published).flatten();
        if our_date != exp.published {
            out.push(format!(
                "entry {i} published: ours {our_date:?}, expected {:?}",
                exp.published
            ));
        }
    }
    out
}

/// Each vector is put in an RSS item's `<pubDate>` and read back through `parse_feed`.
fn score_date_vectors(bytes: &[u8], fetched_at: DateTime<Utc>) {
    let Ok(value) = serde_json::from_slice::<Value>(bytes) else {
        println!("date vectors: not JSON");
        return;
    };
    let mut vectors: Vec<&Value> = Vec::new();
    for key in ["vectors", "extra"] {
        if let Some(list) = value.get(key).and_then(Value::as_array) {
            vectors.extend(list);
        }
    }
    let url = Url::parse("https://dates.example.test/feed").expect("valid literal");
    // Far enough ahead that no vector is clamped as a future date.
    let now = Utc
        .with_ymd_and_hms(2100, 1, 1, 0, 0, 0)
        .single()
        .unwrap_or(fetched_at);
    let mut right = 0;
    let mut wrong: Vec<String> = Vec::new();
    for v in &vectors {
        let input = v.get("input").and_then(Value::as_str).unwrap_or("");
        let expected = v
            .get("expected_utc")
            .and_then(Value::as_array)
            .and_then(|a| {
                let n: Vec<i64> = a.iter().filter_map(Value::as_i64).collect();
                let [y, mo, d, h, mi, s, ..] = n.as_slice() else {
                    return None;
                };
                Utc.with_ymd_and_hms(
                    *y as i32, *mo as u32, *d as u32, *h as u32, *mi as u32, *s as u32,
                )
                .single()
            });
        let escaped = input.replace('&', "&amp;").replace('<', "&lt;");
        let doc = format!(
            "<rss version=\"2.0\"><channel><item><title>t</title><pubDate>{escaped}</pubDate></item></channel></rss>"
        );
        let got = parse_feed(doc.as_bytes(), None, &url, now)
            .ok()
            .and_then(|f| f.entries.into_iter().next())
            .and_then(|e| (!e.date_was_missing).then_some(e.published).flatten())
            // Compare to the second, like the struct_time vectors.
            .and_then(|d| Utc.timestamp_opt(d.timestamp(), 0).single());
        if got == expected {
            right += 1;
        } else {
            let parser = v.get("parser").and_then(Value::as_str).unwrap_or("?");
            wrong.push(format!(
                "  [{parser}] {input:?}: ours {got:?}, expected {expected:?}"
            ));
        }
    }
    println!(
        "date vectors: {right} of {} read as expected ({} not)",
        vectors.len(),
        wrong.len()
    );
    for w in wrong {
        println!("{w}");
    }
}

fn error_kind(e: &FeedError) -> String {
    match e {
        FeedError::EmptyBody => "empty body",
        FeedError::EntityDeclaration => "entity declarations",
        FeedError::HtmlPage => "HTML page",
        FeedError::NotXmlOrJson => "neither XML nor JSON",
        FeedError::NotAFeed(_) => "not a feed",
        FeedError::MalformedXml { .. } => "malformed XML",
        FeedError::InvalidJson(_) => "invalid JSON feed",
        FeedError::Unparseable(_) => "unparseable",
        FeedError::ParserPanicked => "parser panicked",
    }
    .to_owned()
}

fn rfc3339(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|d| d.with_timezone(&Utc))
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}
