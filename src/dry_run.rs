//! `feedwatch match`: the configured topics run over one document without
//! touching the store — the tool for tuning a query. The document (a file, a
//! URL or stdin) may be a feed (each entry is a story), an HTML page (one
//! story, extracted like an article page) or plain text (first line title).
//! It goes through the same normaliser as the daemon, so boilerplate that the
//! daemon strips does not count here either. With `--explain` each topic also says why it
//! did or did not match ([`crate::topics::TopicExplainer`]).

use std::io::Read;
use std::process::ExitCode;

use chrono::Utc;
use serde::Serialize;
use url::Url;

use crate::config::Config;
use crate::fetch::{FetchOutcome, FetchPolicy, Fetcher, Validators};
use crate::normalize::{RawStory, normalize};
use crate::source::feed::parse_feed;
use crate::topics::{Explanation, TopicExplainer, TopicMatch, TopicSet};

#[derive(Debug, Serialize)]
struct StoryReport {
    title: Option<String>,
    url: Option<String>,
    matches: Vec<MatchReport>,
    /// With `--explain`: every topic, matched or not, and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    explain: Option<Vec<Explanation>>,
}

#[derive(Debug, Serialize)]
struct MatchReport {
    topic: String,
    score: f64,
    terms: Vec<String>,
    snippet: String,
}

impl From<TopicMatch> for MatchReport {
    fn from(m: TopicMatch) -> Self {
        MatchReport {
            topic: m.topic,
            score: m.score,
            terms: m.terms,
            snippet: m.snippet,
        }
    }
}

/// Runs the `match` command; returns its exit code.
pub async fn run_match(config: &Config, input: &str, json: bool, explain: bool) -> ExitCode {
    let specs = config.topic_specs();
    let topics = match TopicSet::compile(&specs) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    // The same queries parsed again for the explainer; they compiled, so they parse.
    let explainer = match explain.then(|| TopicExplainer::new(&specs)).transpose() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let (bytes, content_type, base) = match read_input(config, input).await {
        Ok(x) => x,
        Err(e) => {
            eprintln!("error: {input}: {e}");
            return ExitCode::from(1);
        }
    };
    let reports = match_document(
        &topics,
        explainer.as_ref(),
        &bytes,
        content_type.as_deref(),
        &base,
    );
    if json {
        match serde_json::to_string_pretty(&reports) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(1);
            }
        }
    } else {
        print!("{}", render(&reports));
    }
    ExitCode::SUCCESS
}

async fn read_input(
    config: &Config,
    input: &str,
) -> anyhow::Result<(Vec<u8>, Option<String>, Url)> {
    if input == "-" {
        let mut buf = Vec::new();
        std::io::stdin().read_to_end(&mut buf)?;
        return Ok((buf, None, Url::parse("file:///dev/stdin")?));
    }
    if input.starts_with("http://") || input.starts_with("https://") {
        let url = Url::parse(input)?;
        let fetcher = Fetcher::new(&config.http)?;
        return match fetcher
            .get(&url, &Validators::default(), &FetchPolicy::source(&url))
            .await?
        {
            FetchOutcome::Fetched(f) => Ok((f.body.to_vec(), f.content_type, f.final_url)),
            FetchOutcome::NotModified => {
                anyhow::bail!("server answered 304 to an unconditional GET")
            }
        };
    }
    let path = std::fs::canonicalize(input)?;
    let bytes = std::fs::read(&path)?;
    let url = Url::from_file_path(&path).map_err(|()| anyhow::anyhow!("bad path"))?;
    Ok((bytes, None, url))
}

/// What kind of document `bytes` holds, judged from its first bytes.
fn sniff(bytes: &[u8]) -> &'static str {
    let head = String::from_utf8_lossy(&bytes[..bytes.len().min(2048)]).to_ascii_lowercase();
    let head = head.trim_start_matches('\u{feff}').trim_start();
    let xml_feed = ["<?xml", "<rss", "<feed", "<rdf"]
        .iter()
        .any(|p| head.starts_with(p));
    let json_feed = head.starts_with('{') && head.contains("jsonfeed");
    if xml_feed || json_feed {
        "feed"
    } else if head.starts_with('<') {
        "html"
    } else {
        "text"
    }
}

