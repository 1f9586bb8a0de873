//! Retry and backoff policy, as named functions rather than numbers scattered
//! through the pipeline: how long a failing source waits before its next poll,
//! how a webhook delivery backs off, and how `Retry-After` is read. Used by the
//! scheduler (sources) and the notifier (deliveries).

use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;
use reqwest::header::{HeaderMap, RETRY_AFTER};

/// `Retry-After` as seconds or an HTTP date, relative to `now`, and never more
/// than `max` (a server cannot park a source or a webhook for centuries, nor
/// overflow a clock with `Retry-After: 10000000000000`). A date in the past
/// means "now" (zero); a value that is neither is ignored.
pub fn parse_retry_after(
    headers: &HeaderMap,
    now: DateTime<Utc>,
    max: Duration,
) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs).min(max));
    }
    let when = DateTime::parse_from_rfc2822(value)
        .ok()?
        .with_timezone(&Utc);
    let wait = when
        .signed_duration_since(now)
        .to_std()
        .unwrap_or(Duration::ZERO);
    Some(wait.min(max))
}

/// `now + wait`, or the latest time chrono can hold when that would overflow.
pub fn after(now: DateTime<Utc>, wait: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(wait)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Exponential backoff with full jitter: a random wait in `[base·2^(n-1) / 2, base·2^(n-1)]`,
/// capped at `max`. `attempt` counts from 1. (Half of the range is kept so that a
/// retry is never immediate.)
pub fn backoff(attempt: u32, base: Duration, max: Duration) -> Duration {
    let exp = attempt.saturating_sub(1).min(30);
    let ceiling = base.saturating_mul(1u32 << exp).min(max);
    let floor = ceiling / 2;
    if ceiling <= floor {
        return ceiling;
    }
    let span = (ceiling - floor).as_millis() as u64;
    floor + Duration::from_millis(rand::rng().random_range(0..=span))
}

/// A polling interval jittered by up to ±10 %, so that many sources with the
/// same interval do not fire in the same second.
pub fn jittered(interval: Duration) -> Duration {
    let ms = interval.as_millis() as u64;
    let spread = ms / 10;
    if spread == 0 {
        return interval;
    }
    Duration::from_millis(ms - spread + rand::rng().random_range(0..=2 * spread))
}

/// When a source polls next after `failures` consecutive failures: exponential
/// backoff from the shorter of its interval and one minute, capped at
/// `backoff_max`, and never before a `Retry-After` the server gave (itself
/// capped at `backoff_max`).
pub fn source_retry_delay(
    failures: u32,
    interval: Duration,
    backoff_max: Duration,
    retry_after: Option<Duration>,
) -> Duration {
    let base = interval.min(Duration::from_secs(60));
    let wait = backoff(failures, base, backoff_max);
    match retry_after {
        Some(ra) => wait.max(ra.min(backoff_max)),
        None => wait,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = DateTime::parse_from_rfc3339("2025-06-04T08:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("120"));
        let max = Duration::from_secs(3600);
        assert_eq!(
            parse_retry_after(&h, now, max),
            Some(Duration::from_secs(120))
        );
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 04 Jun 2025 08:05:00 GMT"),
        );
        assert_eq!(
            parse_retry_after(&h, now, max),
            Some(Duration::from_secs(300))
        );
        h.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(parse_retry_after(&h, now, max), None);
        h.insert(RETRY_AFTER, HeaderValue::from_static("10000000000000"));
        assert_eq!(parse_retry_after(&h, now, max), Some(max));
    }

    #[test]
    fn backoff_doubles_within_jitter_and_respects_the_cap() {
        let base = Duration::from_secs(30);
        let max = Duration::from_secs(3600);
        for attempt in 1..=20 {
            let d = backoff(attempt, base, max);
            let ceiling = base.saturating_mul(1 << (attempt - 1).min(30)).min(max);
            assert!(d <= ceiling && d >= ceiling / 2, "attempt {attempt}: {d:?}");
        }
        assert!(backoff(40, base, max) <= max);
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        for _ in 0..100 {
            let d = jittered(Duration::from_secs(600));
            assert!(d >= Duration::from_secs(540) && d <= Duration::from_secs(660));
        }
    }

    #[test]
    fn a_source_waits_at_least_as_long_as_retry_after_says() {
        let d = source_retry_delay(
            1,
            Duration::from_secs(600),
            Duration::from_secs(6 * 3600),
            Some(Duration::from_secs(7200)),
        );
        assert!(d >= Duration::from_secs(7200));
    }
}
