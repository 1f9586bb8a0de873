//! The ingest benchmark of issue 12: the release `feedwatch` binary, run as a child process
//! against the benchmark farm (`examples/farm.rs`, also a child), measured from the
//! outside. For each `--n` and backend it starts a farm of N feeds, a fresh database
//! (SQLite: a file in a temporary directory; Postgres: `bench_<uuid>` created on the
//! server `--pg-url` names, dropped `WITH (FORCE)` at the end), a webhook receiver on
//! loopback, writes a config (N sources, the default topics of `config.toml`, politeness
//! delays zero — see the comment in the written config), and runs `feedwatch once` twice:
//! the first ingest, then a re-poll of the unchanged feeds (all 304). Each run prints wall
//! time, feedwatch's CPU time (`wait4`) and peak RSS (`VmHWM`, see [`HwmSampler`]),
//! Postgres's CPU time, the farm's
//! request counts (200 vs 304), what the database holds afterwards (stories, duplicates,
//! matches, deliveries), stories stored per second and the load average.
//!
//! **Postgres CPU** is the user+system time (from `/proc/<pid>/stat`, sampled every 50 ms)
//! of the server processes that worked for the run: the backends whose command line names
//! the run's database (counted from zero, as they start with the run) plus the change in
//! the postmaster and its auxiliary processes (checkpointer, background writer, walwriter,
//! autovacuum launcher and workers), which the other users of the server also move. A
//! backend's last 50 ms before it exits can be missed.
//!
//! `--latency` measures end-to-end latency instead: a farm of `--n` feeds (the first value)
//! ingested with `once`, then `feedwatch run` with `defaults.interval = --interval`; in each
//! of `--trials` trials, after a random pause of up to a second, one random feed gains an
//! item matching the `tariffs` topic (`POST /feed/<i>/add`), and the time until its webhook
//! arrives is recorded. Prints p50/p90/p99/max (nearest rank) and the daemon's CPU time.
//!
//! ```text
//! cargo build --release --bin feedwatch --example farm --example ingest_bench
//! target/release/examples/ingest_bench --n 100,1000 --backend both
//! target/release/examples/ingest_bench --latency --n 1000 --trials 50 --interval 5s
//! ```

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::Router;
use axum::extract::State;
use axum::routing::post;
use clap::{Parser, ValueEnum};
use sqlx::Connection;
use sqlx::postgres::PgConnection;
use sqlx::sqlite::SqliteConnection;
use tokio::sync::mpsc;

#[derive(Parser)]
#[command(about = "Runs the release feedwatch against the benchmark farm and measures it")]
struct Args {
    /// Farm sizes (feeds), comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [100usize, 1000])]
    n: Vec<usize>,
    /// Which backend(s).
    #[arg(long, value_enum, default_value_t = BackendChoice::Both)]
    backend: BackendChoice,
    /// Items per feed.
    #[arg(long, default_value_t = 20)]
    items: usize,
    /// Admin URL of the Postgres server (a role that may create databases).
    #[arg(
        long,
        default_value = "postgres://postgres:postgres@127.0.0.1:5432/postgres"
    )]
    pg_url: String,
    /// Config whose `[[topics]]` the benchmark config takes.
    #[arg(long, default_value = "config.toml")]
    topics: PathBuf,
    /// The feedwatch binary (default: `target/release/feedwatch`, next to this example's
    /// directory).
    #[arg(long)]
    feedwatch: Option<PathBuf>,
    /// The farm binary (default: `farm` next to this example).
    #[arg(long)]
    farm: Option<PathBuf>,
    /// Measure end-to-end latency with `feedwatch run` instead of ingest.
    #[arg(long)]
    latency: bool,
    /// Latency: trials.
    #[arg(long, default_value_t = 50)]
    trials: usize,
    /// Latency: the sources' polling interval.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// Keep each run's directory (config, logs, SQLite file) and say where it is.
    #[arg(long)]
    keep: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum, Debug)]
