//! The compiled topic set: every topic's query compiled together once, then run over each
//! story in a single pass, however many topics there are.
//!
//! Place in the pipeline: after dedup, the matcher stage calls [`TopicSet::match_story`] for
//! every new or updated story and hands the [`TopicMatch`]es to the store (and so to the
//! outbox). It is pure and synchronous; the set is `Send + Sync` and meant to be shared
//! through an `Arc` and rebuilt only when the configuration changes.
//!
//! How a story is matched:
//! 1. Title and body are tokenised once ([`crate::topics::tokenize`]). Each word is walked down
//!    one byte trie holding every exact word and every prefix term (`tariff*`) of every query;
//!    the walk stops at the first byte no query word continues with, so most words cost a
//!    couple of steps. Each word or prefix found records a *hit* `(key, position)`. Phrases
//!    are keys too: where a phrase's first word hit, the following tokens are checked, and a
//!    phrase that is there records a hit of its own.
//! 2. At compile time every topic was reduced to *required groups*: sets of keys of which at
//!    least one must hit for the query to hold (one group per AND operand, one per OR as the
//!    union of its branches). Walking the posting lists of the keys that hit counts satisfied
//!    groups per topic; only topics with every group satisfied are evaluated. A topic none of
//!    whose positive terms occur costs nothing. The subtree under each NOT gets groups of its
//!    own, so an exclusion none of whose terms occur is skipped without being evaluated.
//! 3. A candidate's query tree is evaluated over the hit lists, first in a cheap pass that
//!    stops at the first OR branch that holds, then (if it holds) collecting every hit,
//!    `NEAR/N` by a windowed sweep over sorted positions. The hits inside the clauses that
//!    hold give the score (title hits count double), the terms and the snippet.
//!
//! Per-story working memory lives in a thread-local scratch area, so steady-state matching
//! allocates only the returned matches.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::ops::Range;

use crate::topics::query::{self, Field, Query, QueryError, Term};
use crate::topics::tokenize::for_each_word;

/// One configured topic: its name, its query (DESIGN §4) and the score a story needs.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicSpec {
    /// Topic name, `[a-z0-9-]+` (validated by the configuration, not here).
    pub name: String,
    /// Query in the topic query language.
    pub query: String,
    /// Smallest score that counts as a match (NaN never matches).
    pub min_score: f64,
}

/// A story matching one topic.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicMatch {
    /// Name of the topic.
    pub topic: String,
    /// Term hits inside the clauses that hold; title hits count 2, body hits 1.
    pub score: f64,
    /// Distinct words and phrases that hit, lowercased as they appear in the story, in order
    /// of first appearance (title first).
    pub terms: Vec<String>,
    /// About 20 words either side of the first hit (in the body if the body has a hit,
    /// otherwise in the title), with every hit in it marked `«like this»`.
    pub snippet: String,
}

/// Words of context either side of the first hit in a snippet.
const SNIPPET_WORDS: u32 = 20;

/// Marks an absent key or token field.
const NONE: u32 = u32::MAX;

/// Identifies one exact word, prefix term or phrase across the whole set.
type Key = u32;

/// All topics compiled together. Build once with [`TopicSet::compile`], share via `Arc`.
pub struct TopicSet {
    /// Every exact word and prefix term of every query → key.
    lexicon: Lexicon,
    /// Number of keys handed out (words, prefixes and phrases share one key space).
    key_count: usize,
    /// Words covered by a hit of each key: 1 for words and prefixes, the length for phrases.
    key_spans: Vec<u32>,
    /// Phrases of two or more words.
    phrases: Vec<Phrase>,
    /// One bit per key: some phrase starts with the word (most words are skipped on this alone).
    anchor_bits: Vec<u64>,
    /// A bit per hash of (first word, second word) of every phrase (see [`pair_bit`]): where
    /// a phrase's first word hit, the next token is tested against it before any phrase is
    /// looked at, so that only real pairs (and a few collisions) go further.
    pair_bits: Vec<u64>,
    /// `pair_bits` has `1 << (64 - pair_shift)` bits.
    pair_shift: u32,
    /// Phrases by first word; key `k`'s share is `anchored[anchored_starts[k]..anchored_starts[k + 1]]`.
    anchored: Vec<Anchored>,
    anchored_starts: Vec<u32>,
    /// While compiling: phrase (word keys, last is a prefix) → its key.
    phrase_keys: HashMap<(Box<[Key]>, bool), Key>,
    /// Longest phrase, in words; bounds the NEAR sweep.
    max_span: u32,
    /// Query trees of all topics.
    nodes: Vec<Node>,
    /// Child lists of `And`/`Or` nodes, indexed by their ranges.
    children: Vec<u32>,
    /// Beside `children`: the key of a child that is a plain word or prefix without field
    /// scope, else `NONE`. OR nodes list such children first and test them without recursing.
    child_keys: Vec<Key>,
    topics: Vec<CompiledTopic>,
    /// `postings[posting_starts[k]..posting_starts[k + 1]]`: the gate groups key `k`
    /// satisfies. Four bytes per key keep the starts of a large set mostly in cache.
    postings: Vec<Posting>,
    posting_starts: Vec<u32>,
    /// Per gate, the mask with a bit for each of its required groups. A gate is a subtree
    /// that cannot hold unless all its groups are satisfied: gate `t < topics.len()` is topic
    /// `t`'s whole query, the others are the subtrees under NOTs.
    gate_masks: Vec<u32>,
}

/// Most required groups a gate keeps. Gates only filter (whatever passes is evaluated in
/// full), so a gate with more groups keeps the first of them and stays correct.
const MAX_GATE_GROUPS: usize = 32;

/// One required group of one gate, listed under each key that satisfies it.
#[derive(Debug, Clone, Copy)]
struct Posting {
    gate: u32,
    /// The group's bit in the gate's mask.
    bit: u32,
}

/// A gate's state in the current story: `mask` holds the bits of its satisfied groups
/// when `stamp` is the story's epoch (and means nothing otherwise).
#[derive(Debug, Clone, Copy, Default)]
struct GateState {
    stamp: u32,
    mask: u32,
}

struct CompiledTopic {
    name: String,
    min_score: f64,
    root: u32,
}

/// A phrase listed under its first word, with its second word at hand to reject most
/// candidates without looking at the phrase itself.
#[derive(Debug, Clone, Copy)]
struct Anchored {
    second: Key,
    /// `second` is a prefix key (two-word phrase ending in `*`).
    second_is_prefix: bool,
    phrase: u32,
}

struct Phrase {
    /// One key per word.
    keys: Box<[Key]>,
    /// The last key is a prefix key.
    prefix_last: bool,
    /// The phrase's own key.
    key: Key,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    Any,
    Title,
    Body,
}

enum Node {
    /// A word, prefix or phrase.
    Key {
        key: Key,
        scope: Scope,
    },
    And(Range<u32>),
    /// `children[range.start..simple]` are plain keys (see `TopicSet::child_keys`).
    Or {
        children: Range<u32>,
        simple: u32,
    },
    /// `gate` is `NONE` when the subtree could hold without any term.
    Not {
        inner: u32,
        gate: u32,
    },
    Near {
        left: u32,
        right: u32,
        distance: u32,
    },
}

impl TopicSet {
    /// Parses and compiles every topic; the first bad query is returned as the error.
    pub fn compile(specs: &[TopicSpec]) -> Result<TopicSet, QueryError> {
        let mut set = TopicSet {
            lexicon: Lexicon::new(),
            key_count: 0,
            key_spans: Vec::new(),
            phrases: Vec::new(),
            anchor_bits: Vec::new(),
            pair_bits: Vec::new(),
            pair_shift: 0,
            anchored: Vec::new(),
            anchored_starts: Vec::new(),
            phrase_keys: HashMap::new(),
            max_span: 1,
            nodes: Vec::new(),
            children: Vec::new(),
            child_keys: Vec::new(),
            topics: Vec::new(),
            posting_starts: Vec::new(),
            postings: Vec::new(),
            gate_masks: Vec::new(),
        };
        let mut gates = Vec::new();
        for spec in specs {
            let tree = query::parse(&spec.name, &spec.query)?;
            let root = set.add_node(&tree);
            // The parser rejected queries that hold without terms, so the root always gets groups.
            gates.push(set.subtree_groups(root).unwrap_or_default());
            set.topics.push(CompiledTopic {
                name: spec.name.clone(),
                min_score: spec.min_score,
                root,
            });
        }
        for node in 0..set.nodes.len() {
            if let Node::Not { inner, .. } = set.nodes[node]
                && let Some(groups) = set.subtree_groups(inner)
            {
                set.nodes[node] = Node::Not {
                    inner,
                    gate: gates.len() as u32,
                };
                gates.push(groups);
            }
        }
        set.build_postings(&gates);
        set.build_anchors();
        set.phrase_keys = HashMap::new();
        set.lexicon.freeze();
        Ok(set)
    }

    /// Number of topics.
    pub fn len(&self) -> usize {
        self.topics.len()
    }