fn match_document(
    topics: &TopicSet,
    explainer: Option<&TopicExplainer>,
    bytes: &[u8],
    content_type: Option<&str>,
    base: &Url,
) -> Vec<StoryReport> {
    let now = Utc::now();
    let raw =
        |title: Option<String>, body: Option<String>, is_text: bool, link: Option<Url>| RawStory {
            source_id: 0,
            source_name: "match".into(),
            link,
            guid: None,
            rel_canonical: None,
            title,
            summary_html: None,
            body_html: body,
            body_is_text: is_text,
            author: None,
            published: None,
            fetched_at: now,
        };
    let raws: Vec<RawStory> = match sniff(bytes) {
        "feed" => match parse_feed(bytes, content_type, base, now) {
            Ok(feed) => feed
                .entries
                .into_iter()
                .map(|e| {
                    let mut r = raw(e.title, e.content_html, false, e.link);
                    r.summary_html = e.summary_html;
                    r
                })
                .collect(),
            Err(e) => {
                eprintln!("warning: not a readable feed ({e}); matching it as text");
                vec![raw(
                    None,
                    Some(String::from_utf8_lossy(bytes).into_owned()),
                    true,
                    None,
                )]
            }
        },
        "html" => {
            let html = crate::extract::decode_page(bytes, content_type);
            let article = crate::extract::extract_article(
                &html,
                base,
                &crate::extract::CompiledSelectors::default(),
            );
            vec![raw(article.title, Some(article.body), true, None)]
        }
        _ => {
            let text = String::from_utf8_lossy(bytes);
            let mut lines = text.lines().skip_while(|l| l.trim().is_empty());
            let title = lines.next().map(|l| l.trim().to_string());
            let body: Vec<&str> = lines.collect();
            vec![raw(title, Some(body.join("\n")), true, None)]
        }
    };
    raws.into_iter()
        .map(|r| {
            let story = normalize(r);
            let title = story.title.as_deref().unwrap_or("");
            let matches = topics.match_story(title, &story.body);
            let explain = explainer.map(|e| e.explain(title, &story.body));
            StoryReport {
                title: story.title,
                url: (!story.url.starts_with("feedwatch:")).then_some(story.url),
                matches: matches.into_iter().map(MatchReport::from).collect(),
                explain,
            }
        })
        .collect()
}

fn render(reports: &[StoryReport]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for r in reports {
        let _ = writeln!(out, "{}", r.title.as_deref().unwrap_or("(untitled)"));
        if let Some(url) = &r.url {
            let _ = writeln!(out, "  {url}");
        }
        if r.matches.is_empty() {
            let _ = writeln!(out, "  no topic matched");
        }
        for m in &r.matches {
            let _ = writeln!(
                out,
                "  {} score {} terms [{}]",
                m.topic,
                m.score,
                m.terms.join(", ")
            );
            let _ = writeln!(out, "    {}", m.snippet);
        }
        if let Some(explanations) = &r.explain {
            render_explanations(&mut out, explanations);
        }
        let _ = writeln!(out);
    }
    let matched = reports.iter().filter(|r| !r.matches.is_empty()).count();
    let _ = writeln!(
        out,
        "{matched} of {} stories matched a topic",
        reports.len()
    );
    out
}

/// `--explain`: one line per topic, then the clauses that failed.
fn render_explanations(out: &mut String, explanations: &[Explanation]) {
    use std::fmt::Write;
    let _ = writeln!(out, "  why:");
    for e in explanations {
        if e.matched {
            let _ = writeln!(
                out,
                "    {}: matched, score {} (min_score {}) from [{}]",
                e.topic,
                e.score,
                e.min_score,
                e.terms.join(", ")
            );
        } else {
            let _ = writeln!(out, "    {}: no match", e.topic);
            for line in &e.failed {
                let _ = writeln!(out, "      {line}");
            }
        }
    }
}