enum BackendChoice {
    Sqlite,
    Postgres,
    Both,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "SQLite",
            Backend::Postgres => "Postgres",
        }
    }
}

// ---------------------------------------------------------------------------------------
// Children: the farm, and feedwatch measured with wait4
// ---------------------------------------------------------------------------------------

/// The farm, running as a child process.
struct FarmProcess {
    child: Child,
    url: String,
}

impl FarmProcess {
    fn start(binary: &Path, feeds: usize, items: usize) -> anyhow::Result<FarmProcess> {
        let mut child = Command::new(binary)
            .args(["--feeds", &feeds.to_string(), "--items", &items.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let stdout = child.stdout.take().context("farm stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .with_context(|| format!("farm said {line:?}"))?
            .trim_end_matches('/')
            .to_string();
        Ok(FarmProcess { child, url })
    }

    async fn stats(&self, http: &reqwest::Client) -> anyhow::Result<FarmStats> {
        let body = http
            .get(format!("{}/stats", self.url))
            .send()
            .await?
            .bytes()
            .await?;
        let v: serde_json::Value = serde_json::from_slice(&body)?;
        let get = |k: &str| v.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
        Ok(FarmStats {
            ok: get("ok"),
            not_modified: get("not_modified"),
            pages: get("pages"),
            other: get("other"),
        })
    }
}

impl Drop for FarmProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Clone, Copy, Default, Debug)]
struct FarmStats {
    ok: u64,
    not_modified: u64,
    pages: u64,
    other: u64,
}

impl FarmStats {
    fn since(self, before: FarmStats) -> FarmStats {
        FarmStats {
            ok: self.ok - before.ok,
            not_modified: self.not_modified - before.not_modified,
            pages: self.pages - before.pages,
            other: self.other - before.other,
        }
    }
}

/// What `wait4` says about a child that ended.
#[derive(Clone, Copy, Debug)]
struct ChildUsage {
    status: i32,
    user: Duration,
    system: Duration,
    /// Peak resident set size, in KiB: `ru_maxrss` as `wait4` gives it, replaced by
    /// [`HwmSampler`]'s figure by the callers (see there why).
    max_rss_kib: i64,
}

impl ChildUsage {
    fn cpu(&self) -> Duration {
        self.user + self.system
    }
}

fn timeval(tv: libc::timeval) -> Duration {
    Duration::from_secs(tv.tv_sec as u64) + Duration::from_micros(tv.tv_usec as u64)
}

/// Waits for child `pid` (blocking) and returns its exit status and resource usage.
fn wait_child(pid: u32) -> anyhow::Result<ChildUsage> {
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain old data; all-zero is a valid value for it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is a child of this process that nobody else waits for; the two
    // pointers are valid for writes for the duration of the call.
    let r = unsafe { libc::wait4(pid as libc::pid_t, &mut status, 0, &mut usage) };
    if r < 0 {
        bail!("wait4({pid}): {}", std::io::Error::last_os_error());
    }
    Ok(ChildUsage {
        status,
        user: timeval(usage.ru_utime),
        system: timeval(usage.ru_stime),
        max_rss_kib: usage.ru_maxrss,
    })
}

/// Samples a child's own peak RSS (`VmHWM` in `/proc/<pid>/status`) every 20 ms until it
/// exits, for the peak RSS the benchmark prints. `wait4`'s `ru_maxrss` cannot be used:
/// Linux counts into it the memory the child ran in before its `exec`, which is this
/// benchmark's (a child spawned by a process of 300 MiB reports at least 300 MiB), so
/// it shows the larger of the two. `VmHWM` only grows, so a sample misses at most what
/// the child added in its last 20 ms.
struct HwmSampler {
    handle: std::thread::JoinHandle<i64>,
}

impl HwmSampler {
    fn start(pid: u32) -> HwmSampler {
        let handle = std::thread::spawn(move || {
            let mut peak_kib = 0;
            // Ends when the process is gone, or a zombie (which has no VmHWM line).
            while let Some(kib) = vm_hwm_kib(pid) {
                peak_kib = peak_kib.max(kib);
                std::thread::sleep(Duration::from_millis(20));
            }
            peak_kib
        });
        HwmSampler { handle }
    }

