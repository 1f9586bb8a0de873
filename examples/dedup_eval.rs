//! Evaluates near-duplicate detection on the dev corpus (`../shared/data/topics-dev.json`):
//! for every true pair (same `dup_group`) the similarity, containment, SimHash Hamming
//! distance and shared band keys; the closest pairs of different stories; the stories the
//! store's band lookup, fed in corpus order, flags; and how far synthetic edits can go
//! before a copy is missed.
//!
//! Run with `cargo run --release --example dedup_eval`.

use std::collections::{BTreeSet, HashMap, HashSet};

use feedwatch::dedup::{Fingerprint, normalize_body};

/// One item of `topics-dev.json`, as far as this evaluation reads it.
#[derive(serde::Deserialize)]
struct Item {
    id: String,
    title: String,
    body: String,
    dup_group: Option<String>,
}

#[derive(serde::Deserialize)]
struct DevSet {
    items: Vec<Item>,
}

/// Measurements of one pair of stories.
struct Pair {
    a: usize,
    b: usize,
    similarity: f64,
    containment: f64,
    hamming: u32,
    shared_bands: usize,
    near: bool,
}

fn measure(fps: &[Fingerprint], a: usize, b: usize) -> Pair {
    let keys: HashSet<i64> = fps[a].band_keys().into_iter().collect();
    Pair {
        a,
        b,
        similarity: fps[a].similarity(&fps[b]),
        containment: fps[a].containment(&fps[b]),
        hamming: (fps[a].simhash() ^ fps[b].simhash()).count_ones(),
        shared_bands: fps[b]
            .band_keys()
            .iter()
            .filter(|k| keys.contains(k))
            .count(),
        near: fps[a].is_near_duplicate(&fps[b]),
    }
}

fn print_pair(items: &[Item], pair: &Pair) {
    println!(
        "  {} ~ {}  J≈{:.3}  containment≈{:.3}  simhash Δ={:2}  shared band keys {:2}/{}  near-dup: {}",
        items[pair.a].id,
        items[pair.b].id,
        pair.similarity,
        pair.containment,
        pair.hamming,
        pair.shared_bands,
        Fingerprint::BANDS,
        pair.near
    );
}

/// Exact word 3-shingle set of a text (split on whitespace, close to the fingerprint's
/// Unicode words), to report how much of a story an edited copy keeps.
fn shingles(text: &str) -> HashSet<String> {
    let text = normalize_body(text);
    let words: Vec<&str> = text.split_whitespace().collect();
    words.windows(3).map(|w| w.join(" ")).collect()
}

/// Deterministic pseudo-random numbers (SplitMix64) for the synthetic edits.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
}