    /// True when no topic is configured.
    pub fn is_empty(&self) -> bool {
        self.topics.is_empty()
    }

    /// Every topic the story matches, in configuration order.
    pub fn match_story(&self, title: &str, body: &str) -> Vec<TopicMatch> {
        if self.topics.is_empty() {
            return Vec::new();
        }
        SCRATCH.with(|cell| match cell.try_borrow_mut() {
            Ok(mut scratch) => {
                let out = self.match_with(&mut scratch, title, body);
                scratch.trim();
                out
            }
            // Only reachable if matching were re-entered on this thread; stay correct anyway.
            Err(_) => self.match_with(&mut Scratch::default(), title, body),
        })
    }

    fn match_with(&self, s: &mut Scratch, title: &str, body: &str) -> Vec<TopicMatch> {
        let title = within_limit(title);
        let body = within_limit(body);
        s.begin(self);
        self.scan(s, title);
        let title_len = s.tokens.len() as u32;
        self.scan(s, body);
        if s.hits.is_empty() {
            return Vec::new();
        }
        self.find_phrases(s, title_len);
        s.hits.sort_unstable();
        self.find_candidates(s);

        let mut out = Vec::new();
        let Scratch {
            tokens,
            hits,
            key_bits,
            gates,
            epoch,
            candidates,
            occ,
            marks,
            ..
        } = s;
        let story = Story {
            tokens,
            hits,
            key_bits,
            gates,
            epoch: *epoch,
            title_len,
            title,
            body,
        };
        for &t in candidates.iter() {
            let topic = &self.topics[t as usize];
            occ.clear();
            // A cheap pass that stops early decides; only topics that hold collect their hits.
            if !self.eval(topic.root, &story, occ, marks, false) {
                continue;
            }
            self.eval(topic.root, &story, occ, marks, true);
            let hits = distinct_hits(occ);
            let score: f64 = hits
                .iter()
                .map(|o| if o.start < title_len { 2.0 } else { 1.0 })
                .sum();
            if score >= topic.min_score {
                out.push(TopicMatch {
                    topic: topic.name.clone(),
                    score,
                    terms: story.terms(hits),
                    snippet: story.snippet(hits),
                });
            }
        }
        out
    }

    /// Tokenises `text`, appending its words to `s.tokens` and its hits to `s.hits`.
    fn scan(&self, s: &mut Scratch, text: &str) {
        let Scratch {
            buf,
            tokens,
            pfx,
            hits,
            ..
        } = s;
        for_each_word(text, buf, |range, word| {
            let pos = tokens.len() as u64;
            let pfx_start = pfx.len() as u32;
            let key = self.lexicon.lookup(word, |k| {
                pfx.push(k);
                hits.push(u64::from(k) << 32 | pos);
            });
            if key != NONE {
                hits.push(u64::from(key) << 32 | pos);
            }
            tokens.push(Token {
                start: range.start as u32,
                end: range.end as u32,
                word: key,
                pfx: pfx_start..pfx.len() as u32,
            });
        });
    }

    /// Adds a hit for every phrase found where its first word hit.
    fn find_phrases(&self, s: &mut Scratch, title_len: u32) {
        if self.phrases.is_empty() {
            return;
        }
        // Only exact words start phrases, so the tokens are walked rather than all hits.
        let followed = s.tokens.iter().zip(s.tokens.iter().skip(1));
        for (pos, (word, next)) in followed.enumerate() {
            let key = word.word as usize;
            if word.word == NONE || self.anchor_bits[key / 64] & (1 << (key % 64)) == 0 {
                continue;
            }
            let next_pfx = &s.pfx[next.pfx.start as usize..next.pfx.end as usize];
            let pair = |second: Key| {
                let bit = pair_bit(key as Key, second, self.pair_shift);
                self.pair_bits[bit / 64] & (1 << (bit % 64)) != 0
            };
            let could_start =
                (next.word != NONE && pair(next.word)) || next_pfx.iter().any(|&k| pair(k));
            if !could_start {
                continue;
            }
            let from = self.anchored_starts[key] as usize;
            let to = self.anchored_starts[key + 1] as usize;
            for anchored in &self.anchored[from..to] {
                let second_hit = if anchored.second_is_prefix {
                    next_pfx.contains(&anchored.second)
                } else {
                    next.word == anchored.second
                };
                if !second_hit {
                    continue;
                }
                let phrase = &self.phrases[anchored.phrase as usize];
                if phrase_at(&s.tokens, &s.pfx, title_len, phrase, pos as u32) {
                    s.hits.push(u64::from(phrase.key) << 32 | pos as u64);
                }
            }
        }
    }

    /// Marks each hit key in `s.key_bits`, counts the satisfied groups of every gate,
    /// and collects the topics whose groups are all satisfied, in configuration order.
    fn find_candidates(&self, s: &mut Scratch) {
        let epoch = s.epoch;
        let mut i = 0;
        while i < s.hits.len() {
            let key = (s.hits[i] >> 32) as usize;
            // A key hits a story a few times at most: step over its hits.
            i += 1;
            while s.hits.get(i).is_some_and(|&h| (h >> 32) as usize == key) {
                i += 1;
            }
            s.key_bits[key / 64] |= 1 << (key % 64);
            let from = self.posting_starts[key] as usize;
            let to = self.posting_starts[key + 1] as usize;
            for posting in &self.postings[from..to] {
                let gate = posting.gate as usize;
                let state = &mut s.gates[gate];
                if state.stamp != epoch {
                    *state = GateState {
                        stamp: epoch,
                        mask: 0,
                    };
                }
                let before = state.mask;
                state.mask |= posting.bit;
                if gate < self.topics.len() && before != state.mask {
                    let full = self.gate_masks[gate];
                    if state.mask == full {
                        s.candidates.push(gate as u32);
                    }
                }
            }
        }
        s.candidates.sort_unstable();
    }

    /// Evaluates `node`. With `collect`, a node that holds appends its hits to `occ`;
    /// otherwise (and whenever the node fails) `occ` is left as it was, and ORs stop at the
    /// first branch that holds.
    fn eval(
        &self,
        node: u32,
        story: &Story<'_>,
        occ: &mut Vec<Occ>,
        marks: &mut Vec<bool>,
        collect: bool,
    ) -> bool {
        let start = occ.len();
        match &self.nodes[node as usize] {
            Node::Key { key, scope } => {
                let mut hits = story
                    .positions(*key)
                    .iter()
                    .map(|&hit| hit as u32)
                    .filter(|&p| story.in_scope(p, *scope));
                if !collect {
                    return hits.next().is_some();
                }
                let last = self.key_spans[*key as usize] - 1;
                occ.extend(hits.map(|p| Occ {
                    start: p,
                    end: p + last,
                }));
            }
            Node::And(range) => {
                for &child in &self.children[range.start as usize..range.end as usize] {
                    if !self.eval(child, story, occ, marks, collect) {
                        occ.truncate(start);
                        return false;
                    }
                }
                return true;
            }
            Node::Or { children, simple } => {
                let mut any = false;
                for &key in &self.child_keys[children.start as usize..*simple as usize] {
                    let hits = story.positions(key);
                    if !hits.is_empty() {
                        if !collect {
                            return true;
                        }
                        any = true;
                        let last = self.key_spans[key as usize] - 1;
                        occ.extend(hits.iter().map(|&hit| Occ {
                            start: hit as u32,
                            end: hit as u32 + last,
                        }));
                    }
                }
                for &child in &self.children[*simple as usize..children.end as usize] {
                    any |= self.eval(child, story, occ, marks, collect);
                    if any && !collect {
                        return true;
                    }
                }
                return any;
            }
            Node::Not { inner, gate } => {
                if *gate != NONE && !story.gate_open(*gate, self.gate_masks[*gate as usize]) {
                    return true;
                }
                return !self.eval(*inner, story, occ, marks, false);
            }
            Node::Near {
                left,
                right,
                distance,
            } => {
                if !self.eval(*left, story, occ, marks, true) {
                    return false;
                }
                let mid = occ.len();
                if !self.eval(*right, story, occ, marks, true) {
                    occ.truncate(start);
                    return false;
                }
                self.keep_near(story, occ, marks, start, mid, *distance);
                let held = occ.len() > start;
                if !collect {
                    occ.truncate(start);
                }
                return held;
            }
        }
        occ.len() > start
    }

    /// Keeps, of the left hits `occ[start..mid]` and the right hits `occ[mid..]`, those that
    /// have a partner on the other side within `distance` words in the same field.
    fn keep_near(
        &self,
        story: &Story<'_>,
        occ: &mut Vec<Occ>,
        marks: &mut Vec<bool>,
        start: usize,
        mid: usize,
        distance: u32,
    ) {
        let end = occ.len();
        occ[start..mid].sort_unstable();
        occ[mid..end].sort_unstable();
        marks.clear();
        marks.resize(end - start, false);
        let reach = distance + self.max_span;
        for i in start..mid {
            let a = occ[i];
            let lowest = a.start.saturating_sub(reach);
            let first = mid + occ[mid..end].partition_point(|b| b.start < lowest);
            for j in first..end {
                let b = occ[j];
                if b.start > a.end.saturating_add(distance) {
                    break;
                }
                if story.same_field(a.start, b.start) && a.gap(b) <= distance {
                    marks[i - start] = true;
                    marks[j - start] = true;
                }
            }
        }
        let mut w = start;
        for i in start..end {
            if marks[i - start] {
                occ[w] = occ[i];
                w += 1;
            }
        }
        occ.truncate(w);
    }

