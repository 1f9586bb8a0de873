//! Opening the store, before anything else touches it: `run` and `once` open it
//! to write (creating a missing SQLite file, running migrations), commands that
//! inspect or re-drive what is stored open an existing database only. When the
//! database cannot be opened, [`ConnectProblem`] says what happened in the words
//! of the person fixing it — refused, unknown host, authentication, no such
//! database, file missing or not writable, schema missing or behind — and a
//! refused or silent server fails within seconds rather than after a pool's
//! acquire timeout.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::Connection;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgConnection};

use super::{StoreError, StoreResult};

/// How a command opens the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// `run` and `once`: a missing SQLite file is created and migrations run.
    Create,
    /// Commands that only look at (or re-drive) what is stored: the database must
    /// exist with feedwatch's current schema; nothing is created or migrated.
    Existing,
}

/// How long the first connection to a Postgres server may take, name lookup,
/// TLS and authentication included. A refused connection fails at once.
pub(crate) const FIRST_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the store could not be opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectProblem {
    /// Nothing accepts connections at the server's address.
    Refused { addr: String },
    /// The server's host name does not resolve.
    HostNotFound { host: String },
    /// The server did not answer within the first-connect timeout.
    TimedOut { addr: String, after: Duration },
    /// The server rejected the user (no such role, wrong password, pg_hba rule).
    Authentication { user: String, detail: String },
    /// The server has no database of that name.
    NoSuchDatabase { name: String },
    /// A command that only reads found no SQLite file (it never creates one).
    NoSuchFile { path: PathBuf },
    /// The SQLite file, or the directory it belongs in, cannot be created or written.
    NotWritable { path: PathBuf, why: String },
    /// The database exists but holds no feedwatch schema.
    NoSchema,
    /// The database's schema is older than this feedwatch's.
    SchemaBehind { have: i64, need: i64 },
    /// The URL does not parse as a database URL.
    BadUrl,
    /// Something else; the driver's error (the source) says what.
    Other,
}

impl fmt::Display for ConnectProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectProblem::Refused { addr } => write!(
                f,
                "connection refused by {addr} (is PostgreSQL running and listening there?)"
            ),
            ConnectProblem::HostNotFound { host } => {
                write!(f, "host {host:?} not found (DNS lookup failed)")
            }
            ConnectProblem::TimedOut { addr, after } => write!(
                f,
                "no answer from {addr} within {} (a firewall dropping packets, or the server is overloaded)",
                humantime::format_duration(*after)
            ),
            ConnectProblem::Authentication { user, detail } => {
                write!(f, "authentication failed for user {user:?}: {detail}")
            }
            ConnectProblem::NoSuchDatabase { name } => write!(
                f,
                "database {name:?} does not exist on the server (create it first: createdb {name})"
            ),
            ConnectProblem::NoSuchFile { path } => write!(
                f,
                "no database file at {} (this command never creates one: check database.url, or \
                 run `feedwatch once` or the daemon to create it)",
                path.display()
            ),
            ConnectProblem::NotWritable { path, why } => {
                write!(f, "cannot create or write {}: {why}", path.display())
            }
            ConnectProblem::NoSchema => write!(
                f,
                "the database holds no feedwatch tables (run `feedwatch once` or the daemon against it first)"
            ),
            ConnectProblem::SchemaBehind { have, need } => write!(
                f,
                "the database schema is at migration {have} and this feedwatch needs {need} \
                 (start the daemon, or run `feedwatch once`, to migrate it)"
            ),
            ConnectProblem::BadUrl => write!(f, "not a valid database URL"),
            ConnectProblem::Other => write!(f, "the connection failed"),
        }
    }
}

/// The error for `url` (shown with its password redacted).
pub(crate) fn connect_error(
    url: &str,
    problem: ConnectProblem,
    source: Option<sqlx::Error>,
) -> StoreError {
    StoreError::Connect {
        url: crate::config::redact_url(url),
        problem: Box::new(problem),
        source,
    }
}

