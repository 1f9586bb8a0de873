//! HTML → plain text: the last step of article extraction, and the way feed
//! `content:encoded` fragments become story text before normalising and matching.
//!
//! The DOM is first flattened into document order ([`FlatDom`]): a subtree is then
//! a contiguous index range, so every walk here (and in the main-text heuristic) is
//! a loop over indices with an explicit stack — a 100,000-deep page cannot overflow
//! the call stack. Rendering keeps paragraphs as `"\n\n"`-separated blocks, line
//! breaks (`<br>`) as `"\n"`, and collapses every other whitespace run to one space.

use ego_tree::NodeRef;
use ego_tree::iter::Edge;
use scraper::{Html, Node};

use crate::text::markup::{BLOCK_TAGS, FURNITURE_TAGS, HIDDEN_TAGS};

/// Whether an element of this (lower-case) name is never rendered as text.
pub(crate) fn is_skipped_tag(name: &str) -> bool {
    HIDDEN_TAGS.contains(&name) || FURNITURE_TAGS.contains(&name)
}

/// Whether an element of this (lower-case) name is a paragraph-level block.
pub(crate) fn is_block_tag(name: &str) -> bool {
    BLOCK_TAGS.contains(&name)
}

/// Whether an element is hidden from readers by its attributes
/// (`hidden`, `aria-hidden="true"` is deliberately not included: icons only).
pub(crate) fn is_hidden(element: &scraper::node::Element) -> bool {
    if element.attr("hidden").is_some() {
        return true;
    }
    match element.attr("style") {
        Some(style) => {
            let compact: String = style
                .chars()
                .filter(|c| !c.is_whitespace())
                .flat_map(char::to_lowercase)
                .collect();
            compact.contains("display:none") || compact.contains("visibility:hidden")
        }
        None => false,
    }
}

/// A document flattened into pre-order: node `i`'s subtree is `i..end[i]`.
pub(crate) struct FlatDom<'a> {
    /// Every node of the tree, in document order.
    pub(crate) nodes: Vec<NodeRef<'a, Node>>,
    /// Index of each node's parent (`usize::MAX` for the root).
    pub(crate) parent: Vec<usize>,
    /// Exclusive end of each node's subtree.
    pub(crate) end: Vec<usize>,
}

impl<'a> FlatDom<'a> {
    /// Flattens a whole parsed document.
    pub(crate) fn of(html: &'a Html) -> Self {
        Self::build(html.tree.root())
    }

    /// Flattens the subtree under `root` (iteratively, via ego-tree's traversal).
    pub(crate) fn build(root: NodeRef<'a, Node>) -> Self {
        let mut nodes = Vec::new();
        let mut parent = Vec::new();
        let mut end = Vec::new();
        let mut open: Vec<usize> = Vec::new();
        for edge in root.traverse() {
            match edge {
                Edge::Open(node) => {
                    let index = nodes.len();
                    nodes.push(node);
                    parent.push(open.last().copied().unwrap_or(usize::MAX));
                    end.push(index + 1);
                    open.push(index);
                }
                Edge::Close(_) => {
                    if let Some(index) = open.pop() {
                        end[index] = nodes.len();
                    }
                }
            }
        }
        Self { nodes, parent, end }
    }

    /// Number of nodes.
    pub(crate) fn len(&self) -> usize {
        self.nodes.len()
    }

    /// The element at `i`, if that node is an element.
    pub(crate) fn element(&self, i: usize) -> Option<&'a scraper::node::Element> {
        self.nodes[i].value().as_element()
    }

    /// The lower-case local name of the element at `i` (`""` for other nodes).
    pub(crate) fn tag(&self, i: usize) -> &'a str {
        self.element(i).map_or("", |e| e.name())
    }

    /// The text of the node at `i`, if it is a text node.
    pub(crate) fn text(&self, i: usize) -> Option<&'a str> {
        self.nodes[i].value().as_text().map(|t| &**t)
    }

    /// Index of the first element named `name` (document order).
    pub(crate) fn find_tag(&self, name: &str) -> Option<usize> {
        (0..self.len()).find(|&i| self.tag(i) == name)
    }
}

