//! A benchmark farm of news feeds on loopback, for measuring `feedwatch once` and `run`
//! from the outside (issue 12): `--feeds` deterministic WordPress-style RSS 2.0 feeds at
//! `/feed/<i>.xml`, `--items` items each, served by one HTTP server on 127.0.0.1 with a
//! stable `ETag` and `Last-Modified` per feed and `304 Not Modified` to a conditional
//! request that names them. The article pages the items link to are served too (for
//! `full_text = true` sources).
//!
//! **Text.** Each item has a ~`--words`-word HTML body (paragraphs of sentences) drawn from
//! a fixed vocabulary of 4,000 words with a Zipf–Mandelbrot rank distribution (the most
//! frequent ones are real English function words, the rest made-up content words), so
//! that two different items share about as few word 3-shingles as two different news
//! stories do (well under 5 %). About 1 item in `--mention-every` (10) carries a sentence
//! about one of the default topics of `config.toml` (tariffs, EDA export controls,
//! counter-drone lasers), worded so that the shipped queries match it, and 1 item in
//! `--copy-every` (50) is a syndicated copy of an item of the next feed (new headline,
//! last paragraph dropped, 1 word in 25 changed), which near-duplicate detection should
//! store as a duplicate. Everything is a pure function of `--seed`, the feed and the item.
//!
//! **Control.** `GET /stats` returns the request counts as JSON (`ok` 200s of feeds,
//! `not_modified`, `pages`, `added`, `other`); `POST /feed/<i>/add?token=T` puts a new
//! item matching the `tariffs` topic at the top of feed `i` (its title contains `T`),
//! which changes the feed's validators; it answers with the item's link.
//!
//! `--check K` does not serve: it generates the first K feeds, runs them through the
//! daemon's own feed parser, normaliser, topic matcher (`--topics`, default `config.toml`)
//! and near-duplicate fingerprint, and prints what they see (topic matches, the word
//! 3-shingle overlap of random pairs of different items, the copies' similarity).
//!
//! ```text
//! cargo build --release --example farm
//! target/release/examples/farm --feeds 1000            # prints "farm listening on URL"
//! target/release/examples/farm --feeds 1000 --check 200
//! ```

use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, TimeZone, Utc};
use clap::Parser;
use unicode_segmentation::UnicodeSegmentation;

#[derive(Parser, Clone)]
#[command(about = "A farm of deterministic WordPress-style news feeds on loopback")]
struct Args {
    /// Number of feeds (`/feed/0.xml` … `/feed/<N-1>.xml`).
    #[arg(long, default_value_t = 1000)]
    feeds: usize,
    /// Items per feed.
    #[arg(long, default_value_t = 20)]
    items: usize,
    /// Words per item body (about).
    #[arg(long, default_value_t = 300)]
    words: usize,
    /// Seed of the text.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// One item in this many mentions a default topic (0: none).
    #[arg(long, default_value_t = 10)]
    mention_every: u64,
    /// One item in this many is an edited copy of an item of the next feed (0: none).
    #[arg(long, default_value_t = 50)]
    copy_every: u64,
    /// Port on 127.0.0.1 (0: any free port; the URL is printed on the first line).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Do not serve: generate the first K feeds and print what feedwatch's own code makes
    /// of them (topic matches, shingle overlap of random pairs, copies).
    #[arg(long, value_name = "K")]
    check: Option<usize>,
    /// Config whose `[[topics]]` `--check` matches against.
    #[arg(long, default_value = "config.toml")]
    topics: PathBuf,
}

// ---------------------------------------------------------------------------------------
// Deterministic randomness and the vocabulary
// ---------------------------------------------------------------------------------------

/// SplitMix64: small, fast, and the same on every platform and build.
struct Rng(u64);

impl Rng {
    fn new(parts: &[u64]) -> Rng {
        let mut state = 0x6661_726d_2d72_6e67; // "farm-rng"
        for &p in parts {
            state = mix(state ^ p);
        }
        Rng(state)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    /// Uniform in `0..n`.
    fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next()) * n as u128) >> 64) as usize
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.below(from.len())]
    }
}

fn mix(mut k: u64) -> u64 {
    k ^= k >> 30;
    k = k.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    k ^= k >> 27;
    k = k.wrapping_mul(0x94d0_49bb_1331_11eb);
    k ^ (k >> 31)
}

