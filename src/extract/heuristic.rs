//! The main-text heuristic: the last resort of article extraction, used when the
//! source gives no body selector (or it matches nothing). Readability-style:
//! paragraphs score their ancestors by length and commas, containers are weighted
//! by class/id hints (`article`, `content`, `entry` up; `comment`, `share`,
//! `related`, `promo`, ad slots, `footer`, `sidebar`, `nav` down) and discounted
//! by link density; the best container and its related siblings are rendered,
//! with boilerplate blocks (share bars, related-story lists, ad slots, link-heavy
//! lists) cleaned out. Every pass is a loop over the [`FlatDom`]: no recursion.

use super::text::{FlatDom, is_block_tag, is_hidden, is_skipped_tag, render};

/// A paragraph shorter than this (in non-space characters) does not score.
const MIN_PARAGRAPH_LEN: u32 = 25;
/// Results shorter than this (characters) make the next, looser attempt run.
const ENOUGH_TEXT: usize = 500;
/// How many top candidates are compared when looking for a common ancestor.
const TOP_CANDIDATES: usize = 5;

/// Class/id fragments of blocks that are unlikely to be article text.
const UNLIKELY: &[&str] = &[
    "-ad-",
    "ai2html",
    "banner",
    "breadcrumbs",
    "combx",
    "comment",
    "community",
    "cover-wrap",
    "disqus",
    "extra",
    "footer",
    "gdpr",
    "header",
    "legends",
    "menu",
    "related",
    "remark",
    "replies",
    "rss",
    "shoutbox",
    "sidebar",
    "skyscraper",
    "social",
    "sponsor",
    "supplemental",
    "ad-break",
    "agegate",
    "pagination",
    "pager",
    "popup",
    "yom-remote",
    "newsletter",
    "subscribe",
    "promo",
    "outbrain",
    "taboola",
    "recommend",
    "trending",
    "most-popular",
    "cookie",
    "paywall",
    "signup",
    "share",
];
/// Class/id fragments that rescue an otherwise unlikely block.
const MAYBE_CONTENT: &[&str] = &[
    "and", "article", "body", "column", "content", "main", "shadow",
];
/// Class/id fragments of article text.
const POSITIVE: &[&str] = &[
    "article",
    "body",
    "content",
    "entry",
    "hentry",
    "h-entry",
    "main",
    "page",
    "pagination",
    "post",
    "text",
    "blog",
    "story",
];
/// Class/id fragments of everything around article text.
const NEGATIVE: &[&str] = &[
    "-ad-",
    "hidden",
    "banner",
    "combx",
    "comment",
    "com-",
    "contact",
    "footer",
    "gdpr",
    "masthead",
    "media",
    "meta",
    "outbrain",
    "promo",
    "related",
    "scroll",
    "share",
    "shoutbox",
    "sidebar",
    "skyscraper",
    "sponsor",
    "shopping",
    "tags",
    "widget",
    "social",
    "newsletter",
    "subscribe",
    "taboola",
    "recommend",
    "byline",
    "author-bio",
    "paywall",
];
/// Class/id fragments of blocks never kept, whatever else their class says.
const BOILERPLATE: &[&str] = &[
    "share",
    "sharing",
    "social",
    "related",
    "newsletter",
    "subscribe",
    "promo",
    "outbrain",
    "taboola",
    "recommend",
    "sponsor",
    "advert",
    "paywall",
    "cookie",
    "breadcrumb",
    "most-popular",
    "trending",
    "comment-",
    "comments",
    "crumb",
    "byline",
    "entry-meta",
    "post-meta",
    "article-meta",
    "author-name",
    "post-author",
    "entry-date",
    "post-date",
    "disqus",
    "author-bio",
    "jp-relatedposts",
    "more-stories",
    "newsletter",
    "donate",
    "ad-slot",
    "ad-container",
    "ad-unit",
    "adslot",
    "adunit",
    "adsbygoogle",
    "dfp",
];
/// Class/id fragments of picture captions and credits.
const CAPTION_HINTS: &[&str] = &["caption", "credit"];
/// Whole class/id tokens (split on non-alphanumerics) of ad slots.
const AD_TOKENS: &[&str] = &["ad", "ads", "advert", "advertisement", "advertising", "gpt"];
/// ARIA roles of page furniture.
const FURNITURE_ROLES: &[&str] = &[
    "navigation",
    "complementary",
    "banner",
    "contentinfo",
    "menu",
    "menubar",
    "dialog",
    "alertdialog",
    "alert",
    "search",
    "toolbar",
];
/// Class/id values of the article container itself: never treated as boilerplate.
const MAIN_MARKERS: &[&str] = &[
    "entry-content",
    "post-content",
    "article-body",
    "article-content",
    "story-body",
    "article__body",
    "post-body",
    "articlebody",
];
/// Short blocks whose whole text is one of these are page furniture.
const FURNITURE_PHRASES: &[&str] = &[
    "advertisement",
    "advertisements",
    "ad",
    "sponsored",
    "sponsored content",
    "share",
    "share this",
    "share this article",
    "share this story",
    "share this post",
    "share on",
    "related",
    "related stories",
    "related articles",
    "related posts",
    "related content",
    "related coverage",
    "related news",
    "read more",
    "read next",
    "more stories",
    "top stories",
    "most popular",
    "most read",
    "popular",
    "trending",
    "trending now",
    "recommended",
    "recommended for you",
    "you may also like",
    "you might also like",
    "latest",
    "latest news",
    "tags",
    "topics",
    "filed under",
    "comments",
    "leave a comment",
    "leave a reply",
    "previous article",
    "next article",
    "previous post",
    "next post",
    "continue reading",
    "sign up",
    "subscribe",
    "follow us",
    "print",
    "email",
    "copy link",
    "skip to content",
    "back to top",
    "support us",
];
/// Short blocks starting with one of these are page furniture.
const FURNITURE_PREFIXES: &[&str] = &[
    "related:",
    "read more:",
    "also read:",
    "see also:",
    "share this",
    "more in ",
    "more from ",
    "filed under",
    "leave a reply",
    "sign up for",
    "subscribe to",
    "you have",
    "already a",
    "already subscribed",
];

