//! Webhook bodies, frozen into the outbox when a delivery is created (DESIGN §6):
//! the Standard Webhooks JSON envelope (`type`, `timestamp`, `data`) and the
//! Slack and Discord incoming-webhook shapes of the same alert.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use crate::config::WebhookFormat;
use crate::store::NewStory;
use crate::topics::TopicMatch;

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The body of a `story.matched` delivery listing the webhook's matched topics.
pub fn story_matched(
    format: WebhookFormat,
    story_id: i64,
    story: &NewStory,
    topics: &[&TopicMatch],
    now: DateTime<Utc>,
) -> String {
    let title = story.title.clone().unwrap_or_else(|| story.url.clone());
    let value = match format {
        WebhookFormat::Json => json!({
            "type": "story.matched",
            "timestamp": rfc3339(now),
            "data": {
                "story": {
                    "id": story_id,
                    "url": story.url,
                    "canonical_url": story.canonical_url,
                    "title": story.title,
                    "source": story.source_name,
                    "published_at": story.published_at.map(rfc3339),
                    "summary": story.summary,
                },
                "topics": topics.iter().map(|m| json!({
                    "name": m.topic,
                    "score": m.score,
                    "terms": m.terms,
                    "snippet": m.snippet,
                })).collect::<Vec<Value>>(),
            }
        }),
        WebhookFormat::Slack => {
            let names: Vec<&str> = topics.iter().map(|m| m.topic.as_str()).collect();
            let snippet = topics.first().map(|m| m.snippet.as_str()).unwrap_or("");
            json!({
                "text": format!("[{}] {} — {}", names.join(", "), title, story.url),
                "blocks": [{
                    "type": "section",
                    "text": {
                        "type": "mrkdwn",
                        "text": format!(
                            "*<{}|{}>*\n_{}_ · {}\n>{}",
                            story.url,
                            slack_escape(&title),
                            story.source_name,
                            names.join(", "),
                            slack_escape(snippet)
                        ),
                    }
                }]
            })
        }
        WebhookFormat::Discord => {
            let names: Vec<&str> = topics.iter().map(|m| m.topic.as_str()).collect();
            let snippet = topics.first().map(|m| m.snippet.as_str()).unwrap_or("");
            json!({
                "content": format!("[{}] {}", names.join(", "), truncate(&title, 200)),
                "embeds": [{
                    "title": truncate(&title, 256),
                    "url": story.url,
                    "description": truncate(snippet, 4000),
                    "timestamp": story.published_at.map(rfc3339),
                    "footer": {"text": story.source_name},
                }]
            })
        }
    };
    value.to_string()
}

/// Facts about a source whose health changed.
#[derive(Debug, Clone)]
pub struct SourceHealth<'a> {
    pub id: i64,
    pub name: &'a str,
    pub url: &'a str,
    pub consecutive_failures: i32,
    pub since: Option<DateTime<Utc>>,
    pub last_error: Option<&'a str>,
}

/// The body of a `source.failing` or `source.recovered` delivery.
pub fn source_event(
    format: WebhookFormat,
    event: &str,
    source: &SourceHealth<'_>,
    now: DateTime<Utc>,
) -> String {
    let text = match event {
        "source.failing" => format!(
            "feedwatch: source {} is failing ({} failures in a row): {}",
            source.name,
            source.consecutive_failures,
            source.last_error.unwrap_or("unknown error")
        ),
        _ => format!("feedwatch: source {} has recovered", source.name),
    };
    let value = match format {
        WebhookFormat::Json => json!({
            "type": event,
            "timestamp": rfc3339(now),
            "data": {
                "source": {"id": source.id, "name": source.name, "url": source.url},
                "consecutive_failures": source.consecutive_failures,
                "failing_since": source.since.map(rfc3339),
                "last_error": source.last_error,
            }
        }),
        WebhookFormat::Slack => json!({ "text": text }),
        WebhookFormat::Discord => json!({ "content": truncate(&text, 2000) }),
    };
    value.to_string()
}

fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => s[..i].to_string(),
        None => s.to_string(),
    }
}