    // ------------------------------------------------------------ compiling

    fn add_node(&mut self, q: &Query) -> u32 {
        let node = match q {
            Query::Term(term) => self.term_node(term),
            Query::And(items) | Query::Or(items) => {
                let mut ids: Vec<(Key, u32)> = items
                    .iter()
                    .map(|c| {
                        let id = self.add_node(c);
                        match self.nodes[id as usize] {
                            Node::Key {
                                key,
                                scope: Scope::Any,
                            } => (key, id),
                            _ => (NONE, id),
                        }
                    })
                    .collect();
                // Plain keys first (a stable sort keeps the rest in query order).
                ids.sort_by_key(|&(key, _)| key == NONE);
                let from = self.children.len() as u32;
                let simple = from + ids.iter().filter(|&&(key, _)| key != NONE).count() as u32;
                self.children.extend(ids.iter().map(|&(_, id)| id));
                self.child_keys.extend(ids.iter().map(|&(key, _)| key));
                let children = from..self.children.len() as u32;
                if matches!(q, Query::And(_)) {
                    Node::And(children)
                } else {
                    Node::Or { children, simple }
                }
            }
            Query::Not { inner, .. } => Node::Not {
                inner: self.add_node(inner),
                gate: NONE,
            },
            Query::Near {
                left,
                right,
                distance,
            } => Node::Near {
                left: self.add_node(left),
                right: self.add_node(right),
                distance: *distance,
            },
        };
        self.nodes.push(node);
        (self.nodes.len() - 1) as u32
    }

    fn term_node(&mut self, term: &Term) -> Node {
        let scope = match term.field {
            None => Scope::Any,
            Some(Field::Title) => Scope::Title,
            Some(Field::Body) => Scope::Body,
        };
        let last = term.words.len() - 1;
        let keys: Box<[Key]> = term
            .words
            .iter()
            .enumerate()
            .map(|(i, w)| {
                if i == last && term.prefix {
                    self.prefix_key(w)
                } else {
                    self.word_key(w)
                }
            })
            .collect();
        if keys.len() == 1 {
            return Node::Key {
                key: keys[0],
                scope,
            };
        }
        if let Some(&key) = self.phrase_keys.get(&(keys.clone(), term.prefix)) {
            return Node::Key { key, scope };
        }
        let span = keys.len() as u32;
        self.max_span = self.max_span.max(span);
        let key = self.new_key(span);
        self.phrase_keys.insert((keys.clone(), term.prefix), key);
        self.phrases.push(Phrase {
            keys,
            prefix_last: term.prefix,
            key,
        });
        Node::Key { key, scope }
    }

    fn word_key(&mut self, word: &str) -> Key {
        let node = self.lexicon.insert(word);
        match self.lexicon.building[node].word {
            NONE => {
                let key = self.new_key(1);
                self.lexicon.building[node].word = key;
                key
            }
            key => key,
        }
    }

    fn prefix_key(&mut self, prefix: &str) -> Key {
        let node = self.lexicon.insert(prefix);
        match self.lexicon.building[node].prefix {
            NONE => {
                let key = self.new_key(1);
                self.lexicon.building[node].prefix = key;
                key
            }
            key => key,
        }
    }

    /// A new key whose hits cover `span` words.
    fn new_key(&mut self, span: u32) -> Key {
        let key = self.key_count as Key;
        self.key_count += 1;
        self.key_spans.push(span);
        key
    }

    /// Required groups of the subtree at `node`, or `None` if it can hold without any term.
    fn subtree_groups(&self, node: u32) -> Option<Vec<Vec<Key>>> {
        if self.holds_without_terms(node) {
            return None;
        }
        let mut groups = Vec::new();
        self.required_groups(node, &mut groups);
        if groups.is_empty() {
            let mut keys = Vec::new();
            self.positive_keys(node, true, &mut keys);
            groups.push(keys);
        }
        for g in &mut groups {
            g.sort_unstable();
            g.dedup();
        }
        groups.retain(|g| !g.is_empty());
        groups.sort();
        groups.dedup();
        (!groups.is_empty()).then_some(groups)
    }

    /// Appends key sets of which, whenever `node` holds, each has a key that hit.
    fn required_groups(&self, node: u32, out: &mut Vec<Vec<Key>>) {
        match &self.nodes[node as usize] {
            Node::Key { key, .. } => out.push(vec![*key]),
            Node::And(range) => {
                for &child in &self.children[range.start as usize..range.end as usize] {
                    self.required_groups(child, out);
                }
            }
            Node::Near { left, right, .. } => {
                self.required_groups(*left, out);
                self.required_groups(*right, out);
            }
            Node::Not { .. } => {}
            Node::Or {
                children: range, ..
            } => {
                let mut union = Vec::new();
                for &child in &self.children[range.start as usize..range.end as usize] {
                    let mut groups = Vec::new();
                    self.required_groups(child, &mut groups);
                    match groups.into_iter().min_by_key(Vec::len) {
                        Some(group) => union.extend(group),
                        None if self.holds_without_terms(child) => return,
                        None => self.positive_keys(child, true, &mut union),
                    }
                }
                out.push(union);
            }
        }
    }

    /// Keys of leaves under an even number of NOTs (relative to `node`); when `node` holds
    /// but cannot hold without terms, one of them hit.
    fn positive_keys(&self, node: u32, even: bool, out: &mut Vec<Key>) {
        match &self.nodes[node as usize] {
            Node::Key { key, .. } if even => out.push(*key),
            Node::Key { .. } => {}
            Node::And(range)
            | Node::Or {
                children: range, ..
            } => {
                for &child in &self.children[range.start as usize..range.end as usize] {
                    self.positive_keys(child, even, out);
                }
            }
            Node::Not { inner, .. } => self.positive_keys(*inner, !even, out),
            Node::Near { left, right, .. } => {
                self.positive_keys(*left, even, out);
                self.positive_keys(*right, even, out);
            }
        }
    }

    fn holds_without_terms(&self, node: u32) -> bool {
        match &self.nodes[node as usize] {
            Node::Key { .. } | Node::Near { .. } => false,
            Node::Not { inner, .. } => !self.holds_without_terms(*inner),
            Node::And(range) => self.children[range.start as usize..range.end as usize]
                .iter()
                .all(|&c| self.holds_without_terms(c)),
            Node::Or {
                children: range, ..
            } => self.children[range.start as usize..range.end as usize]
                .iter()
                .any(|&c| self.holds_without_terms(c)),
        }
    }

    /// Indexes phrases by the key of their first word (never a prefix: only the last word of
    /// a phrase can be one).
    fn build_anchors(&mut self) {
        let mut pairs: Vec<(Key, u32)> = self
            .phrases
            .iter()
            .enumerate()
            .map(|(i, p)| (p.keys[0], i as u32))
            .collect();
        pairs.sort_unstable();
        let anchored = pairs
            .iter()
            .map(|&(_, i)| {
                let p = &self.phrases[i as usize];
                Anchored {
                    second: p.keys[1],
                    second_is_prefix: p.keys.len() == 2 && p.prefix_last,
                    phrase: i,
                }
            })
            .collect();
        self.anchor_bits = vec![0; self.key_count.div_ceil(64)];
        let bits = (self.phrases.len() * PAIR_BITS_PER_PHRASE)
            .next_power_of_two()
            .max(64);
        self.pair_shift = 64 - bits.trailing_zeros();
        self.pair_bits = vec![0; bits / 64];
        for p in &self.phrases {
            let bit = pair_bit(p.keys[0], p.keys[1], self.pair_shift);
            self.pair_bits[bit / 64] |= 1 << (bit % 64);
        }
        for &(key, _) in &pairs {
            self.anchor_bits[key as usize / 64] |= 1 << (key % 64);
        }
        self.anchored_starts = starts_by_key(pairs.iter().map(|&(key, _)| key), self.key_count);
        self.anchored = anchored;
    }

    fn build_postings(&mut self, gates: &[Vec<Vec<Key>>]) {
        let mut pairs: Vec<(Key, u32, u32)> = Vec::new();
        for (gate, groups) in gates.iter().enumerate() {
            for (i, keys) in groups.iter().take(MAX_GATE_GROUPS).enumerate() {
                pairs.extend(keys.iter().map(|&k| (k, gate as u32, 1 << i)));
            }
        }
        // An empty gate would never open; subtree_groups never yields one.
        self.gate_masks = gates
            .iter()
            .map(|g| (0..g.len().min(MAX_GATE_GROUPS)).fold(0, |mask, i| mask | 1 << i))
            .collect();
        pairs.sort_unstable();
        self.posting_starts = starts_by_key(pairs.iter().map(|&(key, _, _)| key), self.key_count);
        self.postings = pairs
            .into_iter()
            .map(|(_, gate, bit)| Posting { gate, bit })
            .collect();
    }
}