/// The most frequent words of English news prose, most frequent first: the head of the
/// rank distribution.
#[rustfmt::skip]
const FUNCTION_WORDS: &[&str] = &[
    "the", "of", "to", "and", "a", "in", "that", "for", "is", "on", "said", "with", "was",
    "as", "it", "by", "at", "from", "he", "be", "has", "have", "are", "his", "an", "its",
    "not", "but", "they", "were", "this", "which", "will", "their", "had", "been", "would",
    "who", "after", "also", "more", "year", "new", "over", "than", "she", "up", "about",
    "into", "last", "two", "there", "other", "people", "out", "some", "could", "when",
    "government", "told", "one", "her", "we", "all", "first", "or", "since", "city", "week",
    "state", "officials", "police", "before", "while", "under", "former", "three", "between",
    "according", "public", "minister", "years", "time", "may", "did", "say", "during",
    "against", "national", "local", "where", "because", "what", "council", "report",
];

/// Vocabulary size; ranks past the function words are made-up content words.
const VOCABULARY: usize = 4000;

/// Zipf–Mandelbrot: the weight of rank `r` (from 0) is `1 / (r + 2.7)`.
const ZIPF_SHIFT: f64 = 2.7;

/// Words a made-up word must not start with: the terms of the default topics, so that
/// only the planted mentions match.
#[rustfmt::skip]
const RESERVED_PREFIXES: &[&str] = &[
    "tarif", "levy", "levie", "duty", "duties", "impor", "expor", "good", "trade", "quota",
    "custom", "steel", "alumin", "surtax", "surcharge", "retaliat", "reciprocal", "shipment",
    "synops", "cadenc", "siemen", "mentor", "empyrean", "primarius", "xpeedic", "eda", "chip",
    "semicon", "silicon", "foundr", "processor", "licen", "vendor", "tool", "software",
    "design", "sanction", "blacklist", "embargo", "curb", "ban", "restrict", "entity", "laser",
    "drone", "uav", "uas", "helios", "helws", "dragonfire", "intercept", "kilowatt", "destroy",
    "downed", "quadcopter", "lidar", "ic", "beam", "energy", "weapon", "anti", "counter",
];

#[rustfmt::skip]
const ONSETS: &[&str] = &[
    "b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "z",
    "br", "cr", "dr", "fl", "gr", "pl", "pr", "st", "tr", "sh", "ch", "th",
];
#[rustfmt::skip]
const NUCLEI: &[&str] = &["a", "e", "i", "o", "u", "ai", "ea", "ou", "io"];
#[rustfmt::skip]
const CODAS: &[&str] = &["", "", "", "n", "r", "l", "s", "t", "m", "nd", "rt", "st", "ng"];

/// The vocabulary, most frequent first, and the cumulative rank weights to sample it.
struct Lexicon {
    words: Vec<String>,
    cumulative: Vec<f64>,
}

impl Lexicon {
    fn new() -> Lexicon {
        let mut seen: HashSet<String> = FUNCTION_WORDS.iter().map(|w| w.to_string()).collect();
        let mut words: Vec<String> = Vec::with_capacity(VOCABULARY);
        for w in FUNCTION_WORDS {
            if !words.iter().any(|x| x == w) {
                words.push(w.to_string());
            }
        }
        let mut rng = Rng::new(&[0x006c_6578_6963_6f6e]); // fixed: the vocabulary never changes
        while words.len() < VOCABULARY {
            let syllables = 2 + rng.below(2);
            let mut word = String::new();
            for _ in 0..syllables {
                word += rng.pick(ONSETS);
                word += rng.pick(NUCLEI);
                word += rng.pick(CODAS);
            }
            if word.len() < 5 || RESERVED_PREFIXES.iter().any(|p| word.starts_with(p)) {
                continue;
            }
            if seen.insert(word.clone()) {
                words.push(word);
            }
        }
        let mut total = 0.0;
        let cumulative = (0..words.len())
            .map(|r| {
                total += 1.0 / (r as f64 + ZIPF_SHIFT);
                total
            })
            .collect::<Vec<_>>();
        let cumulative = cumulative.into_iter().map(|c| c / total).collect();
        Lexicon { words, cumulative }
    }

    fn word(&self, rng: &mut Rng) -> &str {
        let u = rng.unit();
        let rank = self.cumulative.partition_point(|&c| c < u);
        &self.words[rank.min(self.words.len() - 1)]
    }

    /// A content word (past the function words), for headlines and names.
    fn content_word(&self, rng: &mut Rng) -> &str {
        loop {
            let w = self.word(rng);
            if !FUNCTION_WORDS.contains(&w) {
                return w;
            }
        }
    }
}

fn capitalized(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

// ---------------------------------------------------------------------------------------
// Items
// ---------------------------------------------------------------------------------------

/// The default topic an item mentions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mention {
    Tariffs,
    Eda,
    Lasers,
}