/// What separates the next piece of text from the previous one.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Gap {
    None,
    Space,
    Line,
    Paragraph,
}

/// Accumulates text, collapsing whitespace and merging breaks.
pub(crate) struct TextBuilder {
    out: String,
    gap: Gap,
}

impl TextBuilder {
    pub(crate) fn new() -> Self {
        Self {
            out: String::new(),
            gap: Gap::None,
        }
    }

    fn want(&mut self, gap: Gap) {
        if gap > self.gap {
            self.gap = gap;
        }
    }

    /// Ends the current paragraph.
    pub(crate) fn paragraph_break(&mut self) {
        self.want(Gap::Paragraph);
    }

    /// Ends the current line (`<br>`); two in a row end the paragraph.
    pub(crate) fn line_break(&mut self) {
        if self.gap == Gap::Line {
            self.gap = Gap::Paragraph;
        } else {
            self.want(Gap::Line);
        }
    }

    /// A word boundary (between table cells, say).
    pub(crate) fn space(&mut self) {
        self.want(Gap::Space);
    }

    /// Appends text; `preformatted` keeps its newlines as line breaks.
    pub(crate) fn push(&mut self, text: &str, preformatted: bool) {
        for c in text.chars() {
            match c {
                '\n' if preformatted => self.line_break_in_pre(),
                '\u{200b}' | '\u{200c}' | '\u{200d}' | '\u{feff}' | '\u{ad}' => {}
                c if c.is_whitespace() => self.want(Gap::Space),
                c => {
                    if !self.out.is_empty() {
                        match self.gap {
                            Gap::None => {}
                            Gap::Space => self.out.push(' '),
                            Gap::Line => self.out.push('\n'),
                            Gap::Paragraph => self.out.push_str("\n\n"),
                        }
                    }
                    self.gap = Gap::None;
                    self.out.push(c);
                }
            }
        }
    }

    fn line_break_in_pre(&mut self) {
        self.want(Gap::Line);
    }

    pub(crate) fn finish(self) -> String {
        self.out
    }
}

/// Whether the node at `i` is left out of plain text by default: a skipped tag
/// or a hidden element.
pub(crate) fn skipped_by_default(dom: &FlatDom<'_>, i: usize) -> bool {
    dom.element(i)
        .is_some_and(|e| is_skipped_tag(e.name()) || is_hidden(e))
}

/// Renders the subtrees rooted at `roots` (in the given order) as text, leaving
/// out every element below a root for which `skip` is true.
pub(crate) fn render(dom: &FlatDom<'_>, roots: &[usize], skip: &dyn Fn(usize) -> bool) -> String {
    let mut out = TextBuilder::new();
    for &root in roots {
        render_into(dom, root, skip, &mut out);
        out.paragraph_break();
    }
    out.finish()
}

/// Renders one subtree into `out`.
pub(crate) fn render_into(
    dom: &FlatDom<'_>,
    root: usize,
    skip: &dyn Fn(usize) -> bool,
    out: &mut TextBuilder,
) {
    // Ends of the open block elements, innermost last.
    let mut blocks: Vec<usize> = Vec::new();
    // Ends of the open `<pre>` elements.
    let mut pres: Vec<usize> = Vec::new();
    // Ends of open table cells (a cell boundary is a word boundary).
    let mut cells: Vec<usize> = Vec::new();
    let stop = dom.end[root];
    let mut i = root;
    while i < stop {
        close_finished(&mut blocks, i, || out.paragraph_break());
        close_finished(&mut cells, i, || out.space());
        while pres.last().is_some_and(|&e| e <= i) {
            pres.pop();
        }
        if let Some(text) = dom.text(i) {
            out.push(text, !pres.is_empty());
            i += 1;
            continue;
        }
        let Some(element) = dom.element(i) else {
            // Document, comment, doctype…: comments have no children, the
            // document node's children follow.
            i = if dom.nodes[i].value().is_document() || dom.nodes[i].value().is_fragment() {
                i + 1
            } else {
                dom.end[i]
            };
            continue;
        };
        let name = element.name();
        if i != root && skip(i) {
            i = dom.end[i];
            continue;
        }
        match name {
            "br" => out.line_break(),
            "td" | "th" => {
                out.space();
                cells.push(dom.end[i]);
            }
            "pre" => {
                out.paragraph_break();
                blocks.push(dom.end[i]);
                pres.push(dom.end[i]);
            }
            "img" | "wbr" => {}
            _ if is_block_tag(name) => {
                out.paragraph_break();
                blocks.push(dom.end[i]);
            }
            _ => {}
        }
        i += 1;
    }
    close_finished(&mut blocks, stop, || out.paragraph_break());
}

