//! Article extraction: an article page's HTML → title, plain-text body, author,
//! publication time and canonical URL. Runs after fetching (and
//! [`decode_page`]) for `kind = "html"` sources and for feed entries that need
//! their full text, before normalising and dedup.
//!
//! Each field comes from the first of these that has it (DESIGN §2): the
//! source's own CSS selectors, JSON-LD (`NewsArticle`, `Article`, `BlogPosting`…,
//! also in Yoast's `@graph`), OpenGraph and other `<meta>` tags (and `<title>`,
//! with the site's name stripped), and for the body a readability-style
//! main-text heuristic. Scripts of any type, styles, navigation, share bars,
//! related-story lists and ad slots never reach the body.
//!
//! JSON-LD's `articleBody` replaces the heuristic's body only when that is less
//! than half as long (pages that render their text with JavaScript).
//!
//! Everything here is a plain synchronous function (`scraper::Html` is not
//! `Send`); run large pages on `spawn_blocking`. DOM walks are loops over a
//! flattened tree or with an explicit stack, so deeply nested pages cannot
//! overflow the stack, and nesting deeper than 512 elements is flattened before
//! parsing (html5ever is quadratic in nesting depth: 100,000 nested `<div>`s
//! would take a minute).

mod charset;
mod heuristic;
mod links;
mod metadata;
mod text;

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use scraper::{Html, Selector};
use url::Url;

pub use charset::decode_page;
pub use links::{compile_link_selector, extract_links};
pub use text::html_to_text;

use crate::text::dates::read_page_date;
use metadata::PageMetadata;
use text::{FlatDom, collapse_whitespace};

/// Why a source's extraction settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    /// A configured CSS selector does not parse.
    #[error("invalid CSS selector for `{field}`: {selector:?}: {message}")]
    InvalidSelector {
        /// Which setting held it (`title`, `body`, `published`, `author`, `links`).
        field: &'static str,
        /// The selector as written.
        selector: String,
        /// The parser's complaint.
        message: String,
    },
}

/// A source's optional CSS selectors for its article pages (`[sources.select]`);
/// `None` or an empty string means "not set".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageSelectors {
    /// The headline element (its text).
    pub title: Option<String>,
    /// The article text container(s); boilerplate inside is still cleaned out.
    pub body: Option<String>,
    /// The publication time: `datetime` or `content` attribute, else the text.
    pub published: Option<String>,
    /// The author name element(s), joined with ", ".
    pub author: Option<String>,
}

/// [`PageSelectors`] compiled once per source; cheap to share between threads.
#[derive(Debug, Clone, Default)]
pub struct CompiledSelectors {
    title: Option<Selector>,
    body: Option<Selector>,
    published: Option<Selector>,
    author: Option<Selector>,
}

impl CompiledSelectors {
    /// Compiles each set selector; the error names the one that does not parse.
    pub fn compile(selectors: &PageSelectors) -> Result<Self, ExtractError> {
        let compile = |field, css: &Option<String>| match css.as_deref().map(str::trim) {
            Some(css) if !css.is_empty() => compile_selector(field, css).map(Some),
            _ => Ok(None),
        };
        Ok(Self {
            title: compile("title", &selectors.title)?,
            body: compile("body", &selectors.body)?,
            published: compile("published", &selectors.published)?,
            author: compile("author", &selectors.author)?,
        })
    }
}

/// Parses one CSS selector, naming the setting it came from on error.
pub(crate) fn compile_selector(field: &'static str, css: &str) -> Result<Selector, ExtractError> {
    Selector::parse(css).map_err(|e| ExtractError::InvalidSelector {
        field,
        selector: css.to_string(),
        message: e.to_string(),
    })
}

