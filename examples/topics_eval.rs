//! Scores topic queries against a labelled story set.
//!
//! ```text
//! cargo run --release --example topics_eval -- --topics config.toml ../shared/data/topics-dev.json
//! cargo run --release --example topics_eval -- --topics config.toml --seed ../shared/data/seed-page.txt DATA.json
//! ```
//!
//! The data file is JSON, either `{"items": [...]}` or a bare array, each item having `id`,
//! `title`, `body` and `topics` (the labels). The topics file uses the configuration format
//! (`[[topics]]` with `name`, `query`, `min_score`); other keys are ignored, so a whole
//! feedwatch config works too. Prints per topic TP/FP/FN, precision, recall and F1, and the ids
//! of misclassified items. `--seed` also prints what each story of a saved "article + related
//! articles" page matched (the lead story first).

use std::collections::BTreeSet;
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

#[derive(Deserialize)]
#[serde(untagged)]
enum DataFile {
    Wrapped { items: Vec<Item> },
    Bare(Vec<Item>),
}

#[derive(Deserialize)]
struct Item {
    id: String,
    title: String,
    body: String,
    #[serde(default)]
    topics: Vec<String>,
}

struct Args {
    topics: String,
    data: Option<String>,
    seed: Option<String>,
    verbose: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut topics = None;
    let mut data = None;
    let mut seed = None;
    let mut verbose = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--topics" => topics = args.next(),
            "--seed" => seed = args.next(),
            "-v" | "--verbose" => verbose = true,
            "-h" | "--help" => return Err(String::new()),
            other if !other.starts_with('-') && data.is_none() => data = Some(other.to_owned()),
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    let topics = topics.ok_or("--topics FILE is required")?;
    if data.is_none() && seed.is_none() {
        return Err("give a DATA.json and/or --seed PAGE.txt".to_owned());
    }
    Ok(Args {
        topics,
        data,
        seed,
        verbose,
    })
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            if !message.is_empty() {
                eprintln!("error: {message}");
            }
            eprintln!(
                "usage: topics_eval --topics config.toml [--seed seed-page.txt] [-v] [DATA.json]"
            );
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), Box<dyn Error>> {
    let file: TopicsFile = toml::from_str(&std::fs::read_to_string(&args.topics)?)?;
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

    if let Some(path) = &args.data {
        let items = match serde_json::from_str(&std::fs::read_to_string(path)?)? {
            DataFile::Wrapped { items } | DataFile::Bare(items) => items,
        };
        evaluate(&set, &specs, &items, args.verbose);
    }
    if let Some(path) = &args.seed {
        show_seed_page(&set, &std::fs::read_to_string(path)?);
    }
    Ok(())
}

fn evaluate(set: &TopicSet, specs: &[TopicSpec], items: &[Item], verbose: bool) {
    let predictions: Vec<Vec<(String, f64, Vec<String>)>> = items
        .iter()
        .map(|item| {
            set.match_story(&item.title, &item.body)
                .into_iter()
                .map(|m| (m.topic, m.score, m.terms))
                .collect()
        })
        .collect();

    println!("{} items, {} topics\n", items.len(), specs.len());
    println!(
        "{:<24} {:>4} {:>4} {:>4} {:>9} {:>7} {:>6}",
        "topic", "TP", "FP", "FN", "precision", "recall", "F1"
    );
    let mut misclassified = Vec::new();
    for spec in specs {
        let (mut tp, mut fp, mut fn_) = (0u32, 0u32, 0u32);
        for (item, predicted) in items.iter().zip(&predictions) {
            let labelled = item.topics.contains(&spec.name);
            let hit = predicted.iter().find(|(t, _, _)| *t == spec.name);
            match (labelled, hit) {
                (true, Some(_)) => tp += 1,
                (false, Some((_, score, terms))) => {
                    fp += 1;
                    misclassified.push(format!(
                        "  FP {:<22} {} (score {score}, terms {terms:?})",
                        spec.name, item.id
                    ));
                }
                (true, None) => {
                    fn_ += 1;
                    misclassified.push(format!("  FN {:<22} {}", spec.name, item.id));
                }
                (false, None) => {}
            }
        }
        let precision = ratio(tp, tp + fp);
        let recall = ratio(tp, tp + fn_);
        let f1 = if precision + recall > 0.0 {
            2.0 * precision * recall / (precision + recall)
        } else {
            0.0
        };
        println!(
            "{:<24} {tp:>4} {fp:>4} {fn_:>4} {precision:>9.3} {recall:>7.3} {f1:>6.3}",
            spec.name
        );
    }
    let unknown: BTreeSet<&str> = items
        .iter()
        .flat_map(|i| i.topics.iter())
        .filter(|t| !specs.iter().any(|s| s.name == **t))
        .map(String::as_str)
        .collect();
    if !unknown.is_empty() {
        println!("\nlabels with no configured topic: {unknown:?}");
    }
    if misclassified.is_empty() {
        println!("\nno misclassified items");
    } else {
        println!("\nmisclassified:");
        for line in misclassified {
            println!("{line}");
        }
    }
    if verbose {
        println!("\nall matches:");
        for (item, predicted) in items.iter().zip(&predictions) {
            for (topic, score, terms) in predicted {
                println!("  {} {topic} score {score} {terms:?}", item.id);
            }
        }
    }
}

fn ratio(a: u32, b: u32) -> f64 {
    if b == 0 {
        1.0
    } else {
        f64::from(a) / f64::from(b)
    }
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