fn close_finished(stack: &mut Vec<usize>, at: usize, mut on_close: impl FnMut()) {
    while stack.last().is_some_and(|&e| e <= at) {
        stack.pop();
        on_close();
    }
}

/// Deepest element nesting kept when parsing (Blink's parser caps it at 512 too).
const MAX_NESTING: usize = 512;

/// Elements that never have content (their end tag, if any, is ignored).
const VOID_TAGS: &[&str] = &[
    "area", "base", "br", "col", "embed", "hr", "img", "input", "keygen", "link", "meta", "param",
    "source", "track", "wbr", "basefont", "bgsound", "frame", "image",
];
/// Elements whose end tag may be omitted: not counted, since pages often leave them open.
const OPTIONAL_END_TAGS: &[&str] = &[
    "p", "li", "dt", "dd", "option", "optgroup", "tr", "td", "th", "tbody", "thead", "tfoot", "rb",
    "rp", "rt", "rtc", "colgroup", "caption", "html", "head", "body",
];
/// Elements the HTML parser never nests in themselves (a new one closes the
/// open one): they cannot build depth, so they are neither counted nor dropped.
const SELF_CLOSING_NESTS: &[&str] = &[
    "a", "h1", "h2", "h3", "h4", "h5", "h6", "button", "nobr", "form", "select",
];
/// Elements whose content is raw text up to their end tag.
const RAW_TEXT_TAGS: &[&str] = &[
    "script",
    "style",
    "textarea",
    "title",
    "xmp",
    "iframe",
    "noembed",
    "noframes",
    "noscript",
    "plaintext",
];

/// Parses a page as a document, nesting capped at [`MAX_NESTING`] first.
///
/// html5ever walks its stack of open elements on every block start tag, so a
/// page of 100,000 nested `<div>`s takes about a minute to parse; dropping the
/// tags nested deeper than the cap (their text is kept) makes it linear again.
pub(crate) fn parse_document(html: &str) -> Html {
    Html::parse_document(&limit_nesting(html, MAX_NESTING))
}