impl Mention {
    fn topic(self) -> &'static str {
        match self {
            Mention::Tariffs => "tariffs",
            Mention::Eda => "eda-export-controls",
            Mention::Lasers => "counter-drone-lasers",
        }
    }
}

#[rustfmt::skip]
const COUNTRIES: &[&str] = &[
    "Canada", "Mexico", "Brazil", "India", "Japan", "Vietnam", "Indonesia", "Australia",
    "Turkey", "Chile", "Norway", "Kenya", "Malaysia", "Thailand", "Peru", "Egypt",
];
#[rustfmt::skip]
const PRODUCTS: &[&str] = &[
    "solar panels", "electric vehicles", "frozen shrimp", "furniture", "copper wire",
    "tyres", "textiles", "wine", "soybeans", "glass fibre", "paper", "cement",
];
#[rustfmt::skip]
const WHEN: &[&str] = &[
    "next month", "on Monday", "from January", "within weeks", "this spring", "in March",
    "at midnight", "by the end of the quarter",
];
#[rustfmt::skip]
const PLACES: &[&str] = &[
    "the northern border", "a coastal range", "the desert test site", "an island base",
    "the capital", "a naval yard", "the southern plain", "an airfield",
];

/// A sentence pair about `mention`, with its slots drawn from `rng`, that the shipped
/// query of that topic matches.
fn mention_sentences(mention: Mention, rng: &mut Rng) -> String {
    match mention {
        Mention::Tariffs => format!(
            "{} said it would impose tariffs of {} per cent on {} from {} {}. Exporters warned \
             that the new tariffs would cut shipments and invite retaliation.",
            rng.pick(COUNTRIES),
            5 + rng.below(40),
            rng.pick(PRODUCTS),
            rng.pick(COUNTRIES),
            rng.pick(WHEN)
        ),
        Mention::Eda => format!(
            "{} tightened export controls on chip design software {}, cutting {} firms off from \
             tools made by Synopsys and Cadence. Analysts said the restrictions would slow {} \
             new processors.",
            [
                "Washington",
                "The Commerce Department",
                "Tokyo",
                "The Hague"
            ][rng.below(4)],
            rng.pick(WHEN),
            rng.pick(COUNTRIES),
            1 + rng.below(9)
        ),
        Mention::Lasers => format!(
            "The {} said a high energy laser weapon shot down {} drones during a test near {} {}. \
             Officers said each shot cost a few dollars of power.",
            ["army", "navy", "air force", "defence ministry"][rng.below(4)],
            2 + rng.below(20),
            rng.pick(PLACES),
            rng.pick(WHEN)
        ),
    }
}

/// A generated item: headline, author, paragraphs of plain text.
struct Item {
    title: String,
    author: String,
    paragraphs: Vec<String>,
}

/// Where an item sits: feed, item (0 = newest) and the global index `feed * items + item`.
#[derive(Clone, Copy)]
struct ItemId {
    feed: usize,
    item: usize,
}

/// Everything needed to generate the farm's text: a pure function of these.
struct Generator {
    lexicon: Lexicon,
    seed: u64,
    feeds: usize,
    items: usize,
    words: usize,
    mention_every: u64,
    copy_every: u64,
    /// Publication time of the newest base item; older ones step back from it.
    base: DateTime<Utc>,
    /// Gap between two consecutive base items (over all feeds).
    step_ms: i64,
}

impl Generator {
    fn new(args: &Args, base: DateTime<Utc>) -> Generator {
        let total = (args.feeds * args.items).max(1) as i64;
        // Everything within 36 hours, so every item is young enough to be alerted (2d).
        let step_ms = (36 * 3600 * 1000 / total).clamp(1, 60_000);
        Generator {
            lexicon: Lexicon::new(),
            seed: args.seed,
            feeds: args.feeds,
            items: args.items,
            words: args.words,
            mention_every: args.mention_every,
            copy_every: args.copy_every,
            base,
            step_ms,
        }
    }

    fn global(&self, id: ItemId) -> u64 {
        (id.feed * self.items + id.item) as u64
    }

    fn mention_of(&self, id: ItemId) -> Option<Mention> {
        let g = self.global(id);
        if self.mention_every == 0 || g % self.mention_every != 3 % self.mention_every {
            return None;
        }
        Some(
            [Mention::Tariffs, Mention::Eda, Mention::Lasers]
                [(g / self.mention_every % 3) as usize],
        )
    }

    /// The item this one is a syndicated copy of, if it is one.
    fn original_of(&self, id: ItemId) -> Option<ItemId> {
        if self.copy_every == 0 || self.feeds < 2 {
            return None;
        }
        let g = self.global(id);
        (g % self.copy_every == self.copy_every - 1).then_some(ItemId {
            feed: (id.feed + 1) % self.feeds,
            item: id.item,
        })
    }

