//! Reading a response's head: the one place the fetcher turns header values a
//! server chose into numbers, dates and URLs (DESIGN §2). Whatever the server
//! sends — absurd numbers, dates in the year 9999, bytes that are not text,
//! validators of megabytes — is read without panicking and clamped: a
//! `Retry-After` to `http.backoff_max`, a validator or content type to a
//! length worth storing and sending back. The fetcher reads every response
//! through [`ResponseHead::read`], before it decides to follow, fail or read
//! the body.

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::header::{self, HeaderMap, HeaderName};
use url::Url;

use super::Validators;
use super::policy::parse_retry_after;

/// Longest `ETag`, `Last-Modified` or `Content-Type` kept; longer ones are dropped
/// (a validator that long is not one a server means, and it is sent back on every poll).
pub const MAX_HEADER_KEPT: usize = 1024;

/// Longest `Location` followed.
pub const MAX_LOCATION: usize = 8192;

/// What the fetcher uses of a response's headers.
#[derive(Debug, Clone, Default)]
pub struct ResponseHead {
    /// `Retry-After` (seconds or an HTTP date), capped at the `max_wait` given.
    pub retry_after: Option<Duration>,
    /// `Location` resolved against the request URL, or why it cannot be.
    pub location: Option<Result<Url, String>>,
    /// `Content-Length`, when it is a number.
    pub content_length: Option<u64>,
    /// Whether a `Content-Encoding` is declared (the length is then the compressed one).
    pub encoded: bool,
    pub content_type: Option<String>,
    pub validators: Validators,
}

impl ResponseHead {
    /// Reads `headers` of a response to a request for `url`, at `now`.
    pub fn read(
        headers: &HeaderMap,
        url: &Url,
        now: DateTime<Utc>,
        max_wait: Duration,
    ) -> ResponseHead {
        ResponseHead {
            retry_after: parse_retry_after(headers, now, max_wait),
            location: headers
                .get(header::LOCATION)
                .map(|v| location(v.as_bytes(), url)),
            content_length: headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok()),
            encoded: headers.contains_key(header::CONTENT_ENCODING),
            content_type: kept(headers, header::CONTENT_TYPE),
            validators: Validators {
                etag: kept(headers, header::ETAG),
                last_modified: kept(headers, header::LAST_MODIFIED),
            },
        }
    }
}

fn location(value: &[u8], base: &Url) -> Result<Url, String> {
    if value.len() > MAX_LOCATION {
        return Err(format!(
            "a Location header of {} bytes (at most {MAX_LOCATION})",
            value.len()
        ));
    }
    let text = std::str::from_utf8(value)
        .map_err(|_| "a Location header that is not UTF-8".to_string())?
        .trim();
    if text.is_empty() {
        return Err("an empty Location header".into());
    }
    base.join(text)
        .map_err(|e| format!("a Location header that is not a URL ({e})"))
}

