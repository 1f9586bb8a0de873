//! Why a topic did or did not match a story: the query tree evaluated directly over the
//! story's words, clause by clause, keeping what each clause found.
//!
//! Place in the pipeline: none — this is the tuning side. `feedwatch match --explain` and
//! `feedwatch eval` (the "nearest miss" of a false negative) call [`TopicExplainer::explain`]
//! beside the fast [`crate::topics::TopicSet`]; the daemon never does. It is written for
//! clarity, not speed: every term is looked for by a scan of the story's words, and it must
//! agree with the compiled matcher on match/no-match and score (the tests below check
//! that on hand-made and generated queries).
//!
//! The semantics it spells out (DESIGN §4), the same as the matcher's: a term holds where its
//! words occur in a row within one field (a prefix term on its last word), restricted by a
//! `title:`/`body:` scope; AND holds when every operand does, OR when one does, NOT when its
//! operand does not; `a NEAR/N b` holds on the hits of `a` and `b` at most `N` words apart in
//! the same field. The score counts the distinct hits of the clauses that hold (NOT
//! contributes none), title hits double.

use std::fmt;

use serde::Serialize;

use crate::topics::matcher::TopicSpec;
use crate::topics::query::{self, Field, Query, QueryError, Term};
use crate::topics::tokenize::for_each_word;

/// Every topic's query tree, parsed once, to explain stories with.
#[derive(Debug, Clone)]
pub struct TopicExplainer {
    topics: Vec<(String, f64, Query)>,
}

/// What one topic made of one story.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Explanation {
    /// Topic name.
    pub topic: String,
    /// The query held and the score reached `min_score`.
    pub matched: bool,
    /// The query held (whatever the score).
    pub query_held: bool,
    /// Distinct term hits in the clauses that hold, title hits counting 2.
    pub score: f64,
    /// The topic's `min_score`.
    pub min_score: f64,
    /// The words and phrases that counted, as they appear in the story (lowercased).
    pub terms: Vec<String>,
    /// Why it did not match: the clauses that failed, each said in one line. Empty when
    /// it matched.
    pub failed: Vec<String>,
}

impl TopicExplainer {
    /// Parses every topic's query; the first bad one is the error.
    pub fn new(specs: &[TopicSpec]) -> Result<TopicExplainer, QueryError> {
        let topics = specs
            .iter()
            .map(|s| {
                Ok((
                    s.name.clone(),
                    s.min_score,
                    query::parse(&s.name, &s.query)?,
                ))
            })
            .collect::<Result<_, QueryError>>()?;
        Ok(TopicExplainer { topics })
    }

    /// One explanation per topic, in configuration order.
    pub fn explain(&self, title: &str, body: &str) -> Vec<Explanation> {
        let story = Words::new(title, body);
        self.topics
            .iter()
            .map(|(name, min_score, tree)| explain_one(name, *min_score, tree, &story))
            .collect()
    }

    /// The explanation of one topic (`None` when no topic has that name).
    pub fn explain_topic(&self, topic: &str, title: &str, body: &str) -> Option<Explanation> {
        let (name, min_score, tree) = self.topics.iter().find(|(n, _, _)| n == topic)?;
        Some(explain_one(
            name,
            *min_score,
            tree,
            &Words::new(title, body),
        ))
    }
}

fn explain_one(name: &str, min_score: f64, tree: &Query, story: &Words<'_>) -> Explanation {
    let outcome = eval(tree, story);
    let mut hits = outcome.hits;
    hits.sort_unstable();
    hits.dedup();
    let score: f64 = hits
        .iter()
        .map(|h| if h.0 < story.title_len { 2.0 } else { 1.0 })
        .sum();
    let matched = outcome.holds && score >= min_score;
    let mut failed = Vec::new();
    if !outcome.holds {
        why_not(tree, story, &mut failed);
    } else if !matched {
        failed.push(format!("score {score} is under min_score {min_score}"));
    }
    Explanation {
        topic: name.to_owned(),
        matched,
        query_held: outcome.holds,
        score: if outcome.holds { score } else { 0.0 },
        min_score,
        terms: if outcome.holds {
            story.texts(&hits)
        } else {
            Vec::new()
        },
        failed,
    }
}

