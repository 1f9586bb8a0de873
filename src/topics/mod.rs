//! Topic matching: the query language (DESIGN §4) and the compiled matcher.
//!
//! Place in the pipeline: `config` validates each `[[topics]]` query with [`check_query`];
//! `app` compiles all topics once into a [`TopicSet`] (shared via `Arc`); the matcher stage
//! runs every deduplicated story through [`TopicSet::match_story`] and passes the
//! [`TopicMatch`]es on to the store.
//!
//! - [`query`]: lexer and parser, query string → tree, with column-precise errors.
//! - [`tokenize`]: text → folded words, the same for queries and stories.
//! - [`matcher`]: all topics compiled together; one pass over a story for all of them.
//! - [`explain`]: the same queries evaluated clause by clause, to say why a topic did or did
//!   not match (tuning commands only).

mod explain;
mod matcher;
mod query;
mod tokenize;

pub use explain::{Explanation, TopicExplainer};
pub use matcher::{TopicMatch, TopicSet, TopicSpec};
pub use query::QueryError;

/// Checks that `query` is a valid query for topic `topic` (for configuration validation).
/// The error names the topic and the 1-based character column of the problem.
pub fn check_query(topic: &str, query: &str) -> Result<(), QueryError> {
    query::parse(topic, query).map(|_| ())
}

#[cfg(test)]
mod tests {
    //! The shipped default topics (the `[[topics]]` of `config.toml`) against hand-written stories, and against
    //! the shared dev corpus when it is there.

    use serde::Deserialize;

    use super::*;

    #[derive(Deserialize)]
    struct TopicsFile {
        topics: Vec<TopicEntry>,
    }

    #[derive(Deserialize)]
    struct TopicEntry {
        name: String,
        query: String,
        min_score: f64,
    }

    #[derive(Deserialize)]
    struct Stories {
        items: Vec<Story>,
    }

    #[derive(Deserialize)]
    struct Story {
        id: String,
        title: String,
        body: String,
        topics: Vec<String>,
    }

