//! feedwatch — a streaming news-monitoring daemon.
//!
//! Stories flow one way through these modules (DESIGN §1):
//!
//! ```text
//! config ─► app (scheduler) ─► fetch ─► source (feed/html) ─► normalize ─► dedup
//!        ─► topics (matcher) ─► store (story + matches + outbox, one transaction)
//!        ─► notify (outbox worker, signed webhooks)
//! ```
//!
//! Each stage owns its state and hands the next one what it needs through a
//! bounded channel ([`pipeline`]); the store is the only source of truth, and
//! the notifier reads the outbox, never the pipeline.

pub mod admin;
pub mod app;
pub mod cli;
pub mod config;
pub mod dedup;
pub mod dry_run;
pub mod extract;
pub mod fetch;
pub mod health;
pub mod normalize;
pub mod notify;
pub mod pipeline;
pub mod reload;
pub mod source;
pub mod store;
pub mod telemetry;
pub(crate) mod text;
pub mod topics;
pub mod tuning;
