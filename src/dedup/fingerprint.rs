//! Near-duplicate fingerprints (DESIGN §3): the dedup stage computes one per story so that
//! the same wire story carried by another outlet, under a new headline, with a paragraph
//! trimmed and light copy-edits, is stored as a duplicate and not alerted twice.
//!
//! **Scheme.** The body is normalised ([`normalize_body`]), split into Unicode words and
//! cut into overlapping word 3-shingles. A [`Fingerprint`] keeps a MinHash signature of
//! that shingle set ([`Fingerprint::HASHES`] = 150 minima of 32 bits), the number of
//! distinct shingles, and a 64-bit SimHash of the same shingles for the `stories.simhash`
//! column. The headline is shingled too only when the body is too short to stand alone
//! ([`MIN_BODY_WORDS`]), since syndicated copies usually change it.
//!
//! **Verdict.** [`Fingerprint::similarity`] estimates the Jaccard similarity of the two
//! shingle sets; [`Fingerprint::containment`] derives from it and the set sizes the share
//! of the smaller set found in the larger. Two stories are near-duplicates when the
//! Jaccard estimate is at least [`NEAR_DUP_JACCARD`] (0.25: two equal-length copies that
//! share 40 % of their shingles), or when the smaller has at least a fifth of the larger's
//! shingles and [`NEAR_DUP_CONTAINMENT`] (0.55) of them are in the larger (a trimmed copy).
//! On the dev corpus the true pairs sit at J ≈ 0.71–0.85 and the closest different
//! stories at 0.04, which is also the most similar of 2,621 pairs of different articles
//! in `../shared/data` (run `cargo run --release --example dedup_eval`).
//!
//! **Lookup.** The signature is cut into [`Fingerprint::BANDS`] = 50 bands of
//! [`Fingerprint::ROWS`] = 3 minima; each band, with its index mixed in, hashes to one
//! `i64` key ([`Fingerprint::band_keys`]). Stories that share any key are candidates, to be
//! confirmed with [`Fingerprint::is_near_duplicate`]. The chance that two stories share a
//! key is `1 - (1 - J³)⁵⁰` for Jaccard `J`: 0.75 at 0.30, 0.96 at 0.40, 0.998 at 0.50,
//! and 5·10⁻⁵ at 0.01. Copies of equal length that share 60–90 % of their shingles
//! (J ≥ 0.43) collide with a probability of at least 0.98; a copy that also lost a
//! paragraph (J ≈ 0.36) with 0.91. Unrelated stories sit at J ≈ 0–0.01, so a lookup
//! among a million stories returns a few candidates (about 5 by the background of the
//! articles in `../shared/data`, as `dedup_eval` estimates it).
//!
//! **Stability.** Band keys, SimHash and the byte form are stored: every constant and
//! hash below is fixed and platform-independent (no `std` hasher, no random seeds), and
//! the byte form starts with a format version. Changing the scheme means a new version and
//! recomputing the stored keys.

use unicode_segmentation::UnicodeSegmentation;

use super::DedupError;
use super::normalize::normalize_body;

/// Words per shingle.
pub(crate) const SHINGLE_WORDS: usize = 3;

/// Bodies with fewer words than this are fingerprinted together with their headline.
pub(crate) const MIN_BODY_WORDS: usize = 8;

/// Fingerprints with fewer distinct shingles get no band keys and are never
/// near-duplicates: too little text to tell a copy from a coincidence (the exact content
/// hash still catches identical copies).
pub(crate) const MIN_SHINGLES: u32 = 5;

/// Estimated Jaccard similarity from which two stories are near-duplicates.
pub(crate) const NEAR_DUP_JACCARD: f64 = 0.25;

/// Share of the smaller story's shingles found in the larger from which two stories are
/// near-duplicates (when their sizes allow a reliable estimate, see [`MIN_SIZE_RATIO`]).
pub(crate) const NEAR_DUP_CONTAINMENT: f64 = 0.55;

/// Smallest ratio of the two shingle-set sizes for which containment is estimated: below
/// it a handful of chance MinHash agreements would read as a high containment.
pub(crate) const MIN_SIZE_RATIO: f64 = 0.2;

/// Version byte of the byte form written by [`Fingerprint::to_bytes`].
const FORMAT_VERSION: u8 = 1;