/// A header as trimmed text, when it is visible ASCII, not empty, and not too long.
fn kept(headers: &HeaderMap, name: HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|s| !s.is_empty() && s.len() <= MAX_HEADER_KEPT)
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use reqwest::header::HeaderValue;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-04T08:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn head(pairs: &[(HeaderName, &str)]) -> ResponseHead {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.insert(name.clone(), HeaderValue::from_str(value).unwrap());
        }
        ResponseHead::read(
            &h,
            &Url::parse("https://a.test/feed/").unwrap(),
            now(),
            Duration::from_secs(3600),
        )
    }

    #[test]
    fn absurd_waits_are_capped_at_the_maximum() {
        let cap = Some(Duration::from_secs(3600));
        assert_eq!(
            head(&[(header::RETRY_AFTER, "10000000000000")]).retry_after,
            cap
        );
        assert_eq!(
            head(&[(header::RETRY_AFTER, "18446744073709551615")]).retry_after,
            cap
        );
        assert_eq!(
            head(&[(header::RETRY_AFTER, "Fri, 31 Dec 9999 23:59:59 GMT")]).retry_after,
            cap
        );
        assert_eq!(
            head(&[(header::RETRY_AFTER, "30")]).retry_after,
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            head(&[(header::RETRY_AFTER, "99999999999999999999999")]).retry_after,
            None,
            "not a u64: ignored"
        );
    }

    #[test]
    fn locations_resolve_against_the_request_or_say_why_not() {
        let l = head(&[(header::LOCATION, "../other/")]).location.unwrap();
        assert_eq!(l.unwrap().as_str(), "https://a.test/other/");
        let l = head(&[(header::LOCATION, "http://[::1")]).location.unwrap();
        assert!(l.unwrap_err().contains("not a URL"));
        let l = head(&[(header::LOCATION, " ")]).location.unwrap();
        assert!(l.is_err());
    }

    #[test]
    fn oversized_validators_are_dropped() {
        let long = "x".repeat(MAX_HEADER_KEPT + 1);
        let h = head(&[(header::ETAG, &long), (header::LAST_MODIFIED, "yesterday")]);
        assert_eq!(h.validators.etag, None);
        assert_eq!(h.validators.last_modified.as_deref(), Some("yesterday"));
    }

    fn header_value() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..64),
            "[0-9]{0,30}".prop_map(String::into_bytes),
            "-?[0-9]{1,25}(\\.[0-9]{1,3})?".prop_map(String::into_bytes),
            "(Mon|Fri|Xyz), [0-9]{1,2} (Jan|Dec|Foo) [0-9]{1,6} [0-9]{1,2}:[0-9]{2}:[0-9]{2} (GMT|\\+9999|-0000|[A-Z]{1,3})"
                .prop_map(String::into_bytes),
            "[ -~]{0,80}".prop_map(String::into_bytes),
            "(text/html|application/rss\\+xml); ?charset=[ -~]{0,40}".prop_map(String::into_bytes),
            "(https?|ftp|file|javascript|data)?:?/{0,3}[ -~]{0,60}".prop_map(String::into_bytes),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(4096),
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        /// Any value of any header the fetcher reads, including invalid UTF-8 and
        /// absurd numbers and dates: reading never panics, waits stay within the cap,
        /// kept strings stay short, and a page's charset label never breaks decoding.
        #[test]
        fn reading_arbitrary_headers_never_panics_and_stays_in_bounds(
            values in proptest::collection::vec(header_value(), 7),
            secs_ago in -400_000_000_000i64..400_000_000_000i64,
            cap_secs in 0u64..=u64::MAX / 2,
        ) {
            let names = [
                header::RETRY_AFTER,
                header::LOCATION,
                header::CONTENT_LENGTH,
                header::CONTENT_TYPE,
                header::ETAG,
                header::LAST_MODIFIED,
                header::DATE,
            ];
            let mut headers = HeaderMap::new();
            for (name, value) in names.iter().zip(&values) {
                if let Ok(v) = HeaderValue::from_bytes(value) {
                    headers.insert(name.clone(), v);
                }
            }
            // "Now" anywhere from about 12,000 years back to 12,000 years ahead.
            let now = Utc::now()
                .checked_add_signed(chrono::Duration::seconds(secs_ago))
                .unwrap_or_else(Utc::now);
            let cap = Duration::from_secs(cap_secs);
            let url = Url::parse("https://a.test/dir/feed.xml").unwrap();
            let head = ResponseHead::read(&headers, &url, now, cap);
            if let Some(wait) = head.retry_after {
                prop_assert!(wait <= cap);
            }
            for kept in [&head.content_type, &head.validators.etag, &head.validators.last_modified] {
                prop_assert!(kept.as_ref().is_none_or(|k| k.len() <= MAX_HEADER_KEPT));
            }
            let page = crate::extract::decode_page(b"<p>caf\xc3\xa9</p>", head.content_type.as_deref());
            prop_assert!(!page.is_empty());
        }
    }
}
