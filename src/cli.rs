//! The command line (DESIGN §7): parses arguments, loads the config, and calls
//! the library. Exit codes: 0 when the command did its work, 1 when it could
//! not (store unreachable, every source failed), 2 for usage or configuration
//! errors.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::app::App;
use crate::config::{self, Config, ConfigError};
use crate::telemetry::{self, LogFormat};
use crate::tuning::{self, LabelsFrom, TopicArgs};

#[derive(Debug, Parser)]
#[command(
    name = "feedwatch",
    version,
    about = "News-monitoring daemon: feeds and pages in, matched stories and signed webhooks out"
)]
pub struct Cli {
    /// Config file (default: $FEEDWATCH_CONFIG, else ./config.toml).
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Log line format.
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon until SIGTERM/SIGINT; SIGHUP reloads sources, topics and webhooks.
    Run,
    /// Poll every source once, deliver due alerts, exit.
    Once,
    /// Validate the config and summarise it; exit 2 on error.
    CheckConfig,
    /// Dry-run the topics on a story: a text, HTML or feed file, a URL, or - for stdin.
    Match {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Say why each topic did or did not match: the clauses that failed, or the
        /// terms that counted and the score.
        #[arg(long)]
        explain: bool,
        /// FILE, URL or - (stdin).
        #[arg(default_value = "-")]
        input: String,
    },
    /// Run the topics (or changed queries) over the stored stories: what they match now,
    /// and what they add to or drop from the stored matches. Only reads.
    Backtest {
        /// Only stories published (else fetched) this recently, e.g. 7d.
        #[arg(long, value_name = "DURATION")]
        since: Option<String>,
        /// Only this topic (repeatable).
        #[arg(long = "topic", value_name = "NAME")]
        topics: Vec<String>,
        /// Replace topic NAME's query, or add topic NAME (repeatable).
        #[arg(long = "query", value_name = "NAME=QUERY")]
        queries: Vec<String>,
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Precision, recall and F1 per topic on labelled stories: a labels file or --stored.
    Eval {
        /// Labels file ({"items": [{"id", "url", "title", "body", "topics"}]}), or - for stdin.
        #[arg(required_unless_present = "stored", conflicts_with = "stored")]
        labels: Option<String>,
        /// Use the labels recorded with `feedwatch label`.
        #[arg(long)]
        stored: bool,
        /// With --stored: only labels given this recently, e.g. 30d.
        #[arg(long, value_name = "DURATION", requires = "stored")]
        since: Option<String>,
        /// Only this topic (repeatable).
        #[arg(long = "topic", value_name = "NAME")]
        topics: Vec<String>,
        /// Replace topic NAME's query, or add topic NAME (repeatable).
        #[arg(long = "query", value_name = "NAME=QUERY")]
        queries: Vec<String>,
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Record a judgement of a stored story: +TOPIC relevant, -TOPIC not relevant.
    Label {
        /// The story's id (`stories.id`, `story_id` in `matched_stories` and alerts).
        story_id: i64,
        /// +TOPIC or -TOPIC, one or more.
        #[arg(required = true, allow_hyphen_values = true, num_args = 1..)]
        judgements: Vec<String>,
    },
    /// Inspect and re-drive the webhook outbox.
    Deliveries {
        #[command(subcommand)]
        action: DeliveriesAction,
    },
}

#[derive(Debug, Subcommand)]
pub enum DeliveriesAction {
    /// List deliveries, newest first.
    List {
        /// Only this status: pending, delivered or dead.
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// Make a delivery (by id), or every dead one (--dead), due again now.
    Retry {
        id: Option<uuid::Uuid>,
        #[arg(long, conflicts_with = "id")]
        dead: bool,
    },
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    let path = config::resolve_path(cli.config.as_deref());
    let config = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => return config_error(&e),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(dispatch(cli.command, config, path))
}

fn config_error(e: &ConfigError) -> ExitCode {
    telemetry::report_fatal(&e.to_string());
    ExitCode::from(2)
}

async fn dispatch(command: Command, config: Config, path: PathBuf) -> ExitCode {
    match command {
        Command::CheckConfig => {
            print!("{}", summarise(&config, &path));
            for warning in config.warnings() {
                eprintln!("warning: {warning}");
            }
            ExitCode::SUCCESS
        }
        Command::Run => {
            log_warnings(&config);
            let app = match App::build(config).await {
                Ok(app) => app,
                Err(e) => return failure(&e),
            };
            app.enable_metrics();
            let app = Arc::new(app);
            let cancel = CancellationToken::new();
            tokio::spawn(watch_signals(cancel.clone()));
            // Installed before the daemon reports ready: SIGHUP's default action ends a process.
            match signal(SignalKind::hangup()) {
                Ok(hangups) => {
                    tokio::spawn(reload_on_hangup(hangups, app.clone(), path, cancel.clone()));
                }
                Err(e) => {
                    warn!(error = %e, "cannot watch SIGHUP; restart feedwatch to apply config changes")
                }
            }
            match app.run_daemon(cancel).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => failure(&e),
            }
        }
        Command::Once => {
            log_warnings(&config);
            let app = match App::build(config).await {
                Ok(app) => app,
                Err(e) => return failure(&e),
            };
            match app.run_once().await {
                Ok(report) if report.all_failed() => {
                    error!(sources = report.sources, "every source failed");
                    ExitCode::from(1)
                }
                Ok(report) => {
                    info!(
                        sources = report.sources,
                        ok = report.polls_ok,
                        failed = report.polls_failed,
                        new = report.stories_new,
                        updated = report.stories_updated,
                        duplicates = report.stories_duplicate,
                        delivered = report.deliveries.delivered,
                        retrying = report.deliveries.retried,
                        dead = report.deliveries.dead,
                        "once: summary"
                    );
                    app.store().close().await;
                    ExitCode::SUCCESS
                }
                Err(e) => failure(&e),
            }
        }
        Command::Match {
            json,
            explain,
            input,
        } => crate::dry_run::run_match(&config, &input, json, explain).await,
        Command::Backtest {
            since,
            topics,
            queries,
            json,
        } => {
            let topics = TopicArgs {
                only: topics,
                queries,
            };
            tuning::backtest_command(&config, &topics, since.as_deref(), json).await
        }
        Command::Eval {
            labels,
            stored,
            since,
            topics,
            queries,
            json,
        } => {
            let from = match labels {
                Some(path) if !stored => LabelsFrom::File(path),
                _ => LabelsFrom::Stored { since },
            };
            let topics = TopicArgs {
                only: topics,
                queries,
            };
            tuning::eval_command(&config, &from, &topics, json).await
        }
        Command::Label {
            story_id,
            judgements,
        } => tuning::label_command(&config, story_id, &judgements).await,
        Command::Deliveries { action } => deliveries(config, action).await,
    }
}

/// Reports the error that ends a command (once) and returns exit code 1.
fn failure(e: &anyhow::Error) -> ExitCode {
    telemetry::report_fatal(&telemetry::error_chain(e));
    ExitCode::from(1)
}

fn log_warnings(config: &Config) {
    for warning in config.warnings() {
        warn!("config: {warning}");
    }
}

/// On each SIGHUP, reloads the sources, topics and webhooks from the config file
/// (see [`App::reload`]).
async fn reload_on_hangup(
    mut hangups: Signal,
    app: Arc<App>,
    path: PathBuf,
    cancel: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            received = hangups.recv() => if received.is_none() { return },
        }
        match app.reload(&path).await {
            Ok(report) => {
                info!(
                    config = %path.display(),
                    sources_added = ?report.sources_added,
                    sources_removed = ?report.sources_removed,
                    sources_changed = ?report.sources_changed,
                    topics = report.topics,
                    webhooks = report.webhooks,
                    "SIGHUP: config reloaded (sources, topics and webhooks)"
                );
                for warning in &report.warnings {
                    warn!("config: {warning}");
                }
                if !report.restart_only.is_empty() {
                    warn!(
                        config = %path.display(),
                        "SIGHUP: {} changed in the file but take effect only at restart",
                        report.restart_only.join(", ")
                    );
                }
            }
            Err(e) => error!(
                config = %path.display(),
                "SIGHUP: config not reloaded, nothing changed: {}",
                telemetry::error_chain(&e)
            ),
        }
    }
}