    fn published(&self, id: ItemId) -> DateTime<Utc> {
        let rank = (id.item * self.feeds + id.feed) as i64;
        self.base - chrono::Duration::milliseconds(rank * self.step_ms)
    }

    fn headline(&self, rng: &mut Rng) -> String {
        let n = 6 + rng.below(6);
        let mut words: Vec<String> = Vec::with_capacity(n);
        for i in 0..n {
            let w = if i % 3 == 1 {
                self.lexicon.word(rng).to_string()
            } else {
                self.lexicon.content_word(rng).to_string()
            };
            words.push(if i == 0 { capitalized(&w) } else { w });
        }
        words.join(" ")
    }

    fn sentence(&self, rng: &mut Rng) -> (String, usize) {
        let n = 8 + rng.below(21);
        let mut s = String::new();
        for i in 0..n {
            let w = self.lexicon.word(rng);
            if i == 0 {
                s += &capitalized(w);
            } else {
                s.push(' ');
                s += w;
                if i + 2 < n && rng.below(12) == 0 {
                    s.push(',');
                }
            }
        }
        s.push('.');
        (s, n)
    }

    /// The base text of an item (before any copy edit).
    fn base_item(&self, id: ItemId) -> Item {
        let mut rng = Rng::new(&[self.seed, id.feed as u64, id.item as u64]);
        let title = self.headline(&mut rng);
        let author = format!(
            "{} {}",
            capitalized(self.lexicon.content_word(&mut rng)),
            capitalized(self.lexicon.content_word(&mut rng))
        );
        let mut paragraphs = Vec::new();
        let mut total = 0;
        while total < self.words {
            let mut p = String::new();
            for _ in 0..2 + rng.below(3) {
                let (s, n) = self.sentence(&mut rng);
                if !p.is_empty() {
                    p.push(' ');
                }
                p += &s;
                total += n;
                if total >= self.words {
                    break;
                }
            }
            paragraphs.push(p);
        }
        if let Some(mention) = self.mention_of(id) {
            let at = 1.min(paragraphs.len());
            paragraphs.insert(at, mention_sentences(mention, &mut rng));
        }
        Item {
            title,
            author,
            paragraphs,
        }
    }

    /// The item as served: a copy is its original with a new headline, the last paragraph
    /// dropped and 1 word in 25 replaced.
    fn item(&self, id: ItemId) -> Item {
        let Some(original) = self.original_of(id) else {
            return self.base_item(id);
        };
        let mut rng = Rng::new(&[self.seed, id.feed as u64, id.item as u64, 0xc0b1]);
        let mut item = self.base_item(original);
        item.title = self.headline(&mut rng);
        if item.paragraphs.len() > 2 {
            item.paragraphs.pop();
        }
        for p in &mut item.paragraphs {
            let edited: Vec<String> = p
                .split(' ')
                .map(|w| {
                    if rng.below(25) == 0 && w.chars().all(char::is_alphabetic) {
                        self.lexicon.word(&mut rng).to_string()
                    } else {
                        w.to_string()
                    }
                })
                .collect();
            *p = edited.join(" ");
        }
        item
    }
}

// ---------------------------------------------------------------------------------------
// Feeds and pages
// ---------------------------------------------------------------------------------------

/// An item added through `POST /feed/<i>/add`.
#[derive(Clone)]
struct AddedItem {
    n: usize,
    token: String,
    published: DateTime<Utc>,
}

/// What changes in a feed at run time.
#[derive(Default)]
struct FeedState {
    added: Vec<AddedItem>,
    last_modified: Option<DateTime<Utc>>,
}

struct Farm {
    generator: Generator,
    base_url: String,
    feeds: Vec<Mutex<FeedState>>,
    added_total: AtomicU64,
    stats: Stats,
}

