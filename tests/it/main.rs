//! One integration-test binary for feedwatch; each module is one area.
//! Everything runs on loopback: feeds, pages and webhook receivers are local
//! servers, and every store-facing test runs on SQLite and on Postgres.

// Helpers shared by all areas; not every area uses every helper.
#[allow(dead_code)]
mod support;

// `feedwatch once` end to end: feeds → store → signed webhooks.
mod once;
// `feedwatch run` as a process: polling, SIGTERM, drain.
mod daemon;
// Bad configuration files and the exit code 2.
mod config_cli;
// The Store contract on both backends.
mod store;
// Article pages: full text for excerpt feeds, html listing sources.
mod pages;
// The fetcher's per-host and global limits, seen by a server.
mod politeness;
// `feedwatch match` on files, feeds and stdin.
mod match_cli;
// Webhook delivery: retries, dead letters, max_age.
mod delivery;
// One alert per story across URL variants, copies, wire edits and updates.
mod dedup;
// Hostile servers and bodies: malformed feeds, entity bombs, oversized and
// endless responses, redirects, charsets, odd dates, huge feeds, HTTP statuses,
// source health events and a TLS handshake — each bad source fails alone.
mod hostile;
// Tuning topics: backtest over stored stories, eval on labels, label, match --explain.
mod tuning;