impl fmt::Debug for TopicSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TopicSet")
            .field(
                "topics",
                &self
                    .topics
                    .iter()
                    .map(|t| t.name.as_str())
                    .collect::<Vec<_>>(),
            )
            .field("keys", &self.key_count)
            .field("phrases", &self.phrases.len())
            .finish()
    }
}

// ---------------------------------------------------------------- per story

/// One word of the story. Positions index `Scratch::tokens`: title words first, then body.
#[derive(Debug, Clone)]
struct Token {
    /// Byte range in the title or body it came from.
    start: u32,
    end: u32,
    /// Key of the exact word, or `NONE`.
    word: Key,
    /// Range in `Scratch::pfx` of the prefix keys the word matches.
    pfx: Range<u32>,
}

/// A hit: inclusive range of token positions (one word, or a phrase).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Occ {
    start: u32,
    end: u32,
}

impl Occ {
    /// Words between two hits: 1 when adjacent, 0 when overlapping.
    fn gap(self, other: Occ) -> u32 {
        if other.start > self.end {
            other.start - self.end
        } else {
            self.start.saturating_sub(other.end)
        }
    }
}

/// Working memory for one story, reused across stories on a thread.
#[derive(Default)]
struct Scratch {
    buf: String,
    tokens: Vec<Token>,
    pfx: Vec<Key>,
    /// `key << 32 | position`, sorted before evaluation.
    hits: Vec<u64>,
    epoch: u32,
    /// One bit per key: set when the key hit this story. Small enough to stay in cache while
    /// the many keys of candidate topics are tested, most of them absent.
    key_bits: Vec<u64>,
    gates: Vec<GateState>,
    candidates: Vec<u32>,
    occ: Vec<Occ>,
    marks: Vec<bool>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Capacity kept in the scratch area between stories; larger buffers are shrunk back.
const KEEP_TOKENS: usize = 1 << 16;

impl Scratch {
    fn begin(&mut self, set: &TopicSet) {
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            self.gates.fill(GateState::default());
            self.epoch = 1;
        }
        self.clear_key_bits();
        grow(&mut self.key_bits, set.key_count.div_ceil(64), 0);
        grow(&mut self.gates, set.gate_masks.len(), GateState::default());
        self.tokens.clear();
        self.pfx.clear();
        self.hits.clear();
        self.candidates.clear();
        self.occ.clear();
    }

    /// Clears the bits the last story set in `key_bits`: those of its hit keys, which are
    /// still in `hits` (cheaper than clearing the whole set's worth of bits).
    fn clear_key_bits(&mut self) {
        for &hit in &self.hits {
            let key = (hit >> 32) as usize;
            if let Some(word) = self.key_bits.get_mut(key / 64) {
                *word = 0;
            }
        }
    }

    /// Gives back memory after an unusually long story.
    fn trim(&mut self) {
        if self.tokens.capacity() > KEEP_TOKENS {
            self.clear_key_bits();
            self.tokens = Vec::new();
            self.pfx = Vec::new();
            self.hits = Vec::new();
            self.occ = Vec::new();
            self.marks = Vec::new();
        }
    }
}

fn grow<T: Clone>(v: &mut Vec<T>, len: usize, fill: T) {
    if v.len() < len {
        v.resize(len, fill);
    }
}

/// Byte offsets and token positions are `u32`. Stories are far smaller (the fetcher caps
/// bodies at `max_body_bytes`), but a field over 1 GiB is cut there rather than mis-indexed,
/// which keeps title and body positions together below `u32::MAX` with room to spare.
fn within_limit(text: &str) -> &str {
    const MAX: usize = 1 << 30;
    if text.len() <= MAX {
        return text;
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The tokenised story as the evaluator sees it.
struct Story<'a> {
    tokens: &'a [Token],
    hits: &'a [u64],
    key_bits: &'a [u64],
    gates: &'a [GateState],
    epoch: u32,
    title_len: u32,
    title: &'a str,
    body: &'a str,
}

impl Story<'_> {
    /// Hits of `key` (`key << 32 | position`), in position order.
    fn positions(&self, key: Key) -> &[u64] {
        let k = key as usize;
        if self.key_bits[k / 64] & (1 << (k % 64)) == 0 {
            return &[];
        }
        // A binary search in the story's few hundred hits, which are in cache, rather than a
        // table with a slot per key of the whole set, which would not be.
        let from = self.hits.partition_point(|&h| (h >> 32) < u64::from(key));
        let to = from + self.hits[from..].partition_point(|&h| (h >> 32) == u64::from(key));
        &self.hits[from..to]
    }

    /// True when every required group of `gate` (whose full mask is `full`) is satisfied.
    fn gate_open(&self, gate: u32, full: u32) -> bool {
        let state = self.gates[gate as usize];
        state.stamp == self.epoch && state.mask == full
    }

    fn in_scope(&self, pos: u32, scope: Scope) -> bool {
        match scope {
            Scope::Any => true,
            Scope::Title => pos < self.title_len,
            Scope::Body => pos >= self.title_len,
        }
    }

    fn same_field(&self, a: u32, b: u32) -> bool {
        (a < self.title_len) == (b < self.title_len)
    }

    fn text_of(&self, pos: u32) -> &str {
        if pos < self.title_len {
            self.title
        } else {
            self.body
        }
    }

    /// Byte range in its field's text covered by the hit.
    fn bytes_of(&self, o: Occ) -> Range<usize> {
        self.tokens[o.start as usize].start as usize..self.tokens[o.end as usize].end as usize
    }

    fn terms(&self, hits: &[Occ]) -> Vec<String> {
        let mut terms: Vec<String> = Vec::new();
        for &o in hits {
            let mut term = String::new();
            push_collapsed(&mut term, &self.text_of(o.start)[self.bytes_of(o)]);
            let term = term.to_lowercase();
            if !terms.contains(&term) {
                terms.push(term);
            }
        }
        terms
    }

    fn snippet(&self, hits: &[Occ]) -> String {
        let Some(&first) = hits
            .iter()
            .find(|o| o.start >= self.title_len)
            .or(hits.first())
        else {
            return String::new();
        };
        let field = if first.start < self.title_len {
            0..self.title_len
        } else {
            self.title_len..self.tokens.len() as u32
        };
        let from = first.start.saturating_sub(SNIPPET_WORDS).max(field.start);
        let to = first.end.saturating_add(SNIPPET_WORDS).min(field.end - 1);
        let text = self.text_of(first.start);

        let mut out = String::new();
        if from > field.start {
            out.push_str("… ");
        }
        let mut cursor = self.tokens[from as usize].start as usize;
        let mut marked = hits
            .iter()
            .filter(|o| o.start >= from && o.end <= to)
            .copied()
            .peekable();
        while let Some(mut span) = marked.next() {
            while let Some(next) = marked.next_if(|n| n.start <= span.end) {
                span.end = span.end.max(next.end);
            }
            let bytes = self.bytes_of(span);
            push_collapsed(&mut out, &text[cursor..bytes.start]);
            out.push('«');
            push_collapsed(&mut out, &text[bytes.clone()]);
            out.push('»');
            cursor = bytes.end;
        }
        push_collapsed(
            &mut out,
            &text[cursor..self.tokens[to as usize].end as usize],
        );
        if to + 1 < field.end {
            out.push_str(" …");
        }
        out
    }
}

/// True when `phrase` occurs in `tokens` starting at `pos`, within one field.
fn phrase_at(tokens: &[Token], pfx: &[Key], title_len: u32, phrase: &Phrase, pos: u32) -> bool {
    let last = pos as usize + phrase.keys.len() - 1;
    if last >= tokens.len() || (pos < title_len) != ((last as u32) < title_len) {
        return false;
    }
    let final_index = phrase.keys.len() - 1;
    phrase.keys.iter().enumerate().skip(1).all(|(i, &key)| {
        let token = &tokens[pos as usize + i];
        if i == final_index && phrase.prefix_last {
            pfx[token.pfx.start as usize..token.pfx.end as usize].contains(&key)
        } else {
            token.word == key
        }
    })
}

/// Sorts hits into text order and drops repeats of the same stretch of text (one word hit
/// through two terms, as in `tariff OR tariff*`, counts once). Hits that only overlap, such as
/// a phrase and a word inside it, are different term hits and all count, which keeps scores
/// monotone: adding an OR branch never lowers a score.
fn distinct_hits(occ: &mut Vec<Occ>) -> &[Occ] {
    occ.sort_unstable();
    occ.dedup();
    occ
}