#[derive(Default)]
struct Stats {
    ok: AtomicU64,
    not_modified: AtomicU64,
    pages: AtomicU64,
    added: AtomicU64,
    other: AtomicU64,
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn http_date(t: DateTime<Utc>) -> String {
    t.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

fn slug(title: &str) -> String {
    title
        .to_lowercase()
        .split_whitespace()
        .take(8)
        .collect::<Vec<_>>()
        .join("-")
}

impl Farm {
    fn item_link(&self, feed: usize, published: DateTime<Utc>, title: &str) -> String {
        format!(
            "{}/site/{feed}/{}/{}/",
            self.base_url,
            published.format("%Y/%m/%d"),
            slug(title)
        )
    }

    fn site_name(feed: usize) -> String {
        format!("Farm Outlet {feed}")
    }

    /// One base item as served, with its link and publication time.
    fn entry(&self, feed: usize, item: usize) -> (Item, String, DateTime<Utc>) {
        let id = ItemId { feed, item };
        let it = self.generator.item(id);
        let published = self.generator.published(id);
        let link = self.item_link(feed, published, &it.title);
        (it, link, published)
    }

    fn added_entry(&self, feed: usize, added: &AddedItem) -> (Item, String, DateTime<Utc>) {
        let mut rng = Rng::new(&[self.generator.seed, feed as u64, 0xadd, added.n as u64]);
        let mut item = self.generator.base_item(ItemId {
            feed,
            item: 1_000_000 + added.n,
        });
        item.title = format!("{} {}", self.generator.headline(&mut rng), added.token);
        item.paragraphs
            .insert(0, mention_sentences(Mention::Tariffs, &mut rng));
        let link = self.item_link(feed, added.published, &item.title);
        (item, link, added.published)
    }

    fn render_item(
        out: &mut String,
        site: &str,
        item: &Item,
        link: &str,
        published: DateTime<Utc>,
    ) {
        let body: String = item
            .paragraphs
            .iter()
            .map(|p| format!("<p>{}</p>\n", escape(p)))
            .collect();
        let first = item.paragraphs.first().map(String::as_str).unwrap_or("");
        let excerpt: String = first.split(' ').take(55).collect::<Vec<_>>().join(" ");
        let _ = write!(
            out,
            "\t<item>\n\t\t<title>{title}</title>\n\t\t<link>{link}</link>\n\
             \t\t<dc:creator><![CDATA[{author}]]></dc:creator>\n\t\t<pubDate>{date}</pubDate>\n\
             \t\t<category><![CDATA[News]]></category>\n\
             \t\t<guid isPermaLink=\"false\">{link}</guid>\n\
             \t\t<description><![CDATA[<p>{excerpt} [&#8230;]</p>\n<p>The post <a href=\"{link}\">{title}</a> \
             appeared first on <a href=\"{link}\">{site}</a>.</p>\n]]></description>\n\
             \t\t<content:encoded><![CDATA[{body}]]></content:encoded>\n\t</item>\n",
            title = escape(&item.title),
            author = item.author,
            date = published.to_rfc2822(),
            excerpt = escape(&excerpt),
        );
    }

    /// The feed document, newest item first: the added items, then the base ones, `items`
    /// in all.
    fn feed_xml(&self, feed: usize, added: &[AddedItem]) -> String {
        let site = Farm::site_name(feed);
        let mut out = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><rss version=\"2.0\"\n\
             \txmlns:content=\"http://purl.org/rss/1.0/modules/content/\"\n\
             \txmlns:wfw=\"http://wellformedweb.org/CommentAPI/\"\n\
             \txmlns:dc=\"http://purl.org/dc/elements/1.1/\"\n\
             \txmlns:atom=\"http://www.w3.org/2005/Atom\"\n\
             \txmlns:sy=\"http://purl.org/rss/1.0/modules/syndication/\"\n\
             \txmlns:slash=\"http://purl.org/rss/1.0/modules/slash/\">\n<channel>\n\
             \t<title>{site}</title>\n\
             \t<atom:link href=\"{base}/feed/{feed}.xml\" rel=\"self\" type=\"application/rss+xml\" />\n\
             \t<link>{base}/site/{feed}/</link>\n\t<description>News from {site}</description>\n\
             \t<lastBuildDate>{built}</lastBuildDate>\n\t<language>en-US</language>\n\
             \t<sy:updatePeriod>hourly</sy:updatePeriod>\n\t<sy:updateFrequency>1</sy:updateFrequency>\n\
             \t<generator>https://wordpress.org/?v=6.7.1</generator>\n",
            base = self.base_url,
            built = self.generator.base.to_rfc2822(),
        );
        let mut shown = 0;
        for a in added.iter().rev() {
            if shown == self.generator.items {
                break;
            }
            let (item, link, published) = self.added_entry(feed, a);
            Farm::render_item(&mut out, &site, &item, &link, published);
            shown += 1;
        }
        for i in 0..self.generator.items - shown {
            let (item, link, published) = self.entry(feed, i);
            Farm::render_item(&mut out, &site, &item, &link, published);
        }
        out += "</channel>\n</rss>\n";
        out
    }

    fn validators(&self, feed: usize, state: &FeedState) -> (String, DateTime<Utc>) {
        let tag = Rng::new(&[self.generator.seed, feed as u64, 0xe7a9]).next();
        (
            format!("\"{tag:016x}-{}\"", state.added.len()),
            state.last_modified.unwrap_or(self.generator.base),
        )
    }
}

// ---------------------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------------------

async fn feed(
    State(farm): State<Arc<Farm>>,
    Path(file): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(feed) = file
        .strip_suffix(".xml")
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|&n| n < farm.feeds.len())
    else {
        farm.stats.other.fetch_add(1, Ordering::Relaxed);
        return StatusCode::NOT_FOUND.into_response();
    };
    let (etag, modified, added) = {
        let state = farm.feeds[feed].lock().unwrap_or_else(|p| p.into_inner());
        let (etag, modified) = farm.validators(feed, &state);
        (etag, modified, state.added.clone())
    };
    let header_str = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    let fresh = match header_str(header::IF_NONE_MATCH) {
        Some(tags) => tags.split(',').any(|t| t.trim() == etag || t.trim() == "*"),
        None => header_str(header::IF_MODIFIED_SINCE)
            .and_then(|d| DateTime::parse_from_rfc2822(d).ok())
            .is_some_and(|since| since.with_timezone(&Utc).timestamp() >= modified.timestamp()),
    };
    let validators = [
        (header::ETAG, etag),
        (header::LAST_MODIFIED, http_date(modified)),
    ];
    if fresh {
        farm.stats.not_modified.fetch_add(1, Ordering::Relaxed);
        return (StatusCode::NOT_MODIFIED, validators).into_response();
    }
    farm.stats.ok.fetch_add(1, Ordering::Relaxed);
    let farm2 = farm.clone();
    let body = tokio::task::spawn_blocking(move || farm2.feed_xml(feed, &added))
        .await
        .unwrap_or_default();
    (
        validators,
        [(
            header::CONTENT_TYPE,
            "application/rss+xml; charset=UTF-8".to_string(),
        )],
        body,
    )
        .into_response()
}