/// The story's words, title first, with where each came from.
struct Words<'a> {
    title: &'a str,
    body: &'a str,
    /// Folded word and its byte range in its field.
    words: Vec<(String, usize, usize)>,
    title_len: usize,
}

impl<'a> Words<'a> {
    fn new(title: &'a str, body: &'a str) -> Words<'a> {
        let mut words = Vec::new();
        let mut buf = String::new();
        for_each_word(title, &mut buf, |r, w| {
            words.push((w.to_owned(), r.start, r.end))
        });
        let title_len = words.len();
        for_each_word(body, &mut buf, |r, w| {
            words.push((w.to_owned(), r.start, r.end))
        });
        Words {
            title,
            body,
            words,
            title_len,
        }
    }

    fn in_title(&self, pos: usize) -> bool {
        pos < self.title_len
    }

    /// Every position where `term` starts, in its scope.
    fn find(&self, term: &Term) -> Vec<Hit> {
        let n = term.words.len();
        let last = n - 1;
        (0..self.words.len().saturating_sub(n - 1))
            .filter(|&p| match term.field {
                Some(Field::Title) => self.in_title(p),
                Some(Field::Body) => !self.in_title(p),
                None => true,
            })
            .filter(|&p| self.in_title(p) == self.in_title(p + last))
            .filter(|&p| {
                term.words.iter().enumerate().all(|(i, w)| {
                    let word = &self.words[p + i].0;
                    if i == last && term.prefix {
                        word.starts_with(w.as_str())
                    } else {
                        word == w
                    }
                })
            })
            .map(|p| Hit(p, p + last))
            .collect()
    }

    /// The text of each hit, lowercased with whitespace collapsed, first appearance first.
    fn texts(&self, hits: &[Hit]) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for h in hits {
            let text = if self.in_title(h.0) {
                self.title
            } else {
                self.body
            };
            let raw = &text[self.words[h.0].1..self.words[h.1].2];
            let term = raw.split_whitespace().collect::<Vec<_>>().join(" ");
            let term = term.to_lowercase();
            if !out.contains(&term) {
                out.push(term);
            }
        }
        out
    }
}

/// A hit: first and last word position (inclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Hit(usize, usize);

impl Hit {
    /// Words between two hits: 1 when adjacent, 0 when they overlap.
    fn gap(self, other: Hit) -> usize {
        if other.0 > self.1 {
            other.0 - self.1
        } else {
            self.0.saturating_sub(other.1)
        }
    }
}

struct Outcome {
    holds: bool,
    /// The hits of the clauses that hold (empty when `holds` is false).
    hits: Vec<Hit>,
}

fn eval(q: &Query, story: &Words<'_>) -> Outcome {
    match q {
        Query::Term(term) => {
            let hits = story.find(term);
            Outcome {
                holds: !hits.is_empty(),
                hits,
            }
        }
        Query::And(children) => {
            let mut hits = Vec::new();
            for child in children {
                let o = eval(child, story);
                if !o.holds {
                    return Outcome {
                        holds: false,
                        hits: Vec::new(),
                    };
                }
                hits.extend(o.hits);
            }
            Outcome { holds: true, hits }
        }
        Query::Or(children) => {
            let mut holds = false;
            let mut hits = Vec::new();
            for child in children {
                let o = eval(child, story);
                if o.holds {
                    holds = true;
                    hits.extend(o.hits);
                }
            }
            Outcome { holds, hits }
        }
        Query::Not { inner, .. } => Outcome {
            holds: !eval(inner, story).holds,
            hits: Vec::new(),
        },
        Query::Near {
            left,
            right,
            distance,
        } => {
            let (l, r) = (eval(left, story), eval(right, story));
            if !l.holds || !r.holds {
                return Outcome {
                    holds: false,
                    hits: Vec::new(),
                };
            }
            let close = |a: Hit, b: Hit| {
                story.in_title(a.0) == story.in_title(b.0) && a.gap(b) <= *distance as usize
            };
            let mut hits: Vec<Hit> = l
                .hits
                .iter()
                .filter(|&&a| r.hits.iter().any(|&b| close(a, b)))
                .copied()
                .collect();
            hits.extend(
                r.hits
                    .iter()
                    .filter(|&&b| l.hits.iter().any(|&a| close(a, b))),
            );
            Outcome {
                holds: !hits.is_empty(),
                hits,
            }
        }
    }
}

