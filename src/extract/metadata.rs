//! Article metadata from the page head: JSON-LD (`NewsArticle`, `Article`,
//! `BlogPosting`…, also inside Yoast's `@graph`), OpenGraph and other `<meta>`
//! tags, `<title>`, `<link rel=canonical>`. Used by article extraction after the
//! source's own selectors and before the main-text heuristic.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::Value;
use url::Url;

use super::links::resolve_http_url;
use super::text::{FlatDom, collapse_whitespace, html_to_text};
use crate::text::dates::read_page_date;

/// schema.org types whose node describes the article itself.
const ARTICLE_TYPES: &[&str] = &[
    "Article",
    "NewsArticle",
    "ReportageNewsArticle",
    "AnalysisNewsArticle",
    "OpinionNewsArticle",
    "BackgroundNewsArticle",
    "ReviewNewsArticle",
    "BlogPosting",
    "LiveBlogPosting",
    "TechArticle",
    "Report",
];

/// What a JSON-LD article node says about the page.
#[derive(Debug, Default, Clone)]
pub(crate) struct JsonLdArticle {
    pub(crate) headline: Option<String>,
    pub(crate) published: Option<DateTime<Utc>>,
    pub(crate) authors: Vec<String>,
    pub(crate) body: Option<String>,
    pub(crate) description: Option<String>,
    pub(crate) publisher: Option<String>,
}

/// Everything the page head (and a few body markers) says about the article.
#[derive(Debug, Default)]
pub(crate) struct PageMetadata {
    pub(crate) json_ld: Option<JsonLdArticle>,
    /// Name of the `WebSite` node of the JSON-LD graph, if any.
    pub(crate) json_ld_site_name: Option<String>,
    /// `<meta>` contents by lower-case `property`/`name`/`itemprop` (first wins).
    pub(crate) meta: HashMap<String, String>,
    pub(crate) title_tag: Option<String>,
    pub(crate) first_h1: Option<String>,
    pub(crate) canonical: Option<Url>,
    /// `<time datetime>` marked as the publication time (`pubdate`, `itemprop`).
    pub(crate) time_published: Option<DateTime<Utc>>,
    /// Author named by `itemprop=author` or `rel=author` markup.
    pub(crate) byline: Option<String>,
}

impl PageMetadata {
    /// Collects the metadata of a flattened document whose links resolve against `base`.
    pub(crate) fn collect(dom: &FlatDom<'_>, base: &Url) -> Self {
        let mut found = Self::default();
        let mut ld_articles = Vec::new();
        let mut ld_sites = Vec::new();
        // Index of the end of the innermost open <svg>/<math>: titles there are not the page's.
        let mut foreign_end = 0usize;
        for i in 0..dom.len() {
            let Some(element) = dom.element(i) else {
                continue;
            };
            match element.name() {
                "svg" | "math" => foreign_end = foreign_end.max(dom.end[i]),
                "meta" => found.add_meta(element),
                "title" if found.title_tag.is_none() && i >= foreign_end => {
                    found.title_tag = non_empty(collapse_whitespace(&subtree_text(dom, i)));
                }
                "h1" if found.first_h1.is_none() => {
                    found.first_h1 = non_empty(collapse_whitespace(&subtree_text(dom, i)));
                }
                "link" if found.canonical.is_none() => {
                    let rel = element.attr("rel").unwrap_or("");
                    if rel
                        .split_ascii_whitespace()
                        .any(|r| r.eq_ignore_ascii_case("canonical"))
                    {
                        found.canonical =
                            element.attr("href").and_then(|h| resolve_http_url(base, h));
                    }
                }
                "script" => {
                    let is_ld = element
                        .attr("type")
                        .is_some_and(|t| t.to_ascii_lowercase().contains("ld+json"));
                    if is_ld {
                        collect_json_ld(&subtree_text(dom, i), &mut ld_articles, &mut ld_sites);
                    }
                }
                "time" if found.time_published.is_none() => {
                    let marked = element.attr("pubdate").is_some()
                        || element
                            .attr("itemprop")
                            .is_some_and(|p| p.eq_ignore_ascii_case("datePublished"));
                    if marked {
                        found.time_published = element.attr("datetime").and_then(read_page_date);
                    }
                }
                _ => {}
            }
            if found.byline.is_none() {
                found.byline = byline_of(dom, i, element);
            }
        }
        found.json_ld = ld_articles
            .iter()
            .find(|a| a.headline.is_some())
            .or(ld_articles.first())
            .cloned();
        found.json_ld_site_name = ld_sites.into_iter().next();
        found
    }

