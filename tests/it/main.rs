//! One integration-test binary for feedwatch; each module is one area.
//! Everything runs on loopback: feeds, pages and webhook receivers are local
//! servers, and every store-facing test runs on SQLite and on Postgres.

// Helpers shared by all areas; not every area uses every helper.
#[allow(dead_code)]
mod support;

// `feedwatch once` end to end: feeds → store → signed webhooks.
mod once;
// `feedwatch run` as a process: polling, SIGTERM, drain, kill -9 and restart, a stuck stage.
mod daemon;
// Three daemons on one Postgres sharing a farm of feeds, one of them killed.
mod fleet;
// Bad configuration files and the exit code 2.
mod config_cli;
// Opening the store: clear connection errors, relative SQLite paths, and
// commands that only read creating nothing.
mod store_open;
// The systemd unit: `systemd-analyze verify` and `security` (at most 1.5).
mod service;
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
// A poll as one unit of work: alerts for stories that come to match later, listings
// and pages finished by later polls, a failed write that leaves nothing behind.
mod polls;
// Hostile servers and bodies: malformed feeds, entity bombs, oversized and
// endless responses, redirects, charsets, odd dates, huge feeds, HTTP statuses,
// source health events and a TLS handshake — each bad source fails alone.
mod hostile;
// Issue 13's attacks: redirects off the host rule, names that resolve to
// loopback, webhook URLs (credentials) in output, and absurd Retry-After values.
mod security;
// Tuning topics: backtest over stored stories, eval on labels, label, match --explain.
mod tuning;
