//! In-memory near-duplicate index: the dedup stage's banded lookup of recent stories,
//! the same lookup the store runs on its `(story_id, band_key)` table, held in memory
//! (a cache of the last `dedup.window`, rebuilt from the store after a restart).
//!
//! Layout, sized for a million stories in well under 2 GB: signatures live in one flat
//! array of slots. Each (slot, band) pair is a *link* numbered `slot * BANDS + band`; one
//! hash map takes the low 32 bits of a band key to the newest link holding that key, and
//! links holding the same key prefix are chained through a `next` array (one `u32` per
//! link). A 32-bit prefix can put unrelated stories on one chain; every candidate is
//! verified on its full signature, so that costs a little time, never a wrong answer.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use super::fingerprint::{Fingerprint, band_keys_of, verdict};

/// End of a chain.
const NONE: u32 = u32::MAX;

/// Most stories the index holds at once: link numbers must fit in a `u32` below [`NONE`].
const MAX_SLOTS: usize = (u32::MAX as usize) / Fingerprint::BANDS - 1;

/// In-memory banded index of story fingerprints: [`NearDupIndex::query`] returns the
/// indexed story that a new one near-duplicates, if any.
#[derive(Default)]
pub struct NearDupIndex {
    /// Low 32 bits of a band key → newest link holding it.
    heads: HashMap<u32, u32, BuildHasherDefault<KeyHasher>>,
    /// `next[link]`: the next (older) link on the same chain, or [`NONE`].
    next: Vec<u32>,
    /// `minima[slot * HASHES ..][.. HASHES]`: the slot's MinHash signature.
    minima: Vec<u32>,
    /// Per slot: distinct shingle count.
    shingles: Vec<u32>,
    /// Per slot: story id (stale for free slots).
    ids: Vec<i64>,
    /// Story id → slot.
    slots: HashMap<i64, u32>,
    /// Slots freed by removals, reused first.
    free: Vec<u32>,
}

impl std::fmt::Debug for NearDupIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NearDupIndex")
            .field("stories", &self.len())
            .finish_non_exhaustive()
    }
}

/// The link of `band` in `slot`.
fn link(slot: u32, band: usize) -> usize {
    slot as usize * Fingerprint::BANDS + band
}

impl NearDupIndex {
    /// An empty index.
    pub fn new() -> NearDupIndex {
        NearDupIndex::default()
    }

    /// An empty index with room for `stories` fingerprints before it reallocates.
    pub fn with_capacity(stories: usize) -> NearDupIndex {
        let stories = stories.min(MAX_SLOTS);
        NearDupIndex {
            heads: HashMap::with_capacity_and_hasher(
                stories * Fingerprint::BANDS,
                BuildHasherDefault::default(),
            ),
            next: Vec::with_capacity(stories * Fingerprint::BANDS),
            minima: Vec::with_capacity(stories * Fingerprint::HASHES),
            shingles: Vec::with_capacity(stories),
            ids: Vec::with_capacity(stories),
            slots: HashMap::with_capacity(stories),
            free: Vec::new(),
        }
    }

    /// Number of stories indexed.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether no story is indexed.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Indexes story `id`, replacing an earlier fingerprint under the same id; returns
    /// whether it was indexed. It is not when the fingerprint has no band keys (too little
    /// text to be found) or the index already holds 85 million stories.
    pub fn insert(&mut self, id: i64, fingerprint: &Fingerprint) -> bool {
        self.remove(id);
        if !fingerprint.is_indexable() {
            return false;
        }
        let slot = match self.free.pop() {
            Some(slot) => {
                let start = slot as usize * Fingerprint::HASHES;
                self.minima[start..start + Fingerprint::HASHES]
                    .copy_from_slice(fingerprint.minima());
                self.shingles[slot as usize] = fingerprint.shingle_count();
                self.ids[slot as usize] = id;
                slot
            }
            None => {
                let Some(slot) = u32::try_from(self.ids.len())
                    .ok()
                    .filter(|&slot| slot as usize <= MAX_SLOTS)
                else {
                    return false;
                };
                self.minima.extend_from_slice(fingerprint.minima());
                self.shingles.push(fingerprint.shingle_count());
                self.ids.push(id);
                self.next
                    .extend(std::iter::repeat_n(NONE, Fingerprint::BANDS));
                slot
            }
        };
        for (band, key) in band_keys_of(fingerprint.minima()).enumerate() {
            let at = link(slot, band);
            // `slot <= MAX_SLOTS`, so every link number is below NONE.
            let head = self.heads.entry(key as u32).or_insert(NONE);
            self.next[at] = *head;
            *head = at as u32;
        }
        self.slots.insert(id, slot);
        true
    }

