//! `feedwatch eval`: precision, recall and F1 of topic queries on labelled stories — a
//! labelled JSON file, or the labels people stored with `feedwatch label`.
//!
//! Place in the pipeline: after the fact, like backtest. Each labelled story runs through
//! the compiled [`TopicSet`] the daemon uses; a false negative also goes through the
//! [`TopicExplainer`] to name its nearest miss (the clauses that failed). File items
//! without a `body` are looked up in the store by URL (canonical URL rules, DESIGN §3).
//!
//! Which stories count for a topic: in a file every item is judged for every topic (its
//! `topics` are the relevant ones); a stored label judges one story for one topic, so a
//! topic is scored only on the stories labelled for it.

use std::collections::BTreeSet;
use std::fmt::Write;

use serde::{Deserialize, Serialize};

use crate::store::archive::{self, Access, Archive};
use crate::topics::{TopicExplainer, TopicSet, TopicSpec};
use crate::tuning::TuningError;

/// A story with a person's judgement.
#[derive(Debug, Clone)]
pub struct LabelledItem {
    /// The item's id in the file, or the story id for stored labels.
    pub id: serde_json::Value,
    pub url: Option<String>,
    pub title: String,
    pub body: String,
    /// Topics the item is judged for; `None`: every topic (a labelled file).
    pub judged: Option<BTreeSet<String>>,
    /// Topics it is relevant to.
    pub relevant: BTreeSet<String>,
}

/// The labelled set, and the file items that could not be found in the store.
#[derive(Debug, Clone, Default)]
pub struct LabelledSet {
    pub items: Vec<LabelledItem>,
    pub not_found: Vec<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum LabelsFile {
    Wrapped { items: Vec<FileItem> },
    Bare(Vec<FileItem>),
}

#[derive(Deserialize)]
struct FileItem {
    #[serde(default)]
    id: serde_json::Value,
    url: Option<String>,
    title: Option<String>,
    body: Option<String>,
    #[serde(default)]
    topics: Vec<String>,
}

/// Reads a labels file (`text`, shaped like the development set). Items without a body
/// are looked up by URL in the database `database_url` names, opened read-only only if
/// some item needs it.
pub async fn load_file(text: &str, database_url: &str) -> Result<LabelledSet, TuningError> {
    let file: LabelsFile = serde_json::from_str(text).map_err(|e| {
        TuningError::Usage(format!(
            "labels: not a JSON file of {{\"items\": [{{\"id\", \"url\", \"title\", \"body\", \"topics\"}}]}}: {e}"
        ))
    })?;
    let (LabelsFile::Wrapped { items } | LabelsFile::Bare(items)) = file;
    let mut set = LabelledSet::default();
    let mut archive: Option<Box<dyn Archive>> = None;
    for item in items {
        let relevant: BTreeSet<String> = item.topics.into_iter().collect();
        if let Some(body) = item.body {
            set.items.push(LabelledItem {
                id: item.id,
                url: item.url,
                title: item.title.unwrap_or_default(),
                body,
                judged: None,
                relevant,
            });
            continue;
        }
        let Some(url) = item.url else {
            return Err(TuningError::Usage(format!(
                "labels: item {} has neither a body nor a url",
                item.id
            )));
        };
        let canonical = url::Url::parse(&url)
            .map(|u| crate::dedup::canonicalize_url(&u).to_string())
            .unwrap_or_else(|_| url.clone());
        if archive.is_none() {
            archive = Some(archive::open(database_url, Access::ReadOnly).await?);
        }
        let found = match &archive {
            Some(a) => a.story_by_url(&url, &canonical).await?,
            None => None,
        };
        match found {
            Some(story) => set.items.push(LabelledItem {
                id: item.id,
                url: Some(story.url),
                title: story.title.unwrap_or_default(),
                body: story.body,
                judged: None,
                relevant,
            }),
            None => set.not_found.push(url),
        }
    }
    if let Some(a) = archive {
        a.close().await;
    }
    Ok(set)
}

/// The labels stored with `feedwatch label` (given at or after `since`, if set).
pub async fn load_stored(
    archive: &dyn Archive,
    since: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<LabelledSet, TuningError> {
    let stories = archive.labelled_stories(since).await.map_err(|e| {
        TuningError::Failed(anyhow::Error::new(e).context(
            "reading labels (a database older than the labels table has none: `feedwatch label` adds it)",
        ))
    })?;
    Ok(LabelledSet {
        items: stories
            .into_iter()
            .map(|s| LabelledItem {
                id: s.id.into(),
                url: Some(s.url),
                title: s.title.unwrap_or_default(),
                body: s.body,
                judged: Some(s.labels.iter().map(|(t, _)| t.clone()).collect()),
                relevant: s
                    .labels
                    .into_iter()
                    .filter(|(_, relevant)| *relevant)
                    .map(|(t, _)| t)
                    .collect(),
            })
            .collect(),
        not_found: Vec::new(),
    })
}

/// The figures of an evaluation.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    /// Labelled stories evaluated.
    pub items: usize,
    /// File items whose URL is not in the store (not evaluated).
    pub not_found: Vec<String>,
    pub topics: Vec<TopicScore>,
    /// The unweighted mean over topics.
    #[serde(rename = "macro")]
    pub macro_average: Average,
    /// Labels naming a topic that was not evaluated.
    pub unknown_labels: Vec<String>,
}

/// Precision, recall and F1.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Average {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
}

