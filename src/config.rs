//! Typed configuration: the first thing the daemon reads and the contract of
//! DESIGN §0. Every key has a default, unknown keys are errors, durations are
//! humantime strings, and `${NAME}` in the string values that commonly carry
//! secrets or deployment details is replaced from the environment. `validate`
//! checks what serde cannot (names, URLs, topic queries, cross references) and
//! names the key — and where it can, the line — at fault.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;
use url::Url;

use crate::topics::{self, TopicSpec};

/// Environment variable that overrides `database.url`.
pub const DATABASE_URL_ENV: &str = "FEEDWATCH_DATABASE_URL";
/// Environment variable naming the config file when `--config` is absent.
pub const CONFIG_PATH_ENV: &str = "FEEDWATCH_CONFIG";

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not fit the schema (unknown key, bad type, bad duration).
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// The file parsed but a value is not acceptable.
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub database: DatabaseConfig,
    pub daemon: DaemonConfig,
    pub http: HttpConfig,
    pub defaults: SourceDefaults,
    pub dedup: DedupConfig,
    pub delivery: DeliveryConfig,
    pub admin: AdminConfig,
    pub sources: Vec<SourceConfig>,
    pub topics: Vec<TopicConfig>,
    pub webhooks: Vec<WebhookConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    pub url: String,
    pub max_connections: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonConfig {
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// This daemon's name in the leases it holds, stable across restarts so that a
    /// restarted daemon takes back its own. Empty in the file: the host name and a
    /// hash of the config file's path ([`default_instance`]), filled in by
    /// [`Config::load`]. Two daemons running at once must have different names.
    pub instance: String,
    /// How long a claim on a source or a delivery lasts unless renewed. A running
    /// daemon renews its claims every third of this while its work progresses, so
    /// this is how long a dead daemon's work waits for another daemon.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    /// A stage busy with one step for this long (the scheduler, the writer) or a
    /// store that has not answered for this long is stuck: `/readyz` says so, the
    /// systemd watchdog is no longer pinged and leases are no longer renewed.
    #[serde(with = "humantime_serde")]
    pub stall_after: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    pub user_agent: String,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    pub max_body_bytes: u64,
    pub max_redirects: usize,
    pub per_host_concurrency: usize,
    pub global_concurrency: usize,
    #[serde(with = "humantime_serde")]
    pub per_host_delay: Duration,
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
    /// Whether fetches may connect to loopback, private, link-local, CGNAT and
    /// other non-public addresses on any host (a source's own configured host
    /// may always be one).
    pub allow_private_networks: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourceDefaults {
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    pub failing_after: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DedupConfig {
    #[serde(with = "humantime_serde")]
    pub window: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    pub max_attempts: u32,
    #[serde(with = "humantime_serde")]
    pub backoff_base: Duration,
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    pub concurrency: usize,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    pub listen: String,
}

/// How a source is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// RSS, Atom or JSON Feed.
    Feed,
    /// A listing page whose article links are followed.
    Html,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Feed => "feed",
            SourceKind::Html => "html",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    pub name: Spanned<String>,
    pub kind: SourceKind,
    pub url: String,
    #[serde(default, with = "humantime_serde")]
    pub interval: Option<Duration>,
    #[serde(default = "default_true")]
    pub enabled: bool,
    #[serde(default)]
    pub full_text: bool,
    #[serde(default)]
    pub links: Option<String>,
    #[serde(default)]
    pub allow_hosts: Vec<String>,
    #[serde(default)]
    pub select: PageSelectConfig,
}

impl SourceConfig {
    pub fn name(&self) -> &str {
        self.name.get_ref()
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PageSelectConfig {
    pub title: String,
    pub body: String,
    pub published: String,
    pub author: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicConfig {
    pub name: Spanned<String>,
    pub query: Spanned<String>,
    #[serde(default = "default_min_score")]
    pub min_score: f64,
}

impl TopicConfig {
    pub fn name(&self) -> &str {
        self.name.get_ref()
    }
}

/// Body shape of a webhook request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    /// Standard Webhooks JSON (DESIGN §6).
    Json,
    /// Slack incoming-webhook message.
    Slack,
    /// Discord webhook message.
    Discord,
}

/// Events a webhook may subscribe to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
pub enum EventKind {
    #[serde(rename = "story.matched")]
    StoryMatched,
    #[serde(rename = "source.failing")]
    SourceFailing,
    #[serde(rename = "source.recovered")]
    SourceRecovered,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::StoryMatched => "story.matched",
            EventKind::SourceFailing => "source.failing",
            EventKind::SourceRecovered => "source.recovered",
        }
    }
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub name: Spanned<String>,
    pub url: String,
    #[serde(default)]
    pub secret: String,
    #[serde(default)]
    pub topics: Vec<String>,
    #[serde(default = "default_events")]
    pub events: Vec<EventKind>,
    #[serde(default = "default_format")]
    pub format: WebhookFormat,
    #[serde(default = "default_max_age", with = "humantime_serde")]
    pub max_age: Duration,
}

impl WebhookConfig {
    pub fn name(&self) -> &str {
        self.name.get_ref()
    }

    /// Whether this webhook wants alerts for `topic`.
    pub fn wants_topic(&self, topic: &str) -> bool {
        self.topics.is_empty() || self.topics.iter().any(|t| t == topic)
    }

    pub fn wants_event(&self, event: EventKind) -> bool {
        self.events.contains(&event)
    }
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("name", self.name.get_ref())
            .field("url", &crate::notify::redact::redact_webhook_url(&self.url))
            .field(
                "secret",
                &if self.secret.is_empty() {
                    ""
                } else {
                    "<redacted>"
                },
            )
            .field("topics", &self.topics)
            .field("events", &self.events)
            .field("format", &self.format)
            .field("max_age", &self.max_age)
            .finish()
    }
}