    fn read(path: &str) -> String {
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn default_specs() -> Vec<TopicSpec> {
        let file: TopicsFile =
            toml::from_str(&read(concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml"))).unwrap();
        file.topics
            .into_iter()
            .map(|t| TopicSpec {
                name: t.name,
                query: t.query,
                min_score: t.min_score,
            })
            .collect()
    }

    /// Per topic: name, true positives, false positives, false negatives.
    type Counts = Vec<(String, u32, u32, u32)>;

    /// Per topic counts, and the misclassified ids.
    fn confusion(set: &TopicSet, specs: &[TopicSpec], stories: &[Story]) -> (Counts, Vec<String>) {
        let mut counts: Vec<(String, u32, u32, u32)> =
            specs.iter().map(|s| (s.name.clone(), 0, 0, 0)).collect();
        let mut wrong = Vec::new();
        for story in stories {
            let found: Vec<String> = set
                .match_story(&story.title, &story.body)
                .into_iter()
                .map(|m| m.topic)
                .collect();
            for (name, tp, fp, fn_) in &mut counts {
                match (story.topics.contains(name), found.contains(name)) {
                    (true, true) => *tp += 1,
                    (false, true) => {
                        *fp += 1;
                        wrong.push(format!("FP {name} {}", story.id));
                    }
                    (true, false) => {
                        *fn_ += 1;
                        wrong.push(format!("FN {name} {}", story.id));
                    }
                    (false, false) => {}
                }
            }
        }
        (counts, wrong)
    }

    #[test]
    fn the_design_example_query_is_valid() {
        let q = r#"(tariff* OR "import duties" OR levies) AND NOT ("feed-in tariff*" OR "electricity tariff*")"#;
        assert_eq!(check_query("tariffs", q), Ok(()));
    }

    #[test]
    fn check_query_reports_topic_and_column() {
        let e = check_query("tariffs", "(tariff OR levy))").unwrap_err();
        assert_eq!(
            e.to_string(),
            "topic \"tariffs\": unexpected ')' at column 17"
        );
    }

    #[test]
    fn the_default_topics_compile() {
        let specs = default_specs();
        let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            ["tariffs", "eda-export-controls", "counter-drone-lasers"]
        );
        assert_eq!(TopicSet::compile(&specs).map(|s| s.len()), Ok(3));
    }

    #[test]
    fn the_default_topics_classify_the_hand_written_stories() {
        let specs = default_specs();
        let set = TopicSet::compile(&specs).unwrap();
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/topics/stories.json"
        );
        let stories: Stories = serde_json::from_str(&read(path)).unwrap();
        let (_, wrong) = confusion(&set, &specs, &stories.items);
        assert!(wrong.is_empty(), "misclassified: {wrong:?}");
    }

    /// The explainer and the matcher agree on every default topic and story: matched or
    /// not, and the score.
    fn assert_explainer_agrees(stories: &[Story]) {
        let specs = default_specs();
        let set = TopicSet::compile(&specs).unwrap();
        let explainer = TopicExplainer::new(&specs).unwrap();
        for story in stories {
            let fast = set.match_story(&story.title, &story.body);
            for e in explainer.explain(&story.title, &story.body) {
                let hit = fast.iter().find(|m| m.topic == e.topic);
                assert_eq!(e.matched, hit.is_some(), "{} {}: {e:?}", story.id, e.topic);
                if let Some(m) = hit {
                    assert_eq!((e.score, &e.terms), (m.score, &m.terms), "{}", story.id);
                }
            }
        }
    }

    #[test]
    fn the_explainer_agrees_with_the_matcher_on_the_hand_written_stories() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/topics/stories.json"
        );
        let stories: Stories = serde_json::from_str(&read(path)).unwrap();
        assert_explainer_agrees(&stories.items);
    }

    #[test]
    #[ignore = "needs ../shared/data"]
    fn the_explainer_agrees_with_the_matcher_on_the_dev_set() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/data/topics-dev.json"
        );
        let stories: Stories = serde_json::from_str(&read(path)).unwrap();
        assert_explainer_agrees(&stories.items);
    }

    #[test]
    #[ignore = "needs ../shared/data"]
    fn the_default_topics_meet_the_dev_set_targets() {
        let specs = default_specs();
        let set = TopicSet::compile(&specs).unwrap();
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/data/topics-dev.json"
        );
        let stories: Stories = serde_json::from_str(&read(path)).unwrap();
        let (counts, wrong) = confusion(&set, &specs, &stories.items);
        for (name, tp, fp, fn_) in counts {
            let precision = f64::from(tp) / f64::from((tp + fp).max(1));
            let recall = f64::from(tp) / f64::from((tp + fn_).max(1));
            assert!(
                precision >= 0.95 && recall >= 0.90,
                "{name}: P {precision:.3} R {recall:.3}; {wrong:?}"
            );
        }
    }

    #[test]
    #[ignore = "needs ../shared/data"]
    fn the_seed_page_related_stories_match_one_topic_each_and_the_lead_none() {
        let set = TopicSet::compile(&default_specs()).unwrap();
        let page = read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/data/seed-page.txt"
        ));
        let (lead, related) = page.split_once("Related Articles").unwrap();
        let mut lead_lines = lead.lines().filter(|l| !l.trim().is_empty());
        let lead_title = lead_lines.next().unwrap();
        let lead_body: Vec<&str> = lead_lines.collect();
        assert!(
            set.match_story(lead_title, &lead_body.join("\n"))
                .is_empty()
        );
        // Each related story: source, age, "- source", title, body.
        let found: Vec<Vec<String>> = related
            .split("\n\n")
            .map(|block| {
                block
                    .lines()
                    .filter(|l| !l.trim().is_empty())
                    .collect::<Vec<_>>()
            })
            .filter(|lines| lines.len() >= 5)
            .map(|lines| {
                set.match_story(lines[3], &lines[4..].join("\n"))
                    .into_iter()
                    .map(|m| m.topic)
                    .collect()
            })
            .collect();
        assert_eq!(
            found,
            [
                ["tariffs"],
                ["eda-export-controls"],
                ["counter-drone-lasers"]
            ]
        );
    }
}