    fn add_meta(&mut self, element: &scraper::node::Element) {
        let Some(content) = element.attr("content") else {
            return;
        };
        let content = content.trim();
        if content.is_empty() {
            return;
        }
        let keys = ["property", "name", "itemprop"]
            .iter()
            .filter_map(|attr| element.attr(attr))
            .flat_map(str::split_ascii_whitespace);
        for key in keys {
            self.meta
                .entry(key.to_ascii_lowercase())
                .or_insert_with(|| content.to_string());
        }
    }

    /// The first non-empty `<meta>` value among `keys`.
    pub(crate) fn meta_value(&self, keys: &[&str]) -> Option<String> {
        keys.iter()
            .filter_map(|k| self.meta.get(*k))
            .map(|v| decode_text(v))
            .find(|v| !v.is_empty())
    }

    /// The site's name, for stripping it from titles.
    pub(crate) fn site_name(&self) -> Option<String> {
        self.meta_value(&[
            "og:site_name",
            "application-name",
            "apple-mobile-web-app-title",
        ])
        .or_else(|| self.json_ld_site_name.clone())
        .or_else(|| self.json_ld.as_ref().and_then(|a| a.publisher.clone()))
    }

    /// The headline: JSON-LD, then OpenGraph and other `<meta>`, then `<title>`
    /// (site suffix stripped), then the first `<h1>`. A headline that is only a
    /// time stamp (HKFP live posts) is used only when nothing better exists.
    pub(crate) fn title(&self) -> Option<String> {
        let site = self.site_name();
        let mut fallback = None;
        let from_meta = [
            "og:title",
            "twitter:title",
            "parsely-title",
            "dc.title",
            "sailthru.title",
            "title",
            "headline",
        ];
        let candidates = self
            .json_ld
            .as_ref()
            .and_then(|a| a.headline.clone())
            .into_iter()
            .chain(from_meta.iter().filter_map(|k| self.meta_value(&[k])))
            .map(|t| strip_site_name(&t, site.as_deref()))
            .chain(
                self.title_tag
                    .iter()
                    .map(|t| strip_title_suffix(t, site.as_deref(), self.first_h1.as_deref())),
            )
            .chain(self.first_h1.clone());
        for candidate in candidates {
            if candidate.is_empty() {
                continue;
            }
            if is_timestamp_title(&candidate) {
                fallback.get_or_insert(candidate);
                continue;
            }
            return Some(candidate);
        }
        fallback
    }

    /// The publication time: JSON-LD, then `<meta>`, then a marked `<time>`.
    pub(crate) fn published(&self) -> Option<DateTime<Utc>> {
        let meta_keys = [
            "article:published_time",
            "og:article:published_time",
            "og:published_time",
            "published_time",
            "parsely-pub-date",
            "datepublished",
            "dc.date.issued",
            "dcterms.issued",
            "dc.date",
            "dcterms.date",
            "sailthru.date",
            "article.published",
            "publishdate",
            "publish-date",
            "pubdate",
            "date",
        ];
        self.json_ld
            .as_ref()
            .and_then(|a| a.published)
            .or_else(|| {
                meta_keys
                    .iter()
                    .filter_map(|k| self.meta.get(*k))
                    .find_map(|v| read_page_date(v))
            })
            .or(self.time_published)
    }

    /// The author(s), joined with ", ".
    pub(crate) fn author(&self) -> Option<String> {
        if let Some(ld) = &self.json_ld
            && !ld.authors.is_empty()
        {
            return Some(ld.authors.join(", "));
        }
        let keys = [
            "author",
            "article:author",
            "parsely-author",
            "dc.creator",
            "dcterms.creator",
            "sailthru.author",
            "byl",
        ];
        keys.iter()
            .filter_map(|k| self.meta.get(*k))
            .map(|v| clean_byline(&decode_text(v)))
            .find(|v| !v.is_empty() && !looks_like_url(v))
            .or_else(|| self.byline.clone())
    }

    /// The summary the page gives of itself.
    pub(crate) fn description(&self) -> Option<String> {
        self.meta_value(&[
            "og:description",
            "twitter:description",
            "description",
            "dc.description",
        ])
        .or_else(|| self.json_ld.as_ref().and_then(|a| a.description.clone()))
    }