fn default_true() -> bool {
    true
}
fn default_min_score() -> f64 {
    1.0
}
fn default_events() -> Vec<EventKind> {
    vec![EventKind::StoryMatched]
}
fn default_format() -> WebhookFormat {
    WebhookFormat::Json
}
fn default_max_age() -> Duration {
    Duration::from_secs(2 * 86_400)
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: "sqlite://feedwatch.db".into(),
            max_connections: 8,
        }
    }
}

impl Default for DaemonConfig {
    fn default() -> Self {
        Self {
            shutdown_grace: Duration::from_secs(30),
            instance: String::new(),
            lease: Duration::from_secs(60),
            stall_after: Duration::from_secs(120),
        }
    }
}

/// The default `User-Agent`: names feedwatch, its version and where to read about it.
pub fn default_user_agent() -> String {
    format!(
        "feedwatch/{} (+{})",
        env!("CARGO_PKG_VERSION"),
        env!("CARGO_PKG_REPOSITORY")
    )
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            user_agent: default_user_agent(),
            connect_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(30),
            max_body_bytes: 10 * 1024 * 1024,
            max_redirects: 5,
            per_host_concurrency: 2,
            global_concurrency: 32,
            per_host_delay: Duration::from_millis(250),
            backoff_max: Duration::from_secs(6 * 3600),
            allow_private_networks: false,
        }
    }
}

impl Default for SourceDefaults {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(600),
            failing_after: 5,
        }
    }
}

impl Default for DedupConfig {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(7 * 86_400),
        }
    }
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            max_attempts: 12,
            backoff_base: Duration::from_secs(30),
            backoff_max: Duration::from_secs(6 * 3600),
            timeout: Duration::from_secs(10),
            concurrency: 4,
        }
    }
}

/// Where the config file is: `--config`, else `$FEEDWATCH_CONFIG`, else `./config.toml`.
pub fn resolve_path(cli: Option<&Path>) -> PathBuf {
    if let Some(path) = cli {
        return path.to_path_buf();
    }
    match std::env::var_os(CONFIG_PATH_ENV) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from("config.toml"),
    }
}