async fn watch_signals(cancel: CancellationToken) {
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        _ => {
            error!("cannot install signal handlers; stop feedwatch with SIGKILL");
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM received: stopping; a second SIGTERM or SIGINT exits at once"),
        _ = int.recv() => info!("SIGINT received: stopping; a second SIGTERM or SIGINT exits at once"),
    }
    cancel.cancel();
    // The drain is under way; a second signal means "now": exit as a process killed
    // by it would (128 + its number), leaving the claims still held to lapse.
    let (name, code) = tokio::select! {
        _ = term.recv() => ("SIGTERM", 143),
        _ = int.recv() => ("SIGINT", 130),
    };
    warn!("{name} received again: exiting at once, abandoning the work under way");
    std::process::exit(code);
}

async fn deliveries(config: Config, action: DeliveriesAction) -> ExitCode {
    // Inspecting or re-driving the outbox never creates a database.
    let store = match crate::store::connect_existing(&config.database.url, 2).await {
        Ok(s) => s,
        Err(e) => return failure(&anyhow::Error::new(e)),
    };
    let result: anyhow::Result<()> = async {
        match action {
            DeliveriesAction::List {
                status,
                limit,
                json,
            } => {
                if let Some(s) = status.as_deref()
                    && !matches!(s, "pending" | "delivered" | "dead")
                {
                    anyhow::bail!("--status must be pending, delivered or dead, not {s:?}");
                }
                let mut rows = store.list_deliveries(status.as_deref(), limit).await?;
                // Errors stored by earlier versions may quote a webhook URL.
                let urls: Vec<&str> = config.webhooks.iter().map(|w| w.url.as_str()).collect();
                for row in &mut rows {
                    if let Some(error) = &row.last_error {
                        row.last_error =
                            Some(crate::notify::redact::scrub(error, urls.iter().copied()));
                    }
                }
                if json {
                    println!("{}", serde_json::to_string_pretty(&rows)?);
                } else {
                    println!(
                        "{:<36}  {:<16}  {:<12}  {:<9}  {:>3}  {:<20}  last error",
                        "id", "event", "webhook", "status", "try", "next attempt"
                    );
                    for d in rows {
                        println!(
                            "{:<36}  {:<16}  {:<12}  {:<9}  {:>3}  {:<20}  {}",
                            d.id,
                            d.event,
                            d.webhook,
                            d.status,
                            d.attempts,
                            d.next_attempt_at.format("%Y-%m-%d %H:%M:%S"),
                            d.last_error.unwrap_or_default()
                        );
                    }
                }
            }
            DeliveriesAction::Retry { id, dead } => {
                if id.is_none() && !dead {
                    anyhow::bail!("name a delivery id, or --dead for every dead delivery");
                }
                let n = store.retry_deliveries(id, chrono::Utc::now()).await?;
                println!("{n} deliveries due again");
            }
        }
        Ok(())
    }
    .await;
    store.close().await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            telemetry::report_fatal(&telemetry::error_chain(&e));
            ExitCode::from(
                if e.to_string().starts_with("--status") || e.to_string().starts_with("name a") {
                    2
                } else {
                    1
                },
            )
        }
    }
}