/// Appends a line for each clause of `q` (which does not hold) that makes it fail.
fn why_not(q: &Query, story: &Words<'_>, out: &mut Vec<String>) {
    match q {
        Query::Term(_) => out.push(format!("absent: {}", Shown(q))),
        Query::And(children) => {
            for child in children {
                if !eval(child, story).holds {
                    why_not(child, story, out);
                }
            }
        }
        Query::Or(_) => out.push(format!("none present: {}", Shown(q))),
        Query::Not { inner, .. } => {
            let found = eval(inner, story);
            let mut hits = found.hits;
            hits.sort_unstable();
            hits.dedup();
            let clause = match **inner {
                Query::And(_) | Query::Or(_) => format!("({})", Shown(inner)),
                _ => Shown(inner).to_string(),
            };
            out.push(format!(
                "excluded by NOT {clause}: found {}",
                quote_all(&story.texts(&hits))
            ));
        }
        Query::Near {
            left,
            right,
            distance,
        } => {
            let (l, r) = (eval(left, story), eval(right, story));
            if !l.holds || !r.holds {
                for (side, o) in [(left, &l), (right, &r)] {
                    if !o.holds {
                        why_not(side, story, out);
                    }
                }
                return;
            }
            let closest = l
                .hits
                .iter()
                .flat_map(|&a| r.hits.iter().map(move |&b| (a, b)))
                .filter(|(a, b)| story.in_title(a.0) == story.in_title(b.0))
                .map(|(a, b)| a.gap(b))
                .min();
            out.push(match closest {
                Some(gap) => format!(
                    "too far apart: {} — the closest hits are {gap} words apart, NEAR/{distance} allows {distance}",
                    Shown(q)
                ),
                None => format!(
                    "too far apart: {} — the two sides occur only in different fields (title, body)",
                    Shown(q)
                ),
            });
        }
    }
}

fn quote_all(terms: &[String]) -> String {
    terms
        .iter()
        .map(|t| format!("«{t}»"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A query written back in the query language (folded words, explicit operators).
pub(crate) struct Shown<'a>(pub(crate) &'a Query);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_query(f, self.0, false)
    }
}

