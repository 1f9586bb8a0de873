//! `feedwatch label STORY_ID +TOPIC -TOPIC …`: a person's judgement of a stored story,
//! written to the `labels` table for `feedwatch eval --stored`.
//!
//! Place in the pipeline: after the notifier — an alert arrives, its reader marks it here.
//! The only tuning command that writes, and it writes nothing but labels.

use crate::store::archive::Label;
use crate::tuning::{TuningError, is_topic_name};

/// Reads `+tariffs` (relevant) and `-tariffs` (not relevant) arguments. A topic named
/// twice keeps its last judgement.
pub fn parse_judgements(args: &[String]) -> Result<Vec<Label>, TuningError> {
    if args.is_empty() {
        return Err(TuningError::Usage(
            "give at least one judgement: +TOPIC (relevant) or -TOPIC (not relevant)".to_owned(),
        ));
    }
    let mut labels: Vec<Label> = Vec::new();
    for arg in args {
        let (relevant, topic) = match arg.split_at_checked(1) {
            Some(("+", topic)) => (true, topic),
            Some(("-", topic)) => (false, topic),
            _ => {
                return Err(TuningError::Usage(format!(
                    "{arg:?}: a judgement is +TOPIC or -TOPIC"
                )));
            }
        };
        if !is_topic_name(topic) {
            return Err(TuningError::Usage(format!(
                "{arg:?}: topic names match [a-z0-9-]+"
            )));
        }
        labels.retain(|l| l.topic != topic);
        labels.push(Label {
            topic: topic.to_owned(),
            relevant,
        });
    }
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plus_and_minus_mark_relevant_and_not_the_last_one_winning() {
        let args: Vec<String> = ["+tariffs", "-counter-drone-lasers", "-tariffs"]
            .map(String::from)
            .to_vec();
        let labels = parse_judgements(&args).unwrap();
        assert_eq!(
            labels,
            [
                Label {
                    topic: "counter-drone-lasers".into(),
                    relevant: false
                },
                Label {
                    topic: "tariffs".into(),
                    relevant: false
                }
            ]
        );
    }

    #[test]
    fn anything_else_is_a_usage_error() {
        for bad in ["tariffs", "+", "+Tariffs", "*x"] {
            assert!(parse_judgements(&[bad.to_owned()]).is_err(), "{bad}");
        }
        assert!(parse_judgements(&[]).is_err());
    }
}