/// An article page: `/site/<feed>/<y>/<m>/<d>/<slug>/`, found by its slug among the feed's
/// current items.
async fn page(State(farm): State<Arc<Farm>>, Path(rest): Path<String>) -> Response {
    let mut parts = rest.trim_end_matches('/').split('/');
    let feed = parts.next().and_then(|f| f.parse::<usize>().ok());
    let wanted = parts.next_back().unwrap_or("").to_string();
    let Some(feed) = feed.filter(|&f| f < farm.feeds.len()) else {
        farm.stats.other.fetch_add(1, Ordering::Relaxed);
        return StatusCode::NOT_FOUND.into_response();
    };
    let added = farm.feeds[feed]
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .added
        .clone();
    let farm2 = farm.clone();
    let found = tokio::task::spawn_blocking(move || {
        let entries = added
            .iter()
            .map(|a| farm2.added_entry(feed, a))
            .chain((0..farm2.generator.items).map(|i| farm2.entry(feed, i)));
        for (item, link, published) in entries {
            if slug(&item.title) == wanted {
                let body: String = item
                    .paragraphs
                    .iter()
                    .map(|p| format!("<p>{}</p>\n", escape(p)))
                    .collect();
                return Some(format!(
                    "<!DOCTYPE html><html lang=\"en-US\"><head><meta charset=\"UTF-8\">\
                     <title>{title} | {site}</title><link rel=\"canonical\" href=\"{link}\">\
                     <meta property=\"article:published_time\" content=\"{date}\"></head>\
                     <body><article><h1 class=\"entry-title\">{title}</h1>\
                     <div class=\"entry-content\">{body}</div></article></body></html>",
                    title = escape(&item.title),
                    site = Farm::site_name(feed),
                    date = published.to_rfc3339(),
                ));
            }
        }
        None
    })
    .await
    .ok()
    .flatten();
    match found {
        Some(html) => {
            farm.stats.pages.fetch_add(1, Ordering::Relaxed);
            ([(header::CONTENT_TYPE, "text/html; charset=UTF-8")], html).into_response()
        }
        None => {
            farm.stats.other.fetch_add(1, Ordering::Relaxed);
            StatusCode::NOT_FOUND.into_response()
        }
    }
}

#[derive(serde::Deserialize)]
struct AddQuery {
    token: Option<String>,
}

async fn add(
    State(farm): State<Arc<Farm>>,
    Path(feed): Path<usize>,
    Query(q): Query<AddQuery>,
) -> Response {
    if feed >= farm.feeds.len() {
        return StatusCode::NOT_FOUND.into_response();
    }
    let n = farm.added_total.fetch_add(1, Ordering::Relaxed) as usize;
    let now = Utc::now();
    // Whole seconds: Last-Modified carries no more.
    let now = Utc
        .timestamp_opt(now.timestamp(), 0)
        .single()
        .unwrap_or(now);
    let added = AddedItem {
        n,
        token: q.token.unwrap_or_else(|| format!("added{n}")),
        published: now,
    };
    let (_, link, _) = farm.added_entry(feed, &added);
    {
        let mut state = farm.feeds[feed].lock().unwrap_or_else(|p| p.into_inner());
        state.added.push(added);
        state.last_modified = Some(now);
    }
    farm.stats.added.fetch_add(1, Ordering::Relaxed);
    axum::Json(serde_json::json!({ "feed": feed, "link": link })).into_response()
}