/// Length of the version-1 byte form: version, shingle count, SimHash, minima.
const ENCODED_LEN: usize = 1 + 4 + 8 + 4 * Fingerprint::HASHES;

/// Seed of the MinHash coefficients ("feedwatc" in ASCII).
const COEFFICIENT_SEED: u64 = 0x6665_6564_7761_7463;

/// Seed of the band keys ("bandkey1").
const BAND_SEED: u64 = 0x6261_6e64_6b65_7931;

/// Multiply–add coefficients `(a, b)` of the MinHash functions `h(x) = (a·x + b) >> 32`,
/// `a` odd; derived at compile time from [`COEFFICIENT_SEED`] with SplitMix64.
const COEFFICIENTS: [(u64, u64); Fingerprint::HASHES] = coefficients();

const fn coefficients() -> [(u64, u64); Fingerprint::HASHES] {
    let mut out = [(0, 0); Fingerprint::HASHES];
    let mut state = COEFFICIENT_SEED;
    let mut i = 0;
    while i < Fingerprint::HASHES {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let a = mix64(state) | 1;
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let b = mix64(state);
        out[i] = (a, b);
        i += 1;
    }
    out
}

/// The MurmurHash3 64-bit finaliser: a bijective, well-avalanching mix.
pub(crate) const fn mix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

/// The `a` of each MinHash function, apart from `b` so that a loop over the functions
/// reads two plain arrays (and vectorises).
const MULTIPLIERS: [u64; Fingerprint::HASHES] = split_coefficients().0;

/// The `b` of each MinHash function.
const ADDENDS: [u64; Fingerprint::HASHES] = split_coefficients().1;

const fn split_coefficients() -> ([u64; Fingerprint::HASHES], [u64; Fingerprint::HASHES]) {
    let mut a = [0; Fingerprint::HASHES];
    let mut b = [0; Fingerprint::HASHES];
    let mut i = 0;
    while i < Fingerprint::HASHES {
        a[i] = COEFFICIENTS[i].0;
        b[i] = COEFFICIENTS[i].1;
        i += 1;
    }
    (a, b)
}

/// The MinHash minima and the SimHash bit weights of a set of shingle hashes: the
/// hottest loop of the daemon (about a third of its instructions on a first ingest).
/// The same arithmetic runs with AVX2 where the CPU has it, which lets the compiler
/// work on four functions at a time; the result is the same either way.
fn signature(hashes: &[u64]) -> ([u32; Fingerprint::HASHES], [i32; 64]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        return unsafe { signature_avx2(hashes) };
    }
    signature_portable(hashes)
}

fn signature_portable(hashes: &[u64]) -> ([u32; Fingerprint::HASHES], [i32; 64]) {
    signature_body(hashes)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn signature_avx2(hashes: &[u64]) -> ([u32; Fingerprint::HASHES], [i32; 64]) {
    signature_body(hashes)
}

#[inline(always)]
fn signature_body(hashes: &[u64]) -> ([u32; Fingerprint::HASHES], [i32; 64]) {
    let mut minima = [u32::MAX; Fingerprint::HASHES];
    let mut weights = [0i32; 64];
    for &x in hashes {
        for ((minimum, &a), &b) in minima.iter_mut().zip(&MULTIPLIERS).zip(&ADDENDS) {
            // The high half of a multiply–add is the well-mixed half.
            let h = (a.wrapping_mul(x).wrapping_add(b) >> 32) as u32;
            *minimum = (*minimum).min(h);
        }
        for (bit, weight) in weights.iter_mut().enumerate() {
            *weight += ((x >> bit & 1) as i32) * 2 - 1;
        }
    }
    (minima, weights)
}

/// FNV-1a over the shingle's words (separated by U+001F), then [`mix64`].
fn shingle_hash(words: &[&str]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, word) in words.iter().enumerate() {
        if i > 0 {
            hash = (hash ^ 0x1F).wrapping_mul(0x0000_0100_0000_01b3);
        }
        for byte in word.bytes() {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    mix64(hash)
}

/// Near-duplicate fingerprint of a story: MinHash signature, shingle count and SimHash
/// of its word 3-shingles (see the module docs). Stored as [`Fingerprint::to_bytes`].
#[derive(Clone, PartialEq, Eq)]
pub struct Fingerprint {
    /// Number of distinct shingles.
    shingles: u32,
    /// 64-bit SimHash of the shingle hashes.
    simhash: u64,
    /// MinHash signature: the minimum of each hash function over the shingles
    /// (`u32::MAX` everywhere for an empty text).
    minima: [u32; Fingerprint::HASHES],
}

impl std::fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fingerprint")
            .field("shingles", &self.shingles)
            .field("simhash", &format_args!("{:016x}", self.simhash))
            .finish_non_exhaustive()
    }
}

