//! Test databases on both backends. SQLite: a file in a temporary directory.
//! Postgres: a fresh `t_<unix seconds>_<uuid>` database per test on the server named by
//! `FEEDWATCH_TEST_DATABASE_URL`, or else on a throwaway cluster started with
//! the system's `initdb`/`pg_ctl` (stopped when the test process exits). With
//! `FEEDWATCH_REQUIRE_POSTGRES=1` a missing Postgres fails the test instead of
//! skipping it.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use chrono::{DateTime, Utc};
use sqlx::Connection;
use sqlx::postgres::PgConnection;
use sqlx::sqlite::SqliteConnection;
use tempfile::TempDir;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A database that lives as long as the test.
pub struct TestDb {
    pub url: String,
    pub backend: Backend,
    _dir: Option<TempDir>,
    pg: Option<(String, String)>,
}

impl TestDb {
    /// A fresh, empty database, or `None` when Postgres is unavailable and not required.
    pub async fn new(backend: Backend) -> Option<TestDb> {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}", dir.path().join("feedwatch.db").display());
                Some(TestDb {
                    url,
                    backend,
                    _dir: Some(dir),
                    pg: None,
                })
            }
            Backend::Postgres => {
                let admin = postgres_admin_url()?;
                let name = format!(
                    "t_{}_{}",
                    chrono::Utc::now().timestamp(),
                    uuid::Uuid::new_v4().simple()
                );
                let mut conn = PgConnection::connect(&admin)
                    .await
                    .expect("connect to the Postgres admin database");
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
                    .execute(&mut conn)
                    .await
                    .expect("create test database");
                // Test data need not survive a crash of the server: commits skip
                // the WAL flush, which is most of a small transaction's time.
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "ALTER DATABASE \"{name}\" SET synchronous_commit = off"
                )))
                .execute(&mut conn)
                .await
                .expect("configure test database");
                let _ = conn.close().await;
                let url = with_database(&admin, &name);
                Some(TestDb {
                    url,
                    backend,
                    _dir: None,
                    pg: Some((admin, name)),
                })
            }
        }
    }

    /// Drops a Postgres test database (SQLite files go with the temp dir).
    pub async fn cleanup(self) {
        if let Some((admin, name)) = &self.pg
            && let Ok(mut conn) = PgConnection::connect(admin).await
        {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
            )))
            .execute(&mut conn)
            .await;
            let _ = conn.close().await;
        }
    }
}

/// A row of `stories` as a user reading the table sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoryRow {
    pub id: i64,
    pub url: String,
    pub canonical_url: String,
    pub title: Option<String>,
    pub body: Option<String>,
    pub content_hash: String,
    pub updated_at: DateTime<Utc>,
    pub duplicate_of: Option<i64>,
}

const STORY_COLUMNS: &str = "SELECT id, url, canonical_url, title, body, content_hash, \
     updated_at, duplicate_of FROM stories ORDER BY id";

/// The columns [`STORY_COLUMNS`] selects, with the backend's type of `updated_at`.
type StoryColumns<At> = (
    i64,
    String,
    String,
    Option<String>,
    Option<String>,
    String,
    At,
    Option<i64>,
);

fn story_row<At>(columns: StoryColumns<At>, at: impl Fn(At) -> DateTime<Utc>) -> StoryRow {
    let (id, url, canonical_url, title, body, content_hash, updated_at, duplicate_of) = columns;
    StoryRow {
        id,
        url,
        canonical_url,
        title,
        body,
        content_hash,
        updated_at: at(updated_at),
        duplicate_of,
    }
}

impl TestDb {
    /// Every row of `stories`, by id, read with plain SQL (not through the Store).
    pub async fn story_rows(&self) -> Vec<StoryRow> {
        match self.backend {
            Backend::Sqlite => {
                let mut conn = SqliteConnection::connect(&self.url).await.unwrap();
                let rows: Vec<StoryColumns<String>> = sqlx::query_as(STORY_COLUMNS)
                    .fetch_all(&mut conn)
                    .await
                    .unwrap();
                let _ = conn.close().await;
                let parse = |text: String| {
                    DateTime::parse_from_rfc3339(&text)
                        .expect("RFC 3339 updated_at")
                        .with_timezone(&Utc)
                };
                rows.into_iter().map(|r| story_row(r, parse)).collect()
            }
            Backend::Postgres => {
                let mut conn = PgConnection::connect(&self.url).await.unwrap();
                let rows: Vec<StoryColumns<DateTime<Utc>>> = sqlx::query_as(STORY_COLUMNS)
                    .fetch_all(&mut conn)
                    .await
                    .unwrap();
                let _ = conn.close().await;
                rows.into_iter().map(|r| story_row(r, |at| at)).collect()
            }
        }
    }