    /// The indexed story that `fingerprint` near-duplicates best (highest similarity, the
    /// lowest id on a tie), or `None`.
    pub fn query(&self, fingerprint: &Fingerprint) -> Option<i64> {
        if !fingerprint.is_indexable() {
            return None;
        }
        let mut candidates: Vec<u32> = Vec::new();
        for key in band_keys_of(fingerprint.minima()) {
            let mut at = self.heads.get(&(key as u32)).copied().unwrap_or(NONE);
            while at != NONE {
                candidates.push(at / Fingerprint::BANDS as u32);
                at = self.next[at as usize];
            }
        }
        candidates.sort_unstable();
        candidates.dedup();
        let mut best: Option<(f64, i64)> = None;
        for slot in candidates {
            let start = slot as usize * Fingerprint::HASHES;
            let minima = &self.minima[start..start + Fingerprint::HASHES];
            let Some(similarity) = verdict(
                fingerprint.minima(),
                fingerprint.shingle_count(),
                minima,
                self.shingles[slot as usize],
            ) else {
                continue;
            };
            let id = self.ids[slot as usize];
            let better = best.is_none_or(|(best_sim, best_id)| {
                similarity > best_sim || (similarity == best_sim && id < best_id)
            });
            if better {
                best = Some((similarity, id));
            }
        }
        best.map(|(_, id)| id)
    }

    /// Removes story `id`; returns whether it was indexed.
    pub fn remove(&mut self, id: i64) -> bool {
        let Some(slot) = self.slots.remove(&id) else {
            return false;
        };
        let start = slot as usize * Fingerprint::HASHES;
        let keys: Vec<i64> =
            band_keys_of(&self.minima[start..start + Fingerprint::HASHES]).collect();
        for (band, key) in keys.into_iter().enumerate() {
            self.unlink(key as u32, link(slot, band));
        }
        self.free.push(slot);
        true
    }

    /// Removes every story whose id is below `min_id` (ids grow with time, so this
    /// expires stories older than the dedup window); returns how many were removed.
    pub fn expire_before(&mut self, min_id: i64) -> usize {
        let old: Vec<i64> = self
            .slots
            .keys()
            .copied()
            .filter(|&id| id < min_id)
            .collect();
        for &id in &old {
            self.remove(id);
        }
        old.len()
    }

    /// Takes link `at` out of the chain of key prefix `key`.
    fn unlink(&mut self, key: u32, at: usize) {
        let after = std::mem::replace(&mut self.next[at], NONE);
        let Some(head) = self.heads.get_mut(&key) else {
            return;
        };
        if *head as usize == at {
            if after == NONE {
                self.heads.remove(&key);
            } else {
                *head = after;
            }
            return;
        }
        let mut previous = *head;
        while previous != NONE {
            let current = self.next[previous as usize];
            if current as usize == at {
                self.next[previous as usize] = after;
                return;
            }
            previous = current;
        }
    }
}

