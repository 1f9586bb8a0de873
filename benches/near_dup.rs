//! Near-duplicate benchmarks for the dedup stage: the cost of fingerprinting a 1,000-word
//! story and of hashing its content, and of comparing two fingerprints (what the store's
//! verdict does for each candidate a band lookup finds). The lookup through the store
//! itself is measured by `examples/near_dup_store_bench.rs`.
//!
//! Run with `cargo bench --bench near_dup`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use feedwatch::dedup::{Fingerprint, content_hash};

/// Deterministic pseudo-random numbers (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A synthetic story of `words` words in paragraphs of about 60, drawn from a skewed
/// vocabulary of 5,000 made-up words so that short words recur as in real prose.
fn story(words: usize, rng: &mut Rng) -> String {
    const SYLLABLES: &[&str] = &[
        "ta", "ri", "ff", "on", "ex", "port", "chip", "la", "ser", "dro", "ne", "har", "bour",
        "min", "is", "ter", "gov", "ern", "ment", "trade", "steel", "say", "said", "the", "of",
    ];
    let mut text = String::with_capacity(words * 8);
    for i in 0..words {
        // Squaring a uniform draw skews the choice towards low (frequent) word numbers.
        let draw = rng.below(5_000) as f64 / 5_000.0;
        let mut n = (draw * draw * 5_000.0) as usize;
        let mut word = String::new();
        loop {
            word.push_str(SYLLABLES[n % SYLLABLES.len()]);
            n /= SYLLABLES.len();
            if n == 0 {
                break;
            }
        }
        text.push_str(&word);
        text.push(if i % 60 == 59 { '\n' } else { ' ' });
        if i % 60 == 59 {
            text.push('\n');
        }
    }
    text
}

/// A random fingerprint in the documented byte form: version 1, shingle count, SimHash,
/// then the minima.
fn random_minima(rng: &mut Rng) -> Vec<u32> {
    (0..Fingerprint::HASHES)
        .map(|_| rng.next() as u32)
        .collect()
}

fn fingerprint_from(minima: &[u32], shingles: u32) -> Fingerprint {
    let mut bytes = vec![1u8];
    bytes.extend_from_slice(&shingles.to_le_bytes());
    bytes.extend_from_slice(&0u64.to_le_bytes());
    for minimum in minima {
        bytes.extend_from_slice(&minimum.to_le_bytes());
    }
    Fingerprint::from_bytes(&bytes).expect("bench builds version-1 fingerprints")
}

fn fingerprinting(c: &mut Criterion) {
    let mut rng = Rng(1);
    let body = story(1_000, &mut rng);
    let title = "Synthetic headline for the fingerprint benchmark";
    let mut group = c.benchmark_group("story_1000_words");
    group.bench_function("Fingerprint::of", |b| {
        b.iter(|| Fingerprint::of(black_box(title), black_box(&body)))
    });
    group.bench_function("content_hash", |b| {
        b.iter(|| content_hash(black_box(&body)))
    });
    group.finish();
}

fn comparison(c: &mut Criterion) {
    let mut rng = Rng(7);
    let minima = random_minima(&mut rng);
    let original = fingerprint_from(&minima, 400);
    // An edited copy: 45 % of the signature redrawn (J ≈ 0.55), and an unrelated story.
    let edited: Vec<u32> = minima
        .iter()
        .map(|&m| {
            if rng.below(100) < 45 {
                rng.next() as u32
            } else {
                m
            }
        })
        .collect();
    let copy = fingerprint_from(&edited, 400);
    let other = fingerprint_from(&random_minima(&mut rng), 400);
    assert!(original.is_near_duplicate(&copy) && !original.is_near_duplicate(&other));
    let mut group = c.benchmark_group("fingerprint_comparison");
    group.bench_function("edited_copy", |b| {
        b.iter(|| black_box(&original).is_near_duplicate(black_box(&copy)))
    });
    group.bench_function("other_story", |b| {
        b.iter(|| black_box(&original).is_near_duplicate(black_box(&other)))
    });
    group.bench_function("band_keys", |b| b.iter(|| black_box(&original).band_keys()));
    group.finish();
}

criterion_group!(benches, fingerprinting, comparison);
criterion_main!(benches);