    /// The canonical URL: `<link rel=canonical>`, else `og:url`.
    pub(crate) fn canonical_url(&self, base: &Url) -> Option<Url> {
        self.canonical.clone().or_else(|| {
            self.meta
                .get("og:url")
                .and_then(|u| resolve_http_url(base, u))
        })
    }
}

/// The author named by `itemprop=author` / `rel=author` markup at `i`, if any.
fn byline_of(dom: &FlatDom<'_>, i: usize, element: &scraper::node::Element) -> Option<String> {
    let has_token = |attr: &str, token: &str| {
        element.attr(attr).is_some_and(|v| {
            v.split_ascii_whitespace()
                .any(|t| t.eq_ignore_ascii_case(token))
        })
    };
    if !(has_token("itemprop", "author") || has_token("rel", "author")) || element.name() == "link"
    {
        return None;
    }
    if element.name() == "meta" {
        return None;
    }
    let text = clean_byline(&collapse_whitespace(&subtree_text(dom, i)));
    (!text.is_empty() && text.chars().count() <= 100).then_some(text)
}

/// All text under node `i` (iteratively; markup dropped, not collapsed).
pub(crate) fn subtree_text(dom: &FlatDom<'_>, i: usize) -> String {
    (i..dom.end[i]).filter_map(|j| dom.text(j)).collect()
}

/// Parses one `application/ld+json` script and gathers its article and site nodes.
fn collect_json_ld(raw: &str, articles: &mut Vec<JsonLdArticle>, sites: &mut Vec<String>) {
    let Ok(root) = serde_json::from_str::<Value>(unwrap_script_text(raw)) else {
        return;
    };
    // Every node reachable through arrays, `@graph` and `mainEntity`, iteratively.
    let mut nodes: Vec<&Value> = Vec::new();
    let mut stack = vec![&root];
    while let Some(value) = stack.pop() {
        match value {
            Value::Array(items) => stack.extend(items.iter().rev()),
            Value::Object(map) => {
                nodes.push(value);
                for key in ["@graph", "mainEntity"] {
                    if let Some(inner) = map.get(key) {
                        stack.push(inner);
                    }
                }
            }
            _ => {}
        }
    }
    let by_id: HashMap<&str, &Value> = nodes
        .iter()
        .filter_map(|n| Some((n.get("@id")?.as_str()?, *n)))
        .filter(|(_, n)| n.as_object().is_some_and(|m| m.len() > 1))
        .collect();
    for node in &nodes {
        if has_type(node, &["WebSite"])
            && let Some(name) = string_field(node, "name")
        {
            sites.push(name);
        }
        if !has_type(node, ARTICLE_TYPES) {
            continue;
        }
        let published = ["datePublished", "dateCreated"]
            .iter()
            .filter_map(|k| node.get(*k)?.as_str())
            .find_map(read_page_date);
        let publisher = node
            .get("publisher")
            .map(|p| resolve_ref(p, &by_id))
            .and_then(|p| string_field(p, "name"));
        articles.push(JsonLdArticle {
            headline: string_field(node, "headline").or_else(|| string_field(node, "name")),
            published,
            authors: node
                .get("author")
                .map_or_else(Vec::new, |a| names(a, &by_id)),
            body: node
                .get("articleBody")
                .and_then(Value::as_str)
                .map(article_body_text)
                .filter(|b| !b.is_empty()),
            description: string_field(node, "description"),
            publisher,
        });
    }
}

/// Script text without the comment and CDATA wrappers pages put around JSON.
fn unwrap_script_text(raw: &str) -> &str {
    const OPENERS: &[&str] = &["<!--", "//", "/*", "*/", "<![CDATA[", "]]>"];
    const CLOSERS: &[&str] = &["-->", "//", "/*", "*/", "]]>", "<![CDATA["];
    let mut text = raw.trim();
    loop {
        let before = text.len();
        for opener in OPENERS {
            text = text.strip_prefix(opener).unwrap_or(text).trim_start();
        }
        for closer in CLOSERS {
            text = text.strip_suffix(closer).unwrap_or(text).trim_end();
        }
        if text.len() == before {
            return text;
        }
    }
}

fn has_type(node: &Value, wanted: &[&str]) -> bool {
    let matches = |t: &str| {
        let t = t.rsplit(['/', ':']).next().unwrap_or(t);
        wanted.contains(&t)
    };
    match node.get("@type") {
        Some(Value::String(t)) => matches(t),
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).any(matches),
        _ => false,
    }
}

