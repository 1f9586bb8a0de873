//! Tuning topics with evidence: the commands that run topic queries over what the store
//! already holds, or over labelled stories, instead of waiting for news.
//!
//! Place in the pipeline: beside it. The daemon stores every story's text and its matches
//! (`store`); these commands read them back through the read-side
//! [`crate::store::archive`] and run the same compiled matcher ([`crate::topics::TopicSet`])
//! and its clause-by-clause explainer over them. Nothing here writes matches or deliveries.
//!
//! - [`backtest`]: `feedwatch backtest` — a changed query over the stored stories: what it
//!   matches now, and what it adds to and drops from the stored matches.
//! - [`eval`]: `feedwatch eval` — precision, recall and F1 on a labelled file or on the
//!   labels stored with `feedwatch label` ([`label`]).

pub mod backtest;
pub mod eval;
pub mod label;

use std::process::ExitCode;

use crate::config::Config;
use crate::store::archive::{self, Access};
use crate::topics::{TopicSet, TopicSpec};

/// Why a tuning command stopped.
#[derive(Debug, thiserror::Error)]
pub enum TuningError {
    /// Bad arguments or a bad query: exit 2.
    #[error("{0}")]
    Usage(String),
    /// The store or an input could not be read: exit 1.
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

impl TuningError {
    /// The exit code DESIGN §7 gives this failure.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            TuningError::Usage(_) => ExitCode::from(2),
            TuningError::Failed(_) => ExitCode::from(1),
        }
    }
}

impl From<crate::store::archive::ArchiveError> for TuningError {
    fn from(e: crate::store::archive::ArchiveError) -> Self {
        match e {
            crate::store::archive::ArchiveError::UnknownStory(_) => {
                TuningError::Usage(e.to_string())
            }
            other => TuningError::Failed(other.into()),
        }
    }
}

/// True for a topic name the configuration would accept: `[a-z0-9-]+`.
pub(crate) fn is_topic_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The topics a tuning command runs: the configured ones, each `--query NAME=QUERY`
/// replacing the query of topic NAME (its `min_score` kept) or adding topic NAME (with
/// `min_score` 1); then, when `--topic` names are given, only those and the `--query` ones.
pub fn choose_topics(
    configured: Vec<TopicSpec>,
    only: &[String],
    queries: &[String],
) -> Result<Vec<TopicSpec>, TuningError> {
    let mut specs = configured;
    let mut overridden = Vec::new();
    for arg in queries {
        let Some((name, query)) = arg.split_once('=') else {
            return Err(TuningError::Usage(format!(
                "--query {arg:?}: expected NAME=QUERY"
            )));
        };
        let name = name.trim();
        if !is_topic_name(name) {
            return Err(TuningError::Usage(format!(
                "--query: topic name {name:?} must match [a-z0-9-]+"
            )));
        }
        match specs.iter_mut().find(|s| s.name == name) {
            Some(spec) => spec.query = query.to_owned(),
            None => specs.push(TopicSpec {
                name: name.to_owned(),
                query: query.to_owned(),
                min_score: 1.0,
            }),
        }
        overridden.push(name.to_owned());
    }
    if !only.is_empty() {
        if let Some(unknown) = only.iter().find(|n| !specs.iter().any(|s| &s.name == *n)) {
            return Err(TuningError::Usage(format!(
                "--topic {unknown:?}: no such topic in the config (add it with --query {unknown}=QUERY)"
            )));
        }
        specs.retain(|s| only.contains(&s.name) || overridden.contains(&s.name));
    }
    if specs.is_empty() {
        return Err(TuningError::Usage(
            "no topics to run: the config has none; add one with --query NAME=QUERY".to_owned(),
        ));
    }
    Ok(specs)
}

/// Compiles the chosen topics; a bad query is a usage error naming its column.
pub fn compile(specs: &[TopicSpec]) -> Result<TopicSet, TuningError> {
    TopicSet::compile(specs).map_err(|e| TuningError::Usage(e.to_string()))
}