impl Config {
    /// Reads, parses, expands and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text, path, |name| std::env::var(name).ok())
    }

    /// Parses `text` (named `path` in messages), with `env` looking up variables.
    pub fn from_toml(
        text: &str,
        path: &Path,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        config.expand_env(&env).map_err(invalid)?;
        if config.daemon.instance.is_empty() {
            config.daemon.instance = default_instance(path);
        }
        // The file's own database URL is relative to the file; an override from the
        // environment is taken as given (relative to the working directory).
        config.database.url = resolve_sqlite_path(&config.database.url, path);
        if let Some(url) = env(DATABASE_URL_ENV).filter(|u| !u.is_empty()) {
            config.database.url = url;
        }
        config.validate(text).map_err(invalid)?;
        Ok(config)
    }

    fn expand_env(&mut self, env: &impl Fn(&str) -> Option<String>) -> Result<(), String> {
        let expand = |key: &str, value: &mut String| -> Result<(), String> {
            *value = expand_vars(value, env).map_err(|var| {
                format!("{key}: environment variable {var} is not set (referenced as ${{{var}}})")
            })?;
            Ok(())
        };
        expand("database.url", &mut self.database.url)?;
        expand("http.user_agent", &mut self.http.user_agent)?;
        expand("admin.listen", &mut self.admin.listen)?;
        expand("daemon.instance", &mut self.daemon.instance)?;
        for (i, s) in self.sources.iter_mut().enumerate() {
            expand(&format!("sources[{i}].url"), &mut s.url)?;
        }
        for (i, w) in self.webhooks.iter_mut().enumerate() {
            expand(&format!("webhooks[{i}].url"), &mut w.url)?;
            expand(&format!("webhooks[{i}].secret"), &mut w.secret)?;
        }
        Ok(())
    }

    fn validate(&self, text: &str) -> Result<(), String> {
        let line = |span: std::ops::Range<usize>| line_of(text, span.start);
        check_database_url(&self.database.url).map_err(|e| format!("database.url: {e}"))?;
        if self.database.max_connections == 0 {
            return Err("database.max_connections: must be at least 1".into());
        }
        if self.http.per_host_concurrency == 0 || self.http.global_concurrency == 0 {
            return Err(
                "http.per_host_concurrency and http.global_concurrency must be at least 1".into(),
            );
        }
        if self.delivery.concurrency == 0 {
            return Err("delivery.concurrency: must be at least 1".into());
        }
        if self.delivery.max_attempts == 0 {
            return Err("delivery.max_attempts: must be at least 1".into());
        }
        self.check_settings()?;

        let mut names = HashSet::new();
        for (i, s) in self.sources.iter().enumerate() {
            let at = format!("sources[{i}] (line {})", line(s.name.span()));
            check_name(s.name()).map_err(|e| format!("{at}.name: {e}"))?;
            if !names.insert(s.name()) {
                return Err(format!("{at}.name: duplicate source name {:?}", s.name()));
            }
            let url = Url::parse(&s.url)
                .map_err(|e| format!("{at}.url: {:?} is not a URL: {e}", s.url))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(format!("{at}.url: {:?} is not http(s)", s.url));
            }
            if let Some(interval) = s.interval {
                check_duration(&format!("{at}.interval"), interval, MIN_INTERVAL)?;
            }
            if s.kind == SourceKind::Html && s.links.as_deref().unwrap_or("").trim().is_empty() {
                return Err(format!(
                    "{at}.links: required for kind = \"html\" (a CSS selector of article links)"
                ));
            }
            for css in [
                s.links.as_deref().unwrap_or(""),
                &s.select.title,
                &s.select.body,
                &s.select.published,
                &s.select.author,
            ] {
                if !css.is_empty() {
                    scraper::Selector::parse(css)
                        .map_err(|e| format!("{at}: bad CSS selector {css:?}: {e}"))?;
                }
            }
        }

        let mut topic_names = HashSet::new();
        for (i, t) in self.topics.iter().enumerate() {
            let at = format!("topics[{i}] (line {})", line(t.name.span()));
            check_name(t.name()).map_err(|e| format!("{at}.name: {e}"))?;
            if !topic_names.insert(t.name()) {
                return Err(format!("{at}.name: duplicate topic name {:?}", t.name()));
            }
            if !t.min_score.is_finite() || t.min_score < 0.0 {
                return Err(format!("{at}.min_score: must be a number >= 0"));
            }
            topics::check_query(t.name(), t.query.get_ref())
                .map_err(|e| format!("topics[{i}].query (line {}): {e}", line(t.query.span())))?;
        }

        let mut hook_names = HashSet::new();
        for (i, w) in self.webhooks.iter().enumerate() {
            let at = format!("webhooks[{i}] (line {})", line(w.name.span()));
            check_name(w.name()).map_err(|e| format!("{at}.name: {e}"))?;
            if !hook_names.insert(w.name()) {
                return Err(format!("{at}.name: duplicate webhook name {:?}", w.name()));
            }
            // A webhook URL is a credential: errors show it redacted.
            let shown = crate::notify::redact::redact_webhook_url(&w.url);
            let url =
                Url::parse(&w.url).map_err(|e| format!("{at}.url: {shown:?} is not a URL: {e}"))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(format!("{at}.url: {shown:?} is not http(s)"));
            }
            for topic in &w.topics {
                if !topic_names.contains(topic.as_str()) {
                    return Err(format!("{at}.topics: no topic named {topic:?}"));
                }
            }
            check_duration(&format!("{at}.max_age"), w.max_age, Duration::ZERO)?;
            if w.events.is_empty() {
                return Err(format!("{at}.events: subscribe to at least one event"));
            }
            crate::notify::signing::SigningKey::parse(&w.secret)
                .map_err(|e| format!("{at}.secret: {e}"))?;
        }
        Ok(())
    }

    /// The settings outside sources, topics and webhooks that `run` would trip
    /// over: durations too short to work (a zero timeout fails every request, a
    /// millisecond interval hammers a site) or too long to add to a date, a zero
    /// body cap, an admin address that does not parse, a `User-Agent` that is not
    /// a valid header.
    fn check_settings(&self) -> Result<(), String> {
        let timeout = Duration::from_millis(100);
        for (key, value, min) in [
            (
                "daemon.shutdown_grace",
                self.daemon.shutdown_grace,
                Duration::from_secs(1),
            ),
            ("daemon.lease", self.daemon.lease, Duration::from_secs(1)),
            (
                "daemon.stall_after",
                self.daemon.stall_after,
                Duration::from_secs(1),
            ),
            ("http.connect_timeout", self.http.connect_timeout, timeout),
            ("http.timeout", self.http.timeout, timeout),
            (
                "http.per_host_delay",
                self.http.per_host_delay,
                Duration::ZERO,
            ),
            (
                "http.backoff_max",
                self.http.backoff_max,
                Duration::from_secs(1),
            ),
            ("defaults.interval", self.defaults.interval, MIN_INTERVAL),
            ("dedup.window", self.dedup.window, Duration::ZERO),
            ("delivery.backoff_base", self.delivery.backoff_base, timeout),
            ("delivery.backoff_max", self.delivery.backoff_max, timeout),
            ("delivery.timeout", self.delivery.timeout, timeout),
        ] {
            check_duration(key, value, min)?;
        }
        if self.delivery.backoff_max < self.delivery.backoff_base {
            return Err(format!(
                "delivery.backoff_max: {} is shorter than delivery.backoff_base ({})",
                humantime::format_duration(self.delivery.backoff_max),
                humantime::format_duration(self.delivery.backoff_base)
            ));
        }
        if self.http.max_body_bytes < MIN_BODY_BYTES {
            return Err(format!(
                "http.max_body_bytes: {} is too small to hold a feed (at least {MIN_BODY_BYTES})",
                self.http.max_body_bytes
            ));
        }
        for (key, value) in [
            ("http.per_host_concurrency", self.http.per_host_concurrency),
            ("http.global_concurrency", self.http.global_concurrency),
            ("delivery.concurrency", self.delivery.concurrency),
        ] {
            if value > MAX_CONCURRENCY {
                return Err(format!(
                    "{key}: {value} is too many (at most {MAX_CONCURRENCY})"
                ));
            }
        }
        if self.defaults.failing_after == 0 {
            return Err("defaults.failing_after: must be at least 1".into());
        }
        if reqwest::header::HeaderValue::from_str(&self.http.user_agent).is_err() {
            return Err(format!(
                "http.user_agent: {:?} is not a valid header value (printable ASCII, no line breaks)",
                self.http.user_agent
            ));
        }
        check_instance(&self.daemon.instance)?;
        if !self.admin.listen.is_empty() {
            self.admin
                .listen
                .parse::<std::net::SocketAddr>()
                .map_err(|e| {
                    format!(
                        "admin.listen: {:?} is not an address and port such as \"127.0.0.1:9187\" \
                         (empty turns the listener off): {e}",
                        self.admin.listen
                    )
                })?;
        }
        Ok(())
    }

    /// What is valid but probably not what was meant: `check-config` prints these
    /// and `run`/`once` log them.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.sources.is_empty() {
            out.push("no [[sources]]: nothing will be polled or stored".to_string());
        } else if self.sources.iter().all(|s| !s.enabled) {
            out.push("every source is disabled: nothing will be polled or stored".to_string());
        }
        if self.topics.is_empty() {
            out.push(
                "no [[topics]]: stories are stored but nothing matches, so no alert is sent"
                    .to_string(),
            );
        }
        for s in &self.sources {
            let interval = self.interval_of(s);
            if s.enabled && interval < POLITE_INTERVAL {
                out.push(format!(
                    "source {:?} is polled every {}: more than once a minute is hard on a news site",
                    s.name(),
                    humantime::format_duration(interval)
                ));
            }
        }
        out
    }

    /// The settings a running daemon keeps from the file it started with, by key, whose
    /// values differ in `new`: they take effect only at a restart. Sources, topics,
    /// webhooks and `[defaults]` are what a reload changes.
    pub fn restart_only_changes(&self, new: &Config) -> Vec<&'static str> {
        let mut changed = Vec::new();
        macro_rules! compare {
            ($($key:literal => $($field:ident).+;)+) => {
                $(if self.$($field).+ != new.$($field).+ {
                    changed.push($key);
                })+
            };
        }
        compare! {
            "database.url" => database.url;
            "database.max_connections" => database.max_connections;
            "daemon.shutdown_grace" => daemon.shutdown_grace;
            "daemon.instance" => daemon.instance;
            "daemon.lease" => daemon.lease;
            "daemon.stall_after" => daemon.stall_after;
            "http.user_agent" => http.user_agent;
            "http.connect_timeout" => http.connect_timeout;
            "http.timeout" => http.timeout;
            "http.max_body_bytes" => http.max_body_bytes;
            "http.max_redirects" => http.max_redirects;
            "http.per_host_concurrency" => http.per_host_concurrency;
            "http.global_concurrency" => http.global_concurrency;
            "http.per_host_delay" => http.per_host_delay;
            "http.backoff_max" => http.backoff_max;
            "http.allow_private_networks" => http.allow_private_networks;
            "dedup.window" => dedup.window;
            "delivery.max_attempts" => delivery.max_attempts;
            "delivery.backoff_base" => delivery.backoff_base;
            "delivery.backoff_max" => delivery.backoff_max;
            "delivery.timeout" => delivery.timeout;
            "delivery.concurrency" => delivery.concurrency;
            "admin.listen" => admin.listen;
        }
        changed
    }

    /// The topic specs for the matcher.
    pub fn topic_specs(&self) -> Vec<TopicSpec> {
        self.topics
            .iter()
            .map(|t| TopicSpec {
                name: t.name().to_string(),
                query: t.query.get_ref().clone(),
                min_score: t.min_score,
            })
            .collect()
    }

    /// The polling interval of `source`, falling back to `defaults.interval`.
    pub fn interval_of(&self, source: &SourceConfig) -> Duration {
        source.interval.unwrap_or(self.defaults.interval)
    }
}