async fn stats(State(farm): State<Arc<Farm>>) -> Response {
    let s = &farm.stats;
    axum::Json(serde_json::json!({
        "ok": s.ok.load(Ordering::Relaxed),
        "not_modified": s.not_modified.load(Ordering::Relaxed),
        "pages": s.pages.load(Ordering::Relaxed),
        "added": s.added.load(Ordering::Relaxed),
        "other": s.other.load(Ordering::Relaxed),
    }))
    .into_response()
}

/// Publication time of the newest item: now, to the second.
fn farm_base() -> DateTime<Utc> {
    let now = Utc::now();
    Utc.timestamp_opt(now.timestamp(), 0)
        .single()
        .unwrap_or(now)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.items > 0, "--items must be at least 1");
    if let Some(k) = args.check {
        return check(&args, k);
    }
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port)).await?;
    let addr = listener.local_addr()?;
    let farm = Arc::new(Farm {
        generator: Generator::new(&args, farm_base()),
        base_url: format!("http://{addr}"),
        feeds: (0..args.feeds).map(|_| Mutex::default()).collect(),
        added_total: AtomicU64::new(0),
        stats: Stats::default(),
    });
    let app = Router::new()
        .route("/feed/{feed}", get(feed))
        .route("/feed/{feed}/add", post(add))
        .route("/site/{*rest}", get(page))
        .route("/stats", get(stats))
        .with_state(farm.clone());
    println!("farm listening on http://{addr}/ ({} feeds)", args.feeds);
    axum::serve(listener, app).await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// --check: what feedwatch's own parser, matcher and fingerprint make of the farm
// ---------------------------------------------------------------------------------------

struct Checked {
    id: ItemId,
    mention: Option<Mention>,
    original: Option<ItemId>,
    topics: Vec<String>,
    shingles: HashSet<String>,
    fingerprint: feedwatch::dedup::Fingerprint,
}

fn shingles_of(body: &str) -> HashSet<String> {
    let normalized = feedwatch::dedup::normalize_body(body);
    let words: Vec<&str> = normalized.unicode_words().collect();
    words.windows(3).map(|w| w.join(" ")).collect()
}

fn jaccard(a: &HashSet<String>, b: &HashSet<String>) -> f64 {
    let shared = a.intersection(b).count();
    let union = a.len() + b.len() - shared;
    if union == 0 {
        0.0
    } else {
        shared as f64 / union as f64
    }
}