/// `--since 2d`: the moment that long before `now`.
pub fn since(
    duration: Option<&str>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, TuningError> {
    let Some(text) = duration else {
        return Ok(None);
    };
    let d = humantime::parse_duration(text)
        .map_err(|e| TuningError::Usage(format!("--since {text:?}: {e}")))?;
    let d = chrono::TimeDelta::from_std(d)
        .map_err(|_| TuningError::Usage(format!("--since {text:?} is too long")))?;
    Ok(Some(now - d))
}

/// The arguments `backtest` and `eval` share: which topics, and which changed queries.
#[derive(Debug, Clone, Default)]
pub struct TopicArgs {
    /// `--topic NAME`…
    pub only: Vec<String>,
    /// `--query NAME=QUERY`…
    pub queries: Vec<String>,
}

/// Prints a tuning command's outcome: the report (JSON or text) on success, the error on
/// failure; returns the exit code.
fn finish<T: serde::Serialize>(
    result: Result<T, TuningError>,
    json: bool,
    render: impl Fn(&T) -> String,
) -> ExitCode {
    match result {
        Ok(report) if json => match serde_json::to_string_pretty(&report) {
            Ok(text) => {
                println!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(1)
            }
        },
        Ok(report) => {
            print!("{}", render(&report));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            e.exit_code()
        }
    }
}

/// `feedwatch backtest`.
pub async fn backtest_command(
    config: &Config,
    topics: &TopicArgs,
    since_arg: Option<&str>,
    json: bool,
) -> ExitCode {
    let result = async {
        let specs = choose_topics(config.topic_specs(), &topics.only, &topics.queries)?;
        let set = std::sync::Arc::new(compile(&specs)?);
        let since = since(since_arg, chrono::Utc::now())?;
        let archive = archive::open(&config.database.url, Access::ReadOnly).await?;
        let report = backtest::run(archive.as_ref(), &specs, set, since).await;
        archive.close().await;
        Ok(report?)
    }
    .await;
    finish(result, json, backtest::render)
}

/// Where `eval` reads its labels.
#[derive(Debug, Clone)]
pub enum LabelsFrom {
    /// A JSON file, or `-` for standard input.
    File(String),
    /// The `labels` table, labels given since the optional duration ago.
    Stored { since: Option<String> },
}

/// `feedwatch eval`.
pub async fn eval_command(
    config: &Config,
    from: &LabelsFrom,
    topics: &TopicArgs,
    json: bool,
) -> ExitCode {
    let result = async {
        let specs = choose_topics(config.topic_specs(), &topics.only, &topics.queries)?;
        let set = compile(&specs)?;
        let labelled = match from {
            LabelsFrom::File(path) => {
                let text = if path == "-" {
                    let mut text = String::new();
                    std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                        .map_err(|e| anyhow::anyhow!("reading labels from stdin: {e}"))?;
                    text
                } else {
                    std::fs::read_to_string(path)
                        .map_err(|e| TuningError::Usage(format!("{path}: {e}")))?
                };
                eval::load_file(&text, &config.database.url).await?
            }
            LabelsFrom::Stored { since: since_arg } => {
                let since = since(since_arg.as_deref(), chrono::Utc::now())?;
                let archive = archive::open(&config.database.url, Access::ReadOnly).await?;
                let labelled = eval::load_stored(archive.as_ref(), since).await;
                archive.close().await;
                labelled?
            }
        };
        for url in &labelled.not_found {
            eprintln!("warning: {url}: no stored story with this URL; item not evaluated");
        }
        Ok(eval::evaluate(&set, &specs, &labelled))
    }
    .await;
    finish(result, json, eval::render)
}

/// `feedwatch label STORY_ID (+TOPIC|-TOPIC)…`.
pub async fn label_command(config: &Config, story_id: i64, judgements: &[String]) -> ExitCode {
    let result = async {
        let labels = label::parse_judgements(judgements)?;
        for l in &labels {
            if !config.topics.iter().any(|t| t.name() == l.topic) {
                eprintln!(
                    "warning: topic {:?} is not in the config; the label is kept",
                    l.topic
                );
            }
        }
        let archive = archive::open(&config.database.url, Access::ReadWrite).await?;
        let written = archive
            .record_labels(story_id, &labels, chrono::Utc::now())
            .await;
        archive.close().await;
        written?;
        Ok(labels
            .iter()
            .map(|l| format!("{}{}", if l.relevant { "+" } else { "-" }, l.topic))
            .collect::<Vec<_>>())
    }
    .await;
    finish(result, false, |marks: &Vec<String>| {
        format!("story {story_id}: {}\n", marks.join(" "))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn configured() -> Vec<TopicSpec> {
        ["a", "b"]
            .iter()
            .map(|n| TopicSpec {
                name: (*n).into(),
                query: format!("{n}x"),
                min_score: 2.0,
            })
            .collect()
    }

    #[test]
    fn a_query_replaces_a_topic_keeping_its_min_score_or_adds_one() {
        let specs = choose_topics(configured(), &[], &["b=y OR z".into(), "c=w=v".into()]).unwrap();
        let got: Vec<(&str, &str, f64)> = specs
            .iter()
            .map(|s| (s.name.as_str(), s.query.as_str(), s.min_score))
            .collect();
        assert_eq!(
            got,
            [("a", "ax", 2.0), ("b", "y OR z", 2.0), ("c", "w=v", 1.0)]
        );
    }

    #[test]
    fn named_topics_keep_only_those_and_the_queried_ones() {
        let specs = choose_topics(configured(), &["a".into()], &["c=w".into()]).unwrap();
        let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["a", "c"]);
    }

    #[test]
    fn unknown_topics_and_bad_query_arguments_are_usage_errors() {
        for (only, queries) in [
            (vec!["zz".to_owned()], vec![]),
            (vec![], vec!["no-equals".to_owned()]),
            (vec![], vec!["Bad Name=x".to_owned()]),
        ] {
            assert!(matches!(
                choose_topics(configured(), &only, &queries),
                Err(TuningError::Usage(_))
            ));
        }
    }

    #[test]
    fn since_reads_humantime_durations() {
        let now = chrono::Utc::now();
        assert_eq!(
            since(Some("2d"), now).unwrap(),
            Some(now - chrono::TimeDelta::days(2))
        );
        assert!(since(Some("soon"), now).is_err());
        assert_eq!(since(None, now).unwrap(), None);
    }
}