/// The shortest polling interval accepted; tests poll local servers this often.
const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// Intervals shorter than this are accepted with a warning.
const POLITE_INTERVAL: Duration = Duration::from_secs(60);
/// The longest duration accepted anywhere: far beyond any sensible setting, and
/// short enough that adding it to the current time cannot overflow.
const MAX_DURATION: Duration = Duration::from_secs(36_500 * 86_400);
/// The most concurrent requests a limit may allow (a semaphore cannot hold
/// arbitrarily many permits, and no host wants more).
const MAX_CONCURRENCY: usize = 10_000;
/// The smallest `http.max_body_bytes` accepted.
const MIN_BODY_BYTES: u64 = 1024;

/// Checks that the duration `key` lies between `min` (inclusive; a zero `min`
/// allows zero) and [`MAX_DURATION`].
fn check_duration(key: &str, value: Duration, min: Duration) -> Result<(), String> {
    if value < min {
        return Err(format!(
            "{key}: {} is too short (at least {})",
            humantime::format_duration(value),
            humantime::format_duration(min)
        ));
    }
    if value > MAX_DURATION {
        return Err(format!(
            "{key}: {} is too long (at most 36500d)",
            humantime::format_duration(value)
        ));
    }
    Ok(())
}

/// `url` with a relative `sqlite:` path made absolute against the directory of
/// the config file at `config_path` (DESIGN §7); any other URL unchanged.
fn resolve_sqlite_path(url: &str, config_path: &Path) -> String {
    let Some(rest) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    else {
        return url.to_string();
    };
    let (file, query) = match rest.find('?') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if file.is_empty() || file.starts_with(':') || Path::new(file).is_absolute() {
        return url.to_string();
    }
    let dir = config_path.parent().unwrap_or(Path::new(""));
    let joined = dir.join(file);
    let absolute = std::path::absolute(&joined).unwrap_or(joined);
    format!("sqlite://{}{query}", absolute.display())
}

