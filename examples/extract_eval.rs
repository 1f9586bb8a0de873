//! Evaluates article extraction on the real-world corpus in
//! `../shared/data/realworld/articles` (Mozilla Readability, trafilatura and
//! RSParser test pages).
//!
//! ```text
//! cargo run --release --example extract_eval -- ../shared/data/realworld/articles
//! ```
//!
//! Per page and in total: title correct (normalised), published time correct
//! where one is expected, share of must-contain snippets found, share of
//! must-not-contain snippets absent, token F1 of the body against the expected
//! text, and the time taken; then the time on generated stress pages (100,000
//! nested divs, 5 MB), which `--no-stress` skips. An earlier comparison found the
//! `dom_smoothie` crate worse on the trafilatura set (must-contain 0.891 vs 0.978,
//! must-not-contain 0.846 vs 0.962) and still running after 120 s on the nested divs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDateTime, Utc};
use feedwatch::extract::{
    Article, CompiledSelectors, PageSelectors, decode_page, extract_article, html_to_text,
};
use serde_json::Value;
use url::Url;

/// Readability's tests use this page URL.
const READABILITY_URL: &str = "http://fakehost/test/page.html";

#[derive(Default)]
struct Totals {
    pages: usize,
    titles_expected: usize,
    titles_right: usize,
    dates_expected: usize,
    dates_right: usize,
    with_total: usize,
    with_found: usize,
    without_total: usize,
    without_absent: usize,
    f1_sum: f64,
    f1_pages: usize,
    time: Duration,
    slowest: Duration,
}

impl Totals {
    fn print(&self, name: &str) {
        let share = |a: usize, b: usize| a as f64 / b as f64;
        let mut parts = vec![format!("{name:<16} pages {:>2}", self.pages)];
        if self.titles_expected > 0 {
            parts.push(format!(
                "title {}/{} ({:.3})",
                self.titles_right,
                self.titles_expected,
                share(self.titles_right, self.titles_expected)
            ));
        }
        if self.dates_expected > 0 {
            parts.push(format!("date {}/{}", self.dates_right, self.dates_expected));
        }
        if self.f1_pages > 0 {
            parts.push(format!(
                "mean body F1 {:.3}",
                self.f1_sum / self.f1_pages as f64
            ));
        }
        if self.with_total > 0 {
            parts.push(format!(
                "must-contain {}/{} ({:.3})",
                self.with_found,
                self.with_total,
                share(self.with_found, self.with_total)
            ));
        }
        if self.without_total > 0 {
            parts.push(format!(
                "must-not-contain absent {}/{} ({:.3})",
                self.without_absent,
                self.without_total,
                share(self.without_absent, self.without_total)
            ));
        }
        parts.push(format!(
            "time {:.0} ms (slowest {:.1} ms)",
            self.time.as_secs_f64() * 1000.0,
            self.slowest.as_secs_f64() * 1000.0
        ));
        println!("  {}", parts.join("  "));
    }
}

/// What one extractor produced for a page.
struct Output {
    title: Option<String>,
    body: String,
    published: Option<DateTime<Utc>>,
    elapsed: Duration,
}

fn ours(html: &str, url: &Url) -> Output {
    let selectors = CompiledSelectors::compile(&PageSelectors::default()).expect("no selectors");
    let start = Instant::now();
    let Article {
        title,
        body,
        published,
        ..
    } = extract_article(html, url, &selectors);
    Output {
        title,
        body,
        published,
        elapsed: start.elapsed(),
    }
}

/// A page of `depth` nested `<div>`s around one paragraph.
fn deep_page(depth: usize) -> String {
    format!(
        "<html><head><title>Deep</title></head><body>{}<p>{}</p>{}</body></html>",
        "<div>".repeat(depth),
        "Deep text, with commas, long enough to count as a paragraph. ".repeat(10),
        "</div>".repeat(depth)
    )
}