/// One topic's figures and its mistakes.
#[derive(Debug, Clone, Serialize)]
pub struct TopicScore {
    pub name: String,
    pub query: String,
    /// Stories judged for this topic.
    pub judged: u32,
    pub tp: u32,
    pub fp: u32,
    #[serde(rename = "fn")]
    pub fn_: u32,
    /// `tp / (tp + fp)`, 1 when nothing was predicted.
    pub precision: f64,
    /// `tp / (tp + fn)`, 1 when nothing is relevant.
    pub recall: f64,
    pub f1: f64,
    pub false_positives: Vec<Mistake>,
    pub false_negatives: Vec<Mistake>,
}

/// A misclassified story: for a false positive the match (score, terms, snippet), for a
/// false negative the nearest miss (`failed`: the clauses that did not hold, or the score).
#[derive(Debug, Clone, Serialize)]
pub struct Mistake {
    pub id: serde_json::Value,
    pub url: Option<String>,
    pub title: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub terms: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snippet: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failed: Vec<String>,
}

/// `a / b`, or 1 when `b` is 0 (no prediction is not a wrong prediction).
fn ratio(a: u32, b: u32) -> f64 {
    if b == 0 {
        1.0
    } else {
        f64::from(a) / f64::from(b)
    }
}

/// Scores `specs` (compiled as `set`) on `labelled`.
pub fn evaluate(set: &TopicSet, specs: &[TopicSpec], labelled: &LabelledSet) -> EvalReport {
    let explainer = TopicExplainer::new(specs).ok();
    let mut scores: Vec<TopicScore> = specs
        .iter()
        .map(|s| TopicScore {
            name: s.name.clone(),
            query: s.query.clone(),
            judged: 0,
            tp: 0,
            fp: 0,
            fn_: 0,
            precision: 0.0,
            recall: 0.0,
            f1: 0.0,
            false_positives: Vec::new(),
            false_negatives: Vec::new(),
        })
        .collect();
    for item in &labelled.items {
        let found = set.match_story(&item.title, &item.body);
        for score in &mut scores {
            if item
                .judged
                .as_ref()
                .is_some_and(|j| !j.contains(&score.name))
            {
                continue;
            }
            score.judged += 1;
            let hit = found.iter().find(|m| m.topic == score.name);
            let mistake = |failed: Vec<String>| Mistake {
                id: item.id.clone(),
                url: item.url.clone(),
                title: item.title.clone(),
                score: hit.map(|m| m.score),
                terms: hit.map(|m| m.terms.clone()).unwrap_or_default(),
                snippet: hit.map(|m| m.snippet.clone()),
                failed,
            };
            match (item.relevant.contains(&score.name), hit) {
                (true, Some(_)) => score.tp += 1,
                (false, Some(_)) => {
                    score.fp += 1;
                    score.false_positives.push(mistake(Vec::new()));
                }
                (true, None) => {
                    score.fn_ += 1;
                    let failed = explainer
                        .as_ref()
                        .and_then(|e| e.explain_topic(&score.name, &item.title, &item.body))
                        .map(|e| e.failed)
                        .unwrap_or_default();
                    score.false_negatives.push(mistake(failed));
                }
                (false, None) => {}
            }
        }
    }
    for s in &mut scores {
        s.precision = ratio(s.tp, s.tp + s.fp);
        s.recall = ratio(s.tp, s.tp + s.fn_);
        s.f1 = if s.precision + s.recall > 0.0 {
            2.0 * s.precision * s.recall / (s.precision + s.recall)
        } else {
            0.0
        };
    }
    let n = scores.len().max(1) as f64;
    let macro_average = Average {
        precision: scores.iter().map(|s| s.precision).sum::<f64>() / n,
        recall: scores.iter().map(|s| s.recall).sum::<f64>() / n,
        f1: scores.iter().map(|s| s.f1).sum::<f64>() / n,
    };
    let unknown_labels = labelled
        .items
        .iter()
        .flat_map(|i| i.relevant.iter().chain(i.judged.iter().flatten()))
        .filter(|t| !specs.iter().any(|s| &s.name == *t))
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    EvalReport {
        items: labelled.items.len(),
        not_found: labelled.not_found.clone(),
        topics: scores,
        macro_average,
        unknown_labels,
    }
}

