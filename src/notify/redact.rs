//! Webhook URLs are credentials: for Slack, Discord and many private receivers
//! the path or query *is* the secret (DESIGN §6). This is how the notifier,
//! the command line and the config errors show one — scheme, host and a short
//! fingerprint to tell two webhooks apart, the rest `[redacted]` — and how a
//! text that may quote a webhook URL (an error of the HTTP client, a
//! `last_error` stored by an older version) is scrubbed before it is logged,
//! stored or printed.

/// `url` as it may be shown: `https://hooks.slack.com/…/[redacted:1a2b]`.
/// A URL whose path is `/` and that has no query or user info has nothing to
/// hide and is shown whole; text that is not a URL is shown as `[redacted URL]`.
pub fn redact_webhook_url(url: &str) -> String {
    let Ok(parsed) = url::Url::parse(url) else {
        return "[redacted URL]".to_string();
    };
    let Some(host) = parsed.host_str() else {
        return "[redacted URL]".to_string();
    };
    let origin = match parsed.port() {
        Some(port) => format!("{}://{host}:{port}", parsed.scheme()),
        None => format!("{}://{host}", parsed.scheme()),
    };
    let bare = matches!(parsed.path(), "" | "/")
        && parsed.query().is_none()
        && parsed.fragment().is_none()
        && parsed.username().is_empty()
        && parsed.password().is_none();
    if bare {
        return format!("{origin}/");
    }
    let hint = &blake3::hash(url.as_bytes()).to_hex()[..4];
    format!("{origin}/…/[redacted:{hint}]")
}

/// `text` with every occurrence of each of `urls` (and of its path and query,
/// which some errors quote without the host) replaced by its redacted form.
pub fn scrub<'a>(text: &str, urls: impl IntoIterator<Item = &'a str>) -> String {
    let mut out = text.to_string();
    for url in urls {
        if url.is_empty() {
            continue;
        }
        let shown = redact_webhook_url(url);
        out = out.replace(url, &shown);
        if let Ok(parsed) = url::Url::parse(url) {
            let mut secret_part = parsed.path().to_string();
            if let Some(q) = parsed.query() {
                secret_part = format!("{secret_part}?{q}");
            }
            if secret_part.len() > 1 {
                out = out.replace(&secret_part, "/…/[redacted]");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SLACK: &str = "https://hooks.slack.com/services/T0001/B0002/XXXXsecretXXXX";

    #[test]
    fn a_webhook_url_keeps_scheme_and_host_only() {
        let shown = redact_webhook_url(SLACK);
        assert!(
            shown.starts_with("https://hooks.slack.com/…/[redacted:"),
            "{shown}"
        );
        assert!(!shown.contains("T0001") && !shown.contains("XXXXsecretXXXX"));
        assert_ne!(
            shown,
            redact_webhook_url("https://hooks.slack.com/services/T0001/B0002/other"),
            "the hint tells two webhooks apart"
        );
        assert_eq!(
            redact_webhook_url("http://127.0.0.1:9000/"),
            "http://127.0.0.1:9000/"
        );
        let with_query = redact_webhook_url("https://h.example/?token=abc");
        assert!(!with_query.contains("abc"), "{with_query}");
        let with_user = redact_webhook_url("https://user:pw@h.example/");
        assert!(!with_user.contains("pw"), "{with_user}");
        assert_eq!(redact_webhook_url("not a url XXXX"), "[redacted URL]");
    }

    #[test]
    fn errors_quoting_the_url_are_scrubbed() {
        let error = format!(
            "error sending request for url ({SLACK}): connection refused; path /services/T0001/B0002/XXXXsecretXXXX"
        );
        let clean = scrub(&error, [SLACK]);
        assert!(!clean.contains("XXXXsecretXXXX"), "{clean}");
        assert!(clean.contains("hooks.slack.com"), "{clean}");
    }
}
