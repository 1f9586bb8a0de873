//! Near-duplicate benchmarks for the dedup stage: the cost of fingerprinting a 1,000-word
//! story, and the per-story lookup latency in a `NearDupIndex` holding 1,000,000
//! fingerprints (a week of a busy deployment).
//!
//! The million indexed fingerprints are synthetic (random MinHash signatures written in
//! the documented byte form), which is what unrelated stories look like to the index; the
//! queries are either new stories (random signatures: a miss) or edited copies of indexed
//! ones (45 % of the signature redrawn, J ≈ 0.55: a hit). The index's resident memory is
//! printed once, measured from `/proc/self/status`.
//!
//! Run with `cargo bench --bench near_dup`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use feedwatch::dedup::{Fingerprint, NearDupIndex, content_hash};

const INDEXED: usize = 1_000_000;
const QUERIES: usize = 1_000;

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

fn resident_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
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

fn lookup(c: &mut Criterion) {
    let mut rng = Rng(7);
    let before = resident_mib();
    let mut index = NearDupIndex::with_capacity(INDEXED);
    let mut hit_queries = Vec::with_capacity(QUERIES);
    for id in 0..INDEXED {
        let mut minima = random_minima(&mut rng);
        let shingles = 150 + rng.below(900) as u32;
        index.insert(id as i64, &fingerprint_from(&minima, shingles));
        if id % (INDEXED / QUERIES) == 0 {
            for minimum in minima.iter_mut() {
                if rng.below(100) < 45 {
                    *minimum = rng.next() as u32;
                }
            }
            hit_queries.push((id as i64, fingerprint_from(&minima, shingles)));
        }
    }
    if let (Some(before), Some(after)) = (before, resident_mib()) {
        eprintln!(
            "NearDupIndex with {} fingerprints: {:.0} MiB resident ({:.0} bytes per story)",
            index.len(),
            after - before,
            (after - before) * 1024.0 * 1024.0 / index.len() as f64
        );
    }
    let found = hit_queries
        .iter()
        .filter(|(id, fp)| index.query(fp) == Some(*id))
        .count();
    eprintln!("edited copies found: {found}/{}", hit_queries.len());
    let miss_queries: Vec<Fingerprint> = (0..QUERIES)
        .map(|_| fingerprint_from(&random_minima(&mut rng), 400))
        .collect();

    let mut group = c.benchmark_group("near_dup_index_1m");
    let mut i = 0;
    group.bench_function("query_new_story", |b| {
        b.iter(|| {
            i = (i + 1) % QUERIES;
            index.query(black_box(&miss_queries[i]))
        })
    });
    group.bench_function("query_edited_copy", |b| {
        b.iter(|| {
            i = (i + 1) % QUERIES;
            index.query(black_box(&hit_queries[i].1))
        })
    });
    let mut next_id = INDEXED as i64;
    group.bench_function("insert_then_expire_one", |b| {
        b.iter(|| {
            i = (i + 1) % QUERIES;
            index.insert(next_id, &miss_queries[i]);
            index.remove(next_id);
            next_id += 1;
        })
    });
    group.finish();
}

criterion_group!(benches, fingerprinting, lookup);
criterion_main!(benches);