/// A `{"@id": …}` reference replaced by the node it names, when the graph has it.
fn resolve_ref<'v>(value: &'v Value, by_id: &HashMap<&str, &'v Value>) -> &'v Value {
    match value.as_object() {
        Some(map) if map.len() == 1 => map
            .get("@id")
            .and_then(Value::as_str)
            .and_then(|id| by_id.get(id).copied())
            .unwrap_or(value),
        _ => value,
    }
}

/// Person names from an `author` value: a string, an object or an array of either.
fn names(value: &Value, by_id: &HashMap<&str, &Value>) -> Vec<String> {
    let items: Vec<&Value> = match value {
        Value::Array(items) => items.iter().collect(),
        other => vec![other],
    };
    let mut out: Vec<String> = Vec::new();
    for item in items {
        let name = match resolve_ref(item, by_id) {
            Value::String(s) => Some(decode_text(s)),
            node @ Value::Object(_) => string_field(node, "name"),
            _ => None,
        };
        if let Some(name) = name.map(|n| clean_byline(&n))
            && !name.is_empty()
            && !looks_like_url(&name)
            && !out.contains(&name)
        {
            out.push(name);
        }
    }
    out
}

fn string_field(node: &Value, key: &str) -> Option<String> {
    let value = match node.get(key)? {
        Value::String(s) => s.as_str(),
        Value::Array(items) => items.iter().find_map(Value::as_str)?,
        _ => return None,
    };
    non_empty(decode_text(value))
}

/// Plain text of a JSON-LD `articleBody`: markup rendered, lines as paragraphs.
fn article_body_text(raw: &str) -> String {
    if raw.contains('<') && raw.contains('>') {
        return html_to_text(raw);
    }
    raw.split('\n')
        .map(decode_text)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// Entities decoded and whitespace collapsed (metadata values are often escaped twice).
pub(crate) fn decode_text(value: &str) -> String {
    if value.contains('&') || value.contains('<') {
        let text = html_to_text(&format!("<p>{value}</p>"));
        return text.replace("\n\n", " ").replace('\n', " ");
    }
    collapse_whitespace(value)
}

fn non_empty(s: String) -> Option<String> {
    (!s.trim().is_empty()).then_some(s)
}

fn looks_like_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://") || s.starts_with("//")
}

/// "By Jane Doe" → "Jane Doe".
fn clean_byline(s: &str) -> String {
    let s = s.trim();
    let lower = s.to_lowercase();
    let s = if lower.starts_with("by ") { &s[3..] } else { s };
    s.trim().to_string()
}

/// Separators sites put between a headline and their name.
const TITLE_SEPARATORS: &[&str] = &[" | ", " - ", " – ", " — ", " · ", " :: ", " » ", " // "];

/// Removes `site` when it is a suffix (or prefix) joined by a title separator.
pub(crate) fn strip_site_name(title: &str, site: Option<&str>) -> String {
    let title = title.trim();
    let Some(site) = site.map(str::trim).filter(|s| !s.is_empty()) else {
        return title.to_string();
    };
    let lower = title.to_lowercase();
    let site_lower = site.to_lowercase();
    for sep in TITLE_SEPARATORS {
        let suffix = format!("{sep}{site_lower}");
        if lower.ends_with(&suffix) && lower.len() > suffix.len() {
            return title[..title.len() - suffix.len()].trim().to_string();
        }
        let prefix = format!("{site_lower}{sep}");
        if lower.starts_with(&prefix) && lower.len() > prefix.len() {
            return title[prefix.len()..].trim().to_string();
        }
    }
    title.to_string()
}

/// Strips the site part of a `<title>`: the known site name, else a short last
/// segment after a separator when enough of a headline remains, else the text
/// around the page's `<h1>` when the title starts with it.
pub(crate) fn strip_title_suffix(title: &str, site: Option<&str>, h1: Option<&str>) -> String {
    let stripped = strip_site_name(title, site);
    if stripped != title.trim() {
        return stripped;
    }
    if let Some(h1) = h1.map(str::trim)
        && h1.split_whitespace().count() >= 3
        && stripped.len() > h1.len()
        && stripped.starts_with(h1)
    {
        return h1.to_string();
    }
    for sep in TITLE_SEPARATORS {
        if let Some(at) = stripped.rfind(sep) {
            let (head, tail) = (&stripped[..at], &stripped[at + sep.len()..]);
            let head_words = head.split_whitespace().count();
            let tail_words = tail.split_whitespace().count();
            if head_words >= 3 && tail_words <= 5 && tail_words < head_words {
                return head.trim().to_string();
            }
        }
    }
    stripped
}