/// Hasher for band-key prefixes, which are already uniformly distributed: one multiply
/// spreads them over the 64 bits the hash table reads.
#[derive(Default)]
pub(crate) struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.0 = (self.0 ^ u64::from(n)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORIGINAL: &str = include_str!("../../tests/fixtures/dedup/ferry_original.txt");
    const SYNDICATED: &str = include_str!("../../tests/fixtures/dedup/ferry_syndicated.txt");
    const SAME_TOPIC: &str = include_str!("../../tests/fixtures/dedup/ferry_other_story.txt");
    const UNRELATED: &str = include_str!("../../tests/fixtures/dedup/orchard_unrelated.txt");

    fn fingerprint(fixture: &str) -> Fingerprint {
        let (title, body) = fixture.split_once('\n').unwrap();
        Fingerprint::of(title, body)
    }

    fn index_of(stories: &[(i64, &str)]) -> NearDupIndex {
        let mut index = NearDupIndex::new();
        for &(id, text) in stories {
            index.insert(id, &fingerprint(text));
        }
        index
    }

    #[test]
    fn a_syndicated_copy_finds_the_original() {
        let index = index_of(&[(1, ORIGINAL), (2, SAME_TOPIC), (3, UNRELATED)]);
        assert_eq!(index.query(&fingerprint(SYNDICATED)), Some(1));
    }

    #[test]
    fn a_new_story_finds_nothing() {
        let index = index_of(&[(1, ORIGINAL), (3, UNRELATED)]);
        assert_eq!(index.query(&fingerprint(SAME_TOPIC)), None);
        assert_eq!(NearDupIndex::new().query(&fingerprint(ORIGINAL)), None);
    }

    #[test]
    fn the_closest_match_wins_and_ties_go_to_the_earliest_id() {
        let index = index_of(&[(5, SYNDICATED), (7, ORIGINAL), (9, ORIGINAL)]);
        assert_eq!(index.query(&fingerprint(ORIGINAL)), Some(7));
    }

    #[test]
    fn a_removed_story_is_no_longer_found() {
        let mut index = index_of(&[(1, ORIGINAL), (2, SAME_TOPIC)]);
        assert!(index.remove(1));
        assert!(!index.remove(1));
        assert_eq!(index.len(), 1);
        assert_eq!(index.query(&fingerprint(SYNDICATED)), None);
        assert_eq!(index.query(&fingerprint(SAME_TOPIC)), Some(2));
    }

    #[test]
    fn removing_from_the_middle_of_a_chain_keeps_the_others() {
        let mut index = index_of(&[(1, ORIGINAL), (2, ORIGINAL), (3, ORIGINAL)]);
        assert!(index.remove(2));
        assert_eq!(index.query(&fingerprint(SYNDICATED)), Some(1));
        assert!(index.remove(1));
        assert_eq!(index.query(&fingerprint(SYNDICATED)), Some(3));
        assert!(index.remove(3));
        assert!(index.is_empty());
        assert_eq!(index.query(&fingerprint(SYNDICATED)), None);
    }

    #[test]
    fn freed_slots_are_reused_without_mixing_stories() {
        let mut index = index_of(&[(1, ORIGINAL), (2, UNRELATED)]);
        index.remove(1);
        index.insert(3, &fingerprint(SAME_TOPIC));
        assert_eq!(index.query(&fingerprint(SYNDICATED)), None);
        assert_eq!(index.query(&fingerprint(SAME_TOPIC)), Some(3));
        assert_eq!(index.query(&fingerprint(UNRELATED)), Some(2));
    }

    #[test]
    fn inserting_an_id_again_replaces_its_fingerprint() {
        let mut index = index_of(&[(1, ORIGINAL)]);
        index.insert(1, &fingerprint(UNRELATED));
        assert_eq!(index.len(), 1);
        assert_eq!(index.query(&fingerprint(SYNDICATED)), None);
        assert_eq!(index.query(&fingerprint(UNRELATED)), Some(1));
    }

    #[test]
    fn expiry_removes_stories_below_the_cutoff_id() {
        let mut index = index_of(&[(1, ORIGINAL), (2, SAME_TOPIC), (3, UNRELATED)]);
        assert_eq!(index.expire_before(3), 2);
        assert_eq!(index.len(), 1);
        assert_eq!(index.query(&fingerprint(SYNDICATED)), None);
        assert_eq!(index.query(&fingerprint(UNRELATED)), Some(3));
    }

    #[test]
    fn a_story_too_short_to_fingerprint_is_not_kept() {
        let mut index = NearDupIndex::with_capacity(4);
        assert!(!index.insert(1, &Fingerprint::of("", "Storm")));
        assert!(index.is_empty());
    }
}