/// Removes start and end tags nested deeper than `max_depth` (counting only
/// elements that are normally closed), keeping all text. Borrows when nothing
/// is that deep.
pub(crate) fn limit_nesting(html: &str, max_depth: usize) -> std::borrow::Cow<'_, str> {
    let bytes = html.as_bytes();
    let mut out: Option<String> = None;
    let mut copied_to = 0usize;
    let mut depth = 0usize;
    let mut i = 0usize;
    while let Some(offset) = bytes[i..].iter().position(|&b| b == b'<') {
        let start = i + offset;
        let rest = &bytes[start + 1..];
        if rest.starts_with(b"!--") {
            i = find_from(bytes, start + 4, b"-->").map_or(bytes.len(), |e| e + 3);
            continue;
        }
        if rest.first().is_some_and(|&b| b == b'!' || b == b'?') {
            i = tag_end(bytes, start).unwrap_or(bytes.len());
            continue;
        }
        let closing = rest.first() == Some(&b'/');
        let name_start = start + 1 + usize::from(closing);
        let name_len = bytes[name_start..]
            .iter()
            .take_while(|b| b.is_ascii_alphanumeric() || **b == b'-' || **b == b':')
            .count();
        if name_len == 0 || !bytes[name_start].is_ascii_alphabetic() {
            i = start + 1;
            continue;
        }
        let name = html[name_start..name_start + name_len].to_ascii_lowercase();
        let Some(end) = tag_end(bytes, start) else {
            break;
        };
        let self_closing = end >= 2 && bytes[end - 2] == b'/';
        let raw_text = RAW_TEXT_TAGS.contains(&name.as_str());
        let counted = !VOID_TAGS.contains(&name.as_str())
            && !OPTIONAL_END_TAGS.contains(&name.as_str())
            && !SELF_CLOSING_NESTS.contains(&name.as_str())
            && !raw_text
            && !self_closing;
        let mut next = end;
        if !closing && raw_text {
            let close = format!("</{name}");
            next = find_ignore_case(bytes, end, close.as_bytes()).unwrap_or(bytes.len());
        }
        if counted {
            let drop_tag = if closing {
                let deep = depth > max_depth;
                depth = depth.saturating_sub(1);
                deep
            } else {
                depth += 1;
                depth > max_depth
            };
            if drop_tag {
                let buffer = out.get_or_insert_with(|| String::with_capacity(html.len()));
                buffer.push_str(&html[copied_to..start]);
                copied_to = end;
            }
        }
        i = next;
    }
    match out {
        Some(mut buffer) => {
            buffer.push_str(&html[copied_to..]);
            std::borrow::Cow::Owned(buffer)
        }
        None => std::borrow::Cow::Borrowed(html),
    }
}

/// Index just past the `>` that ends the tag starting at `start` (quotes respected).
fn tag_end(bytes: &[u8], start: usize) -> Option<usize> {
    let mut quote = None;
    for (offset, &b) in bytes[start..].iter().enumerate() {
        match quote {
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None if b == b'"' || b == b'\'' => quote = Some(b),
            None if b == b'>' => return Some(start + offset + 1),
            None => {}
        }
    }
    None
}

fn find_from(bytes: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    bytes
        .get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| from + p)
}

fn find_ignore_case(bytes: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    bytes
        .get(from..)?
        .windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle))
        .map(|p| from + p)
}

/// Plain text of an HTML document or fragment: paragraphs separated by `"\n\n"`,
/// entities decoded, whitespace collapsed inside paragraphs; scripts (of any
/// `type`), styles, `noscript`, `template`, `iframe`, `nav`, `aside`, `form`,
/// `button` and `svg` are left out.
pub fn html_to_text(html: &str) -> String {
    let document = parse_document(html);
    let dom = FlatDom::of(&document);
    render(&dom, &[0], &|i| skipped_by_default(&dom, i))
}

