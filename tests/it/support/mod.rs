//! Shared test support: test databases on both backends, local HTTP servers,
//! fixtures with dates relative to now, configs written for a test, and the
//! real `feedwatch` binary run as a user would run it.

pub mod db;
pub mod http;
pub mod raw;
pub mod rows;
pub mod tls;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

pub use db::{Backend, StoryRow, TestDb};

/// Runs a scenario against both backends as two tests.
#[macro_export]
macro_rules! both_backends {
    ($scenario:ident) => {
        mod $scenario {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_sqlite() {
                super::$scenario($crate::support::Backend::Sqlite).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_postgres() {
                super::$scenario($crate::support::Backend::Postgres).await;
            }
        }
    };
}

/// The fixtures directory.
pub fn fixture_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

/// A fixture with `{{BASE}}` replaced and `{{DATE_n}}` set to n hours ago (RFC 2822),
/// so the fixtures never age past a webhook's `max_age`.
pub fn render_fixture(rel: &str, base: &str) -> String {
    let text = std::fs::read_to_string(fixture_path(rel)).expect("fixture");
    let mut out = text.replace("{{BASE}}", base);
    for n in (0..10).rev() {
        let when = chrono::Utc::now() - chrono::Duration::hours(n);
        out = out.replace(&format!("{{{{DATE_{n}}}}}"), &when.to_rfc2822());
    }
    out
}

/// The secret every test webhook signs with.
pub const SECRET: &str = "whsec_dGVzdC1zZWNyZXQtZm9yLWZlZWR3YXRjaA==";

/// Verifies a Standard Webhooks signature independently of feedwatch's code.
pub fn verify_signature(r: &http::Received) -> bool {
    let key = base64::engine::general_purpose::STANDARD
        .decode(SECRET.trim_start_matches("whsec_"))
        .unwrap();
    let signed = format!(
        "{}.{}.{}",
        r.header("webhook-id"),
        r.header("webhook-timestamp"),
        r.body
    );
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&key).unwrap();
    mac.update(signed.as_bytes());
    let expected = format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    );
    r.header("webhook-signature")
        .split(' ')
        .any(|s| s == expected)
}

/// A story fixture (`tests/fixtures/dedup/*.txt`) as its headline (the first line)
/// and its paragraphs.
pub fn story(fixture: &str) -> (String, Vec<String>) {
    let (title, body) = fixture.split_once('\n').expect("headline, then body");
    let paragraphs = body
        .split("\n\n")
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect();
    (title.to_string(), paragraphs)
}

/// Topics used by the end-to-end tests (kept here so tuning the shipped
/// defaults does not change what these tests expect).
pub const TEST_TOPICS: &str = r#"
[[topics]]
name = "tariffs"
query = '(tariff* OR levies OR "import duties") AND NOT "feed-in tariff*"'

[[topics]]
name = "eda-export-controls"
query = '("electronic design automation" OR "chip design software") AND "export control*"'

[[topics]]
name = "counter-drone-lasers"
query = 'laser* AND drone*'
"#;

/// A config file for one test, in its own directory.
pub struct TestConfig {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl TestConfig {
    pub fn write(text: &str) -> TestConfig {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, text).unwrap();
        TestConfig { dir, path }
    }
}

/// The common head of test configs: fast timeouts, no pacing.
pub fn config_head(db_url: &str) -> String {
    config_head_with(db_url, "")
}

/// [`config_head`] with `daemon` (lines of TOML) added to its `[daemon]` table.
pub fn config_head_with(db_url: &str, daemon: &str) -> String {
    format!(
        r#"
[database]
url = "{db_url}"
max_connections = 2

[daemon]
shutdown_grace = "10s"
{daemon}

[http]
connect_timeout = "2s"
timeout = "5s"
per_host_delay = "0s"

[delivery]
backoff_base = "1s"
backoff_max = "2s"
timeout = "2s"
"#
    )
}

/// Runs the feedwatch binary to completion: within 120 s, or an hour with
/// `FEEDWATCH_SLOW_TESTS=1` (a debug build stores 100,000 stories in minutes).
pub async fn feedwatch(args: &[&str]) -> Output {
    let slow = std::env::var("FEEDWATCH_SLOW_TESTS").is_ok_and(|v| v == "1");
    let limit = Duration::from_secs(if slow { 3600 } else { 120 });
    let mut cmd = command(args);
    tokio::time::timeout(limit, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("feedwatch did not finish within {limit:?}"))
        .expect("feedwatch ran")
}

/// A loopback address with a port that was free a moment ago (for an admin listener).
pub fn free_port() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Sends SIGTERM to a running `feedwatch run` and returns its exit status, which
/// must come within `within`.
pub async fn terminate(
    child: &mut tokio::process::Child,
    within: Duration,
) -> std::process::ExitStatus {
    signal(child, "-TERM");
    tokio::time::timeout(within, child.wait())
        .await
        .unwrap_or_else(|_| panic!("feedwatch did not exit within {within:?} of SIGTERM"))
        .unwrap()
}

/// Sends `signal` (as `kill` spells it, e.g. `-HUP`) to a running child.
pub fn signal(child: &tokio::process::Child, signal: &str) {
    let pid = child.id().expect("the child is running").to_string();
    let status = std::process::Command::new("kill")
        .args([signal, &pid])
        .status()
        .unwrap();
    assert!(status.success(), "kill {signal} {pid}");
}

/// A `Command` for the feedwatch binary, with proxies off and quiet logs.
pub fn command(args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_feedwatch"));
    cmd.args(args)
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost")
        .env_remove("FEEDWATCH_DATABASE_URL")
        .env_remove("FEEDWATCH_CONFIG")
        .env(
            "RUST_LOG",
            std::env::var("TEST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .kill_on_drop(true);
    cmd
}

/// Stdout and stderr of a run, for assertion messages.
pub fn describe(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