fn write_query(f: &mut fmt::Formatter<'_>, q: &Query, nested: bool) -> fmt::Result {
    match q {
        Query::Term(t) => {
            match t.field {
                Some(Field::Title) => f.write_str("title:")?,
                Some(Field::Body) => f.write_str("body:")?,
                None => {}
            }
            let star = if t.prefix { "*" } else { "" };
            if t.words.len() == 1 {
                write!(f, "{}{star}", t.words[0])
            } else {
                write!(f, "\"{}{star}\"", t.words.join(" "))
            }
        }
        Query::And(children) | Query::Or(children) => {
            let op = if matches!(q, Query::And(_)) {
                " AND "
            } else {
                " OR "
            };
            if nested {
                f.write_str("(")?;
            }
            for (i, child) in children.iter().enumerate() {
                if i > 0 {
                    f.write_str(op)?;
                }
                write_query(f, child, true)?;
            }
            if nested {
                f.write_str(")")?;
            }
            Ok(())
        }
        Query::Not { inner, .. } => {
            f.write_str("NOT ")?;
            write_query(f, inner, true)
        }
        Query::Near {
            left,
            right,
            distance,
        } => {
            write_query(f, left, true)?;
            write!(f, " NEAR/{distance} ")?;
            write_query(f, right, true)
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::topics::TopicSet;

    fn spec(name: &str, query: &str, min_score: f64) -> TopicSpec {
        TopicSpec {
            name: name.into(),
            query: query.into(),
            min_score,
        }
    }

    fn explain(query: &str, title: &str, body: &str) -> Explanation {
        TopicExplainer::new(&[spec("t", query, 1.0)])
            .unwrap()
            .explain(title, body)[0]
            .clone()
    }

    #[test]
    fn a_matching_topic_lists_the_terms_that_counted_and_their_score() {
        let e = explain(
            "(tariff* OR levies) AND NOT \"feed-in tariff*\"",
            "New tariffs on steel",
            "The levies apply from May; the tariff is 25%.",
        );
        assert!(e.matched && e.failed.is_empty(), "{e:?}");
        assert_eq!(e.score, 4.0);
        assert_eq!(e.terms, ["tariffs", "levies", "tariff"]);
    }

    #[test]
    fn a_not_excluded_story_names_the_exclusion_and_what_was_found() {
        let e = explain(
            "tariff* AND NOT \"feed-in tariff*\"",
            "Vietnam raises feed-in tariff",
            "Solar owners get more.",
        );
        assert!(!e.matched);
        assert_eq!(
            e.failed,
            ["excluded by NOT \"feed in tariff*\": found «feed-in tariff»"]
        );
    }

    #[test]
    fn a_near_too_far_apart_reports_the_closest_distance() {
        let e = explain(
            "laser* NEAR/3 drone*",
            "",
            "A laser was shown at the fair; many visitors later flew small drones.",
        );
        assert!(!e.matched);
        assert_eq!(e.failed.len(), 1);
        assert!(
            e.failed[0].starts_with("too far apart: laser* NEAR/3 drone*")
                && e.failed[0].contains("11 words apart"),
            "{:?}",
            e.failed
        );
    }

    #[test]
    fn absent_required_clauses_are_each_named() {
        let e = explain(
            "(\"chip design\" OR eda) AND \"export control*\" AND china",
            "",
            "China said new export controls were unfair.",
        );
        assert_eq!(e.failed, ["none present: \"chip design\" OR eda"]);
        let e = explain("title:tariff levies", "", "tariff levies");
        assert_eq!(e.failed, ["absent: title:tariff"]);
    }

    #[test]
    fn a_score_under_min_score_is_the_reason() {
        let e = TopicExplainer::new(&[spec("t", "tariff*", 3.0)])
            .unwrap()
            .explain("", "one tariff here");
        assert!(e[0].query_held && !e[0].matched);
        assert_eq!(e[0].failed, ["score 1 is under min_score 3"]);
    }

    /// Query text from a small vocabulary, nested by the generator.
    fn query_text() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            Just("alpha".to_owned()),
            Just("beta*".to_owned()),
            Just("gam".to_owned()),
            Just("gam*".to_owned()),
            Just("\"alpha beta\"".to_owned()),
            Just("\"beta gam*\"".to_owned()),
            Just("title:alpha".to_owned()),
            Just("body:delta".to_owned()),
            Just("delta".to_owned()),
        ];
        leaf.prop_recursive(4, 16, 3, |inner| {
            prop_oneof![
                (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} AND {b})")),
                (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} OR {b})")),
                (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} AND NOT {b})")),
                (inner.clone(), inner.clone(), 1u32..6)
                    .prop_map(|(a, b, n)| format!("({a} NEAR/{n} {b})")),
            ]
        })
    }

    fn text() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![
                Just("alpha"),
                Just("beta"),
                Just("betamax"),
                Just("gam"),
                Just("gamma"),
                Just("delta"),
                Just("x"),
                Just("y"),
                Just("z"),
            ],
            0..24,
        )
        .prop_map(|w| w.join(" "))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn the_explanation_agrees_with_the_matcher(
            query in query_text(),
            title in text(),
            body in text(),
            min_score in 0.0f64..4.0,
        ) {
            let specs = [spec("t", &query, min_score.floor())];
            // Some generated queries are rejected (a NEAR operand that needs no term); skip them.
            let Ok(set) = TopicSet::compile(&specs) else { return Ok(()) };
            let explained = &TopicExplainer::new(&specs).unwrap().explain(&title, &body)[0];
            let fast = set.match_story(&title, &body);
            prop_assert_eq!(explained.matched, !fast.is_empty(), "{:?}", explained);
            if let Some(m) = fast.first() {
                prop_assert_eq!(explained.score, m.score);
                prop_assert_eq!(&explained.terms, &m.terms);
            }
            prop_assert_eq!(explained.failed.is_empty(), explained.matched);
        }
    }
}