/// How strict an extraction attempt is (the looser ones run when the text is short).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Attempt {
    /// Unlikely blocks removed before scoring, class weights, conditional cleaning.
    Strict,
    /// Unlikely blocks kept for scoring.
    KeepUnlikely,
    /// Also no conditional cleaning of the chosen container.
    NoCleaning,
}

/// The main text of a page: the best attempt's rendering.
pub(crate) fn main_text(dom: &FlatDom<'_>, title: Option<&str>) -> String {
    let title_key = title.map(comparison_key).filter(|k| !k.is_empty());
    let mut best = String::new();
    for attempt in [Attempt::Strict, Attempt::KeepUnlikely, Attempt::NoCleaning] {
        let analysis = Analysis::new(dom, attempt, title_key.clone());
        let text = analysis.extract();
        if text.chars().count() >= ENOUGH_TEXT {
            return text;
        }
        if text.len() > best.len() {
            best = text;
        }
    }
    best
}

/// Renders chosen containers (a source's body selector matches) with the
/// same boilerplate cleaning as the heuristic.
pub(crate) fn render_cleaned(dom: &FlatDom<'_>, roots: &[usize], title: Option<&str>) -> String {
    let title_key = title.map(comparison_key).filter(|k| !k.is_empty());
    let analysis = Analysis::new(dom, Attempt::Strict, title_key);
    analysis.render(roots)
}