/// "14:05, 3 November 2026": a live-post title with no headline in it.
pub(crate) fn is_timestamp_title(title: &str) -> bool {
    let has_clock = title
        .split(|c: char| c.is_whitespace() || c == ',')
        .any(|w| {
            let mut parts = w.split(':');
            matches!((parts.next(), parts.next(), parts.next()),
                (Some(h), Some(m), None) if !h.is_empty() && h.len() <= 2 && m.len() == 2
                    && h.chars().all(|c| c.is_ascii_digit()) && m.chars().all(|c| c.is_ascii_digit()))
        });
    let words = title.split_whitespace().count();
    let has_year = title
        .split(|c: char| !c.is_ascii_digit())
        .any(|d| d.len() == 4);
    has_clock && has_year && words <= 6
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("test date")
            .with_timezone(&Utc)
    }

    #[test]
    fn a_known_site_name_is_stripped_from_either_end() {
        let site = Some("Hong Kong Free Press HKFP");
        assert_eq!(
            strip_site_name("Harbour ferry fares rise | Hong Kong Free Press HKFP", site),
            "Harbour ferry fares rise"
        );
        assert_eq!(
            strip_site_name("Hong Kong Free Press HKFP - Harbour ferry fares rise", site),
            "Harbour ferry fares rise"
        );
        assert_eq!(
            strip_site_name("Hong Kong Free Press HKFP", site),
            "Hong Kong Free Press HKFP"
        );
    }

    #[test]
    fn a_short_unknown_suffix_is_stripped_from_the_title_tag() {
        assert_eq!(
            strip_title_suffix("Lorem ipsum dolor sit amet – My website", None, None),
            "Lorem ipsum dolor sit amet"
        );
        assert_eq!(
            strip_title_suffix("Short - Site", None, None),
            "Short - Site"
        );
    }

    #[test]
    fn time_stamp_titles_are_recognised() {
        assert!(is_timestamp_title("14:05, 3 November 2026"));
        assert!(!is_timestamp_title("Ferry fares rise 10% from 2026"));
    }

    #[test]
    fn json_ld_graph_authors_resolve_through_ids() {
        let raw = r#"{"@context":"https://schema.org","@graph":[
            {"@type":"WebSite","@id":"https://x/#website","name":"X News"},
            {"@type":["Article","NewsArticle"],"headline":"Ferries &amp; fares",
             "author":[{"@id":"https://x/#/person/1"},"Li Wei"],
             "datePublished":"2026-11-03T08:00:00+08:00"},
            {"@type":"Person","@id":"https://x/#/person/1","name":"Chan Tai-man"}]}"#;
        let (mut articles, mut sites) = (Vec::new(), Vec::new());
        collect_json_ld(raw, &mut articles, &mut sites);
        assert_eq!(sites, ["X News"]);
        let article = &articles[0];
        assert_eq!(article.headline.as_deref(), Some("Ferries & fares"));
        assert_eq!(article.authors, ["Chan Tai-man", "Li Wei"]);
        assert_eq!(article.published, Some(utc("2026-11-03T00:00:00Z")));
    }

    #[test]
    fn json_ld_wrapped_in_cdata_or_comments_is_read() {
        for wrapped in [
            "<![CDATA[ {\"@type\":\"NewsArticle\",\"headline\":\"H\"} ]]>",
            "//<![CDATA[\n{\"@type\":\"NewsArticle\",\"headline\":\"H\"}\n//]]>",
            "<!-- {\"@type\":\"NewsArticle\",\"headline\":\"H\"} -->",
        ] {
            let (mut articles, mut sites) = (Vec::new(), Vec::new());
            collect_json_ld(wrapped, &mut articles, &mut sites);
            assert_eq!(articles.len(), 1, "{wrapped}");
        }
    }

    #[test]
    fn broken_json_ld_is_ignored() {
        let (mut articles, mut sites) = (Vec::new(), Vec::new());
        collect_json_ld("{\"@type\": \"NewsArticle\",", &mut articles, &mut sites);
        assert!(articles.is_empty());
    }
}
