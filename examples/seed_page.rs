//! What the topics make of a saved article page: the lead story and each of its "Related
//! Articles" (the lead first).
//!
//! ```text
//! cargo run --release --example seed_page -- --topics config.toml ../shared/data/seed-page.txt
//! ```
//!
//! The topics file uses the configuration format (`[[topics]]` with `name`, `query`,
//! `min_score`); other keys are ignored, so a whole feedwatch config works too. Precision,
//! recall and F1 on a labelled set, which this example used to print too, are
//! `feedwatch eval LABELS` now (same figures, plus the nearest miss of each false negative).

use std::error::Error;
use std::process::ExitCode;

use feedwatch::topics::{TopicSet, TopicSpec};
use serde::Deserialize;

#[derive(Deserialize)]
struct TopicsFile {
    #[serde(default)]
    topics: Vec<TopicEntry>,
}

#[derive(Deserialize)]
struct TopicEntry {
    name: String,
    query: String,
    #[serde(default = "default_min_score")]
    min_score: f64,
}

fn default_min_score() -> f64 {
    1.0
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (mut topics, mut page) = (None, None);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--topics" => topics = args.next(),
            "--seed" => page = args.next(),
            other if !other.starts_with('-') && page.is_none() => page = Some(other.to_owned()),
            other => {
                eprintln!("error: unexpected argument {other:?}");
                page = None;
                break;
            }
        }
    }
    let (Some(topics), Some(page)) = (topics, page) else {
        eprintln!("usage: seed_page --topics config.toml seed-page.txt");
        return ExitCode::from(2);
    };
    match run(&topics, &page) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(topics: &str, page: &str) -> Result<(), Box<dyn Error>> {
    let file: TopicsFile = toml::from_str(&std::fs::read_to_string(topics)?)?;
    let specs: Vec<TopicSpec> = file
        .topics
        .into_iter()
        .map(|t| TopicSpec {
            name: t.name,
            query: t.query,
            min_score: t.min_score,
        })
        .collect();
    let set = TopicSet::compile(&specs)?;
    show_seed_page(&set, &std::fs::read_to_string(page)?);
    Ok(())
}

/// A saved article page: the lead story, then after a "Related Articles" line, blocks of
/// `source / age / - source / title / body` separated by blank lines.
fn show_seed_page(set: &TopicSet, page: &str) {
    let (lead, related) = page.split_once("Related Articles").unwrap_or((page, ""));
    let mut stories = Vec::new();
    let mut lead_lines = lead.lines().filter(|l| !l.trim().is_empty());
    let lead_title = lead_lines.next().unwrap_or_default().trim().to_owned();
    stories.push((lead_title, lead_lines.collect::<Vec<_>>().join("\n")));
    for block in related.split("\n\n") {
        let lines: Vec<&str> = block.lines().filter(|l| !l.trim().is_empty()).collect();
        if lines.len() >= 5 {
            stories.push((lines[3].trim().to_owned(), lines[4..].join("\n")));
        }
    }
    println!("\nseed page:");
    for (title, body) in &stories {
        let matches = set.match_story(title, body);
        let found: Vec<String> = matches
            .iter()
            .map(|m| format!("{} ({})", m.topic, m.score))
            .collect();
        println!(
            "  {:<70} → {}",
            truncate(title, 70),
            if found.is_empty() {
                "none".to_owned()
            } else {
                found.join(", ")
            }
        );
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        s.chars().take(n - 1).collect::<String>() + "…"
    }
}
