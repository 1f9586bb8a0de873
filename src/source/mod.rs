//! Sources: the parse stage. Bytes fetched from a source become candidate
//! stories — `feed` for RSS/Atom/JSON Feed, `listing` for the article links of
//! an HTML listing page — which the normaliser then cleans and keys.

pub mod feed;