/// The instance name a daemon takes when `daemon.instance` is empty: the host name,
/// then the first 8 hex digits of a hash of the config file's absolute path. A daemon
/// restarted with the same file on the same host gets the same name back; a second
/// daemon on the host needs a config file of its own (or its own `daemon.instance`).
pub fn default_instance(config_path: &Path) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    let host: String = host
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        .take(64)
        .collect();
    let path = std::fs::canonicalize(config_path)
        .or_else(|_| std::path::absolute(config_path))
        .unwrap_or_else(|_| config_path.to_path_buf());
    let hash = blake3::hash(path.as_os_str().as_encoded_bytes());
    format!("{host}-{}", &hash.to_hex()[..8])
}

/// `daemon.instance`: it prefixes lease owners (`<instance>/<run>/<claim>`), so no `/`.
fn check_instance(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "daemon.instance: {name:?} must be 1 to 100 of A-Z a-z 0-9 . - _ :"
        ))
    }
}

/// What `run` needs of a database URL before it connects: a scheme the store opens
/// (`sqlite:` or `postgres:`/`postgresql:`), options its driver parses, and for SQLite a
/// file (an in-memory database would hold nothing past the connection that made it).
fn check_database_url(url: &str) -> Result<(), String> {
    use std::str::FromStr;
    let shown = redact_url(url);
    if crate::store::is_postgres_url(url) {
        sqlx::postgres::PgConnectOptions::from_str(url)
            .map_err(|e| format!("{shown:?} is not a valid Postgres URL: {e}"))?;
    } else if let Some(rest) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    {
        sqlx::sqlite::SqliteConnectOptions::from_str(url)
            .map_err(|e| format!("{shown:?} is not a valid SQLite URL: {e}"))?;
        let (file, query) = rest.split_once('?').unwrap_or((rest, ""));
        if file.is_empty() || file.starts_with(':') || query.contains("mode=memory") {
            return Err(format!(
                "{shown:?} names no database file (write sqlite://PATH; an in-memory database keeps nothing)"
            ));
        }
    } else {
        return Err(format!(
            "{shown:?} is neither sqlite://PATH nor postgres://…"
        ));
    }
    Ok(())
}

