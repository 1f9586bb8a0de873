//! Building outbox rows: the pipeline's side of the alert rule. The store decides
//! whether an alert is due (what a story's cluster was alerted of before); this
//! says which configured webhooks take `story.matched` for which topics (their
//! event and topic filters, `max_age` judged when the delivery is created),
//! freezes the bodies in each webhook's format, and names the source health
//! events (`source.failing` after `failing_after` failures in a row,
//! `source.recovered` after one).

use chrono::{DateTime, Utc};

use crate::config::{Config, EventKind, WebhookFormat};
use crate::notify::payload::{self, SourceHealth};
use crate::store::{
    AlertTarget, NewStory, OutboxEntry, OutboxPolicy, SourceEvent, SourceRow, StreakChange,
};
use crate::topics::TopicMatch;

/// The configured webhooks as the outbox policy of one poll of `source`.
pub struct ConfigOutbox<'a> {
    config: &'a Config,
    source: &'a SourceRow,
    now: DateTime<Utc>,
}

impl<'a> ConfigOutbox<'a> {
    pub fn new(config: &'a Config, source: &'a SourceRow, now: DateTime<Utc>) -> ConfigOutbox<'a> {
        ConfigOutbox {
            config,
            source,
            now,
        }
    }

    fn format_of(&self, webhook: &str) -> WebhookFormat {
        self.config
            .webhooks
            .iter()
            .find(|w| w.name() == webhook)
            .map_or(WebhookFormat::Json, |w| w.format)
    }
}

impl OutboxPolicy for ConfigOutbox<'_> {
    fn story_targets(&self, story: &NewStory, matches: &[TopicMatch]) -> Vec<AlertTarget> {
        let age = story.published_at.map(|p| self.now - p).unwrap_or_default();
        self.config
            .webhooks
            .iter()
            .filter(|w| w.wants_event(EventKind::StoryMatched))
            .filter(|w| age.to_std().map(|a| a <= w.max_age).unwrap_or(true))
            .filter_map(|w| {
                let topics: Vec<usize> = matches
                    .iter()
                    .enumerate()
                    .filter(|(_, m)| w.wants_topic(&m.topic))
                    .map(|(i, _)| i)
                    .collect();
                (!topics.is_empty()).then(|| AlertTarget {
                    webhook: w.name().to_string(),
                    topics,
                })
            })
            .collect()
    }

    fn story_payload(
        &self,
        webhook: &str,
        story_id: i64,
        story: &NewStory,
        topics: &[&TopicMatch],
    ) -> String {
        payload::story_matched(self.format_of(webhook), story_id, story, topics, self.now)
    }

    fn source_event(
        &self,
        source_id: i64,
        change: &StreakChange,
        error: Option<&str>,
    ) -> Option<SourceEvent> {
        let threshold = i32::try_from(self.config.defaults.failing_after).unwrap_or(i32::MAX);
        let event = if change.before < threshold && change.after >= threshold {
            EventKind::SourceFailing
        } else if change.before >= threshold && change.after == 0 {
            EventKind::SourceRecovered
        } else {
            return None;
        };
        let since = change.since.unwrap_or(self.now);
        let health = SourceHealth {
            id: source_id,
            name: &self.source.name,
            url: &self.source.url,
            consecutive_failures: change.after.max(change.before),
            since: Some(since),
            last_error: error,
        };
        let entries: Vec<OutboxEntry> = self
            .config
            .webhooks
            .iter()
            .filter(|w| w.wants_event(event))
            .map(|w| OutboxEntry {
                webhook: w.name().to_string(),
                payload: payload::source_event(w.format, event.as_str(), &health, self.now),
            })
            .collect();
        tracing::info!(source = %self.source.name, event = event.as_str(), "source health changed");
        (!entries.is_empty()).then(|| SourceEvent {
            event: event.as_str(),
            event_key: format!(
                "{}:{}:{}",
                event.as_str(),
                source_id,
                since.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
            ),
            entries,
        })
    }
}