/// A 5 MB article page: navigation, then many paragraphs.
fn huge_page() -> String {
    let mut html = String::from("<html><head><title>Huge</title></head><body><nav>");
    html.push_str(&"<a href=\"/x\">Navigation link</a> ".repeat(2_000));
    html.push_str("</nav><article><div class=\"entry-content\">");
    while html.len() < 5 * 1024 * 1024 {
        html.push_str("<p>A long paragraph of article text, with commas, clauses and enough words to score, repeated.</p>\n");
    }
    html.push_str("</div></article></body></html>");
    html
}

fn stress() {
    println!("== stress (generated pages)");
    let page = Url::parse("https://example.org/stress").expect("valid URL");
    let deep = deep_page(100_000);
    let out = ours(&deep, &page);
    println!(
        "  ours 100,000 nested divs: {:.2} s, body {} chars",
        out.elapsed.as_secs_f64(),
        out.body.len()
    );
    let huge = huge_page();
    let out = ours(&huge, &page);
    println!(
        "  ours 5 MB page: {:.2} s, body {} chars",
        out.elapsed.as_secs_f64(),
        out.body.len()
    );
}

fn main() {
    let root = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../shared/data/realworld/articles"
            ))
        });
    let mut ours_totals: HashMap<&str, Totals> = HashMap::new();

    println!("== readability (title / date / body F1 vs expected.html)");
    for source in files(&root.join("readability"), "__source.html") {
        let stem = source
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("")
            .trim_end_matches("__source.html")
            .to_string();
        let html = decode_page(&read(&source), None);
        let expected_text = html_to_text(&String::from_utf8_lossy(&read(
            &source.with_file_name(format!("{stem}__expected.html")),
        )));
        let metadata: Value = serde_json::from_slice(&read(
            &source.with_file_name(format!("{stem}__expected-metadata.json")),
        ))
        .unwrap_or(Value::Null);
        let want_title = metadata["title"].as_str().unwrap_or("");
        let want_date = metadata["publishedTime"]
            .as_str()
            .and_then(parse_expected_date);
        let url = Url::parse(READABILITY_URL).expect("valid URL");
        let out = ours(&html, &url);
        let totals = ours_totals.entry("readability").or_default();
        totals.pages += 1;
        totals.titles_expected += 1;
        let title_ok = title_key(out.title.as_deref().unwrap_or("")) == title_key(want_title);
        totals.titles_right += usize::from(title_ok);
        let date_ok = want_date.map(|d| out.published == Some(d));
        if let Some(ok) = date_ok {
            totals.dates_expected += 1;
            totals.dates_right += usize::from(ok);
        }
        let f1 = token_f1(&out.body, &expected_text);
        totals.f1_sum += f1;
        totals.f1_pages += 1;
        totals.time += out.elapsed;
        totals.slowest = totals.slowest.max(out.elapsed);
        println!(
            "  ours {stem:<42} title {} date {} F1 {f1:.3} {:>6.1} ms  {:?}",
            mark(title_ok),
            date_ok.map_or("-", mark),
            out.elapsed.as_secs_f64() * 1000.0,
            out.title.as_deref().unwrap_or(""),
        );
    }

    println!("== trafilatura (must-contain / must-not-contain)");
    for expected_path in files(&root.join("trafilatura"), ".expected.json") {
        let name = expected_path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("")
            .trim_end_matches(".expected.json")
            .to_string();
        let expected: Value = serde_json::from_slice(&read(&expected_path)).unwrap_or(Value::Null);
        let html = decode_page(
            &read(&expected_path.with_file_name(format!("{name}.html"))),
            None,
        );
        let url = expected["url"]
            .as_str()
            .and_then(|u| Url::parse(u).ok())
            .unwrap_or_else(|| Url::parse("https://example.org/").expect("valid URL"));
        let with = strings(&expected["with"]);
        let without = strings(&expected["without"]);
        let out = ours(&html, &url);
        let totals = ours_totals.entry("trafilatura").or_default();
        let body = squash(&out.body);
        let found = with.iter().filter(|s| body.contains(&squash(s))).count();
        let absent = without
            .iter()
            .filter(|s| !body.contains(&squash(s)))
            .count();
        totals.pages += 1;
        totals.with_total += with.len();
        totals.with_found += found;
        totals.without_total += without.len();
        totals.without_absent += absent;
        totals.time += out.elapsed;
        totals.slowest = totals.slowest.max(out.elapsed);
        let missing: Vec<_> = with.iter().filter(|s| !body.contains(&squash(s))).collect();
        let leaked: Vec<_> = without
            .iter()
            .filter(|s| body.contains(&squash(s)))
            .collect();
        println!(
            "  ours {:<52} with {found}/{} without {absent}/{} {:>6} chars {:>6.1} ms{}{}",
            name.trim_start_matches("trafilatura__"),
            with.len(),
            without.len(),
            out.body.chars().count(),
            out.elapsed.as_secs_f64() * 1000.0,
            if missing.is_empty() {
                String::new()
            } else {
                format!("  missing {missing:?}")
            },
            if leaked.is_empty() {
                String::new()
            } else {
                format!("  leaked {leaked:?}")
            },
        );
    }

    println!("== RSParser (no body/title expectations: robustness and metadata only)");
    for page in files(&root.join("RSParser"), ".html") {
        let expected_path =
            PathBuf::from(page.to_string_lossy().replace(".html", ".expected.json"));
        let expected: Value = serde_json::from_slice(&read(&expected_path)).unwrap_or(Value::Null);
        let url = expected["url"]
            .as_str()
            .and_then(|u| Url::parse(u).ok())
            .unwrap_or_else(|| Url::parse("https://example.org/").expect("valid URL"));
        let html = decode_page(&read(&page), None);
        let selectors =
            CompiledSelectors::compile(&PageSelectors::default()).expect("no selectors");
        let start = Instant::now();
        let article = extract_article(&html, &url, &selectors);
        let elapsed = start.elapsed();
        let totals = ours_totals.entry("rsparser").or_default();
        totals.pages += 1;
        totals.time += elapsed;
        totals.slowest = totals.slowest.max(elapsed);
        println!(
            "  ours {:<30} title {:?} canonical {:?} body {} chars {:.1} ms",
            page.file_name().and_then(|n| n.to_str()).unwrap_or(""),
            article.title,
            article.canonical_url.map(String::from),
            article.body.chars().count(),
            elapsed.as_secs_f64() * 1000.0
        );
    }

    if !std::env::args().any(|a| a == "--no-stress") {
        stress();
    }

    println!("== totals");
    for set in ["readability", "trafilatura", "rsparser"] {
        if let Some(t) = ours_totals.get(set) {
            t.print(&format!("ours/{set}"));
        }
    }
}