/// A copy-edited version of `body`: its last paragraph dropped (when it has more than
/// two) and a share `rate` of its words replaced by other words.
fn edit(body: &str, rate: f64, rng: &mut Rng) -> String {
    let mut paragraphs: Vec<&str> = body.split("\n\n").collect();
    if paragraphs.len() > 2 {
        paragraphs.pop();
    }
    paragraphs
        .iter()
        .map(|paragraph| {
            paragraph
                .split_whitespace()
                .map(|word| {
                    if rng.chance(rate) {
                        format!("edit{}", rng.next() % 1000)
                    } else {
                        word.to_owned()
                    }
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// Pairs of different articles beyond the dev set: the dev bodies plus the extracted
/// articles of the Readability test pages (`realworld/articles/readability/*expected.html`,
/// those over 100 words). Reports every pair the verdict merges, the most similar pair it
/// does not, the pairs of different articles sharing a band key, and the false candidates
/// a lookup among a million such stories would return (from the exact shingle Jaccard).
fn background(items: &[Item]) -> Result<(), Box<dyn std::error::Error>> {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/data/realworld/articles/readability"
    );
    let mut texts: Vec<(String, String)> = items
        .iter()
        .map(|item| (item.id.clone(), item.body.clone()))
        .collect();
    let mut pages: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.to_string_lossy().ends_with("__expected.html"))
        .collect();
    pages.sort();
    for page in pages {
        let html = std::fs::read_to_string(&page)?;
        if normalize_body(&html).split_whitespace().count() > 100 {
            let name = page.file_name().unwrap_or_default().to_string_lossy();
            texts.push((name.replace("__expected.html", ""), html));
        }
    }
    let fps: Vec<Fingerprint> = texts
        .iter()
        .map(|(_, text)| Fingerprint::of("", text))
        .collect();
    let sets: Vec<HashSet<String>> = texts.iter().map(|(_, text)| shingles(text)).collect();
    let same_group = |a: usize, b: usize| {
        a < items.len()
            && b < items.len()
            && items[a].dup_group.is_some()
            && items[a].dup_group == items[b].dup_group
    };
    let (mut pairs, mut colliding, mut expected_candidates) = (0u32, 0u32, 0.0);
    let mut closest: Option<(f64, usize, usize)> = None;
    println!(
        "\nbackground: {} articles (dev bodies + {} Readability test articles)",
        texts.len(),
        texts.len() - items.len()
    );
    for a in 0..texts.len() {
        for b in a + 1..texts.len() {
            if same_group(a, b) {
                continue;
            }
            let similarity = fps[a].similarity(&fps[b]);
            if fps[a].is_near_duplicate(&fps[b]) {
                println!(
                    "  merged: {} ~ {} (J≈{similarity:.3}; check by eye whether they are one text)",
                    texts[a].0, texts[b].0
                );
                continue;
            }
            pairs += 1;
            let keys: HashSet<i64> = fps[a].band_keys().into_iter().collect();
            colliding += u32::from(fps[b].band_keys().iter().any(|k| keys.contains(k)));
            if closest.is_none_or(|(best, _, _)| similarity > best) {
                closest = Some((similarity, a, b));
            }
            let union = sets[a].union(&sets[b]).count().max(1) as f64;
            let exact = sets[a].intersection(&sets[b]).count() as f64 / union;
            let rows = i32::try_from(Fingerprint::ROWS)?;
            let bands = i32::try_from(Fingerprint::BANDS)?;
            expected_candidates += 1.0 - (1.0 - exact.powi(rows)).powi(bands);
        }
    }
    if let Some((similarity, a, b)) = closest {
        println!(
            "  most similar pair not merged: {} ~ {} J≈{similarity:.3}",
            texts[a].0, texts[b].0
        );
    }
    println!("  pairs of different articles sharing a band key: {colliding}/{pairs}");
    println!(
        "  expected false candidates per lookup among 1,000,000 such stories: {:.1}",
        expected_candidates / f64::from(pairs) * 1e6
    );
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/data/topics-dev.json"
    );
    let dev: DevSet = serde_json::from_str(&std::fs::read_to_string(path)?)?;
    let items = dev.items;
    let fps: Vec<Fingerprint> = items
        .iter()
        .map(|item| Fingerprint::of(&item.title, &item.body))
        .collect();

    let mut true_pairs = Vec::new();
    let mut others = Vec::new();
    for a in 0..items.len() {
        for b in a + 1..items.len() {
            let pair = measure(&fps, a, b);
            let same = items[a].dup_group.is_some() && items[a].dup_group == items[b].dup_group;
            if same {
                true_pairs.push(pair);
            } else {
                others.push(pair);
            }
        }
    }

    println!(
        "dev corpus: {} stories, {} true pairs, {} pairs of different stories",
        items.len(),
        true_pairs.len(),
        others.len()
    );
    println!(
        "scheme: MinHash of word 3-shingles, {} hashes = {} bands x {} rows; near-dup at J ≥ 0.25 (or containment ≥ 0.55)",
        Fingerprint::HASHES,
        Fingerprint::BANDS,
        Fingerprint::ROWS
    );
    println!("\ntrue pairs:");
    for pair in &true_pairs {
        print_pair(&items, pair);
    }
    others.sort_by(|x, y| y.similarity.total_cmp(&x.similarity));
    println!("\nclosest pairs of different stories (by J):");
    for pair in others.iter().take(5) {
        print_pair(&items, pair);
    }
    let min_hamming = others.iter().map(|p| p.hamming).min().unwrap_or(64);
    let max_pair_hamming = true_pairs.iter().map(|p| p.hamming).max().unwrap_or(0);
    println!("\nsimhash: true pairs Δ ≤ {max_pair_hamming}; different stories Δ ≥ {min_hamming}");
    let colliding = others.iter().filter(|p| p.shared_bands > 0).count();
    let merged = others.iter().filter(|p| p.near).count();
    let missed = true_pairs.iter().filter(|p| !p.near).count();
    let no_band = true_pairs.iter().filter(|p| p.shared_bands == 0).count();
    println!(
        "different stories sharing a band key (false candidates): {colliding}/{}; merged: {merged}",
        others.len()
    );
    println!(
        "true pairs missed by the verdict: {missed}/{}; sharing no band key: {no_band}/{}",
        true_pairs.len(),
        true_pairs.len()
    );

    println!("\nthe store's band lookup fed in corpus order (candidates, then index):");
    // What the store does per story: the earlier stories sharing a band key are the
    // candidates, newest first, and the first whose fingerprint is close is the original.
    let mut bands: HashMap<i64, Vec<usize>> = HashMap::new();
    let mut flagged = BTreeSet::new();
    for (i, fp) in fps.iter().enumerate() {
        let keys = fp.band_keys();
        let mut candidates: Vec<usize> = keys
            .iter()
            .filter_map(|k| bands.get(k))
            .flatten()
            .copied()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        candidates.reverse();
        if let Some(&earlier) = candidates.iter().find(|&&c| fp.is_near_duplicate(&fps[c])) {
            println!(
                "  {} is a near-duplicate of {}",
                items[i].id, items[earlier].id
            );
            flagged.insert((earlier, i));
        }
        for k in keys {
            bands.entry(k).or_default().push(i);
        }
    }
    let expected: BTreeSet<(usize, usize)> = true_pairs.iter().map(|p| (p.a, p.b)).collect();
    println!(
        "  flagged {} pairs; exactly the true pairs: {}",
        flagged.len(),
        flagged == expected
    );

    println!(
        "\nsynthetic copies (last paragraph dropped, a share of words replaced), 20 per story:"
    );
    println!("  replaced  shingles kept  mean J≈  near-dup  band hit  both (found)");
    for rate in [0.0, 0.03, 0.06, 0.09, 0.12, 0.15] {
        let mut rng = Rng(0x5EED ^ (rate * 1000.0) as u64);
        let (mut kept, mut sim, mut near, mut hit, mut found, mut n) =
            (0.0, 0.0, 0u32, 0u32, 0u32, 0u32);
        for (item, fp) in items.iter().zip(&fps) {
            let original = shingles(&item.body);
            let keys: HashSet<i64> = fp.band_keys().into_iter().collect();
            for _ in 0..20 {
                let body = edit(&item.body, rate, &mut rng);
                let copy = Fingerprint::of("A new headline for the copy", &body);
                let copy_shingles = shingles(&body);
                kept += copy_shingles.intersection(&original).count() as f64
                    / original.len().min(copy_shingles.len()).max(1) as f64;
                sim += fp.similarity(&copy);
                let is_near = fp.is_near_duplicate(&copy);
                let is_hit = copy.band_keys().iter().any(|k| keys.contains(k));
                near += u32::from(is_near);
                hit += u32::from(is_hit);
                found += u32::from(is_near && is_hit);
                n += 1;
            }
        }
        let n_f = f64::from(n);
        println!(
            "  {:>7.0}%  {:>12.0}%  {:>7.3}  {:>7.1}%  {:>7.1}%  {:>10.1}%",
            rate * 100.0,
            100.0 * kept / n_f,
            sim / n_f,
            100.0 * f64::from(near) / n_f,
            100.0 * f64::from(hit) / n_f,
            100.0 * f64::from(found) / n_f
        );
    }

    background(&items)?;

    println!(
        "\nband-key collision probability 1-(1-J^{})^{} by Jaccard J:",
        Fingerprint::ROWS,
        Fingerprint::BANDS
    );
    for j in [0.05, 0.1, 0.2, 0.3, 0.4, 0.43, 0.5, 0.6, 0.7] {
        let p = 1.0
            - (1.0 - f64::powi(j, i32::try_from(Fingerprint::ROWS)?))
                .powi(i32::try_from(Fingerprint::BANDS)?);
        println!("  J={j:.2}: {p:.4}");
    }
    Ok(())
}
