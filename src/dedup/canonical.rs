//! Canonical URLs: the identity of a story (DESIGN §3), computed by the dedup stage from
//! the link the parser found and the page's `<link rel=canonical>`, and stored in the
//! unique `stories.canonical_url` column.
//!
//! The rules, applied to `http`/`https` URLs only (anything else is its own identity):
//!
//! 1. `http` becomes `https`;
//! 2. the host is lowercased and a leading `www.` dropped;
//! 3. the default port and the fragment are dropped;
//! 4. tracking parameters (`utm_*`, `fbclid`, `gclid`, `mc_cid`, `mc_eid`, `ref`, `amp`) are
//!    dropped and the remaining query parameters sorted;
//! 5. `amp` path segments (`/amp/…`, `…/amp/`, a trailing `/amp`) and a trailing
//!    `index.html` are stripped;
//! 6. a trailing `/` is stripped, except on the root.
//!
//! `<link rel=canonical>` wins only when it points at the same site as the link (same host
//! once `www.` is dropped): a page cannot claim another outlet's identity.

use url::Url;

/// Query parameters that only track the reader and never select content.
const TRACKING_PARAMS: &[&str] = &["fbclid", "gclid", "mc_cid", "mc_eid", "ref", "amp"];

/// Last path segments that name a directory's default document.
const INDEX_DOCUMENTS: &[&str] = &["index.html", "index.htm"];

/// Applies the canonical-URL rules of DESIGN §3 to `raw`.
///
/// URLs whose scheme is neither `http` nor `https` (e.g. the `feedwatch:` identities of
/// entries without a link) are returned unchanged. The result is a fixed point:
/// `canonicalize_url(&canonicalize_url(u)) == canonicalize_url(u)`.
pub fn canonicalize_url(raw: &Url) -> Url {
    if !matches!(raw.scheme(), "http" | "https") {
        return raw.clone();
    }
    let mut url = raw.clone();
    if url.scheme() == "http" {
        // http and https are both "special" schemes, so the switch cannot be refused;
        // `Url` drops the port by itself when it becomes the new scheme's default.
        let _ = url.set_scheme("https");
    }
    if url.port() == Some(443) {
        let _ = url.set_port(None);
    }
    if let Some(site) = url.host_str().and_then(strip_www).map(str::to_owned) {
        // A domain host minus its first label is still a valid domain host.
        let _ = url.set_host(Some(&site));
    }
    url.set_fragment(None);
    let query = url.query().map(canonical_query);
    url.set_query(query.as_deref().filter(|q| !q.is_empty()));
    let path = canonical_path(url.path());
    url.set_path(&path);
    url
}

/// Picks a story's canonical URL from its link and its page's `<link rel=canonical>`.
///
/// `rel_canonical` wins when it is an `http(s)` URL on the same site as `link` (same host
/// after dropping `www.`); either way the result is canonicalised.
pub fn choose_canonical(link: &Url, rel_canonical: Option<&Url>) -> Url {
    match rel_canonical {
        Some(rel)
            if matches!(rel.scheme(), "http" | "https")
                && site_of(rel).is_some()
                && site_of(rel) == site_of(link) =>
        {
            canonicalize_url(rel)
        }
        _ => canonicalize_url(link),
    }
}

/// The site a URL belongs to: its host, lowercased, without a leading `www.`.
fn site_of(url: &Url) -> Option<String> {
    let host = url.host_str()?.to_ascii_lowercase();
    Some(strip_www(&host).map_or_else(|| host.clone(), str::to_owned))
}

/// `host` without its leading `www.` label, when it has one and more labels follow
/// (`www.example.com` → `example.com`, but `www.com` stays as it is).
fn strip_www(host: &str) -> Option<&str> {
    let rest = host
        .get(..4)
        .filter(|head| head.eq_ignore_ascii_case("www."))
        .map(|_| &host[4..])?;
    rest.contains('.').then_some(rest)
}

/// Whether a (decoded) query parameter name only tracks the reader.
fn is_tracking_param(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name.starts_with("utm_") || TRACKING_PARAMS.contains(&name.as_str())
}

/// The query without tracking parameters, its pairs sorted by name (then raw text).
/// Pairs keep their original encoding, so nothing else about them changes.
fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, &str)> = query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .filter_map(|pair| {
            let name = url::form_urlencoded::parse(pair.as_bytes())
                .next()
                .map(|(name, _)| name.into_owned())
                .unwrap_or_default();
            (!is_tracking_param(&name)).then_some((name, pair))
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(_, pair)| *pair)
        .collect::<Vec<_>>()
        .join("&")
}