/// Lower-case alphanumeric words, for comparing headings with the title.
pub(crate) fn comparison_key(text: &str) -> String {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Per-node facts of one attempt, indexed like the [`FlatDom`].
struct Analysis<'d, 'a> {
    dom: &'d FlatDom<'a>,
    attempt: Attempt,
    title_key: Option<String>,
    /// The node or an ancestor is left out: skipped tag, hidden, furniture,
    /// boilerplate or (strict attempt) unlikely.
    excluded: Vec<bool>,
    /// Class/id weight (±25 per attribute).
    weight: Vec<i32>,
    /// Non-space characters of kept text below the node.
    text_len: Vec<u32>,
    /// … of which inside links.
    link_len: Vec<u32>,
    commas: Vec<u32>,
    paragraphs: Vec<u32>,
    list_items: Vec<u32>,
    images: Vec<u32>,
    inputs: Vec<u32>,
    /// Text directly owned by a block (its text outside nested blocks).
    own_len: Vec<u32>,
    own_link_len: Vec<u32>,
    own_commas: Vec<u32>,
    has_block_child: Vec<bool>,
}

impl<'d, 'a> Analysis<'d, 'a> {
    fn new(dom: &'d FlatDom<'a>, attempt: Attempt, title_key: Option<String>) -> Self {
        let n = dom.len();
        let contains_main = main_marker_ancestry(dom);
        let mut this = Self {
            dom,
            attempt,
            title_key,
            excluded: vec![false; n],
            weight: vec![0; n],
            text_len: vec![0; n],
            link_len: vec![0; n],
            commas: vec![0; n],
            paragraphs: vec![0; n],
            list_items: vec![0; n],
            images: vec![0; n],
            inputs: vec![0; n],
            own_len: vec![0; n],
            own_link_len: vec![0; n],
            own_commas: vec![0; n],
            has_block_child: vec![false; n],
        };
        let mut in_link = vec![false; n];
        // Nearest block ancestor-or-self of each node.
        let mut owner = vec![usize::MAX; n];
        for i in 0..n {
            let parent = dom.parent[i];
            let (parent_excluded, parent_in_link, parent_owner) = if parent == usize::MAX {
                (false, false, usize::MAX)
            } else {
                (this.excluded[parent], in_link[parent], owner[parent])
            };
            in_link[i] = parent_in_link;
            owner[i] = parent_owner;
            this.excluded[i] = parent_excluded;
            let Some(element) = dom.element(i) else {
                continue;
            };
            let name = element.name();
            if name == "a" {
                in_link[i] = true;
            }
            if is_block_tag(name) || matches!(name, "td" | "th") {
                owner[i] = i;
            }
            let hints = class_and_id(element);
            this.weight[i] = class_weight(element);
            if parent_excluded || matches!(name, "html" | "body") {
                continue;
            }
            let protected = contains_main[i] || matches!(name, "article" | "main");
            let skipped_tag = if name == "form" {
                // Some CMSs wrap the whole page in one form.
                !contains_main[i]
            } else {
                is_skipped_tag(name)
            };
            let furniture_role = element
                .attr("role")
                .is_some_and(|r| FURNITURE_ROLES.contains(&r.trim().to_ascii_lowercase().as_str()));
            let boilerplate = !protected && (is_boilerplate(&hints) || furniture_role);
            let unlikely = attempt == Attempt::Strict
                && !protected
                && name != "a"
                && contains_any(&hints, UNLIKELY)
                && !contains_any(&hints, MAYBE_CONTENT);
            // Captions and photo credits describe pictures, not the story.
            let caption = name == "figcaption" || contains_any(&hints, CAPTION_HINTS);
            this.excluded[i] = skipped_tag
                || is_hidden(element)
                || boilerplate
                || unlikely
                || caption
                || name == "footer";
        }
        for i in (0..n).rev() {
            if this.excluded[i] {
                continue;
            }
            if let Some(text) = dom.text(i) {
                let len = text.chars().filter(|c| !c.is_whitespace()).count() as u32;
                let commas = text
                    .chars()
                    .filter(|c| matches!(c, ',' | '，' | '、'))
                    .count() as u32;
                this.text_len[i] = len;
                this.commas[i] = commas;
                if in_link[i] {
                    this.link_len[i] = len;
                }
                let o = owner[i];
                if o != usize::MAX {
                    this.own_len[o] += len;
                    this.own_commas[o] += commas;
                    if in_link[i] {
                        this.own_link_len[o] += len;
                    }
                }
            } else if let Some(element) = dom.element(i) {
                match element.name() {
                    "p" => this.paragraphs[i] += 1,
                    "li" => this.list_items[i] += 1,
                    "img" => this.images[i] += 1,
                    "input" | "select" | "textarea" => this.inputs[i] += 1,
                    _ => {}
                }
            }
            let parent = dom.parent[i];
            if parent == usize::MAX {
                continue;
            }
            this.text_len[parent] += this.text_len[i];
            this.link_len[parent] += this.link_len[i];
            this.commas[parent] += this.commas[i];
            this.paragraphs[parent] += this.paragraphs[i];
            this.list_items[parent] += this.list_items[i];
            this.images[parent] += this.images[i];
            this.inputs[parent] += this.inputs[i];
            if dom.element(i).is_some_and(|e| is_block_tag(e.name())) {
                this.has_block_child[parent] = true;
            }
        }
        this
    }

    fn link_density(&self, i: usize) -> f64 {
        if self.text_len[i] == 0 {
            return 0.0;
        }
        f64::from(self.link_len[i]) / f64::from(self.text_len[i])
    }

    /// Scores candidates and renders the best container with its siblings.
    fn extract(&self) -> String {
        let Some(body) = self.dom.find_tag("body") else {
            return String::new();
        };
        let roots = match self.top_candidate(body) {
            Some(top) => {
                let mut roots = self.with_siblings(top, body);
                self.add_twins(top, &mut roots);
                roots
            }
            None => vec![body],
        };
        self.render(&roots)
    }

    fn top_candidate(&self, body: usize) -> Option<usize> {
        let dom = self.dom;
        let n = dom.len();
        let mut score = vec![0f64; n];
        let mut scored = vec![false; n];
        for o in body..dom.end[body] {
            if self.excluded[o] || self.own_len[o] < MIN_PARAGRAPH_LEN {
                continue;
            }
            let name = dom.tag(o);
            let container = matches!(
                name,
                "div" | "section" | "article" | "main" | "body" | "center" | "blockquote"
            );
            let paragraph = matches!(name, "p" | "pre" | "td" | "h2" | "h3" | "h4" | "h5" | "h6");
            if !(container || paragraph) || self.own_link_len[o] * 2 > self.own_len[o] {
                continue;
            }
            let points = 1.0
                + f64::from(self.own_commas[o])
                + (f64::from(self.own_len[o]) / 100.0).floor().min(3.0);
            let mut node = if container && self.has_block_child[o] {
                o
            } else {
                dom.parent[o]
            };
            let mut level = 0usize;
            while node != usize::MAX && level < 5 && dom.element(node).is_some() {
                if dom.tag(node) == "html" {
                    break;
                }
                if !scored[node] {
                    score[node] = self.initial_score(node);
                    scored[node] = true;
                }
                let divider = match level {
                    0 => 1.0,
                    1 => 2.0,
                    l => (l * 3) as f64,
                };
                score[node] += points / divider;
                node = dom.parent[node];
                level += 1;
            }
        }
        let mut candidates: Vec<(usize, f64)> = (0..n)
            .filter(|&i| scored[i])
            .map(|i| (i, score[i] * (1.0 - self.link_density(i))))
            .collect();
        for (i, s) in &candidates {
            score[*i] = *s;
        }
        candidates.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let &(mut top, top_score) = candidates.first()?;

        // Several strong candidates under one ancestor: the ancestor is the article.
        let alternatives: Vec<usize> = candidates
            .iter()
            .skip(1)
            .take(TOP_CANDIDATES - 1)
            .filter(|(_, s)| *s / top_score >= 0.75)
            .map(|(i, _)| *i)
            .collect();
        if alternatives.len() >= 3 {
            let mut ancestor = dom.parent[top];
            while ancestor != usize::MAX && ancestor != body && ancestor >= body {
                let holding = alternatives
                    .iter()
                    .filter(|&&a| a > ancestor && a < dom.end[ancestor])
                    .count();
                if holding >= 3 {
                    top = ancestor;
                    break;
                }
                ancestor = dom.parent[ancestor];
            }
        }

        // Climb while the parent scores higher than the node.
        let mut last = score[top];
        let threshold = last / 3.0;
        let mut parent = dom.parent[top];
        while parent != usize::MAX && parent != body && dom.element(parent).is_some() {
            if !scored[parent] {
                parent = dom.parent[parent];
                continue;
            }
            if score[parent] < threshold {
                break;
            }
            if score[parent] > last {
                top = parent;
                break;
            }
            last = score[parent];
            parent = dom.parent[parent];
        }

        // An only child stands for its parent.
        loop {
            let parent = dom.parent[top];
            if parent == usize::MAX || parent == body || dom.element(parent).is_none() {
                break;
            }
            if self.element_children(parent).count() != 1 {
                break;
            }
            top = parent;
        }
        Some(top)
    }

    fn initial_score(&self, i: usize) -> f64 {
        let base = match self.dom.tag(i) {
            "div" | "article" | "main" => 5.0,
            "pre" | "td" | "blockquote" => 3.0,
            "address" | "ol" | "ul" | "dl" | "dd" | "dt" | "li" | "form" => -3.0,
            "h1" | "h2" | "h3" | "h4" | "h5" | "h6" | "th" => -5.0,
            _ => 0.0,
        };
        base + f64::from(self.weight[i])
    }

    fn element_children(&self, parent: usize) -> impl Iterator<Item = usize> + '_ {
        let dom = self.dom;
        let mut j = parent + 1;
        std::iter::from_fn(move || {
            while j < dom.end[parent] {
                let here = j;
                j = dom.end[here];
                if dom.element(here).is_some() {
                    return Some(here);
                }
            }
            None
        })
    }

    /// The top candidate plus the siblings that look like more of the article.
    fn with_siblings(&self, top: usize, body: usize) -> Vec<usize> {
        let dom = self.dom;
        let parent = dom.parent[top];
        if top == body || parent == usize::MAX || dom.element(parent).is_none() {
            return vec![top];
        }
        let top_weight = self.sibling_score(top);
        let threshold = (top_weight * 0.2).max(10.0);
        let top_class = dom.element(top).and_then(|e| e.attr("class")).unwrap_or("");
        let mut roots = Vec::new();
        for sibling in self.element_children(parent) {
            if sibling == top {
                roots.push(sibling);
                continue;
            }
            if self.excluded[sibling] || self.skip_in_output(sibling) {
                continue;
            }
            let class = dom
                .element(sibling)
                .and_then(|e| e.attr("class"))
                .unwrap_or("");
            let bonus = if !top_class.is_empty() && class == top_class {
                top_weight * 0.2
            } else {
                0.0
            };
            if self.sibling_score(sibling) + bonus >= threshold {
                roots.push(sibling);
                continue;
            }
            if dom.tag(sibling) == "p" {
                let len = self.text_len[sibling];
                let density = self.link_density(sibling);
                let text = self.kept_text(sibling);
                let sentence = text.contains(". ") || text.trim_end().ends_with('.');
                if (len > 80 && density < 0.25) || (len > 0 && density == 0.0 && sentence) {
                    roots.push(sibling);
                }
            }
        }
        roots
    }

    /// Adds the elements elsewhere on the page that share the top candidate's
    /// tag and class and hold prose: articles split by ad rows or "read more"
    /// wrappers into several `div.story-text`s.
    fn add_twins(&self, top: usize, roots: &mut Vec<usize>) {
        let dom = self.dom;
        let Some(class) = dom.element(top).and_then(|e| e.attr("class")) else {
            return;
        };
        if class.trim().is_empty() {
            return;
        }
        let tag = dom.tag(top);
        // End of the chosen root that holds node `i`, if one does.
        let inside_root = |roots: &[usize], i: usize| {
            roots
                .iter()
                .filter(|&&r| r <= i && i < dom.end[r])
                .map(|&r| dom.end[r])
                .max()
        };
        let mut i = 0;
        while i < dom.len() {
            if self.excluded[i] {
                i = dom.end[i];
                continue;
            }
            if let Some(end) = inside_root(roots, i) {
                i = end;
                continue;
            }
            let holds_root = roots.iter().any(|&r| r > i && r < dom.end[i]);
            let twin = !holds_root
                && dom.tag(i) == tag
                && dom.element(i).and_then(|e| e.attr("class")) == Some(class)
                && self.text_len[i] >= 100
                && self.link_density(i) < 0.3;
            if twin {
                roots.push(i);
                i = dom.end[i];
            } else {
                i += 1;
            }
        }
        roots.sort_unstable();
    }

    /// A container's score recomputed cheaply for sibling comparison: its kept
    /// text in hundreds of characters, weighted and discounted by links.
    fn sibling_score(&self, i: usize) -> f64 {
        let text = f64::from(self.text_len[i]) / 100.0 + f64::from(self.commas[i]);
        (text + self.initial_score(i).max(0.0)) * (1.0 - self.link_density(i))
    }

    fn render(&self, roots: &[usize]) -> String {
        render(self.dom, roots, &|i| self.skip_in_output(i))
    }

    /// Whether an element inside the chosen container is left out of the text.
    fn skip_in_output(&self, i: usize) -> bool {
        if self.excluded[i] {
            return true;
        }
        let Some(element) = self.dom.element(i) else {
            return false;
        };
        let name = element.name();
        if matches!(name, "h1" | "h2" | "h3" | "h4" | "h5" | "h6") {
            if self.weight[i] < 0 || self.link_density(i) > 0.33 {
                return true;
            }
            if let Some(title) = &self.title_key
                && matches!(name, "h1" | "h2")
                && self.text_len[i] <= 400
                && comparison_key(&self.kept_text(i)) == *title
            {
                return true;
            }
        }
        if self.text_len[i] <= 60 && self.is_furniture_text(i) {
            return true;
        }
        self.attempt != Attempt::NoCleaning
            && matches!(
                name,
                "div" | "section" | "ul" | "ol" | "table" | "header" | "dl" | "figure" | "span"
            )
            && self.clean_conditionally(i)
    }

    /// The kept (not excluded) text under `i`; a short-text probe, so it stops
    /// after a few thousand nodes.
    fn kept_text(&self, i: usize) -> String {
        const MAX_NODES: usize = 2_000;
        let dom = self.dom;
        let mut text = String::new();
        let mut j = i;
        let mut visited = 0;
        while j < dom.end[i] && visited < MAX_NODES {
            visited += 1;
            if j != i && self.excluded[j] {
                j = dom.end[j];
                continue;
            }
            if let Some(t) = dom.text(j) {
                text.push_str(t);
            }
            j += 1;
        }
        text
    }

    fn is_furniture_text(&self, i: usize) -> bool {
        if self.text_len[i] == 0 {
            return false;
        }
        let lower = super::text::collapse_whitespace(&self.kept_text(i)).to_lowercase();
        let trimmed = lower.trim_end_matches([':', '.', '!', '»', '›', '>', ' ', '…']);
        FURNITURE_PHRASES.contains(&trimmed)
            || FURNITURE_PREFIXES.iter().any(|p| lower.starts_with(p))
    }

    /// Readability's conditional cleaning, simplified: link lists, image and
    /// form blocks, and short link-bearing fragments go.
    fn clean_conditionally(&self, i: usize) -> bool {
        let weight = self.weight[i];
        if weight < 0 {
            return true;
        }
        if self.commas[i] >= 10 {
            return false;
        }
        let name = self.dom.tag(i);
        let is_list = matches!(name, "ul" | "ol");
        let p = self.paragraphs[i];
        let images = self.images[i];
        let items = self.list_items[i];
        let density = self.link_density(i);
        let length = self.text_len[i];
        if images > 1 && f64::from(p) / f64::from(images) < 0.5 && length < 200 {
            return true;
        }
        if !is_list && items > p + 1 && density > 0.2 {
            return true;
        }
        if self.inputs[i] > p / 3 {
            return true;
        }
        if !is_list && length < MIN_PARAGRAPH_LEN && (images == 0 || images > 2) && density > 0.0 {
            return true;
        }
        if is_list {
            return density > 0.5;
        }
        if weight < 25 && density > 0.25 {
            return true;
        }
        weight >= 25 && density > 0.5
    }
}