/// Appends `text` with each run of whitespace (newlines included) replaced by one space.
fn push_collapsed(out: &mut String, text: &str) {
    let mut space = false;
    for c in text.chars() {
        if c.is_whitespace() {
            space = true;
            continue;
        }
        if space {
            out.push(' ');
            space = false;
        }
        out.push(c);
    }
    if space {
        out.push(' ');
    }
}

// ---------------------------------------------------------------- lookup structure

/// Byte trie of every exact word and prefix term of every query. Walking a story word down it
/// finds, in one pass over the word's bytes, every prefix term the word starts with and the
/// exact word if there is one, and stops at the first byte that no query word continues with.
///
/// Built as a tree of nodes with sorted child lists, then frozen into one array of `u32`
/// records: breadth-first down to depth two (the busy top levels share cache lines), then
/// each depth-three node followed depth-first by its subtree, so that a walk below the
/// tables stays within a few neighbouring lines. A record is a header (edge count and
/// flags), the word key and the prefix key if the flags say so, then the edges as
/// `label << 24 | record offset`: one step down the trie reads one record, which mostly sits
/// in one cache line. From depth three on, a run of nodes that each lead on to a single
/// child and hold no key (the tail that only one query word has, as in `…ation`) is one
/// *chain* record holding the run's bytes, four to a `u32`, and the offset of the node after
/// it: a long word is compared in one step rather than walked byte by byte. The first two
/// and three levels are also tables indexed by a word's first letters or digits (`pairs`,
/// `triples`, 190 KB), so a word starts its walk at depth three with one read.
struct Lexicon {
    /// Record of the root's child per first byte (0: none; the root's record is at 0).
    root: Box<[u32; 256]>,
    /// Record after two ASCII letters or digits: `pairs[class(a) * CLASSES + class(b)]` (0: none).
    pairs: Vec<u32>,
    /// Some one-byte prefix term exists (then depth-1 records must be looked at).
    short_prefixes: bool,
    /// Record after three ASCII letters or digits (0: none), like `pairs`.
    triples: Vec<u32>,
    /// Per entry of `pairs`: the prefix key of that two-byte prefix term, or `NONE`.
    pair_prefixes: Vec<Key>,
    /// The frozen trie.
    records: Vec<u32>,
    /// The tree while compiling; emptied by `freeze`.
    building: Vec<BuildNode>,
}

/// Bits per phrase in `TopicSet::pair_bits`, before rounding up to a power of two: at most
/// about one word pair in 16 that starts no phrase gets through (the 35,000 phrases of the
/// benchmark's 1,000 generated topics get a 128 KB filter).
const PAIR_BITS_PER_PHRASE: usize = 16;

/// The `pair_bits` bit of a phrase starting with words `first` and `second`, in a filter of
/// `1 << (64 - shift)` bits.
fn pair_bit(first: Key, second: Key, shift: u32) -> usize {
    let pair = u64::from(first) << 32 | u64::from(second);
    (pair.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> shift) as usize
}

/// Where each key's entries start in a list sorted by key: key `k` has
/// `starts[k]..starts[k + 1]`.
fn starts_by_key(sorted_keys: impl Iterator<Item = Key>, key_count: usize) -> Vec<u32> {
    let mut starts = vec![0u32; key_count + 1];
    for key in sorted_keys {
        starts[key as usize + 1] += 1;
    }
    for k in 0..key_count {
        starts[k + 1] += starts[k];
    }
    starts
}

/// The run of bytes from `node` down through nodes that hold no key and have one child, and
/// the node it ends at; `None` unless `node` itself is such a node.
fn chain_from(building: &[BuildNode], node: u32) -> Option<(Vec<u8>, u32)> {
    let mut bytes = Vec::new();
    let mut at = node as usize;
    while let [(byte, child)] = building[at].children[..] {
        if building[at].word != NONE || building[at].prefix != NONE {
            break;
        }
        bytes.push(byte);
        at = child as usize;
    }
    (!bytes.is_empty()).then_some((bytes, at as u32))
}

/// Up to four bytes as one `u32` (little-endian, zero-padded), as chain records hold them.
fn pack(chunk: &[u8]) -> u32 {
    let mut word = [0u8; 4];
    word[..chunk.len()].copy_from_slice(chunk);
    u32::from_le_bytes(word)
}

/// Number of byte classes in `Lexicon::pairs`: `0-9` and `a-z`.
const CLASSES: usize = 36;

/// Class of a byte for `Lexicon::pairs`, or `None` outside `0-9a-z` (folded words have no
/// upper case).
fn class(byte: u8) -> Option<usize> {
    match byte {
        b'0'..=b'9' => Some(usize::from(byte - b'0')),
        b'a'..=b'z' => Some(10 + usize::from(byte - b'a')),
        _ => None,
    }
}

/// Record header flag: the word key follows the header.
const HAS_WORD: u32 = 1 << 30;
/// Record header flag: the prefix key follows (after the word key, if any).
const HAS_PREFIX: u32 = 1 << 31;
/// Record header flag: a chain record; the count bits hold the number of bytes.
const CHAIN: u32 = 1 << 29;
/// Record header bits holding the edge count (or a chain's byte count).
const EDGE_COUNT: u32 = 0x00ff_ffff;
/// Largest record array that 24-bit edge targets can address.
const MAX_RECORDS: usize = 1 << 24;

struct BuildNode {
    /// Sorted by byte.
    children: Vec<(u8, u32)>,
    word: Key,
    prefix: Key,
}

impl BuildNode {
    fn new() -> Self {
        BuildNode {
            children: Vec::new(),
            word: NONE,
            prefix: NONE,
        }
    }

    /// Length of this node's record in `u32`s.
    fn record_len(&self) -> usize {
        1 + usize::from(self.word != NONE) + usize::from(self.prefix != NONE) + self.children.len()
    }
}

impl Lexicon {
    fn new() -> Self {
        Lexicon {
            root: Box::new([0; 256]),
            pairs: Vec::new(),
            short_prefixes: false,
            triples: Vec::new(),
            pair_prefixes: Vec::new(),
            records: Vec::new(),
            building: vec![BuildNode::new()],
        }
    }

    /// The node for `text`, created if needed (while compiling).
    fn insert(&mut self, text: &str) -> usize {
        let mut node = 0;
        for &byte in text.as_bytes() {
            let children = &self.building[node].children;
            node = match children.binary_search_by_key(&byte, |&(b, _)| b) {
                Ok(i) => children[i].1 as usize,
                Err(at) => {
                    let child = self.building.len();
                    self.building.push(BuildNode::new());
                    self.building[node]
                        .children
                        .insert(at, (byte, child as u32));
                    child
                }
            };
        }
        node
    }

    /// Lays the tree out as records. Nodes whose record would start beyond what 24-bit edge
    /// targets address (a 64 MiB trie, far beyond any configuration) are cut off: words below
    /// them never match.
    fn freeze(&mut self) {
        let building = std::mem::take(&mut self.building);
        // Order: breadth-first down to depth two (the busy top, reached through `root` and
        // `pairs`), then each depth-three node (reached through `triples`) followed
        // depth-first by everything below it, so that the rest of a walk stays within a few
        // neighbouring cache lines. Below depth two, runs of keyless one-child nodes are
        // chains: the chain's record stands for the whole run, and the node after it follows.
        let mut order = Vec::new();
        let mut level = vec![0u32];
        for _ in 0..3 {
            order.extend_from_slice(&level);
            level = level
                .iter()
                .flat_map(|&n| building[n as usize].children.iter().map(|&(_, c)| c))
                .collect();
        }
        let mut chains: HashMap<u32, (Vec<u8>, u32)> = HashMap::new();
        for &top in &level {
            let mut stack = vec![top];
            while let Some(node) = stack.pop() {
                order.push(node);
                match chain_from(&building, node) {
                    Some((bytes, end)) => {
                        chains.insert(node, (bytes, end));
                        stack.push(end);
                    }
                    None => stack.extend(
                        building[node as usize]
                            .children
                            .iter()
                            .rev()
                            .map(|&(_, c)| c),
                    ),
                }
            }
        }
        // Each node's record offset; parents come before children, so a cut leaves no
        // orphan.
        let mut offset = vec![u32::MAX; building.len()];
        let mut size = 0usize;
        let mut kept = 0;
        for &node in &order {
            let len = chains.get(&node).map_or_else(
                || building[node as usize].record_len(),
                |(bytes, _)| 2 + bytes.len().div_ceil(4),
            );
            if size + len > MAX_RECORDS {
                break;
            }
            offset[node as usize] = size as u32;
            size += len;
            kept += 1;
        }
        order.truncate(kept);
        self.records = Vec::with_capacity(size);
        for &old in &order {
            if let Some((bytes, end)) = chains.get(&old) {
                self.records.push(CHAIN | bytes.len() as u32);
                self.records.extend(bytes.chunks(4).map(pack));
                // 0 (the root) ends the walk: the node after the chain was cut off.
                let end = offset[*end as usize];
                self.records.push(if end == u32::MAX { 0 } else { end });
                continue;
            }
            let node = &building[old as usize];
            let edges: Vec<u32> = node
                .children
                .iter()
                .filter(|&&(_, c)| offset[c as usize] != u32::MAX)
                .map(|&(b, c)| u32::from(b) << 24 | offset[c as usize])
                .collect();
            let mut header = edges.len() as u32;
            if node.word != NONE {
                header |= HAS_WORD;
            }
            if node.prefix != NONE {
                header |= HAS_PREFIX;
            }
            self.records.push(header);
            if node.word != NONE {
                self.records.push(node.word);
            }
            if node.prefix != NONE {
                self.records.push(node.prefix);
            }
            self.records.extend(edges);
        }
        self.pairs = vec![0; CLASSES * CLASSES];
        self.pair_prefixes = vec![NONE; CLASSES * CLASSES];
        self.triples = vec![0; CLASSES * CLASSES * CLASSES];
        for &(byte, child) in &building[0].children {
            let depth1 = offset[child as usize];
            if depth1 == u32::MAX {
                continue;
            }
            self.root[usize::from(byte)] = depth1;
            self.short_prefixes |= building[child as usize].prefix != NONE;
            let Some(a) = class(byte) else { continue };
            for &(second, grandchild) in &building[child as usize].children {
                let depth2 = offset[grandchild as usize];
                if let (Some(b), true) = (class(second), depth2 != u32::MAX) {
                    let pair = a * CLASSES + b;
                    self.pairs[pair] = depth2;
                    self.pair_prefixes[pair] = building[grandchild as usize].prefix;
                    for &(third, next) in &building[grandchild as usize].children {
                        let depth3 = offset[next as usize];
                        if let (Some(c), true) = (class(third), depth3 != u32::MAX) {
                            self.triples[pair * CLASSES + c] = depth3;
                        }
                    }
                }
            }
        }
    }