    /// The peak seen, in KiB; call once the child has been waited for.
    fn finish(self) -> i64 {
        self.handle.join().unwrap_or(0)
    }
}

fn vm_hwm_kib(pid: u32) -> Option<i64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn exited_ok(status: i32) -> bool {
    libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
}

// ---------------------------------------------------------------------------------------
// Postgres CPU from /proc
// ---------------------------------------------------------------------------------------

fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as u64 } else { 100 }
}

/// utime + stime of a process, in clock ticks.
fn process_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// Which postgres processes count for a run.
#[derive(Clone, Copy, PartialEq, Eq)]
enum PgRole {
    /// A backend connected to the run's database.
    Backend,
    /// The postmaster, an auxiliary process or an autovacuum worker.
    Server,
    /// Just forked by the postmaster, not yet titled: becomes a backend of the run's
    /// database (counted) or of another one (not counted).
    Fresh,
}

/// The postgres processes of interest now, with their role and ticks.
fn postgres_processes(database: &str) -> Vec<(u32, PgRole, u64)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let role = if cmdline.starts_with("postgres: ") {
            if cmdline.split_whitespace().any(|w| w == database) {
                PgRole::Backend
            } else if [
                "checkpointer",
                "background writer",
                "walwriter",
                "autovacuum",
                "logical replication launcher",
                "stats collector",
            ]
            .iter()
            .any(|aux| cmdline.contains(aux))
            {
                PgRole::Server
            } else {
                continue;
            }
        } else if cmdline.contains("/bin/postgres ") {
            PgRole::Fresh
        } else {
            continue;
        };
        if let Some(ticks) = process_ticks(pid) {
            out.push((pid, role, ticks));
        }
    }
    out
}

/// Samples the postgres processes of one database in a thread until stopped.
struct PgSampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<(u64, u64)>,
}

impl PgSampler {
    fn start(database: String) -> PgSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let initial: HashMap<u32, u64> = postgres_processes(&database)
            .into_iter()
            .map(|(pid, _, ticks)| (pid, ticks))
            .collect();
        let thread = std::thread::spawn(move || {
            let mut seen: HashMap<u32, (PgRole, u64)> = HashMap::new();
            loop {
                let last = flag.load(Ordering::Relaxed);
                for (pid, role, ticks) in postgres_processes(&database) {
                    let (role, delta) = match initial.get(&pid) {
                        // The postmaster itself.
                        Some(&start) if role == PgRole::Fresh => {
                            (PgRole::Server, ticks.saturating_sub(start))
                        }
                        Some(&start) => (role, ticks.saturating_sub(start)),
                        None => (role, ticks),
                    };
                    let e = seen.entry(pid).or_insert((role, 0));
                    if e.0 == PgRole::Fresh {
                        e.0 = role;
                    }
                    e.1 = e.1.max(delta);
                }
                if last {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let sum = |r: PgRole| {
                seen.values()
                    .filter(|(role, _)| *role == r)
                    .map(|(_, t)| t)
                    .sum()
            };
            (sum(PgRole::Backend), sum(PgRole::Server))
        });
        PgSampler { stop, thread }
    }

    /// Stops sampling; returns (backends, server processes) CPU time.
    fn finish(self) -> (Duration, Duration) {
        self.stop.store(true, Ordering::Relaxed);
        let (b, s) = self.thread.join().unwrap_or((0, 0));
        let tick = |t: u64| Duration::from_secs_f64(t as f64 / clock_ticks() as f64);
        (tick(b), tick(s))
    }
}

// ---------------------------------------------------------------------------------------
// Webhook receiver
// ---------------------------------------------------------------------------------------

struct Hooks {
    received: AtomicU64,
    tx: mpsc::UnboundedSender<(Instant, String)>,
}

async fn hook(State(hooks): State<Arc<Hooks>>, body: String) -> &'static str {
    hooks.received.fetch_add(1, Ordering::Relaxed);
    let _ = hooks.tx.send((Instant::now(), body));
    "ok"
}