/// For each node, whether it is or contains an article-container marker.
fn main_marker_ancestry(dom: &FlatDom<'_>) -> Vec<bool> {
    let n = dom.len();
    let mut marked = vec![false; n];
    for i in (0..n).rev() {
        if let Some(element) = dom.element(i) {
            let hints = class_and_id(element);
            if hints
                .split_ascii_whitespace()
                .any(|t| MAIN_MARKERS.contains(&t))
                || element
                    .attr("itemprop")
                    .is_some_and(|p| p.eq_ignore_ascii_case("articleBody"))
            {
                marked[i] = true;
            }
        }
        let parent = dom.parent[i];
        if marked[i] && parent != usize::MAX {
            marked[parent] = true;
        }
    }
    marked
}

/// Lower-case `class` and `id`, space-separated.
fn class_and_id(element: &scraper::node::Element) -> String {
    let mut hints = String::new();
    for attr in ["class", "id"] {
        if let Some(v) = element.attr(attr) {
            hints.push_str(&v.to_ascii_lowercase());
            hints.push(' ');
        }
    }
    hints
}

fn contains_any(hints: &str, fragments: &[&str]) -> bool {
    !hints.is_empty() && fragments.iter().any(|f| hints.contains(f))
}

fn is_boilerplate(hints: &str) -> bool {
    if hints.is_empty() {
        return false;
    }
    contains_any(hints, BOILERPLATE)
        || hints
            .split(|c: char| !c.is_ascii_alphanumeric())
            .any(|token| AD_TOKENS.contains(&token))
}