    /// The story ids that have rows in `story_bands`, sorted, read with plain SQL.
    pub async fn banded_story_ids(&self) -> Vec<i64> {
        let sql = "SELECT DISTINCT story_id FROM story_bands ORDER BY story_id";
        match self.backend {
            Backend::Sqlite => {
                let mut conn = SqliteConnection::connect(&self.url).await.unwrap();
                let ids = sqlx::query_scalar(sql).fetch_all(&mut conn).await.unwrap();
                let _ = conn.close().await;
                ids
            }
            Backend::Postgres => {
                let mut conn = PgConnection::connect(&self.url).await.unwrap();
                let ids = sqlx::query_scalar(sql).fetch_all(&mut conn).await.unwrap();
                let _ = conn.close().await;
                ids
            }
        }
    }

    /// Runs `sql` (one or more statements) on the database, as an operator with a
    /// `psql` or `sqlite3` prompt would: to set up a fault, say.
    pub async fn execute(&self, sql: &str) {
        let sql = sqlx::AssertSqlSafe(sql.to_string());
        match self.backend {
            Backend::Sqlite => {
                let mut conn = SqliteConnection::connect(&self.url).await.unwrap();
                sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
                let _ = conn.close().await;
            }
            Backend::Postgres => {
                let mut conn = PgConnection::connect(&self.url).await.unwrap();
                sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
                let _ = conn.close().await;
            }
        }
    }

    /// The stored `ETag` of the source named `name`.
    pub async fn source_etag(&self, name: &str) -> Option<String> {
        let sql = "SELECT etag FROM sources WHERE name = $1";
        match self.backend {
            Backend::Sqlite => {
                let mut conn = SqliteConnection::connect(&self.url).await.unwrap();
                let etag = sqlx::query_scalar(sql)
                    .bind(name)
                    .fetch_one(&mut conn)
                    .await
                    .unwrap();
                let _ = conn.close().await;
                etag
            }
            Backend::Postgres => {
                let mut conn = PgConnection::connect(&self.url).await.unwrap();
                let etag = sqlx::query_scalar(sql)
                    .bind(name)
                    .fetch_one(&mut conn)
                    .await
                    .unwrap();
                let _ = conn.close().await;
                etag
            }
        }
    }

    /// The one text column `sql` selects, every row, read with plain SQL.
    pub async fn texts(&self, sql: &str) -> Vec<Option<String>> {
        let sql = sqlx::AssertSqlSafe(sql.to_string());
        match self.backend {
            Backend::Sqlite => {
                let mut conn = SqliteConnection::connect(&self.url).await.unwrap();
                let rows = sqlx::query_scalar(sql).fetch_all(&mut conn).await.unwrap();
                let _ = conn.close().await;
                rows
            }
            Backend::Postgres => {
                let mut conn = PgConnection::connect(&self.url).await.unwrap();
                let rows = sqlx::query_scalar(sql).fetch_all(&mut conn).await.unwrap();
                let _ = conn.close().await;
                rows
            }
        }
    }

    /// Every `(story_id, topic)` of `matches`, sorted, read with plain SQL.
    pub async fn match_rows(&self) -> Vec<(i64, String)> {
        let sql = "SELECT story_id, topic FROM matches ORDER BY story_id, topic";
        match self.backend {
            Backend::Sqlite => {
                let mut conn = SqliteConnection::connect(&self.url).await.unwrap();
                let rows = sqlx::query_as(sql).fetch_all(&mut conn).await.unwrap();
                let _ = conn.close().await;
                rows
            }
            Backend::Postgres => {
                let mut conn = PgConnection::connect(&self.url).await.unwrap();
                let rows = sqlx::query_as(sql).fetch_all(&mut conn).await.unwrap();
                let _ = conn.close().await;
                rows
            }
        }
    }
}

fn with_database(url: &str, db: &str) -> String {
    let mut u = url::Url::parse(url).expect("Postgres URL");
    u.set_path(&format!("/{db}"));
    u.to_string()
}

fn required() -> bool {
    std::env::var("FEEDWATCH_REQUIRE_POSTGRES").is_ok_and(|v| v == "1" || v == "true")
}