/// Names of sources, topics and webhooks: `[a-z0-9-]+`.
fn check_name(name: &str) -> Result<(), String> {
    if !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        Ok(())
    } else {
        Err(format!("{name:?} must match [a-z0-9-]+"))
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Replaces `${NAME}` with `env(NAME)`; returns the first missing variable's name.
fn expand_vars(value: &str, env: &impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            return Ok(out);
        };
        let name = &after[..end];
        match env(name) {
            Some(v) => out.push_str(&v),
            None => return Err(name.to_string()),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// A database URL with any password replaced, for logs and messages.
/// Both places a Postgres URL may carry one: `user:password@` and `?password=`.
pub fn redact_url(url: &str) -> String {
    let Ok(mut u) = Url::parse(url) else {
        return redact_unparsed_url(url);
    };
    let secret_param = |key: &str| key.eq_ignore_ascii_case("password");
    let in_query = u.query_pairs().any(|(k, _)| secret_param(&k));
    if u.password().is_none() && !in_query {
        return url.to_string();
    }
    if u.password().is_some() {
        let _ = u.set_password(Some("***"));
    }
    if in_query {
        let pairs: Vec<(String, String)> = u
            .query_pairs()
            .map(|(k, v)| {
                let v = if secret_param(&k) {
                    "***".into()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        u.query_pairs_mut().clear().extend_pairs(pairs);
    }
    u.to_string()
}

/// [`redact_url`] for a URL that does not parse (a bad port, say), so its error
/// message can still quote it: the password between `user:` and `@` becomes `***`,
/// and so does anything after a `password=`.
fn redact_unparsed_url(url: &str) -> String {
    let mut shown = url.to_string();
    if let Some(start) = shown.find("://").map(|i| i + 3) {
        let authority_end = shown[start..]
            .find(['/', '?', '#'])
            .map_or(shown.len(), |i| start + i);
        if let Some(at) = shown[start..authority_end].rfind('@').map(|i| start + i)
            && let Some(colon) = shown[start..at].find(':').map(|i| start + i)
        {
            shown.replace_range(colon + 1..at, "***");
        }
    }
    let lower = shown.to_ascii_lowercase();
    if let Some(value) = lower.find("password=").map(|i| i + "password=".len()) {
        let end = shown[value..].find('&').map_or(shown.len(), |i| value + i);
        shown.replace_range(value..end, "***");
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, Path::new("test.toml"), |name| match name {
            "SECRET" => Some("s3cret".into()),
            _ => None,
        })
    }

    #[test]
    fn an_empty_file_gives_every_default() {
        let c = parse("").unwrap();
        let here = std::env::current_dir().unwrap();
        assert_eq!(
            c.database.url,
            format!("sqlite://{}", here.join("feedwatch.db").display())
        );
        assert_eq!(c.http.max_body_bytes, 10_485_760);
        assert_eq!(c.defaults.interval, Duration::from_secs(600));
        assert_eq!(c.dedup.window, Duration::from_secs(7 * 86400));
        assert_eq!(c.delivery.max_attempts, 12);
        assert!(c.http.user_agent.starts_with("feedwatch/"));
    }

    #[test]
    fn the_instance_name_is_stable_per_config_file_and_may_be_set() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.toml"), dir.path().join("b.toml"));
        for path in [&a, &b] {
            std::fs::write(path, "").unwrap();
        }
        let load = |path: &Path| Config::load(path).unwrap().daemon.instance;
        assert_eq!(load(&a), load(&a), "the same file names the same instance");
        assert_ne!(
            load(&a),
            load(&b),
            "two files on one host name two instances"
        );
        // The same file reached through another spelling of its path.
        let dotted = dir.path().join(".").join("a.toml");
        assert_eq!(load(&dotted), load(&a));
        let host = load(&a);
        assert!(
            host.rsplit_once('-').is_some_and(|(_, h)| h.len() == 8),
            "{host}"
        );
        std::fs::write(&a, "[daemon]\ninstance = \"news-1\"\n").unwrap();
        assert_eq!(load(&a), "news-1");
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_line() {
        let err = parse("[http]\ntimeout = \"5s\"\ntimout = \"5s\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("timout"), "{err}");
        assert!(err.contains("line 3"), "{err}");
    }

    #[test]
    fn bad_durations_name_the_key() {
        let err = parse("[daemon]\nshutdown_grace = \"soon\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("shutdown_grace"), "{err}");
    }

    #[test]
    fn environment_variables_are_expanded_and_missing_ones_named() {
        let c = parse(
            "[[webhooks]]\nname = \"a\"\nurl = \"http://127.0.0.1/x\"\nsecret = \"${SECRET}\"\n",
        )
        .unwrap();
        assert_eq!(c.webhooks[0].secret, "s3cret");
        let err = parse("[database]\nurl = \"postgres://${NOPE}@h/db\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("NOPE") && err.contains("database.url"),
            "{err}"
        );
    }

    #[test]
    fn a_database_url_that_does_not_parse_is_named_without_its_password() {
        for (url, fault) in [
            (
                "postgres://fw:hunter2@db:99999/fw",
                "not a valid Postgres URL",
            ),
            ("postgresfoo://fw:hunter2@db/fw", "neither sqlite"),
            ("sqlite://", "names no database file"),
            ("sqlite::memory:", "names no database file"),
            ("sqlite://fw.db?mode=memory", "names no database file"),
        ] {
            let err = parse(&format!("[database]\nurl = \"{url}\"\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("database.url") && err.contains(fault), "{err}");
            assert!(!err.contains("hunter2"), "{err}");
        }
        assert_eq!(
            redact_url("postgres://fw:hunter2@db:99999/fw?password=x&sslmode=require"),
            "postgres://fw:***@db:99999/fw?password=***&sslmode=require"
        );
        assert!(parse("[database]\nurl = \"postgresql://fw@db/fw\"\n").is_ok());
    }

    #[test]
    fn a_reload_names_the_settings_only_a_restart_changes() {
        let running = parse(
            "[database]\nurl = \"sqlite:///var/lib/fw.db\"\n[admin]\nlisten = \"127.0.0.1:9187\"\n",
        )
        .unwrap();
        let reloaded = parse(
            "[database]\nurl = \"postgres://fw@db/fw\"\n[admin]\nlisten = \"127.0.0.1:9188\"\n\
             [http]\ntimeout = \"7s\"\n[defaults]\ninterval = \"5m\"\n\
             [[sources]]\nname = \"a\"\nkind = \"feed\"\nurl = \"https://a.example/\"\n",
        )
        .unwrap();
        assert_eq!(
            running.restart_only_changes(&reloaded),
            ["database.url", "http.timeout", "admin.listen"],
            "sources and [defaults] are reloaded, not named"
        );
        assert!(running.restart_only_changes(&running).is_empty());
    }

    #[test]
    fn duplicate_topic_names_are_rejected() {
        let err = parse(
            "[[topics]]\nname = \"t\"\nquery = \"a\"\n[[topics]]\nname = \"t\"\nquery = \"b\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("duplicate topic name") && err.contains("line 5"),
            "{err}"
        );
    }

    #[test]
    fn html_sources_need_a_link_selector() {
        let err = parse("[[sources]]\nname = \"x\"\nkind = \"html\"\nurl = \"https://e.org/\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("links"), "{err}");
    }

    #[test]
    fn webhooks_may_only_name_configured_topics() {
        let err = parse(
            "[[topics]]\nname = \"t\"\nquery = \"a\"\n[[webhooks]]\nname = \"w\"\nurl = \"http://127.0.0.1/\"\ntopics = [\"u\"]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("no topic named \"u\""), "{err}");
    }

    #[test]
    fn an_empty_file_is_valid_but_warned_about() {
        let warnings = parse("").unwrap().warnings().join("\n");
        assert!(
            warnings.contains("no [[sources]]") && warnings.contains("no [[topics]]"),
            "{warnings}"
        );
    }

    #[test]
    fn settings_run_would_trip_over_are_rejected_with_their_key() {
        for (text, key) in [
            ("[admin]\nlisten = \"nonsense\"\n", "admin.listen"),
            ("[admin]\nlisten = \"localhost\"\n", "admin.listen"),
            ("[http]\ntimeout = \"0s\"\n", "http.timeout"),
            ("[http]\nconnect_timeout = \"0s\"\n", "http.connect_timeout"),
            ("[http]\nmax_body_bytes = 0\n", "http.max_body_bytes"),
            ("[http]\nuser_agent = \"a\\nb\"\n", "http.user_agent"),
            ("[delivery]\ntimeout = \"0s\"\n", "delivery.timeout"),
            (
                "[delivery]\nbackoff_base = \"0s\"\n",
                "delivery.backoff_base",
            ),
            ("[defaults]\ninterval = \"1ms\"\n", "defaults.interval"),
            ("[defaults]\nfailing_after = 0\n", "defaults.failing_after"),
            (
                "[http]\nglobal_concurrency = 9000000000000000000\n",
                "http.global_concurrency",
            ),
            (
                "[daemon]\nshutdown_grace = \"0s\"\n",
                "daemon.shutdown_grace",
            ),
            ("[dedup]\nwindow = \"1000000d\"\n", "dedup.window"),
            ("[daemon]\nlease = \"0s\"\n", "daemon.lease"),
            ("[daemon]\nstall_after = \"10ms\"\n", "daemon.stall_after"),
            ("[daemon]\ninstance = \"a/b\"\n", "daemon.instance"),
            (
                "[[sources]]\nname = \"a\"\nkind = \"feed\"\nurl = \"https://e.org/\"\ninterval = \"10ms\"\n",
                "sources[0] (line 2).interval",
            ),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(key), "{text:?}: {err}");
        }
        assert!(parse("[admin]\nlisten = \"127.0.0.1:9187\"\n").is_ok());
        assert!(parse("[admin]\nlisten = \"[::1]:9187\"\n").is_ok());
    }

    #[test]
    fn a_relative_sqlite_path_is_relative_to_the_config_file() {
        let at = |url: &str| {
            let text = format!("[database]\nurl = \"{url}\"\n");
            Config::from_toml(&text, Path::new("/etc/feedwatch/config.toml"), |_| None)
                .unwrap()
                .database
                .url
        };
        assert_eq!(at("sqlite://fw.db"), "sqlite:///etc/feedwatch/fw.db");
        assert_eq!(
            at("sqlite:data/fw.db?mode=rwc"),
            "sqlite:///etc/feedwatch/data/fw.db?mode=rwc"
        );
        assert_eq!(
            at("sqlite:///var/lib/feedwatch/fw.db"),
            "sqlite:///var/lib/feedwatch/fw.db"
        );
        // (An in-memory URL is left as it is, and then rejected by validation.)
        assert_eq!(
            resolve_sqlite_path("sqlite::memory:", Path::new("/etc/feedwatch/config.toml")),
            "sqlite::memory:"
        );
        assert_eq!(at("postgres://u@h/db"), "postgres://u@h/db");
        // The environment's override is taken as given.
        let c = Config::from_toml("", Path::new("/etc/feedwatch/config.toml"), |name| {
            (name == DATABASE_URL_ENV).then(|| "sqlite://here.db".to_string())
        })
        .unwrap();
        assert_eq!(c.database.url, "sqlite://here.db");
    }

    #[test]
    fn passwords_in_database_urls_are_redacted() {
        assert_eq!(
            redact_url("postgres://fw:s3cret@db/feedwatch"),
            "postgres://fw:***@db/feedwatch"
        );
        assert_eq!(
            redact_url("postgres://db/feedwatch?user=fw&password=s3cret&sslmode=require"),
            "postgres://db/feedwatch?user=fw&password=***&sslmode=require"
        );
        assert_eq!(
            redact_url("sqlite:///var/lib/feedwatch/fw.db"),
            "sqlite:///var/lib/feedwatch/fw.db"
        );
    }

    #[test]
    fn the_shipped_config_is_valid() {
        let text = include_str!("../config.toml");
        let c = parse(text).unwrap();
        assert!(c.sources.iter().any(|s| s.name() == "hkfp"));
        assert!(c.sources.iter().any(|s| s.name() == "asiatimes"));
        let topics: Vec<_> = c.topics.iter().map(|t| t.name().to_string()).collect();
        assert_eq!(
            topics,
            ["tariffs", "eda-export-controls", "counter-drone-lasers"]
        );
    }
}