/// What extraction found on an article page.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Article {
    /// The headline, without the site's name.
    pub title: Option<String>,
    /// Plain text, paragraphs separated by `"\n\n"`; empty when nothing was found.
    pub body: String,
    /// Author name(s), joined with ", ".
    pub author: Option<String>,
    /// Publication time: selector, JSON-LD `datePublished`, `<meta>`, `<time pubdate>`.
    pub published: Option<DateTime<Utc>>,
    /// `<link rel=canonical>` (else `og:url`), resolved; http(s) only.
    pub canonical_url: Option<Url>,
    /// The page's own summary (`og:description`, `description`…).
    pub description: Option<String>,
}

/// Extracts the article from a page fetched from `page_url`.
pub fn extract_article(html: &str, page_url: &Url, selectors: &CompiledSelectors) -> Article {
    let document = text::parse_document(html);
    let dom = FlatDom::of(&document);
    let base = links::document_base(&document, page_url);
    let meta = PageMetadata::collect(&dom, &base);

    let title = selectors
        .title
        .as_ref()
        .and_then(|s| first_text(&document, s))
        .map(|t| metadata::strip_site_name(&t, meta.site_name().as_deref()))
        .or_else(|| meta.title());
    let published = selectors
        .published
        .as_ref()
        .and_then(|s| selected_datetime(&document, s))
        .or_else(|| meta.published());
    let author = selectors
        .author
        .as_ref()
        .and_then(|s| selected_authors(&document, s))
        .or_else(|| meta.author());

    let mut body = selectors
        .body
        .as_ref()
        .map(|s| selected_body(&document, &dom, s, title.as_deref()))
        .unwrap_or_default();
    if body.is_empty() {
        body = heuristic::main_text(&dom, title.as_deref());
        // JSON-LD's articleBody when the page's markup yields much less.
        if let Some(ld_body) = meta.json_ld.as_ref().and_then(|a| a.body.as_ref())
            && body.chars().count() * 2 < ld_body.chars().count()
        {
            body = ld_body.clone();
        }
    }

    Article {
        title,
        body,
        author,
        published,
        canonical_url: meta.canonical_url(&base),
        description: meta.description(),
    }
}

/// Collapsed text of the first match that has any.
fn first_text(document: &Html, selector: &Selector) -> Option<String> {
    document
        .select(selector)
        .map(|e| collapse_whitespace(&e.text().collect::<String>()))
        .find(|t| !t.is_empty())
}

/// The first match's `datetime`/`content` attribute or text, parsed.
fn selected_datetime(document: &Html, selector: &Selector) -> Option<DateTime<Utc>> {
    document.select(selector).find_map(|e| {
        ["datetime", "content"]
            .iter()
            .filter_map(|a| e.attr(a))
            .find_map(read_page_date)
            .or_else(|| read_page_date(&collapse_whitespace(&e.text().collect::<String>())))
    })
}

/// Every match's text (distinct, "By " dropped), joined with ", ".
fn selected_authors(document: &Html, selector: &Selector) -> Option<String> {
    let mut names: Vec<String> = Vec::new();
    for element in document.select(selector) {
        let text = collapse_whitespace(&element.text().collect::<String>());
        let name = text
            .strip_prefix("By ")
            .or_else(|| text.strip_prefix("by "))
            .unwrap_or(&text)
            .trim()
            .to_string();
        if !name.is_empty() && !names.contains(&name) {
            names.push(name);
        }
    }
    (!names.is_empty()).then(|| names.join(", "))
}

/// The text of every outermost match of the body selector, cleaned of boilerplate.
fn selected_body(
    document: &Html,
    dom: &FlatDom<'_>,
    selector: &Selector,
    title: Option<&str>,
) -> String {
    let wanted: HashSet<_> = document.select(selector).map(|e| e.id()).collect();
    if wanted.is_empty() {
        return String::new();
    }
    let mut roots = Vec::new();
    let mut covered_until = 0;
    for i in 0..dom.len() {
        if i >= covered_until && wanted.contains(&dom.nodes[i].id()) {
            roots.push(i);
            covered_until = dom.end[i];
        }
    }
    heuristic::render_cleaned(dom, &roots, title)
}

#[cfg(test)]
mod tests;