impl Fingerprint {
    /// MinHash functions in a signature.
    pub const HASHES: usize = Self::BANDS * Self::ROWS;
    /// Bands (and so band keys, i.e. index rows) per story.
    pub const BANDS: usize = 50;
    /// Signature minima per band.
    pub const ROWS: usize = 3;

    /// Fingerprints a story. The body is normalised with [`normalize_body`] (markup,
    /// boilerplate and case do not count); the title joins in only when the body has
    /// fewer than 8 words.
    pub fn of(title: &str, body: &str) -> Fingerprint {
        Self::of_normalized(title, &normalize_body(body))
    }

    /// [`Self::of`] for a body already passed through [`normalize_body`] (the prepare
    /// stage normalises once for the content hash and the fingerprint).
    pub fn of_normalized(title: &str, body: &str) -> Fingerprint {
        let mut words: Vec<&str> = body.unicode_words().collect();
        if words.len() >= MIN_BODY_WORDS {
            return Self::of_words(&words);
        }
        let title = normalize_body(title);
        let mut with_title: Vec<&str> = title.unicode_words().collect();
        with_title.append(&mut words);
        Self::of_words(&with_title)
    }

    /// Fingerprints a sequence of normalised words.
    fn of_words(words: &[&str]) -> Fingerprint {
        let mut hashes: Vec<u64> = if words.len() <= SHINGLE_WORDS {
            if words.is_empty() {
                Vec::new()
            } else {
                vec![shingle_hash(words)]
            }
        } else {
            words.windows(SHINGLE_WORDS).map(shingle_hash).collect()
        };
        hashes.sort_unstable();
        hashes.dedup();

        let (minima, weights) = signature(&hashes);
        let simhash = weights
            .iter()
            .enumerate()
            .filter(|&(_, &weight)| weight > 0)
            .fold(0u64, |acc, (bit, _)| acc | 1 << bit);

        Fingerprint {
            // A story has far fewer than 4 billion distinct shingles (bodies are capped
            // at 10 MiB upstream); saturate rather than wrap if one ever does.
            shingles: u32::try_from(hashes.len()).unwrap_or(u32::MAX),
            simhash,
            minima,
        }
    }

    /// 64-bit SimHash of the story's shingles, for the `stories.simhash` column.
    /// Copies differ in a few bits, unrelated stories in about 32.
    pub fn simhash(&self) -> u64 {
        self.simhash
    }

    /// The story's SimHash as the signed value a `bigint` column holds (same bits).
    pub fn simhash_i64(&self) -> i64 {
        self.simhash as i64
    }

    /// Number of distinct word 3-shingles the fingerprint was built from.
    pub fn shingle_count(&self) -> u32 {
        self.shingles
    }

    /// The [`Self::BANDS`] keys under which this story is indexed and looked up (rows
    /// `(story_id, band_key)`); two stories sharing one are near-duplicate candidates.
    /// Empty when the story is too short to fingerprint (fewer than 5 shingles).
    pub fn band_keys(&self) -> Vec<i64> {
        if !self.is_indexable() {
            return Vec::new();
        }
        band_keys_of(&self.minima).collect()
    }

    /// Whether the story has enough text to be indexed and matched (5 shingles or more).
    pub(crate) fn is_indexable(&self) -> bool {
        self.shingles >= MIN_SHINGLES
    }

    /// Estimated Jaccard similarity of the two stories' shingle sets, in `[0, 1]`
    /// (0 when either is empty).
    pub fn similarity(&self, other: &Fingerprint) -> f64 {
        jaccard(&self.minima, self.shingles, &other.minima, other.shingles)
    }