/// Collapses whitespace (and drops invisible characters) in a short string such
/// as a title or an attribute value.
pub(crate) fn collapse_whitespace(text: &str) -> String {
    let mut out = TextBuilder::new();
    out.push(text, false);
    out.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paragraphs_are_separated_by_blank_lines() {
        let text = html_to_text("<p>One  two\n three.</p><p>Four.</p>");
        assert_eq!(text, "One two three.\n\nFour.");
    }

    #[test]
    fn entities_are_decoded() {
        assert_eq!(
            html_to_text("<p>Fish &amp; chips &#8211; &lt;tasty&gt;&nbsp;now</p>"),
            "Fish & chips – <tasty> now"
        );
    }

    #[test]
    fn scripts_of_any_type_and_styles_are_skipped() {
        let html = r#"<div>Before<script type="pmdelayedscript">var x = "leak";</script>
            <script>alert(1)</script><style>p{color:red}</style><noscript>nojs</noscript>
            <template><p>tmpl</p></template>After</div>"#;
        assert_eq!(html_to_text(html), "Before After");
    }

    #[test]
    fn navigation_forms_buttons_and_embeds_are_skipped() {
        let html = r#"<nav><a href="/">Home</a></nav><p>Body</p><aside>Side</aside>
            <form><label>Email</label></form><button>Share</button><svg><text>icon</text></svg>
            <iframe src="x">frame</iframe>"#;
        assert_eq!(html_to_text(html), "Body");
    }

    #[test]
    fn inline_elements_do_not_split_words() {
        assert_eq!(
            html_to_text("<p>un<b>believ</b><i>able</i> <a href='#'>link</a></p>"),
            "unbelievable link"
        );
    }

    #[test]
    fn single_line_breaks_are_kept_and_double_ones_split_paragraphs() {
        assert_eq!(
            html_to_text("<p>line one<br>line two<br><br>new para</p>"),
            "line one\nline two\n\nnew para"
        );
    }

    #[test]
    fn list_items_and_headings_become_their_own_paragraphs() {
        assert_eq!(
            html_to_text("<h2>Head</h2><ul><li>a</li><li>b</li></ul>tail"),
            "Head\n\na\n\nb\n\ntail"
        );
    }

    #[test]
    fn table_cells_are_separated_by_spaces() {
        assert_eq!(
            html_to_text("<table><tr><td>a</td><td>b</td></tr><tr><td>c</td></tr></table>"),
            "a b\n\nc"
        );
    }

    #[test]
    fn preformatted_text_keeps_its_lines() {
        assert_eq!(html_to_text("<pre>a  b\nc</pre>"), "a b\nc");
    }

    #[test]
    fn hidden_elements_are_skipped() {
        assert_eq!(
            html_to_text(r#"<p>shown</p><p hidden>secret</p><div style="display: none">x</div>"#),
            "shown"
        );
    }

    #[test]
    fn a_full_document_loses_its_head() {
        let html = "<html><head><title>T</title><meta name=x content=y></head><body><p>B</p></body></html>";
        assert_eq!(html_to_text(html), "B");
    }

    #[test]
    fn empty_input_gives_empty_text() {
        assert_eq!(html_to_text(""), "");
        assert_eq!(html_to_text("<div>  </div>"), "");
    }

    #[test]
    fn a_hundred_thousand_nested_elements_render_quickly_on_a_small_stack() {
        let depth = 100_000;
        for tag in [
            "div", "span", "b", "table", "a", "h2", "ul", "li", "font", "section",
        ] {
            let html = format!(
                "{}<p>deep</p>{}<p>after</p>",
                format!("<{tag}>").repeat(depth),
                format!("</{tag}>").repeat(depth)
            );
            let started = std::time::Instant::now();
            let text = std::thread::Builder::new()
                .stack_size(2 * 1024 * 1024)
                .spawn(move || html_to_text(&html))
                .expect("spawn thread")
                .join()
                .expect("no stack overflow");
            assert_eq!(text, "deep\n\nafter", "{tag}");
            assert!(
                started.elapsed().as_secs() < 20,
                "{tag}: {:?}",
                started.elapsed()
            );
        }
    }

    #[test]
    fn nesting_below_the_cap_is_left_alone() {
        let html = "<div><div><p>x</div></div><script>if (a<b) {}</script>";
        assert!(matches!(
            limit_nesting(html, 2),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    #[test]
    fn tags_nested_past_the_cap_are_dropped_and_their_text_kept() {
        let html = "<div a='>'><section><div>deep<br></div>x</section></div>";
        assert_eq!(
            limit_nesting(html, 2),
            "<div a='>'><section>deep<br>x</section></div>"
        );
    }

    #[test]
    fn raw_text_and_comments_do_not_count_as_nesting() {
        let html = "<div><script><div><div><div></script><!-- <div><div> --><div>y</div></div>";
        assert!(matches!(
            limit_nesting(html, 2),
            std::borrow::Cow::Borrowed(_)
        ));
    }
}