/// The `check-config` summary.
pub fn summarise(config: &Config, path: &std::path::Path) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "config {} is valid", path.display());
    let _ = writeln!(
        out,
        "database: {}",
        config::redact_url(&config.database.url)
    );
    let _ = writeln!(out, "sources ({}):", config.sources.len());
    for s in &config.sources {
        let _ = writeln!(
            out,
            "  {:<20} {:<4} every {:<6} {}{}",
            s.name(),
            s.kind.as_str(),
            humantime::format_duration(config.interval_of(s)).to_string(),
            s.url,
            if s.enabled { "" } else { "  (disabled)" }
        );
    }
    let _ = writeln!(out, "topics ({}):", config.topics.len());
    for t in &config.topics {
        let _ = writeln!(out, "  {:<20} min_score {}", t.name(), t.min_score);
    }
    let _ = writeln!(out, "webhooks ({}):", config.webhooks.len());
    for w in &config.webhooks {
        let topics = if w.topics.is_empty() {
            "all topics".to_string()
        } else {
            w.topics.join(", ")
        };
        let events: Vec<&str> = w.events.iter().map(|e| e.as_str()).collect();
        let _ = writeln!(
            out,
            "  {:<20} {} [{}] {} ({}), {}",
            w.name(),
            crate::notify::redact::redact_webhook_url(&w.url),
            crate::notify::format_name(w.format),
            topics,
            events.join(", "),
            if w.secret.is_empty() {
                "unsigned"
            } else {
                "signed"
            }
        );
    }
    out
}