/// The admin URL of the Postgres the tests use, discovered once per process.
pub fn postgres_admin_url() -> Option<String> {
    static ADMIN: OnceLock<Option<String>> = OnceLock::new();
    let admin = ADMIN
        .get_or_init(|| {
            let found = match std::env::var("FEEDWATCH_TEST_DATABASE_URL") {
                Ok(url) if !url.is_empty() => Some(url),
                _ => match start_throwaway_cluster() {
                    Ok(url) => Some(url),
                    Err(why) => {
                        announce_skip(&why);
                        None
                    }
                },
            };
            if let Some(url) = &found {
                sweep_stale_databases(url);
            }
            found
        })
        .clone();
    if admin.is_none() && required() {
        panic!(
            "FEEDWATCH_REQUIRE_POSTGRES=1 but no Postgres is available: set FEEDWATCH_TEST_DATABASE_URL"
        );
    }
    admin
}

/// Says on the terminal that the Postgres half of the suite does not run. Written
/// to the process's stderr directly: the test harness captures `eprintln!` (shown
/// only for failing tests or under `--nocapture`), and these tests pass.
fn announce_skip(why: &str) {
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr().lock(),
        "\nNOTE: the Postgres tests of this binary are SKIPPED (they pass without running): \
         no FEEDWATCH_TEST_DATABASE_URL and {why}. Set FEEDWATCH_TEST_DATABASE_URL, or \
         FEEDWATCH_REQUIRE_POSTGRES=1 to make this a failure.\n"
    );
}

/// How old a test database must be before a sweep may take it for a leftover.
const STALE_AFTER_SECS: i64 = 3600;

/// Drops `t_<unix seconds>_<uuid>` databases left by earlier runs that died
/// before cleaning up. Only old ones: other test processes (nextest runs one per
/// test; other checkouts share the server) create databases all the time, and a
/// test's database has no connection between two runs of the binary.
fn sweep_stale_databases(admin: &str) {
    let admin = admin.to_string();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let Ok(mut conn) = PgConnection::connect(&admin).await else {
                return;
            };
            let candidates: Vec<String> = sqlx::query_scalar(
                "SELECT d.datname::text FROM pg_database d \
                 WHERE d.datname LIKE 't\\_%' AND NOT EXISTS \
                   (SELECT 1 FROM pg_stat_activity a WHERE a.datname = d.datname)",
            )
            .fetch_all(&mut conn)
            .await
            .unwrap_or_default();
            let now = chrono::Utc::now().timestamp();
            let stale = candidates.into_iter().filter(|name| {
                name.split('_')
                    .nth(1)
                    .and_then(|secs| secs.parse::<i64>().ok())
                    .is_some_and(|created| now - created > STALE_AFTER_SECS)
            });
            for name in stale {
                let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                )))
                .execute(&mut conn)
                .await;
            }
        });
    })
    .join()
    .ok();
}

/// Starts a private cluster on a free port; a watcher process stops it and
/// removes its directory when this test process exits.
fn start_throwaway_cluster() -> Result<String, String> {
    let bin = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|_| "no /usr/lib/postgresql (PostgreSQL server not installed)".to_string())?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("bin"))
        .find(|p| p.join("initdb").exists())
        .ok_or("no initdb under /usr/lib/postgresql")?;
    let dir: PathBuf = std::env::temp_dir().join(format!("feedwatch-pg-{}", std::process::id()));
    let data = dir.join("data");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let as_postgres = |program: PathBuf| {
        if is_root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        }
    };
    if is_root {
        Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&dir)
            .status()
            .map_err(|e| e.to_string())?;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let ok = as_postgres(bin.join("initdb"))
        .args(["-A", "trust", "-U", "postgres", "-D"])
        .arg(&data)
        .output()
        .map_err(|e| e.to_string())?;
    if !ok.status.success() {
        return Err(format!(
            "initdb failed: {}",
            String::from_utf8_lossy(&ok.stderr)
        ));
    }
    let opts = format!(
        "-p {port} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off",
        dir.display()
    );
    let ok = as_postgres(bin.join("pg_ctl"))
        .args(["-w", "-D"])
        .arg(&data)
        .args(["-o", &opts, "-l"])
        .arg(dir.join("log"))
        .arg("start")
        .output()
        .map_err(|e| e.to_string())?;
    if !ok.status.success() {
        return Err(format!(
            "pg_ctl start failed: {}",
            String::from_utf8_lossy(&ok.stderr)
        ));
    }
    // Stop the cluster when this process is gone, however it ends.
    let stop = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {runas}{pg_ctl} -D {data} -m immediate stop >/dev/null 2>&1; rm -rf {dir}",
        pid = std::process::id(),
        runas = if is_root {
            "runuser -u postgres -- "
        } else {
            ""
        },
        pg_ctl = bin.join("pg_ctl").display(),
        data = data.display(),
        dir = dir.display(),
    );
    Command::new("setsid")
        .args(["sh", "-c", &stop])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start the cluster watcher: {e}"))?;
    Ok(format!("postgres://postgres@127.0.0.1:{port}/postgres"))
}