    /// Estimated share of the smaller story's shingles that occur in the larger, in
    /// `[0, 1]`, from [`Self::similarity`] and the two set sizes.
    pub fn containment(&self, other: &Fingerprint) -> f64 {
        let j = self.similarity(other);
        containment(j, self.shingles, other.shingles)
    }

    /// Whether the two stories are near-duplicates: Jaccard estimate ≥ 0.25, or ≥ 55 % of
    /// the smaller story inside the larger when it has at least a fifth of its size;
    /// never for stories with fewer than 5 shingles.
    pub fn is_near_duplicate(&self, other: &Fingerprint) -> bool {
        verdict(&self.minima, self.shingles, &other.minima, other.shingles).is_some()
    }

    /// The byte form stored next to the story (613 bytes): format version `1`, shingle
    /// count (u32 LE), SimHash (u64 LE), then the 150 minima (u32 LE).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(ENCODED_LEN);
        out.push(FORMAT_VERSION);
        out.extend_from_slice(&self.shingles.to_le_bytes());
        out.extend_from_slice(&self.simhash.to_le_bytes());
        for minimum in &self.minima {
            out.extend_from_slice(&minimum.to_le_bytes());
        }
        out
    }

    /// Reads the byte form written by [`Self::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Fingerprint, DedupError> {
        let (&version, rest) = bytes.split_first().ok_or(DedupError::FingerprintLength {
            expected: ENCODED_LEN,
            found: 0,
        })?;
        if version != FORMAT_VERSION {
            return Err(DedupError::FingerprintVersion(version));
        }
        if bytes.len() != ENCODED_LEN {
            return Err(DedupError::FingerprintLength {
                expected: ENCODED_LEN,
                found: bytes.len(),
            });
        }
        let (shingles, rest) = rest.split_at(4);
        let (simhash, rest) = rest.split_at(8);
        let mut minima = [0u32; Self::HASHES];
        for (minimum, chunk) in minima.iter_mut().zip(rest.chunks_exact(4)) {
            *minimum = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        }
        Ok(Fingerprint {
            shingles: u32::from_le_bytes([shingles[0], shingles[1], shingles[2], shingles[3]]),
            simhash: u64::from_le_bytes([
                simhash[0], simhash[1], simhash[2], simhash[3], simhash[4], simhash[5], simhash[6],
                simhash[7],
            ]),
            minima,
        })
    }
}

/// The band keys of a signature, band 0 first.
pub(crate) fn band_keys_of(minima: &[u32]) -> impl Iterator<Item = i64> + '_ {
    minima
        .chunks_exact(Fingerprint::ROWS)
        .enumerate()
        .map(|(band, rows)| {
            let mut key = mix64(BAND_SEED ^ band as u64);
            for &row in rows {
                key = mix64(key ^ u64::from(row));
            }
            key as i64
        })
}

/// Estimated Jaccard similarity: the share of signature positions that agree.
pub(crate) fn jaccard(a: &[u32], a_count: u32, b: &[u32], b_count: u32) -> f64 {
    if a_count == 0 || b_count == 0 {
        return 0.0;
    }
    let agree = a.iter().zip(b).filter(|(x, y)| x == y).count();
    agree as f64 / a.len() as f64
}

/// Share of the smaller set inside the larger, from the Jaccard similarity `j` and the set
/// sizes: `|A ∩ B| = j (|A| + |B|) / (1 + j)`.
fn containment(j: f64, a_count: u32, b_count: u32) -> f64 {
    let smaller = a_count.min(b_count);
    if smaller == 0 {
        return 0.0;
    }
    let shared = j * (f64::from(a_count) + f64::from(b_count)) / (1.0 + j);
    (shared / f64::from(smaller)).min(1.0)
}