    /// The prefix key stored in the record at `at`, if any.
    fn prefix_at(&self, at: usize) -> Option<Key> {
        let header = self.records[at];
        (header & HAS_PREFIX != 0)
            .then(|| self.records[at + 1 + usize::from(header & HAS_WORD != 0)])
    }

    /// Calls `on_prefix` with the key of every prefix term `word` starts with (or equals), and
    /// returns the key of `word` itself as an exact word, or `NONE`.
    fn lookup(&self, word: &str, mut on_prefix: impl FnMut(Key)) -> Key {
        let bytes = word.as_bytes();
        let Some(&first) = bytes.first() else {
            return NONE;
        };
        if self.records.is_empty() {
            return NONE;
        }
        let three = (bytes.len() >= 3)
            .then(|| Some((class(first)?, class(bytes[1])?, class(bytes[2])?)))
            .flatten();
        let (mut at, mut i) = match (
            three,
            bytes.get(1).and_then(|&b| Some((class(first)?, class(b)?))),
        ) {
            (Some((a, b, c)), _) => {
                if self.short_prefixes {
                    let depth1 = self.root[usize::from(first)] as usize;
                    if let (true, Some(key)) = (depth1 != 0, self.prefix_at(depth1)) {
                        on_prefix(key);
                    }
                }
                let pair = a * CLASSES + b;
                if self.pair_prefixes[pair] != NONE {
                    on_prefix(self.pair_prefixes[pair]);
                }
                (self.triples[pair * CLASSES + c] as usize, 3)
            }
            (None, Some((a, b))) => {
                if self.short_prefixes {
                    let depth1 = self.root[usize::from(first)] as usize;
                    if let (true, Some(key)) = (depth1 != 0, self.prefix_at(depth1)) {
                        on_prefix(key);
                    }
                }
                (self.pairs[a * CLASSES + b] as usize, 2)
            }
            (None, None) => (self.root[usize::from(first)] as usize, 1),
        };
        while at != 0 {
            let header = self.records[at];
            if header & CHAIN != 0 {
                let n = (header & EDGE_COUNT) as usize;
                let words = n.div_ceil(4);
                let Some(rest) = bytes.get(i..i + n) else {
                    return NONE;
                };
                let packed = &self.records[at + 1..at + 1 + words];
                if !rest
                    .chunks(4)
                    .zip(packed)
                    .all(|(chunk, &p)| pack(chunk) == p)
                {
                    return NONE;
                }
                i += n;
                at = self.records[at + 1 + words] as usize;
                continue;
            }
            let mut field = at + 1;
            let word_key = if header & HAS_WORD != 0 {
                field += 1;
                self.records[field - 1]
            } else {
                NONE
            };
            if header & HAS_PREFIX != 0 {
                on_prefix(self.records[field]);
                field += 1;
            }
            let Some(&byte) = bytes.get(i) else {
                return word_key;
            };
            let edges = &self.records[field..field + (header & EDGE_COUNT) as usize];
            at = edges
                .iter()
                .find(|&&e| (e >> 24) as u8 == byte)
                .map_or(0, |&e| (e & 0x00ff_ffff) as usize);
            i += 1;
        }
        NONE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(topics: &[(&str, &str, f64)]) -> TopicSet {
        let specs: Vec<TopicSpec> = topics
            .iter()
            .map(|&(name, query, min_score)| TopicSpec {
                name: name.into(),
                query: query.into(),
                min_score,
            })
            .collect();
        match TopicSet::compile(&specs) {
            Ok(set) => set,
            Err(e) => panic!("{e}"),
        }
    }

    fn one(query: &str, title: &str, body: &str) -> Option<TopicMatch> {
        set(&[("t", query, 1.0)])
            .match_story(title, body)
            .into_iter()
            .next()
    }

    fn hits(query: &str, title: &str, body: &str) -> bool {
        one(query, title, body).is_some()
    }

    #[test]
    fn the_set_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<TopicSet>();
    }

    #[test]
    fn terms_match_whole_words_only() {
        assert!(hits("tariff", "", "a new tariff, again"));
        assert!(hits("tariff", "", "A NEW TARIFF"));
        assert!(!hits("tariff", "", "tariffication is a word"));
        assert!(!hits("tariff", "", "tariffs"));
        assert!(!hits("tariff", "", "pretariff"));
    }

    #[test]
    fn prefix_terms_match_words_that_start_with_them() {
        assert!(hits("tariff*", "", "tariffication is a word"));
        assert!(hits("tariff*", "", "tariff"));
        assert!(hits("tariff*", "", "Tariffs"));
        assert!(!hits("tariff*", "", "tarif"));
        assert!(!hits("tariff*", "", "pretariff"));
    }

    #[test]
    fn nested_prefixes_each_match() {
        let s = set(&[
            ("short", "tar*", 1.0),
            ("long", "tariff*", 1.0),
            ("exact", "tariffs", 1.0),
        ]);
        let names: Vec<String> = s
            .match_story("", "tariffs")
            .into_iter()
            .map(|m| m.topic)
            .collect();
        assert_eq!(names, ["short", "long", "exact"]);
    }

    #[test]
    fn one_letter_prefixes_and_non_ascii_prefixes_match() {
        assert!(hits("a*", "", "xx ab yy"));
        assert!(hits("a*", "", "a"));
        assert!(!hits("a*", "", "ba"));
        assert!(hits("ü*", "", "Über"));
        assert!(hits("中*", "", "中"));
        assert!(hits("9*", "", "90"));
        assert!(hits("x", "", "x"));
    }

    #[test]
    fn long_words_sharing_beginnings_are_told_apart() {
        let s = set(&[
            ("government", "government", 1.0),
            ("governor", "governor", 1.0),
            ("govern", "govern*", 1.0),
            ("long", "internationalisation", 1.0),
            ("internat", "internat*", 1.0),
            ("z", "zq", 1.0),
        ]);
        let names = |text: &str| -> Vec<String> {
            s.match_story("", text)
                .into_iter()
                .map(|m| m.topic)
                .collect()
        };
        assert_eq!(names("government"), ["government", "govern"]);
        assert_eq!(names("governments"), ["govern"]);
        assert_eq!(names("governor"), ["governor", "govern"]);
        assert!(names("gover").is_empty());
        assert_eq!(names("governmenx"), ["govern"]);
        assert_eq!(names("internationalisation"), ["long", "internat"]);
        assert_eq!(names("internationalis"), ["internat"]);
        assert_eq!(names("internationalisations"), ["internat"]);
        assert_eq!(names("internationalizatio"), ["internat"]);
        assert_eq!(names("zq"), ["z"]);
        assert!(names("zqx").is_empty());
    }