/// The path without `amp` segments, a trailing index document or a trailing `/`.
fn canonical_path(path: &str) -> String {
    let mut segments: Vec<&str> = path
        .split('/')
        .filter(|segment| !segment.eq_ignore_ascii_case("amp"))
        .collect();
    while let Some(last) = segments.last() {
        if last.is_empty()
            || INDEX_DOCUMENTS
                .iter()
                .any(|index| last.eq_ignore_ascii_case(index))
        {
            segments.pop();
        } else {
            break;
        }
    }
    let joined = segments.join("/");
    if joined.is_empty() {
        "/".to_owned()
    } else if joined.starts_with('/') {
        joined
    } else {
        format!("/{joined}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> Url {
        Url::parse(text).unwrap()
    }

    fn canonical(text: &str) -> String {
        canonicalize_url(&url(text)).to_string()
    }

    #[test]
    fn each_canonicalisation_rule_gives_the_expected_url() {
        let cases = [
            // (rule, input, expected)
            (
                "http becomes https",
                "http://hongkongfp.com/2025/01/02/slug/",
                "https://hongkongfp.com/2025/01/02/slug",
            ),
            (
                "host is lowercased",
                "https://HongKongFP.COM/2025/01/02/slug",
                "https://hongkongfp.com/2025/01/02/slug",
            ),
            (
                "leading www. is dropped",
                "https://www.asiatimes.com/2025/02/slug/",
                "https://asiatimes.com/2025/02/slug",
            ),
            (
                "www. is dropped whatever its case",
                "https://WWW.AsiaTimes.com/2025/02/slug",
                "https://asiatimes.com/2025/02/slug",
            ),
            (
                "www inside the host is kept",
                "https://news.www.example.org/a",
                "https://news.www.example.org/a",
            ),
            (
                "a bare www.tld keeps its www",
                "https://www.com/a",
                "https://www.com/a",
            ),
            (
                "default https port is dropped",
                "https://example.com:443/a",
                "https://example.com/a",
            ),
            (
                "default http port is dropped",
                "http://example.com:80/a",
                "https://example.com/a",
            ),
            (
                "an http URL on port 443 loses the port with the scheme change",
                "http://example.com:443/a",
                "https://example.com/a",
            ),
            (
                "a non-default port is kept",
                "https://example.com:8443/a",
                "https://example.com:8443/a",
            ),
            (
                "fragment is dropped",
                "https://example.com/a#comments",
                "https://example.com/a",
            ),
            (
                "utm parameters are dropped",
                "https://asiatimes.com/2025/07/slug/?utm_source=rss&utm_medium=feed",
                "https://asiatimes.com/2025/07/slug",
            ),
            (
                "utm parameters are dropped whatever their case",
                "https://example.com/a?UTM_Campaign=x",
                "https://example.com/a",
            ),
            (
                "fbclid and gclid are dropped",
                "https://example.com/a?fbclid=abc&gclid=def",
                "https://example.com/a",
            ),
            (
                "mailchimp ids are dropped",
                "https://example.com/a?mc_cid=1&mc_eid=2",
                "https://example.com/a",
            ),
            (
                "ref and amp parameters are dropped",
                "https://example.com/a?ref=homepage&amp=1",
                "https://example.com/a",
            ),
            (
                "an amp parameter without a value is dropped",
                "https://example.com/a?amp",
                "https://example.com/a",
            ),
            (
                "other parameters are kept and sorted",
                "https://example.com/story?p=42&id=7&utm_source=x&b=2",
                "https://example.com/story?b=2&id=7&p=42",
            ),
            (
                "repeated parameters are sorted by value too",
                "https://example.com/s?tag=b&tag=a",
                "https://example.com/s?tag=a&tag=b",
            ),
            (
                "percent-encoding of kept parameters is untouched",
                "https://i0.wp.com/asiatimes.com/x.jpg?fit=1024%2C683&ssl=1",
                "https://i0.wp.com/asiatimes.com/x.jpg?fit=1024%2C683&ssl=1",
            ),
            (
                "parameters that look like tracking ones are kept",
                "https://example.com/a?referrer=x&utm=y&amplitude=3",
                "https://example.com/a?amplitude=3&referrer=x&utm=y",
            ),
            (
                "an empty query is dropped",
                "https://example.com/a?",
                "https://example.com/a",
            ),
            (
                "trailing amp segment is stripped",
                "https://hongkongfp.com/2025/01/02/slug/amp/",
                "https://hongkongfp.com/2025/01/02/slug",
            ),
            (
                "trailing /amp without slash is stripped",
                "https://hongkongfp.com/2025/01/02/slug/amp",
                "https://hongkongfp.com/2025/01/02/slug",
            ),
            (
                "leading amp segment is stripped",
                "https://example.com/amp/2025/01/slug/",
                "https://example.com/2025/01/slug",
            ),
            (
                "an amp inside a slug is kept",
                "https://example.com/2025/ampere-chips/",
                "https://example.com/2025/ampere-chips",
            ),
            (
                "trailing index.html is stripped",
                "https://example.com/news/index.html",
                "https://example.com/news",
            ),
            (
                "index.html at the root leaves the root",
                "https://example.com/index.html",
                "https://example.com/",
            ),
            (
                "index.html elsewhere in the path is kept",
                "https://example.com/index.html/a",
                "https://example.com/index.html/a",
            ),
            (
                "trailing slash is stripped",
                "https://asiatimes.com/2025/11/slug/",
                "https://asiatimes.com/2025/11/slug",
            ),
            (
                "the root keeps its slash",
                "https://www.hongkongfp.com/",
                "https://hongkongfp.com/",
            ),
            (
                "several trailing slashes are stripped",
                "https://example.com/a//",
                "https://example.com/a",
            ),
            (
                "all rules at once",
                "http://WWW.Example.com:80/section/story/amp/index.html?z=1&utm_source=rss&a=2&ref=x#top",
                "https://example.com/section/story?a=2&z=1",
            ),
            (
                "non-http schemes are left alone",
                "feedwatch:hkfp:guid-123",
                "feedwatch:hkfp:guid-123",
            ),
        ];
        for (rule, input, expected) in cases {
            assert_eq!(canonical(input), expected, "rule: {rule}");
            assert_eq!(
                canonical(expected),
                expected,
                "rule: {rule} (canonical form must be a fixed point)"
            );
        }
    }

    #[test]
    fn rel_canonical_on_the_same_site_wins_and_is_canonicalised() {
        let link = url("https://hongkongfp.com/?p=12345&utm_source=rss");
        let rel = url("http://www.hongkongfp.com/2025/01/02/slug/");
        assert_eq!(
            choose_canonical(&link, Some(&rel)).as_str(),
            "https://hongkongfp.com/2025/01/02/slug"
        );
    }

    #[test]
    fn rel_canonical_on_another_site_is_ignored() {
        let link = url("https://hongkongfp.com/2025/11/20/slug/?utm_source=rss");
        let rel = url("https://ukdefencejournal.org.uk/original-story/");
        assert_eq!(
            choose_canonical(&link, Some(&rel)).as_str(),
            "https://hongkongfp.com/2025/11/20/slug"
        );
    }

    #[test]
    fn rel_canonical_on_a_subdomain_is_another_site() {
        let link = url("https://asiatimes.com/2025/02/slug/");
        let rel = url("https://amp.asiatimes.com/2025/02/slug/");
        assert_eq!(
            choose_canonical(&link, Some(&rel)).as_str(),
            "https://asiatimes.com/2025/02/slug"
        );
    }

    #[test]
    fn rel_canonical_with_a_non_web_scheme_is_ignored() {
        let link = url("https://asiatimes.com/2025/02/slug/");
        let rel = url("ftp://asiatimes.com/2025/02/slug/");
        assert_eq!(
            choose_canonical(&link, Some(&rel)).as_str(),
            "https://asiatimes.com/2025/02/slug"
        );
    }

    #[test]
    fn without_rel_canonical_the_link_is_canonicalised() {
        let link = url("http://www.asiatimes.com/2025/02/slug/amp/#x");
        assert_eq!(
            choose_canonical(&link, None).as_str(),
            "https://asiatimes.com/2025/02/slug"
        );
    }

    proptest::proptest! {
        #[test]
        fn canonical_urls_are_fixed_points_without_tracking_or_fragments(
            scheme in proptest::sample::select(vec!["http", "https", "HTTP"]),
            www in proptest::bool::ANY,
            host in "[a-zA-Z][a-zA-Z0-9-]{0,8}\\.(com|org|hk)",
            port in proptest::sample::select(vec!["", ":80", ":443", ":8080"]),
            segments in proptest::collection::vec(
                proptest::sample::select(vec!["amp", "AMP", "index.html", "", "news", "2025", "a%20b", "x.html"]),
                0..6,
            ),
            params in proptest::collection::vec(
                proptest::sample::select(vec!["utm_source=rss", "UTM_Medium=feed", "ref=x", "amp", "fbclid=1", "p=3", "id=%2C", "b", "a=2"]),
                0..5,
            ),
            fragment in proptest::sample::select(vec!["", "#top", "#"]),
            trailing_slash in proptest::bool::ANY,
        ) {
            let www = if www { "www." } else { "" };
            let slash = if trailing_slash { "/" } else { "" };
            let query = if params.is_empty() { String::new() } else { format!("?{}", params.join("&")) };
            let text = format!("{scheme}://{www}{host}{port}/{}{slash}{query}{fragment}", segments.join("/"));
            let canonical = canonicalize_url(&url(&text));
            proptest::prop_assert_eq!(canonicalize_url(&canonical), canonical.clone());
            proptest::prop_assert_eq!(canonical.scheme(), "https");
            proptest::prop_assert!(canonical.fragment().is_none());
            let host = canonical.host_str().unwrap_or_default();
            proptest::prop_assert!(!host.starts_with("www."));
            proptest::prop_assert!(canonical.path() == "/" || !canonical.path().ends_with('/'));
            proptest::prop_assert!(
                canonical.path_segments().into_iter().flatten().all(|s| !s.eq_ignore_ascii_case("amp"))
            );
            for (name, _) in canonical.query_pairs() {
                proptest::prop_assert!(!is_tracking_param(&name), "{}", name);
            }
        }
    }

    /// The shape of `realworld/sites/real_article_urls.json`, as far as these tests read it.
    fn real_urls() -> serde_json::Value {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/data/realworld/sites/real_article_urls.json"
        );
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    fn strings_at<'a>(doc: &'a serde_json::Value, key: &str) -> Vec<&'a str> {
        doc[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|entry| entry.get("url").unwrap_or(entry).as_str().unwrap())
            .collect()
    }

    #[test]
    #[ignore = "needs ../shared/data"]
    fn real_article_urls_canonicalise_to_https_without_www_or_trailing_slash() {
        let doc = real_urls();
        let mut seen = 0;
        for key in ["hongkongfp", "asiatimes"] {
            for text in strings_at(&doc, key) {
                let canonical = canonicalize_url(&url(text));
                assert_eq!(canonical.scheme(), "https", "{text}");
                let host = canonical.host_str().unwrap();
                assert!(!host.starts_with("www."), "{text}");
                assert!(
                    host == "hongkongfp.com" || host == "asiatimes.com",
                    "{text}"
                );
                assert!(!canonical.path().ends_with('/'), "{text}");
                assert_eq!(canonicalize_url(&canonical), canonical, "{text}");
                seen += 1;
            }
        }
        assert!(seen >= 30, "only {seen} article URLs read");
    }

    #[test]
    #[ignore = "needs ../shared/data"]
    fn real_article_urls_keep_their_identity_through_tracking_and_amp_variants() {
        let doc = real_urls();
        for key in ["hongkongfp", "asiatimes"] {
            for text in strings_at(&doc, key) {
                let identity = canonicalize_url(&url(text));
                let bare = text.trim_end_matches('/');
                let host = identity.host_str().unwrap();
                let mut www = url(bare);
                www.set_scheme("http").unwrap();
                www.set_host(Some(&format!("www.{host}"))).unwrap();
                let variants = [
                    format!("{bare}/"),
                    bare.to_owned(),
                    format!("{bare}/?utm_source=rss&utm_medium=feed"),
                    format!("{bare}/amp/"),
                    format!("{bare}/#respond"),
                    format!("{www}/?fbclid=x"),
                ];
                for variant in &variants {
                    assert_eq!(
                        canonicalize_url(&url(variant)),
                        identity,
                        "{variant} vs {text}"
                    );
                }
            }
        }
    }

    #[test]
    #[ignore = "needs ../shared/data"]
    fn real_feed_urls_of_one_site_share_one_identity() {
        let doc = real_urls();
        for key in ["hongkongfp_feed_urls_seen", "asiatimes_feed_urls_seen"] {
            let urls = strings_at(&doc, key);
            let first = canonicalize_url(&url(urls[0]));
            for text in &urls {
                assert_eq!(canonicalize_url(&url(text)), first, "{text}");
            }
        }
    }
}