/// The near-duplicate verdict on two signatures: `Some(similarity)` when they are
/// near-duplicates (see [`Fingerprint::is_near_duplicate`]), else `None`.
pub(crate) fn verdict(a: &[u32], a_count: u32, b: &[u32], b_count: u32) -> Option<f64> {
    if a_count < MIN_SHINGLES || b_count < MIN_SHINGLES {
        return None;
    }
    let j = jaccard(a, a_count, b, b_count);
    if j >= NEAR_DUP_JACCARD {
        return Some(j);
    }
    let ratio = f64::from(a_count.min(b_count)) / f64::from(a_count.max(b_count));
    (ratio >= MIN_SIZE_RATIO && containment(j, a_count, b_count) >= NEAR_DUP_CONTAINMENT)
        .then_some(j)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    const ORIGINAL: &str = include_str!("../../tests/fixtures/dedup/ferry_original.txt");
    const SYNDICATED: &str = include_str!("../../tests/fixtures/dedup/ferry_syndicated.txt");
    const SAME_TOPIC: &str = include_str!("../../tests/fixtures/dedup/ferry_other_story.txt");
    const UNRELATED: &str = include_str!("../../tests/fixtures/dedup/orchard_unrelated.txt");

    /// A fixture's first line is its headline, the rest its body.
    fn story(fixture: &str) -> (&str, &str) {
        fixture.split_once('\n').unwrap()
    }

    fn fingerprint(fixture: &str) -> Fingerprint {
        let (title, body) = story(fixture);
        Fingerprint::of(title, body)
    }

    fn paragraphs(fixture: &str) -> Vec<&str> {
        story(fixture).1.split("\n\n").map(str::trim).collect()
    }

    /// The exact Jaccard similarity of two texts' shingle sets, to check the estimate.
    fn exact_jaccard(a: &str, b: &str) -> f64 {
        let set = |text: &str| -> HashSet<u64> {
            let text = normalize_body(text);
            let words: Vec<&str> = text.unicode_words().collect();
            words.windows(SHINGLE_WORDS).map(shingle_hash).collect()
        };
        let (a, b) = (set(a), set(b));
        a.intersection(&b).count() as f64 / a.union(&b).count() as f64
    }

    fn shares_a_band_key(a: &Fingerprint, b: &Fingerprint) -> bool {
        let keys: HashSet<i64> = a.band_keys().into_iter().collect();
        b.band_keys().iter().any(|key| keys.contains(key))
    }

    #[test]
    fn identical_stories_have_identical_fingerprints() {
        assert_eq!(fingerprint(ORIGINAL), fingerprint(ORIGINAL));
        assert_eq!(
            fingerprint(ORIGINAL).similarity(&fingerprint(ORIGINAL)),
            1.0
        );
    }

    #[test]
    fn a_new_headline_alone_does_not_change_the_fingerprint() {
        let (_, body) = story(ORIGINAL);
        let renamed = Fingerprint::of("Commuters to get faster crossing next spring", body);
        assert_eq!(renamed, fingerprint(ORIGINAL));
    }

    #[test]
    fn a_copy_with_a_dropped_paragraph_is_a_near_duplicate() {
        let mut kept = paragraphs(ORIGINAL);
        kept.remove(2);
        let trimmed = Fingerprint::of("Ferry pier opens", &kept.join("\n\n"));
        let original = fingerprint(ORIGINAL);
        assert!(original.is_near_duplicate(&trimmed));
        assert!(shares_a_band_key(&original, &trimmed));
    }

    #[test]
    fn a_copy_with_light_edits_is_a_near_duplicate() {
        let (title, body) = story(ORIGINAL);
        let edited = body
            .replace("said on Tuesday", "announced on Tuesday")
            .replace("HK$1.2 billion", "HK$1.2bn (US$154 million)")
            .replace("commuters", "passengers")
            .replace("will", "would");
        let edited = Fingerprint::of(title, &edited);
        let original = fingerprint(ORIGINAL);
        assert!(original.is_near_duplicate(&edited));
        assert!(shares_a_band_key(&original, &edited));
    }

    #[test]
    fn a_syndicated_copy_with_new_headline_trim_and_edits_is_a_near_duplicate() {
        let (original, copy) = (fingerprint(ORIGINAL), fingerprint(SYNDICATED));
        assert!(original.is_near_duplicate(&copy));
        assert!(copy.is_near_duplicate(&original));
        assert!(shares_a_band_key(&original, &copy));
        assert!(original.similarity(&copy) > 0.4);
    }

    #[test]
    fn two_different_stories_on_the_same_topic_are_not_near_duplicates() {
        for (a, b) in [
            (ORIGINAL, SAME_TOPIC),
            (SYNDICATED, SAME_TOPIC),
            (ORIGINAL, UNRELATED),
        ] {
            let (a_fp, b_fp) = (fingerprint(a), fingerprint(b));
            assert!(!a_fp.is_near_duplicate(&b_fp));
            assert!(a_fp.similarity(&b_fp) < 0.15, "{}", a_fp.similarity(&b_fp));
        }
    }

    #[test]
    fn the_signature_is_the_same_on_every_path() {
        // The reference: the definition, one function at a time over all shingles.
        let reference = |hashes: &[u64]| {
            let mut minima = [u32::MAX; Fingerprint::HASHES];
            for (minimum, &(a, b)) in minima.iter_mut().zip(COEFFICIENTS.iter()) {
                for &x in hashes {
                    *minimum = (*minimum).min((a.wrapping_mul(x).wrapping_add(b) >> 32) as u32);
                }
            }
            let mut weights = [0i32; 64];
            for &x in hashes {
                for (bit, weight) in weights.iter_mut().enumerate() {
                    *weight += if x >> bit & 1 == 1 { 1 } else { -1 };
                }
            }
            (minima, weights)
        };
        let mut state = 0x1234_5678_9abc_def0u64;
        for len in [0, 1, 2, 3, 7, 150, 301, 1000] {
            let hashes: Vec<u64> = (0..len)
                .map(|_| {
                    state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
                    mix64(state)
                })
                .collect();
            let expected = reference(&hashes);
            assert_eq!(
                signature_portable(&hashes),
                expected,
                "{len} hashes, portable"
            );
            assert_eq!(signature(&hashes), expected, "{len} hashes, as dispatched");
        }
    }

    #[test]
    fn different_stories_share_no_band_key() {
        assert!(!shares_a_band_key(
            &fingerprint(ORIGINAL),
            &fingerprint(SAME_TOPIC)
        ));
        assert!(!shares_a_band_key(
            &fingerprint(ORIGINAL),
            &fingerprint(UNRELATED)
        ));
    }

    #[test]
    fn the_similarity_estimate_tracks_the_exact_jaccard() {
        for (a, b) in [
            (ORIGINAL, SYNDICATED),
            (ORIGINAL, SAME_TOPIC),
            (SYNDICATED, UNRELATED),
        ] {
            let estimate = fingerprint(a).similarity(&fingerprint(b));
            let exact = exact_jaccard(story(a).1, story(b).1);
            assert!(
                (estimate - exact).abs() < 0.12,
                "estimate {estimate:.3}, exact {exact:.3}"
            );
        }
    }

    #[test]
    fn simhash_of_a_copy_is_closer_than_of_another_story() {
        let original = fingerprint(ORIGINAL).simhash();
        let copy = (original ^ fingerprint(SYNDICATED).simhash()).count_ones();
        let other = (original ^ fingerprint(SAME_TOPIC).simhash()).count_ones();
        assert!(copy < other, "copy {copy} bits, other story {other} bits");
    }

    #[test]
    fn there_is_one_band_key_per_band_and_bands_differ() {
        let keys = fingerprint(ORIGINAL).band_keys();
        assert_eq!(keys.len(), Fingerprint::BANDS);
        let distinct: HashSet<i64> = keys.iter().copied().collect();
        assert_eq!(distinct.len(), Fingerprint::BANDS);
    }

    #[test]
    fn equal_minima_in_different_bands_give_different_keys() {
        let minima = [7u32; Fingerprint::HASHES];
        let keys: HashSet<i64> = band_keys_of(&minima).collect();
        assert_eq!(keys.len(), Fingerprint::BANDS);
    }

    #[test]
    fn fingerprints_are_stable_across_builds() {
        // Stored values: a change here means stored band keys and fingerprints are stale.
        let fp = Fingerprint::of("", "the quick brown fox jumps over the lazy dog");
        assert_eq!(fp.shingle_count(), 7);
        assert_eq!(fp.simhash(), GOLDEN_SIMHASH, "{:#018x}", fp.simhash());
        assert_eq!(
            fp.band_keys()[0],
            GOLDEN_BAND_KEY_0,
            "{}",
            fp.band_keys()[0]
        );
        assert_eq!(shingle_hash(&["a", "b", "c"]), GOLDEN_SHINGLE_HASH);
    }

    const GOLDEN_SIMHASH: u64 = 0xfb9b_805a_c243_396b;
    const GOLDEN_BAND_KEY_0: i64 = -7_514_943_465_812_500_958;
    const GOLDEN_SHINGLE_HASH: u64 = 3_556_174_678_689_514_076;

    #[test]
    fn a_short_body_is_fingerprinted_with_its_headline() {
        let a = Fingerprint::of(
            "Typhoon signal 8 raised as storm nears city",
            "Schools shut.",
        );
        let b = Fingerprint::of(
            "Typhoon signal 8 raised as storm nears city",
            "Offices close.",
        );
        assert!(a.shingle_count() >= MIN_SHINGLES);
        assert!(a.is_near_duplicate(&b));
    }

    #[test]
    fn a_body_long_enough_ignores_the_headline() {
        let body = "The city's two power firms will freeze basic charges next year, \
            regulators said on Friday.";
        assert_eq!(
            Fingerprint::of("Power prices frozen", body),
            Fingerprint::of("Electricity charges held for 2026", body)
        );
    }

    #[test]
    fn tiny_texts_get_no_band_keys_and_never_match() {
        let a = Fingerprint::of("", "Storm warning");
        assert!(a.band_keys().is_empty());
        assert!(!a.is_near_duplicate(&a.clone()));
        let empty = Fingerprint::of("", "");
        assert_eq!(empty.shingle_count(), 0);
        assert_eq!(empty.similarity(&empty), 0.0);
        assert!(empty.band_keys().is_empty());
    }

    #[test]
    fn a_short_excerpt_inside_a_longer_copy_is_a_near_duplicate_by_containment() {
        let paras = paragraphs(ORIGINAL);
        let excerpt = paras[..2].join("\n\n");
        let (long, short) = (fingerprint(ORIGINAL), Fingerprint::of("", &excerpt));
        assert!(long.containment(&short) > 0.6);
        assert!(long.is_near_duplicate(&short));
    }

    #[test]
    fn bytes_round_trip() {
        let fp = fingerprint(SYNDICATED);
        let bytes = fp.to_bytes();
        assert_eq!(bytes.len(), ENCODED_LEN);
        assert_eq!(Fingerprint::from_bytes(&bytes), Ok(fp));
    }

    #[test]
    fn bytes_of_an_unknown_version_or_length_are_refused() {
        let mut bytes = fingerprint(ORIGINAL).to_bytes();
        assert_eq!(
            Fingerprint::from_bytes(&bytes[..100]),
            Err(DedupError::FingerprintLength {
                expected: ENCODED_LEN,
                found: 100
            })
        );
        assert!(matches!(
            Fingerprint::from_bytes(&[]),
            Err(DedupError::FingerprintLength { found: 0, .. })
        ));
        bytes[0] = 9;
        assert_eq!(
            Fingerprint::from_bytes(&bytes),
            Err(DedupError::FingerprintVersion(9))
        );
    }

    /// One item of `topics-dev.json`, as far as this test reads it.
    #[derive(serde::Deserialize)]
    struct DevItem {
        id: String,
        title: String,
        body: String,
        dup_group: Option<String>,
    }

    #[derive(serde::Deserialize)]
    struct DevSet {
        items: Vec<DevItem>,
    }

    #[test]
    #[ignore = "needs ../shared/data"]
    fn dev_corpus_pairs_collapse_and_different_stories_never_merge() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/data/topics-dev.json"
        );
        let dev: DevSet = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let fps: Vec<Fingerprint> = dev
            .items
            .iter()
            .map(|item| Fingerprint::of(&item.title, &item.body))
            .collect();
        let mut pairs = 0;
        for i in 0..dev.items.len() {
            for j in i + 1..dev.items.len() {
                let (a, b) = (&dev.items[i], &dev.items[j]);
                let same_story = a.dup_group.is_some() && a.dup_group == b.dup_group;
                let near = fps[i].is_near_duplicate(&fps[j]);
                assert_eq!(near, same_story, "{} vs {}", a.id, b.id);
                if same_story {
                    pairs += 1;
                    assert!(shares_a_band_key(&fps[i], &fps[j]), "{} vs {}", a.id, b.id);
                }
            }
        }
        assert_eq!(pairs, 4);
    }
}