/// Readability's class weight: ±25 for each of `class` and `id`.
fn class_weight(element: &scraper::node::Element) -> i32 {
    let mut weight = 0;
    for attr in ["class", "id"] {
        let Some(value) = element.attr(attr) else {
            continue;
        };
        let value = value.to_ascii_lowercase();
        if contains_any(&value, NEGATIVE) {
            weight -= 25;
        }
        if contains_any(&value, POSITIVE) {
            weight += 25;
        }
    }
    weight
}

#[cfg(test)]
mod tests {
    use super::*;
    use scraper::Html;

    fn text_of(html: &str) -> String {
        let document = Html::parse_document(html);
        let dom = FlatDom::of(&document);
        main_text(&dom, None)
    }

    fn paragraphs(n: usize, word: &str) -> String {
        (0..n)
            .map(|i| {
                format!(
                    "<p>{word} paragraph {i} tells the story at length, with commas, clauses, and detail enough to count as prose.</p>"
                )
            })
            .collect()
    }

    #[test]
    fn the_container_with_the_most_prose_wins_over_navigation_and_sidebars() {
        let html = format!(
            r#"<body><div id="menu"><a href="/a">Home</a> <a href="/b">World</a></div>
            <div class="sidebar">{}</div>
            <div class="main-column"><div class="story">{}</div></div>
            <div id="footer">Copyright notice for the whole site, all rights reserved.</div></body>"#,
            paragraphs(2, "Sidebar"),
            paragraphs(6, "Story")
        );
        let text = text_of(&html);
        assert!(text.starts_with("Story paragraph 0"), "{text}");
        assert!(text.contains("Story paragraph 5"));
        assert!(!text.contains("Sidebar"));
        assert!(!text.contains("Home"));
        assert!(!text.contains("Copyright"));
    }