/// Connects once, directly, to the server `options` name and closes the
/// connection: a refused port, an unknown host, a wrong password or a missing
/// database is reported at once and in plain words, not as a pool timeout.
pub(crate) async fn probe_postgres(url: &str, options: &PgConnectOptions) -> StoreResult<()> {
    let host = options.get_host();
    let port = options.get_port();
    let addr = if options.get_socket().is_some() || host.starts_with('/') {
        format!("the socket in {host}")
    } else {
        format!("{host}:{port}")
    };
    if options.get_socket().is_none() && !host.starts_with('/') {
        let lookup =
            tokio::time::timeout(FIRST_CONNECT_TIMEOUT, tokio::net::lookup_host((host, port)))
                .await;
        match lookup {
            Err(_) => {
                let problem = ConnectProblem::TimedOut {
                    addr: format!("the resolver (looking up {host:?})"),
                    after: FIRST_CONNECT_TIMEOUT,
                };
                return Err(connect_error(url, problem, None));
            }
            Ok(Err(e)) => {
                let problem = ConnectProblem::HostNotFound {
                    host: host.to_string(),
                };
                return Err(connect_error(url, problem, Some(sqlx::Error::Io(e))));
            }
            Ok(Ok(_)) => {}
        }
    }
    match tokio::time::timeout(FIRST_CONNECT_TIMEOUT, PgConnection::connect_with(options)).await {
        Err(_) => Err(connect_error(
            url,
            ConnectProblem::TimedOut {
                addr,
                after: FIRST_CONNECT_TIMEOUT,
            },
            None,
        )),
        Ok(Err(e)) => {
            let problem = classify_postgres(&e, options, addr);
            // The server's own words are in the problem already; an I/O error's are not.
            let source = match problem {
                ConnectProblem::NoSuchDatabase { .. } | ConnectProblem::Authentication { .. } => {
                    None
                }
                _ => Some(e),
            };
            Err(connect_error(url, problem, source))
        }
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
            Ok(())
        }
    }
}

fn classify_postgres(e: &sqlx::Error, options: &PgConnectOptions, addr: String) -> ConnectProblem {
    if let sqlx::Error::Io(io) = e {
        return match io.kind() {
            std::io::ErrorKind::ConnectionRefused => ConnectProblem::Refused { addr },
            std::io::ErrorKind::TimedOut => ConnectProblem::TimedOut {
                addr,
                after: FIRST_CONNECT_TIMEOUT,
            },
            _ => ConnectProblem::Other,
        };
    }
    let Some(db) = e.as_database_error() else {
        return ConnectProblem::Other;
    };
    match db.code().as_deref() {
        // invalid_catalog_name
        Some("3D000") => ConnectProblem::NoSuchDatabase {
            name: options
                .get_database()
                .unwrap_or(options.get_username())
                .to_string(),
        },
        // invalid_password, invalid_authorization_specification
        Some("28P01") | Some("28000") => ConnectProblem::Authentication {
            user: options.get_username().to_string(),
            detail: db.message().to_string(),
        },
        _ => ConnectProblem::Other,
    }
}

/// Before a SQLite file is opened: a command that only reads needs the file to
/// exist; one that creates it needs its directory.
pub(crate) fn check_sqlite_path(path: &Path, mode: OpenMode) -> Result<(), ConnectProblem> {
    match mode {
        OpenMode::Existing if !path.exists() => Err(ConnectProblem::NoSuchFile {
            path: path.to_path_buf(),
        }),
        OpenMode::Existing => Ok(()),
        OpenMode::Create => {
            let dir = directory_of(path);
            match std::fs::metadata(dir) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    Err(ConnectProblem::NotWritable {
                        path: path.to_path_buf(),
                        why: format!("directory {} does not exist", dir.display()),
                    })
                }
                Ok(meta) if !meta.is_dir() => Err(ConnectProblem::NotWritable {
                    path: path.to_path_buf(),
                    why: format!("{} is not a directory", dir.display()),
                }),
                _ => Ok(()),
            }
        }
    }
}