fn files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    found.retain(|p| p.to_string_lossy().ends_with(suffix));
    found.sort();
    found
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn mark(ok: bool) -> &'static str {
    if ok { "ok" } else { "NO" }
}

/// Whitespace collapsed to single spaces, for snippet matching.
fn squash(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Lower-case words, quotes and dashes dropped: how titles are compared.
fn title_key(title: &str) -> String {
    tokens(title).join(" ")
}

fn tokens(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// Token-level F1 of `got` against `want` (bags of lower-case words).
fn token_f1(got: &str, want: &str) -> f64 {
    let mut counts: HashMap<String, i64> = HashMap::new();
    let want_tokens = tokens(want);
    let got_tokens = tokens(got);
    if want_tokens.is_empty() && got_tokens.is_empty() {
        return 1.0;
    }
    for t in &want_tokens {
        *counts.entry(t.clone()).or_default() += 1;
    }
    let mut common = 0usize;
    for t in &got_tokens {
        if let Some(c) = counts.get_mut(t)
            && *c > 0
        {
            *c -= 1;
            common += 1;
        }
    }
    if common == 0 {
        return 0.0;
    }
    let precision = common as f64 / got_tokens.len() as f64;
    let recall = common as f64 / want_tokens.len() as f64;
    2.0 * precision * recall / (precision + recall)
}

/// Readability's expected `publishedTime`: RFC 3339, or a zone-less time taken as UTC.
fn parse_expected_date(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|d| d.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S")
                .ok()
                .map(|n| n.and_utc())
        })
}