/// The report as text for a person.
pub fn render(report: &EvalReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} labelled stories, {} topic{}",
        report.items,
        report.topics.len(),
        if report.topics.len() == 1 { "" } else { "s" }
    );
    if !report.not_found.is_empty() {
        let _ = writeln!(
            out,
            "{} items not found in the store by URL (not evaluated): {}",
            report.not_found.len(),
            report.not_found.join(", ")
        );
    }
    let _ = writeln!(
        out,
        "\n{:<24} {:>6} {:>4} {:>4} {:>4} {:>9} {:>7} {:>6}",
        "topic", "judged", "TP", "FP", "FN", "precision", "recall", "F1"
    );
    for s in &report.topics {
        let _ = writeln!(
            out,
            "{:<24} {:>6} {:>4} {:>4} {:>4} {:>9.3} {:>7.3} {:>6.3}",
            s.name, s.judged, s.tp, s.fp, s.fn_, s.precision, s.recall, s.f1
        );
    }
    let m = report.macro_average;
    let _ = writeln!(
        out,
        "{:<24} {:>6} {:>4} {:>4} {:>4} {:>9.3} {:>7.3} {:>6.3}",
        "macro average", "", "", "", "", m.precision, m.recall, m.f1
    );
    if !report.unknown_labels.is_empty() {
        let _ = writeln!(
            out,
            "\nlabels naming a topic not evaluated: {}",
            report.unknown_labels.join(", ")
        );
    }
    for s in &report.topics {
        for m in &s.false_positives {
            let _ = writeln!(out, "\nFP {}  {}  {}", s.name, show_id(&m.id), m.title);
            if let Some(url) = &m.url {
                let _ = writeln!(out, "    {url}");
            }
            let _ = writeln!(
                out,
                "    score {}  terms [{}]",
                m.score.unwrap_or_default(),
                m.terms.join(", ")
            );
            let _ = writeln!(out, "    {}", m.snippet.as_deref().unwrap_or(""));
        }
        for m in &s.false_negatives {
            let _ = writeln!(out, "\nFN {}  {}  {}", s.name, show_id(&m.id), m.title);
            if let Some(url) = &m.url {
                let _ = writeln!(out, "    {url}");
            }
            for line in &m.failed {
                let _ = writeln!(out, "    {line}");
            }
        }
    }
    out
}

fn show_id(id: &serde_json::Value) -> String {
    match id {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".to_owned(),
        other => format!("#{other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: &str, title: &str, body: &str, topics: &[&str]) -> LabelledItem {
        LabelledItem {
            id: id.into(),
            url: None,
            title: title.into(),
            body: body.into(),
            judged: None,
            relevant: topics.iter().map(|t| t.to_string()).collect(),
        }
    }

    #[test]
    fn figures_per_topic_and_their_macro_average_are_computed_by_hand() {
        let specs = vec![
            TopicSpec {
                name: "tariffs".into(),
                query: "tariff* AND NOT \"feed-in tariff*\"".into(),
                min_score: 1.0,
            },
            TopicSpec {
                name: "lasers".into(),
                query: "laser* NEAR/5 drone*".into(),
                min_score: 1.0,
            },
        ];
        let set = TopicSet::compile(&specs).unwrap();
        let labelled = LabelledSet {
            items: vec![
                item("a", "New tariffs on steel", "", &["tariffs"]),
                item("b", "Tariff row", "", &[]),
                item("c", "Feed-in tariff raised", "", &["tariffs"]),
                item("d", "A laser shoots down drones", "", &["lasers"]),
                item(
                    "e",
                    "Drones",
                    "a laser far away from the words about them",
                    &["lasers"],
                ),
            ],
            not_found: Vec::new(),
        };
        let r = evaluate(&set, &specs, &labelled);
        let t = &r.topics[0];
        // tariffs: TP a, FP b, FN c → P 1/2, R 1/2, F1 1/2.
        assert_eq!((t.tp, t.fp, t.fn_), (1, 1, 1));
        assert_eq!((t.precision, t.recall, t.f1), (0.5, 0.5, 0.5));
        assert!(t.false_negatives[0].failed[0].starts_with("excluded by NOT"));
        // lasers: TP d, FN e → P 1, R 1/2, F1 2/3.
        let l = &r.topics[1];
        assert_eq!((l.tp, l.fp, l.fn_), (1, 0, 1));
        assert_eq!((l.precision, l.recall), (1.0, 0.5));
        assert!((l.f1 - 2.0 / 3.0).abs() < 1e-12);
        assert!((r.macro_average.precision - 0.75).abs() < 1e-12);
        assert!((r.macro_average.recall - 0.5).abs() < 1e-12);
        assert!((r.macro_average.f1 - (0.5 + 2.0 / 3.0) / 2.0).abs() < 1e-12);
    }

    #[test]
    fn stored_labels_judge_only_their_topic() {
        let specs = vec![
            TopicSpec {
                name: "tariffs".into(),
                query: "tariff*".into(),
                min_score: 1.0,
            },
            TopicSpec {
                name: "lasers".into(),
                query: "laser*".into(),
                min_score: 1.0,
            },
        ];
        let set = TopicSet::compile(&specs).unwrap();
        let mut a = item("1", "tariff and laser", "", &["tariffs"]);
        a.judged = Some(["tariffs".to_owned()].into());
        let r = evaluate(
            &set,
            &specs,
            &LabelledSet {
                items: vec![a],
                not_found: Vec::new(),
            },
        );
        assert_eq!((r.topics[0].judged, r.topics[0].tp), (1, 1));
        assert_eq!((r.topics[1].judged, r.topics[1].fp), (0, 0));
    }
}