fn check(args: &Args, k: usize) -> anyhow::Result<()> {
    use feedwatch::normalize::{RawStory, normalize};
    use feedwatch::source::feed::parse_feed;
    use feedwatch::topics::TopicSet;

    let config = feedwatch::config::Config::load(&args.topics)?;
    let topics = TopicSet::compile(&config.topic_specs())?;
    let farm = Farm {
        generator: Generator::new(args, farm_base()),
        base_url: "http://127.0.0.1:8080".into(),
        feeds: (0..args.feeds).map(|_| Mutex::default()).collect(),
        added_total: AtomicU64::new(0),
        stats: Stats::default(),
    };
    let k = k.min(args.feeds);
    let mut checked: Vec<Checked> = Vec::new();
    let mut bytes = 0usize;
    let mut words = 0usize;
    for feed in 0..k {
        let xml = farm.feed_xml(feed, &[]);
        bytes += xml.len();
        let url = url::Url::parse(&format!("{}/feed/{feed}.xml", farm.base_url))?;
        let parsed = parse_feed(
            xml.as_bytes(),
            Some("application/rss+xml"),
            &url,
            Utc::now(),
        )?;
        anyhow::ensure!(
            parsed.entries.len() == args.items,
            "feed {feed}: {} entries",
            parsed.entries.len()
        );
        for (item, entry) in parsed.entries.into_iter().enumerate() {
            let story = normalize(RawStory {
                source_id: feed as i64,
                source_name: format!("farm-{feed}"),
                link: entry.link,
                guid: entry.guid,
                rel_canonical: None,
                title: entry.title,
                summary_html: entry.summary_html,
                body_html: entry.content_html,
                body_is_text: false,
                author: entry.author,
                published: entry.published,
                fetched_at: Utc::now(),
            });
            let title = story.title.clone().unwrap_or_default();
            words += story.body.unicode_words().count();
            let id = ItemId { feed, item };
            checked.push(Checked {
                id,
                mention: farm.generator.mention_of(id),
                original: farm.generator.original_of(id),
                topics: topics
                    .match_story(&title, &story.body)
                    .into_iter()
                    .map(|m| m.topic)
                    .collect(),
                shingles: shingles_of(&story.body),
                fingerprint: feedwatch::dedup::Fingerprint::of(&title, &story.body),
            });
        }
    }
    let n = checked.len();
    println!(
        "{k} feeds, {n} items: {:.1} KiB of XML per feed, {:.0} words per body (after normalising)",
        bytes as f64 / k.max(1) as f64 / 1024.0,
        words as f64 / n.max(1) as f64
    );

    // Topics: planted mentions (an item that is a copy carries its original's mention).
    let mut planted = 0;
    let mut planted_hit = 0;
    let mut stray = 0;
    let mut by_topic = std::collections::BTreeMap::<String, usize>::new();
    for c in &checked {
        let mention = match c.original {
            Some(o) => farm.generator.mention_of(o),
            None => c.mention,
        };
        for t in &c.topics {
            *by_topic.entry(t.clone()).or_default() += 1;
        }
        match mention {
            Some(m) => {
                planted += 1;
                if c.topics.iter().any(|t| t == m.topic()) {
                    planted_hit += 1;
                }
                stray += c.topics.iter().filter(|t| *t != m.topic()).count();
            }
            None => stray += c.topics.len(),
        }
    }
    println!(
        "topics: {planted} items carry a mention ({:.1} %), {planted_hit} of them match their topic; \
         {stray} matches elsewhere; matches by topic: {by_topic:?}",
        100.0 * planted as f64 / n.max(1) as f64
    );

    // Random pairs of different items (not a copy and its original).
    let mut rng = Rng::new(&[args.seed, 0x9a125]);
    let mut overlaps = Vec::new();
    let mut near = 0;
    let mut max_minhash: f64 = 0.0;
    let is_pair = |a: &Checked, b: &Checked| {
        let same = |x: ItemId, y: ItemId| x.feed == y.feed && x.item == y.item;
        a.original.is_some_and(|o| same(o, b.id)) || b.original.is_some_and(|o| same(o, a.id))
    };
    let pairs = 20_000.min(n * (n.saturating_sub(1)) / 2);
    while overlaps.len() < pairs {
        let (i, j) = (rng.below(n), rng.below(n));
        if i == j || is_pair(&checked[i], &checked[j]) {
            continue;
        }
        let (a, b) = (&checked[i], &checked[j]);
        overlaps.push(jaccard(&a.shingles, &b.shingles));
        max_minhash = max_minhash.max(a.fingerprint.similarity(&b.fingerprint));
        if a.fingerprint.is_near_duplicate(&b.fingerprint) {
            near += 1;
        }
    }
    overlaps.sort_by(f64::total_cmp);
    let q = |p: f64| overlaps[((overlaps.len() as f64 * p) as usize).min(overlaps.len() - 1)];
    let mean = overlaps.iter().sum::<f64>() / overlaps.len().max(1) as f64;
    let over5 = overlaps.iter().filter(|&&o| o >= 0.05).count();
    println!(
        "random pairs of different items ({}): word 3-shingle Jaccard mean {:.4} %, p50 {:.4} %, \
         p99 {:.4} %, max {:.4} %; {over5} pairs at 5 % or more; MinHash estimate max {:.3}; \
         near-duplicate verdicts {near}",
        overlaps.len(),
        100.0 * mean,
        100.0 * q(0.5),
        100.0 * q(0.99),
        100.0 * overlaps.last().copied().unwrap_or(0.0),
        max_minhash
    );

    // Copies against their originals (when the original is among the checked feeds).
    let mut copies = Vec::new();
    let mut copies_near = 0;
    for c in &checked {
        if let Some(o) = c.original
            && o.feed < k
        {
            let orig = &checked[o.feed * args.items + o.item];
            copies.push(jaccard(&c.shingles, &orig.shingles));
            if c.fingerprint.is_near_duplicate(&orig.fingerprint) {
                copies_near += 1;
            }
        }
    }
    if !copies.is_empty() {
        copies.sort_by(f64::total_cmp);
        println!(
            "copies ({}): word 3-shingle Jaccard with their original min {:.1} %, median {:.1} %; \
             near-duplicate verdicts {copies_near}",
            copies.len(),
            100.0 * copies[0],
            100.0 * copies[copies.len() / 2]
        );
    }
    Ok(())
}