    #[test]
    fn long_tails_match_only_byte_for_byte() {
        // The tails below the shared "decarbonis" are single runs of bytes (chain records).
        let s = set(&[
            ("word", "decarbonisation", 1.0),
            ("deeper", "decarbonisationists*", 1.0),
            ("sibling", "decarbonised", 1.0),
        ]);
        let names = |text: &str| -> Vec<String> {
            s.match_story("", text)
                .into_iter()
                .map(|m| m.topic)
                .collect()
        };
        assert_eq!(names("decarbonisation"), ["word"]);
        assert_eq!(names("decarbonised"), ["sibling"]);
        assert!(names("decarbonisatio").is_empty(), "ends inside a tail");
        assert!(names("decarbonisatiom").is_empty(), "last byte differs");
        assert!(names("decarbonisazion").is_empty(), "a middle byte differs");
        assert!(names("decarbonisations").is_empty());
        assert_eq!(names("decarbonisationists"), ["deeper"]);
        assert_eq!(names("decarbonisationistsx"), ["deeper"]);
        assert!(names("decarbonisationist").is_empty());
    }

    #[test]
    fn phrases_match_consecutive_words_across_punctuation() {
        assert!(hits("\"feed in tariff\"", "", "the Feed-in Tariff scheme"));
        assert!(hits("\"feed in tariff\"", "", "feed in tariff"));
        assert!(!hits("\"feed in tariff\"", "", "feed the tariff in"));
        assert!(hits("\"feed in tariff*\"", "", "feed-in tariffs"));
        assert!(!hits("\"feed in tariff*\"", "", "feed-in tarif"));
    }

    #[test]
    fn a_phrase_does_not_run_from_the_title_into_the_body() {
        assert!(!hits(
            "\"import duties\"",
            "Talks on import",
            "duties were raised"
        ));
    }

    #[test]
    fn hyphenated_query_words_match_hyphenated_and_spaced_text() {
        assert!(hits("counter-drone", "", "a counter-drone laser"));
        assert!(hits("counter-drone", "", "a counter drone laser"));
        assert!(hits("counter-drone", "", "a counter‑drone laser")); // U+2011
        assert!(!hits("counter-drone", "", "counterdrone"));
    }

    #[test]
    fn apostrophes_split_words_in_text_and_queries() {
        assert!(hits("navy", "", "the Navy’s laser"));
        assert!(hits("\"navy's laser\"", "", "the Navy’s laser"));
    }

    #[test]
    fn diacritics_are_folded_on_both_sides() {
        assert!(hits("Gokberk", "", "Aselsan's Gökberk system"));
        assert!(hits("Gökberk", "", "GOKBERK"));
        assert!(hits("turkiye", "", "Türkiye"));
    }

    #[test]
    fn cjk_text_matches_cjk_phrases_without_panicking() {
        assert!(hits("关税", "美国加征关税", ""));
        assert!(!hits("关税", "美国加征关", "税"));
        assert!(hits("tariffs", "中国 tariffs 関税 한국", "日本の関税"));
    }

    #[test]
    fn and_or_and_not_combine() {
        let q = "(tariff OR levy) -electricity";
        assert!(hits(q, "", "a new levy"));
        assert!(!hits(q, "", "an electricity tariff"));
        assert!(!hits(q, "", "nothing here"));
        assert!(hits("tariff AND levy", "", "tariff and levy"));
        assert!(!hits("tariff levy", "", "tariff only"));
    }

    #[test]
    fn near_holds_within_the_distance_in_either_order() {
        let q = "laser NEAR/3 drone";
        assert!(hits(q, "", "laser drone"));
        assert!(hits(q, "", "laser shot a drone"));
        assert!(hits(q, "", "drone hit by laser"));
        assert!(!hits(q, "", "laser shot down the drone"));
        assert!(!hits(q, "laser", "drone"));
    }

    #[test]
    fn near_takes_phrases_and_groups_as_operands() {
        let q = "(\"high energy laser\" OR helios) NEAR/2 (drone* OR uav)";
        assert!(hits(q, "", "a high-energy laser downs drones"));
        assert!(hits(q, "", "HELIOS vs UAV"));
        assert!(!hits(q, "", "a high-energy laser was shown; later, drones"));
    }

    #[test]
    fn nested_near_chains_through_the_middle_operand() {
        let q = "a NEAR/1 b NEAR/1 c";
        assert!(hits(q, "", "a b c"));
        assert!(!hits(q, "", "a b x c"));
    }

    #[test]
    fn field_scopes_restrict_terms_to_title_or_body() {
        assert!(hits("title:tariff", "Tariff news", "nothing"));
        assert!(!hits("title:tariff", "News", "tariff"));
        assert!(hits("body:tariff", "News", "tariff"));
        assert!(!hits("body:tariff", "Tariff", "news"));
        assert!(hits(
            "title:(levy OR \"import duty\")",
            "An import duty",
            ""
        ));
    }

    #[test]
    fn a_topic_whose_positive_terms_are_absent_is_not_matched() {
        assert!(!hits("tariff -levy", "", "levy levy levy"));
    }

    #[test]
    fn title_hits_count_double() {
        let m = one("tariff*", "Tariffs rise", "The tariff and more tariffs").map(|m| m.score);
        assert_eq!(m, Some(4.0));
    }

    #[test]
    fn every_holding_branch_counts_toward_the_score() {
        let m = one("tariff OR levy OR duty", "", "tariff and levy").map(|m| m.score);
        assert_eq!(m, Some(2.0));
    }

    #[test]
    fn a_word_hit_through_two_terms_counts_once() {
        let m = one(
            "tariff OR tariff* OR (tariff NEAR/2 tariff*)",
            "",
            "the tariff",
        )
        .map(|m| m.score);
        assert_eq!(m, Some(1.0));
    }

    #[test]
    fn a_phrase_and_a_word_inside_it_are_two_hits() {
        let m = one("tariff* OR \"feed in tariff\"", "", "the feed-in tariff").map(|m| m.score);
        assert_eq!(m, Some(2.0));
    }

    #[test]
    fn negated_terms_do_not_count() {
        let m = one("tariff -\"water tariff\" OR levy", "", "tariff levy").map(|m| m.score);
        assert_eq!(m, Some(2.0));
    }

    #[test]
    fn min_score_is_a_lower_bound() {
        let s = set(&[("two", "tariff*", 2.0)]);
        assert!(s.match_story("", "one tariff").is_empty());
        assert_eq!(s.match_story("", "one tariff, two tariffs").len(), 1);
        assert_eq!(s.match_story("A tariff", "").len(), 1);
        let never = set(&[("nan", "tariff", f64::NAN)]);
        assert!(never.match_story("tariff", "tariff").is_empty());
    }

    #[test]
    fn terms_are_distinct_and_lowercased_as_written() {
        let m = one(
            "tariff* OR gokberk OR \"feed in tariff\"",
            "Tariffs",
            "tariffs, Gökberk and the FEED-IN\ntariff",
        )
        .unwrap();
        assert_eq!(m.terms, ["tariffs", "gökberk", "feed-in tariff", "tariff"]);
    }

    #[test]
    fn the_snippet_marks_hits_around_the_first_body_hit() {
        let body = "One two three tariff four five levy six.";
        let m = one("tariff OR levy", "Tariff title", body).unwrap();
        assert_eq!(m.snippet, "One two three «tariff» four five «levy» six");
    }

    #[test]
    fn the_snippet_is_cut_to_twenty_words_either_side() {
        let before: Vec<String> = (1..=30).map(|i| format!("b{i}")).collect();
        let after: Vec<String> = (1..=30).map(|i| format!("a{i}")).collect();
        let body = format!("{} tariff {}", before.join(" "), after.join("\n "));
        let m = one("tariff", "", &body).unwrap();
        let expected = format!(
            "… {} «tariff» {} …",
            before[10..].join(" "),
            after[..20].join(" ")
        );
        assert_eq!(m.snippet, expected);
    }

    #[test]
    fn the_snippet_falls_back_to_the_title_and_merges_overlapping_hits() {
        let m = one("\"a b\" OR \"b c\"", "x a b c y", "nothing").unwrap();
        assert_eq!(m.snippet, "x «a b c» y");
    }

    #[test]
    fn matches_come_in_configuration_order() {
        let s = set(&[("z", "levy", 1.0), ("a", "tariff", 1.0), ("m", "duty", 1.0)]);
        let names: Vec<String> = s
            .match_story("", "tariff duty levy")
            .into_iter()
            .map(|m| m.topic)
            .collect();
        assert_eq!(names, ["z", "a", "m"]);
    }

    #[test]
    fn an_empty_set_or_story_matches_nothing() {
        let empty = TopicSet::compile(&[]).unwrap();
        assert!(empty.is_empty());
        assert_eq!(empty.len(), 0);
        assert!(empty.match_story("tariff", "tariff").is_empty());
        assert!(set(&[("t", "tariff", 1.0)]).match_story("", "").is_empty());
    }

    #[test]
    fn a_bad_query_fails_compilation_with_its_topic_name() {
        let specs = [
            TopicSpec {
                name: "ok".into(),
                query: "tariff".into(),
                min_score: 1.0,
            },
            TopicSpec {
                name: "broken".into(),
                query: "tariff OR".into(),
                min_score: 1.0,
            },
        ];
        let e = TopicSet::compile(&specs).unwrap_err();
        assert_eq!(e.topic, "broken");
        assert_eq!(e.column, 10);
    }