async fn start_receiver() -> anyhow::Result<(
    String,
    Arc<Hooks>,
    mpsc::UnboundedReceiver<(Instant, String)>,
)> {
    let (tx, rx) = mpsc::unbounded_channel();
    let hooks = Arc::new(Hooks {
        received: AtomicU64::new(0),
        tx,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    let app = Router::new()
        .route("/hook", post(hook))
        .with_state(hooks.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((url, hooks, rx))
}

// ---------------------------------------------------------------------------------------
// Databases and the config
// ---------------------------------------------------------------------------------------

/// A fresh database for one benchmark, removed on [`BenchDb::drop_now`].
struct BenchDb {
    url: String,
    backend: Backend,
    /// Postgres: (admin URL, database name).
    pg: Option<(String, String)>,
}

impl BenchDb {
    async fn create(backend: Backend, dir: &Path, pg_url: &str) -> anyhow::Result<BenchDb> {
        match backend {
            Backend::Sqlite => Ok(BenchDb {
                url: format!("sqlite://{}", dir.join("feedwatch.db").display()),
                backend,
                pg: None,
            }),
            Backend::Postgres => {
                let name = format!("bench_{}", uuid::Uuid::new_v4().simple());
                let mut admin = PgConnection::connect(pg_url)
                    .await
                    .context("connecting to Postgres (--pg-url)")?;
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
                    .execute(&mut admin)
                    .await?;
                admin.close().await?;
                let mut url = url::Url::parse(pg_url)?;
                url.set_path(&format!("/{name}"));
                Ok(BenchDb {
                    url: url.to_string(),
                    backend,
                    pg: Some((pg_url.to_string(), name)),
                })
            }
        }
    }

    fn pg_name(&self) -> Option<&str> {
        self.pg.as_ref().map(|(_, n)| n.as_str())
    }

    async fn counts(&self) -> anyhow::Result<DbCounts> {
        const QUERIES: [&str; 5] = [
            "SELECT count(*) FROM stories",
            "SELECT count(*) FROM stories WHERE duplicate_of IS NOT NULL",
            "SELECT count(*) FROM matches",
            "SELECT count(*) FROM deliveries",
            "SELECT count(*) FROM deliveries WHERE status = 'delivered'",
        ];
        let mut v = [0i64; 5];
        match self.backend {
            Backend::Sqlite => {
                let mut c = SqliteConnection::connect(&self.url).await?;
                for (q, out) in QUERIES.iter().zip(v.iter_mut()) {
                    *out = sqlx::query_scalar(*q).fetch_one(&mut c).await?;
                }
                c.close().await?;
            }
            Backend::Postgres => {
                let mut c = PgConnection::connect(&self.url).await?;
                for (q, out) in QUERIES.iter().zip(v.iter_mut()) {
                    *out = sqlx::query_scalar(*q).fetch_one(&mut c).await?;
                }
                c.close().await?;
            }
        }
        Ok(DbCounts {
            stories: v[0],
            duplicates: v[1],
            matches: v[2],
            deliveries: v[3],
            delivered: v[4],
        })
    }

    async fn drop_now(self) -> anyhow::Result<()> {
        if let Some((admin, name)) = &self.pg {
            let mut admin = PgConnection::connect(admin).await?;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
            )))
            .execute(&mut admin)
            .await?;
            admin.close().await?;
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Default, Debug)]
struct DbCounts {
    stories: i64,
    duplicates: i64,
    matches: i64,
    deliveries: i64,
    delivered: i64,
}

/// The `[[topics]]` of `path`, as TOML text.
fn topics_toml(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    let table: toml::Table = toml::from_str(&text)?;
    let topics = table
        .get("topics")
        .cloned()
        .with_context(|| format!("{} has no [[topics]]", path.display()))?;
    let mut out = toml::Table::new();
    out.insert("topics".into(), topics);
    Ok(toml::to_string(&out)?)
}

fn write_config(
    dir: &Path,
    db: &BenchDb,
    farm: &FarmProcess,
    feeds: usize,
    hook_url: &str,
    interval: Duration,
    topics: &str,
) -> anyhow::Result<PathBuf> {
    let port = farm.url.rsplit(':').next().unwrap_or("");
    let mut text = format!(
        "# Written by examples/ingest_bench.rs: {feeds} feeds of the local benchmark farm.\n\
         #\n\
         # Every farm feed is on one host (127.0.0.1:{port}). The politeness settings exist to\n\
         # spare a real site; against the farm they would measure only feedwatch's own waiting\n\
         # ({feeds} feeds x 250 ms = {wait} s). So per_host_delay is zero and the per-host\n\
         # concurrency is raised to the global limit (32, the default), as if the feeds were on\n\
         # many hosts. defaults.interval is the benchmark's; everything else is the default.\n\
         [database]\nurl = \"{db}\"\nmax_connections = 8\n\n\
         [http]\nper_host_delay = \"0s\"\nper_host_concurrency = 32\nglobal_concurrency = 32\n\n\
         [defaults]\ninterval = \"{interval}\"\n\n\
         [[webhooks]]\nname = \"bench\"\nurl = \"{hook_url}\"\nformat = \"json\"\n\n",
        db = db.url,
        wait = feeds / 4,
        interval = humantime::format_duration(interval),
    );
    for i in 0..feeds {
        text += &format!(
            "[[sources]]\nname = \"farm-{i:05}\"\nkind = \"feed\"\nurl = \"{}/feed/{i}.xml\"\n\n",
            farm.url
        );
    }
    text += topics;
    let path = dir.join("config.toml");
    std::fs::write(&path, text)?;
    Ok(path)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The `once: summary` fields of a JSON log.
fn once_summary(log: &Path) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines()
        .filter(|l| l.contains("once: summary"))
        .filter_map(|l| serde_json::from_str(l).ok())
        .next_back()
}

// ---------------------------------------------------------------------------------------
// Ingest
// ---------------------------------------------------------------------------------------

struct Paths {
    feedwatch: PathBuf,
    farm: PathBuf,
}

#[derive(Debug)]
struct RunResult {
    label: &'static str,
    load: String,
    wall: Duration,
    usage: ChildUsage,
    pg: Option<(Duration, Duration)>,
    requests: FarmStats,
    before: DbCounts,
    after: DbCounts,
    hooks: u64,
    summary: Option<serde_json::Value>,
}

impl RunResult {
    fn total_cpu(&self) -> Duration {
        self.usage.cpu() + self.pg.map(|(b, s)| b + s).unwrap_or_default()
    }

    fn print(&self, n: usize, backend: Backend) {
        let secs = |d: Duration| d.as_secs_f64();
        let stored = self.after.stories - self.before.stories;
        let pg = match self.pg {
            Some((b, s)) => format!(
                "{:.2} s (backends {:.2} + server {:.2})",
                secs(b + s),
                secs(b),
                secs(s)
            ),
            None => "-".into(),
        };
        let s = self.summary.as_ref();
        let field = |k: &str| {
            s.and_then(|v| v.get(k))
                .map(|v| v.to_string())
                .unwrap_or_else(|| "?".into())
        };
        println!(
            "N={n} {} {}: wall {:.2} s; feedwatch CPU {:.2} s (user {:.2} + sys {:.2}); \
             Postgres CPU {pg}; total CPU {:.2} s; peak RSS {:.1} MiB; requests {} x 200, {} x 304 \
             ({} pages, {} other); stories stored {stored} ({:.0}/s), {} in the db ({} duplicates), \
             {} matches, {} deliveries ({} delivered), {} webhooks received; once: new {} updated {} \
             duplicates {} delivered {}; exit {}; load average {}",
            backend.name(),
            self.label,
            secs(self.wall),
            secs(self.usage.cpu()),
            secs(self.usage.user),
            secs(self.usage.system),
            secs(self.total_cpu()),
            self.usage.max_rss_kib as f64 / 1024.0,
            self.requests.ok,
            self.requests.not_modified,
            self.requests.pages,
            self.requests.other,
            stored as f64 / secs(self.wall).max(1e-9),
            self.after.stories,
            self.after.duplicates,
            self.after.matches,
            self.after.deliveries,
            self.after.delivered,
            self.hooks,
            field("new"),
            field("updated"),
            field("duplicates"),
            field("delivered"),
            if exited_ok(self.usage.status) {
                "0".to_string()
            } else {
                format!("status {:#x}", self.usage.status)
            },
            self.load
        );
    }

    fn table_row(&self, n: usize, backend: Backend) -> String {
        let secs = |d: Duration| d.as_secs_f64();
        let stored = self.after.stories - self.before.stories;
        format!(
            "| {n} | {} | {} | {:.2} | {:.2} | {} | {:.2} | {:.1} | {}/{} | {:.0} | {} | {} |",
            backend.name(),
            self.label,
            secs(self.wall),
            secs(self.usage.cpu()),
            self.pg
                .map(|(b, s)| format!("{:.2}", secs(b + s)))
                .unwrap_or_else(|| "-".into()),
            secs(self.total_cpu()),
            self.usage.max_rss_kib as f64 / 1024.0,
            self.requests.ok,
            self.requests.not_modified,
            stored as f64 / secs(self.wall).max(1e-9),
            format_args!("{} / {}", self.after.stories, self.after.duplicates),
            self.load
        )
    }
}

/// Runs `feedwatch <command> --config <config>` to its end, measured.
#[allow(clippy::too_many_arguments)]
async fn run_feedwatch(
    label: &'static str,
    paths: &Paths,
    config: &Path,
    log: &Path,
    db: &BenchDb,
    farm: &FarmProcess,
    http: &reqwest::Client,
    hooks: &Hooks,
) -> anyhow::Result<RunResult> {
    let before = db.counts().await.unwrap_or_default();
    let stats_before = farm.stats(http).await?;
    let hooks_before = hooks.received.load(Ordering::Relaxed);
    let load = load_average();
    let sampler = db.pg_name().map(|n| PgSampler::start(n.to_string()));
    let log_file = std::fs::File::create(log)?;
    let start = Instant::now();
    let child = Command::new(&paths.feedwatch)
        .args(["--log-format", "json", "once", "--config"])
        .arg(config)
        .env("RUST_LOG", "info")
        .env("NO_PROXY", "127.0.0.1,localhost")
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .with_context(|| format!("starting {}", paths.feedwatch.display()))?;
    let pid = child.id();
    let hwm = HwmSampler::start(pid);
    let mut usage = tokio::task::spawn_blocking(move || wait_child(pid)).await??;
    let wall = start.elapsed();
    usage.max_rss_kib = hwm.finish();
    drop(child);
    let pg = sampler.map(PgSampler::finish);
    // Deliveries are sent before `once` exits; let the receiver count the last ones.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let requests = farm.stats(http).await?.since(stats_before);
    let after = db.counts().await?;
    Ok(RunResult {
        label,
        load,
        wall,
        usage,
        pg,
        requests,
        before,
        after,
        hooks: hooks.received.load(Ordering::Relaxed) - hooks_before,
        summary: once_summary(log),
    })
}

fn http_client() -> anyhow::Result<reqwest::Client> {
    feedwatch::fetch::install_crypto_provider();
    Ok(reqwest::Client::builder().no_proxy().build()?)
}

async fn ingest(args: &Args, paths: &Paths, backends: &[Backend]) -> anyhow::Result<()> {
    let topics = topics_toml(&args.topics)?;
    let http = http_client()?;
    let mut rows = Vec::new();
    for &n in &args.n {
        for &backend in backends {
            let dir = tempfile::Builder::new().prefix("ingest-bench-").tempdir()?;
            let farm = FarmProcess::start(&paths.farm, n, args.items)?;
            let (hook_url, hooks, rx) = start_receiver().await?;
            drop(rx); // counted, not kept
            let db = BenchDb::create(backend, dir.path(), &args.pg_url).await?;
            let config = write_config(
                dir.path(),
                &db,
                &farm,
                n,
                &hook_url,
                Duration::from_secs(600),
                &topics,
            )?;
            let result = async {
                let mut out = Vec::new();
                for (label, log) in [("first ingest", "first.log"), ("re-poll", "repoll.log")] {
                    let r = run_feedwatch(
                        label,
                        paths,
                        &config,
                        &dir.path().join(log),
                        &db,
                        &farm,
                        &http,
                        &hooks,
                    )
                    .await?;
                    r.print(n, backend);
                    out.push(r.table_row(n, backend));
                }
                anyhow::Ok(out)
            }
            .await;
            db.drop_now().await?;
            if args.keep {
                println!("kept {}", dir.keep().display());
            }
            rows.extend(result?);
        }
    }
    println!(
        "\n| N | backend | run | wall s | feedwatch CPU s | Postgres CPU s | total CPU s | \
         peak RSS MiB | 200/304 | stories/s | stories / duplicates | load average |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!("{r}");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Latency
// ---------------------------------------------------------------------------------------

fn nearest_rank(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

async fn latency(args: &Args, paths: &Paths, backend: Backend) -> anyhow::Result<()> {
    let n = args.n.first().copied().unwrap_or(1000);
    let topics = topics_toml(&args.topics)?;
    let http = http_client()?;
    let dir = tempfile::Builder::new()
        .prefix("latency-bench-")
        .tempdir()?;
    let farm = FarmProcess::start(&paths.farm, n, args.items)?;
    let (hook_url, hooks, mut rx) = start_receiver().await?;
    let db = BenchDb::create(backend, dir.path(), &args.pg_url).await?;
    let config = write_config(dir.path(), &db, &farm, n, &hook_url, args.interval, &topics)?;
    let result = async {
        let first = run_feedwatch(
            "first ingest",
            paths,
            &config,
            &dir.path().join("first.log"),
            &db,
            &farm,
            &http,
            &hooks,
        )
        .await?;
        first.print(n, backend);
        while rx.try_recv().is_ok() {}

        let load = load_average();
        let sampler = db.pg_name().map(|n| PgSampler::start(n.to_string()));
        let stats_before = farm.stats(&http).await?;
        let log = std::fs::File::create(dir.path().join("run.log"))?;
        let started = Instant::now();
        let child = Command::new(&paths.feedwatch)
            .args(["--log-format", "json", "run", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info")
            .env("NO_PROXY", "127.0.0.1,localhost")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        let pid = child.id();
        let hwm = HwmSampler::start(pid);
        let trials = async {
            // Let the daemon reach its steady state: every source polled once.
            tokio::time::sleep(args.interval + Duration::from_secs(2)).await;
            let mut latencies = Vec::new();
            let mut rng = uuid::Uuid::new_v4().as_u128();
            let mut next = move || {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                (rng >> 64) as u64
            };
            for trial in 0..args.trials {
                tokio::time::sleep(Duration::from_millis(next() % 1000)).await;
                let feed = (next() % n as u64) as usize;
                let token = format!("zqtrial{trial}x{:x}", next() % 0xffff);
                http.post(format!("{}/feed/{feed}/add?token={token}", farm.url))
                    .send()
                    .await?
                    .error_for_status()?;
                let t0 = Instant::now();
                let deadline = args.interval * 3 + Duration::from_secs(30);
                let arrived = tokio::time::timeout(deadline, async {
                    while let Some((at, body)) = rx.recv().await {
                        if body.contains(&token) {
                            return Some(at);
                        }
                    }
                    None
                })
                .await;
                match arrived {
                    Ok(Some(at)) => {
                        let l = at.saturating_duration_since(t0);
                        println!("trial {trial}: feed {feed}, webhook after {:.3} s", l.as_secs_f64());
                        latencies.push(l);
                    }
                    _ => println!("trial {trial}: feed {feed}, no webhook within {deadline:?}"),
                }
            }
            anyhow::Ok(latencies)
        }
        .await;
        // SAFETY: kill has no memory-safety preconditions; `pid` is our running child.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGTERM);
        }
        let mut usage = tokio::task::spawn_blocking(move || wait_child(pid)).await??;
        let ran = started.elapsed();
        usage.max_rss_kib = hwm.finish();
        drop(child);
        let pg = sampler.map(PgSampler::finish);
        let requests = farm.stats(&http).await?.since(stats_before);
        let mut latencies = trials?;
        latencies.sort();
        let s = |d: Duration| d.as_secs_f64();
        if latencies.is_empty() {
            println!("no webhook arrived");
        } else {
            println!(
                "latency N={n} {} interval {:?}: {} of {} trials, p50 {:.3} s, p90 {:.3} s, p99 {:.3} s, \
                 max {:.3} s (nearest rank); load average at start {load}",
                backend.name(),
                args.interval,
                latencies.len(),
                args.trials,
                s(nearest_rank(&latencies, 0.5)),
                s(nearest_rank(&latencies, 0.9)),
                s(nearest_rank(&latencies, 0.99)),
                s(latencies[latencies.len() - 1]),
            );
        }
        println!(
            "daemon: ran {:.1} s, CPU {:.2} s (user {:.2} + sys {:.2}, {:.1} % of one core), \
             peak RSS {:.1} MiB, Postgres CPU {}; requests {} x 200, {} x 304; load average now {}",
            s(ran),
            s(usage.cpu()),
            s(usage.user),
            s(usage.system),
            100.0 * s(usage.cpu()) / s(ran),
            usage.max_rss_kib as f64 / 1024.0,
            pg.map(|(b, sv)| format!("{:.2} s", s(b + sv)))
                .unwrap_or_else(|| "-".into()),
            requests.ok,
            requests.not_modified,
            load_average()
        );
        anyhow::Ok(())
    }
    .await;
    db.drop_now().await?;
    if args.keep {
        println!("kept {}", dir.keep().display());
    }
    result
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let here = std::env::current_exe()?;
    let examples = here.parent().context("no parent directory")?;
    let paths = Paths {
        feedwatch: args
            .feedwatch
            .clone()
            .unwrap_or_else(|| examples.parent().unwrap_or(examples).join("feedwatch")),
        farm: args.farm.clone().unwrap_or_else(|| examples.join("farm")),
    };
    for p in [&paths.feedwatch, &paths.farm] {
        if !p.exists() {
            bail!(
                "{} is missing: cargo build --release --bin feedwatch --example farm --example ingest_bench",
                p.display()
            );
        }
    }
    let backends: Vec<Backend> = match args.backend {
        BackendChoice::Sqlite => vec![Backend::Sqlite],
        BackendChoice::Postgres => vec![Backend::Postgres],
        BackendChoice::Both => vec![Backend::Sqlite, Backend::Postgres],
    };
    println!(
        "feedwatch {}; {} cores; load average {}",
        paths.feedwatch.display(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_average()
    );
    if args.latency {
        latency(&args, &paths, backends[0]).await
    } else {
        ingest(&args, &paths, &backends).await
    }
}
