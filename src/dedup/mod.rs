//! Dedup: the stage between the normalizer and the matcher that gives every story its
//! identity keys, so that one story yields one alert however many URLs, edits and
//! outlets carry it (DESIGN §3).
//!
//! Everything here is pure and synchronous; the verdict itself (new, update, duplicate)
//! is taken by the store inside the story's transaction. This module prepares:
//!
//! - the **canonical URL** ([`canonicalize_url`], [`choose_canonical`]): the story's identity;
//! - the **content hash** ([`content_hash`] of [`normalize_body`]): same URL + new hash is an
//!   update, new URL + known hash is a duplicate;
//! - the **near-duplicate fingerprint** ([`Fingerprint`]): MinHash over word 3-shingles, whose
//!   [`Fingerprint::band_keys`] are stored as indexed `(story_id, band_key)` rows so that the
//!   stories of the last `dedup.window` that may be near-duplicates are found by equality
//!   lookups, then confirmed with [`Fingerprint::is_near_duplicate`] on their stored bytes.

mod canonical;
mod fingerprint;
mod normalize;

pub use canonical::{canonicalize_url, choose_canonical};
pub use fingerprint::Fingerprint;
pub use normalize::{content_hash, hash_normalized, normalize_body};

/// What can go wrong in the dedup stage (only decoding stored fingerprints can fail).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DedupError {
    /// The stored fingerprint bytes have a length that no known format version uses.
    #[error("fingerprint is {found} bytes long, expected {expected}")]
    FingerprintLength {
        /// Length the format version in the first byte requires.
        expected: usize,
        /// Length actually found.
        found: usize,
    },
    /// The stored fingerprint was written by a format version this build does not know.
    #[error("unknown fingerprint format version {0}")]
    FingerprintVersion(u8),
}