/// After SQLite failed to open or migrate `path`: whether the file or its
/// directory is not writable by this process (a read-only file, a directory
/// outside the service's writable paths), or `None` when that is not the cause.
pub(crate) fn diagnose_sqlite_write(path: &Path) -> Option<ConnectProblem> {
    let not_writable = |why: String| {
        Some(ConnectProblem::NotWritable {
            path: path.to_path_buf(),
            why,
        })
    };
    if path.exists()
        && let Err(e) = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
    {
        return not_writable(e.to_string());
    }
    let dir = directory_of(path);
    let probe = dir.join(format!(".feedwatch-write-probe-{}", std::process::id()));
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
    {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            None
        }
        Err(e) => not_writable(format!(
            "directory {} is not writable ({e}); SQLite keeps its -wal and -shm files beside the database",
            dir.display()
        )),
    }
}

fn directory_of(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// The query both backends answer with the newest migration applied.
pub(crate) const SCHEMA_VERSION_SQL: &str =
    "SELECT MAX(version) FROM _sqlx_migrations WHERE success";

/// Whether a database whose newest applied migration is `applied` (the result of
/// [`SCHEMA_VERSION_SQL`]) has the schema `migrator` builds.
pub(crate) fn check_schema(
    url: &str,
    applied: Result<Option<i64>, sqlx::Error>,
    migrator: &Migrator,
) -> StoreResult<()> {
    let need = migrator.iter().map(|m| m.version).max().unwrap_or(0);
    match applied {
        // No migrations table: not a feedwatch database (the driver's "no such
        // table" would only confuse).
        Err(sqlx::Error::Database(_)) => Err(connect_error(url, ConnectProblem::NoSchema, None)),
        Err(e) => Err(connect_error(url, ConnectProblem::Other, Some(e))),
        Ok(None) => Err(connect_error(url, ConnectProblem::NoSchema, None)),
        Ok(Some(have)) if have < need => Err(connect_error(
            url,
            ConnectProblem::SchemaBehind { have, need },
            None,
        )),
        Ok(Some(_)) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_only_open_needs_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("feedwatch.db");
        assert_eq!(
            check_sqlite_path(&path, OpenMode::Existing),
            Err(ConnectProblem::NoSuchFile { path: path.clone() })
        );
        assert_eq!(check_sqlite_path(&path, OpenMode::Create), Ok(()));
        assert!(!path.exists());
    }

    #[test]
    fn creating_needs_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plain");
        std::fs::write(&file, "x").unwrap();
        let problem = check_sqlite_path(&file.join("feedwatch.db"), OpenMode::Create)
            .unwrap_err()
            .to_string();
        assert!(problem.contains("is not a directory"), "{problem}");
        let problem = check_sqlite_path(&dir.path().join("no/feedwatch.db"), OpenMode::Create)
            .unwrap_err()
            .to_string();
        assert!(problem.contains("does not exist"), "{problem}");
    }

    #[test]
    fn a_schema_older_than_the_binary_is_refused() {
        let migrator = sqlx::migrate!("migrations/sqlite");
        let newest = migrator.iter().map(|m| m.version).max().unwrap();
        let problem = |applied| match check_schema("sqlite://x.db", Ok(applied), &migrator) {
            Err(StoreError::Connect { problem, .. }) => Some(*problem),
            Err(e) => panic!("{e}"),
            Ok(()) => None,
        };
        assert_eq!(problem(Some(newest)), None);
        assert_eq!(
            problem(Some(newest + 1)),
            None,
            "a newer daemon's schema is readable"
        );
        assert_eq!(
            problem(Some(newest - 1)),
            Some(ConnectProblem::SchemaBehind {
                have: newest - 1,
                need: newest
            })
        );
        assert_eq!(problem(None), Some(ConnectProblem::NoSchema));
    }

    #[test]
    fn a_writable_directory_is_not_a_diagnosis() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            diagnose_sqlite_write(&dir.path().join("feedwatch.db")),
            None
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