    #[test]
    fn a_double_negation_matches_without_scoring() {
        let m = one("NOT (NOT tariff)", "", "tariff").map(|m| m.score);
        assert_eq!(m, None, "score 0 is below min_score 1");
        let s = set(&[("t", "NOT (NOT tariff)", 0.0)]);
        assert_eq!(s.match_story("", "tariff").len(), 1);
        assert!(s.match_story("", "levy").is_empty());
    }

    #[test]
    fn long_stories_are_matched_and_scratch_memory_is_given_back() {
        let body = "word ".repeat(200_000) + "tariff";
        assert_eq!(one("tariff", "", &body).map(|m| m.score), Some(1.0));
        SCRATCH.with(|s| assert!(s.borrow().tokens.capacity() <= KEEP_TOKENS));
        assert!(hits("tariff", "", "a tariff"));
    }

    #[test]
    fn a_query_with_more_required_groups_than_a_gate_keeps_still_needs_them_all() {
        let words: Vec<String> = (0..MAX_GATE_GROUPS + 8).map(|i| format!("w{i}")).collect();
        let query = words.join(" ");
        let all = words.join(" ");
        assert!(hits(&query, "", &all));
        // The words past the gate's limit are still required, first or last.
        for missing in [0, MAX_GATE_GROUPS, words.len() - 1] {
            let text: Vec<&str> = words
                .iter()
                .enumerate()
                .filter(|&(i, _)| i != missing)
                .map(|(_, w)| w.as_str())
                .collect();
            assert!(!hits(&query, "", &text.join(" ")), "without w{missing}");
        }
        // Under a NOT as well.
        let negated = format!("w0 -({query})");
        assert!(!hits(&negated, "", &all));
        let without_last = words[..words.len() - 1].join(" ");
        assert!(hits(&negated, "", &without_last));
    }

    #[test]
    fn many_topics_sharing_terms_are_matched_independently() {
        let queries: Vec<(String, String)> = (0..300)
            .map(|i| {
                (
                    format!("t{i}"),
                    format!("(w{i} OR common) w{} -never", i % 7),
                )
            })
            .collect();
        let specs: Vec<TopicSpec> = queries
            .iter()
            .map(|(n, q)| TopicSpec {
                name: n.clone(),
                query: q.clone(),
                min_score: 1.0,
            })
            .collect();
        let s = TopicSet::compile(&specs).unwrap();
        let names: Vec<String> = s
            .match_story("", "common w3")
            .into_iter()
            .map(|m| m.topic)
            .collect();
        let expected: Vec<String> = (0..300)
            .filter(|i| i % 7 == 3)
            .map(|i| format!("t{i}"))
            .collect();
        assert_eq!(names, expected);
    }
}

#[cfg(test)]
mod proptests {
    //! Random queries over a small word pool, checked against a plain reference evaluator.

    use proptest::prelude::*;

    use super::*;
    use crate::topics::tokenize::fold_words;

    const POOL: &[&str] = &[
        "tariff", "tariffs", "levy", "duty", "drone", "laser", "feed", "in", "china",
    ];

    fn leaf() -> impl Strategy<Value = String> {
        (0..POOL.len(), 0..POOL.len(), 0..6u8, 0..3u8).prop_map(|(a, b, kind, field)| {
            let (w1, w2) = (POOL[a], POOL[b]);
            let term = match kind {
                0 | 1 => w1.to_owned(),
                2 => format!("{}*", &w1[..w1.len().min(3)]),
                3 => format!("\"{w1} {w2}\""),
                4 => format!("{w1}-{w2}"),
                _ => format!("\"{w1} {}*\"", &w2[..w2.len().min(2)]),
            };
            match field {
                0 => format!("title:{term}"),
                1 => format!("body:{term}"),
                _ => term,
            }
        })
    }

    fn query() -> impl Strategy<Value = String> {
        leaf().prop_recursive(4, 24, 3, |inner| {
            prop_oneof![
                (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} AND {b})")),
                (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} {b})")),
                (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} OR {b})")),
                (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} -{b})")),
                (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} AND NOT {b})")),
                (inner.clone(), inner.clone(), 1..5u32)
                    .prop_map(|(a, b, n)| format!("({a} NEAR/{n} {b})")),
            ]
        })
    }

    fn text(max: usize) -> impl Strategy<Value = String> {
        proptest::collection::vec((0..POOL.len(), 0..4u8), 0..max).prop_map(|words| {
            let mut out = String::new();
            for (i, kind) in words {
                let w = POOL[i];
                out.push_str(&match kind {
                    0 => w.to_uppercase(),
                    1 => format!("{w},"),
                    2 => format!("{w}-"),
                    _ => w.to_owned(),
                });
                out.push(' ');
            }
            out
        })
    }

    /// Occurrence `(start, end)` over the concatenated title + body word list.
    type Hit = (usize, usize);

    /// Straightforward semantics of DESIGN §4, written independently of the matcher.
    fn reference(q: &Query, words: &[String], title_len: usize) -> Option<Vec<Hit>> {
        let field_of = |p: usize| p < title_len;
        match q {
            Query::Term(t) => {
                let n = t.words.len();
                let mut out = Vec::new();
                for start in 0..words.len() {
                    let end = start + n - 1;
                    if end >= words.len() || field_of(start) != field_of(end) {
                        continue;
                    }
                    let in_scope = match t.field {
                        None => true,
                        Some(Field::Title) => field_of(start),
                        Some(Field::Body) => !field_of(start),
                    };
                    let ok = t.words.iter().enumerate().all(|(i, w)| {
                        let word = &words[start + i];
                        if i == n - 1 && t.prefix {
                            word.starts_with(w.as_str())
                        } else {
                            word == w
                        }
                    });
                    if in_scope && ok {
                        out.push((start, end));
                    }
                }
                (!out.is_empty()).then_some(out)
            }
            Query::And(children) => {
                let mut out = Vec::new();
                for c in children {
                    out.extend(reference(c, words, title_len)?);
                }
                Some(out)
            }
            Query::Or(children) => {
                let mut any = false;
                let mut out = Vec::new();
                for c in children {
                    if let Some(h) = reference(c, words, title_len) {
                        any = true;
                        out.extend(h);
                    }
                }
                any.then_some(out)
            }
            Query::Not { inner, .. } => match reference(inner, words, title_len) {
                Some(_) => None,
                None => Some(Vec::new()),
            },
            Query::Near {
                left,
                right,
                distance,
            } => {
                let l = reference(left, words, title_len)?;
                let r = reference(right, words, title_len)?;
                let close = |a: Hit, b: Hit| {
                    let gap = if b.0 > a.1 {
                        b.0 - a.1
                    } else {
                        a.0.saturating_sub(b.1)
                    };
                    field_of(a.0) == field_of(b.0) && gap <= *distance as usize
                };
                let mut out: Vec<Hit> = l
                    .iter()
                    .copied()
                    .filter(|&a| r.iter().any(|&b| close(a, b)))
                    .collect();
                out.extend(
                    r.iter()
                        .copied()
                        .filter(|&b| l.iter().any(|&a| close(a, b))),
                );
                (!out.is_empty()).then_some(out)
            }
        }
    }

    fn reference_score(hits: &mut Vec<Hit>, title_len: usize) -> f64 {
        hits.sort();
        hits.dedup();
        hits.iter()
            .map(|h| if h.0 < title_len { 2.0 } else { 1.0 })
            .sum()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn a_or_b_matches_whenever_a_does(a in query(), b in query(), title in text(6), body in text(40)) {
            let specs = [
                TopicSpec { name: "a".into(), query: a.clone(), min_score: 0.0 },
                TopicSpec { name: "ab".into(), query: format!("({a}) OR ({b})"), min_score: 0.0 },
            ];
            let Ok(set) = TopicSet::compile(&specs) else {
                // `a` or `b` on its own can be rejected (e.g. a NOT with nothing positive).
                return Ok(());
            };
            let found = set.match_story(&title, &body);
            let a_match = found.iter().find(|m| m.topic == "a");
            let ab_match = found.iter().find(|m| m.topic == "ab");
            if let Some(am) = a_match {
                prop_assert!(ab_match.is_some(), "{a:?} matched but not with OR {b:?}");
                prop_assert!(ab_match.is_some_and(|m| m.score >= am.score));
            }
        }

        #[test]
        fn the_matcher_agrees_with_the_reference_semantics(q in query(), title in text(6), body in text(40)) {
            let Ok(tree) = query::parse("t", &q) else { return Ok(()) };
            let set = TopicSet::compile(&[TopicSpec { name: "t".into(), query: q.clone(), min_score: 0.0 }]).unwrap();
            let mut words = fold_words(&title);
            let title_len = words.len();
            words.extend(fold_words(&body));
            let expected = reference(&tree, &words, title_len).map(|mut h| reference_score(&mut h, title_len));
            let got = set.match_story(&title, &body).first().map(|m| m.score);
            prop_assert_eq!(got, expected, "query {} on {:?} / {:?}", tree, title, body);
        }
    }
}