    #[test]
    fn share_bars_related_lists_and_ad_slots_inside_the_article_are_cleaned() {
        let html = format!(
            r#"<body><article><div class="entry-content">{}
            <div class="share-bar"><a href="/fb">Facebook</a><a href="/tw">Twitter</a></div>
            <div class="ad-slot">Advertisement</div>
            <p>Advertisement</p>
            <ul><li><a href="/1">First related headline here</a></li><li><a href="/2">Second related headline</a></li></ul>
            {}</div>
            <div class="jp-relatedposts"><h3>Related</h3><p><a href="/3">Another story</a></p></div>
            </article></body>"#,
            paragraphs(3, "Lead"),
            paragraphs(2, "Tail")
        );
        let text = text_of(&html);
        assert!(
            text.contains("Lead paragraph 0") && text.contains("Tail paragraph 1"),
            "{text}"
        );
        for junk in [
            "Facebook",
            "Advertisement",
            "related headline",
            "Another story",
            "Related",
        ] {
            assert!(!text.contains(junk), "{junk} leaked: {text}");
        }
    }

    #[test]
    fn bare_text_in_divs_is_found() {
        let html = format!(
            "<body><article><div>{}</div><div>{}</div></article></body>",
            "Plain text straight inside a div, with commas, and clauses, and more. ".repeat(5),
            "A second block of bare text, also long enough, to count as prose here. ".repeat(5)
        );
        let text = text_of(&html);
        assert!(text.starts_with("Plain text straight"), "{text}");
        assert!(text.contains("\n\nA second block"), "{text}");
    }

    #[test]
    fn a_heading_repeating_the_title_is_dropped() {
        let html = format!(
            "<body><article><h1>The Title Here</h1>{}</article></body>",
            paragraphs(3, "Body")
        );
        let document = Html::parse_document(&html);
        let dom = FlatDom::of(&document);
        let text = main_text(&dom, Some("The title here"));
        assert!(text.starts_with("Body paragraph 0"), "{text}");
    }

    #[test]
    fn a_page_without_a_body_gives_no_text() {
        assert_eq!(text_of(""), "");
    }
}
