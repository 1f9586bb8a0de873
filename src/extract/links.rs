//! Listing page → article links: how a `kind = "html"` source finds its stories.
//!
//! The source's `links` selector (compiled once per source) picks the link
//! elements; each `href` is resolved against the page URL (or its `<base href>`),
//! only `http`/`https` links are kept, fragments are dropped and duplicates
//! removed, in document order. Which hosts are allowed is the caller's policy.

use std::collections::HashSet;

use scraper::{ElementRef, Html, Selector};
use url::Url;

use super::ExtractError;

/// Compiles a source's `links` CSS selector.
pub fn compile_link_selector(css: &str) -> Result<Selector, ExtractError> {
    super::compile_selector("links", css)
}

/// The article links of a listing page, resolved, in document order.
///
/// A matched element without an `href` (say `h2.entry-title`) stands for the
/// first `a[href]` inside it.
pub fn extract_links(html: &str, page_url: &Url, links: &Selector) -> Vec<Url> {
    let document = super::text::parse_document(html);
    let base = document_base(&document, page_url);
    let mut seen = HashSet::new();
    let mut found = Vec::new();
    for element in document.select(links) {
        let Some(href) = link_target(element) else {
            continue;
        };
        let Some(url) = resolve_http_url(&base, href) else {
            continue;
        };
        if seen.insert(url.as_str().to_owned()) {
            found.push(url);
        }
    }
    found
}

/// The `href` of a link element, or of the first link inside it.
fn link_target(element: ElementRef<'_>) -> Option<&str> {
    if let Some(href) = element.attr("href") {
        return Some(href);
    }
    element
        .descendent_elements()
        .find(|e| e.value().name() == "a" && e.attr("href").is_some())
        .and_then(|e| e.attr("href"))
}

/// The URL relative links of a document resolve against: its first
/// `<base href>` (itself resolved against the page URL), else the page URL.
pub(crate) fn document_base(document: &Html, page_url: &Url) -> Url {
    document
        .tree
        .root()
        .descendants()
        .filter_map(|n| n.value().as_element())
        .find(|e| e.name() == "base" && e.attr("href").is_some())
        .and_then(|e| e.attr("href"))
        .and_then(|href| page_url.join(href.trim()).ok())
        .filter(|u| matches!(u.scheme(), "http" | "https"))
        .unwrap_or_else(|| page_url.clone())
}

/// Resolves `href` against `base`; only `http`/`https` results, without fragment.
pub(crate) fn resolve_http_url(base: &Url, href: &str) -> Option<Url> {
    let href = href.trim();
    if href.is_empty() || href.starts_with('#') {
        return None;
    }
    let mut url = base.join(href).ok()?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return None;
    }
    url.set_fragment(None);
    Some(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn links(html: &str, page: &str, css: &str) -> Vec<String> {
        let selector = compile_link_selector(css).expect("valid selector");
        let page = Url::parse(page).expect("valid URL");
        extract_links(html, &page, &selector)
            .into_iter()
            .map(String::from)
            .collect()
    }

    #[test]
    fn relative_links_are_resolved_against_the_page() {
        let html = r#"<h2 class="t"><a href="/2026/11/a/">A</a></h2><h2 class="t"><a href="b/">B</a></h2>"#;
        assert_eq!(
            links(html, "https://example.org/section/news/", "h2.t a"),
            [
                "https://example.org/2026/11/a/",
                "https://example.org/section/news/b/"
            ]
        );
    }

    #[test]
    fn a_base_element_changes_the_resolution() {
        let html = r#"<head><base href="/base/dir/"></head><a class=x href="page">P</a>"#;
        assert_eq!(
            links(html, "https://example.org/listing", "a.x"),
            ["https://example.org/base/dir/page"]
        );
    }

    #[test]
    fn fragments_are_dropped_and_duplicates_removed_in_document_order() {
        let html = r##"<a href="/b#c">1</a><a href="/a">2</a><a href="/b#comments">3</a><a href="/a">4</a>"##;
        assert_eq!(
            links(html, "https://example.org/", "a"),
            ["https://example.org/b", "https://example.org/a"]
        );
    }

    #[test]
    fn non_http_links_are_left_out() {
        let html = r##"<a href="mailto:x@example.org">m</a><a href="javascript:void(0)">j</a>
            <a href="#top">t</a><a href="">e</a><a href="ftp://example.org/f">f</a>
            <a href="http://other.example/ok">ok</a>"##;
        assert_eq!(
            links(html, "https://example.org/", "a"),
            ["http://other.example/ok"]
        );
    }

    #[test]
    fn a_matched_container_stands_for_its_first_link() {
        let html =
            r#"<h2 class="entry-title"><span><a href="/x/">X</a><a href="/y/">Y</a></span></h2>"#;
        assert_eq!(
            links(html, "https://example.org/", "h2.entry-title"),
            ["https://example.org/x/"]
        );
    }

    #[test]
    fn an_invalid_link_selector_is_an_error_naming_it() {
        let err = compile_link_selector("h2..bad").expect_err("invalid selector");
        assert!(err.to_string().contains("h2..bad"), "{err}");
    }
}
