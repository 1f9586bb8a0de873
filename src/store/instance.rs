//! One process per instance, checked before any lease is touched. Leases name their
//! instance, and a daemon takes back its own instance's leases at start (on SQLite,
//! `run` and `once` release every lease): a second process of the same instance (the
//! same config started twice on one host) would take back the first's sources and
//! deliveries while the first still works on them, and both would poll and alert. On
//! SQLite, which one process owns, the lock is an exclusive `flock` on the database file
//! (SQLite's own locks are `fcntl` locks, which Linux keeps apart), taken by `run` and
//! `once`; on Postgres it is a session advisory lock keyed by the instance name, on a
//! connection of its own, taken by `run`. Both end with the process, however it ends,
//! so a restart after `kill -9` finds them free.

use std::fs::{File, TryLockError};
use std::str::FromStr;
use std::time::Duration;

use sqlx::Connection;
use sqlx::postgres::PgConnection;
use sqlx::sqlite::SqliteConnectOptions;

use super::{StoreError, StoreResult, is_postgres_url};
use crate::config::redact_url;

/// How long a start waits for the lock: the Postgres session of a process killed a
/// moment ago may not have ended yet.
const WAIT: Duration = Duration::from_secs(5);

/// Held while this process may take back its instance's leases; dropping it (or the
/// process ending) lets the next process of the instance start.
#[derive(Debug)]
pub struct InstanceLock {
    _held: Held,
}

#[derive(Debug)]
enum Held {
    /// An in-memory SQLite database: no other process can reach it.
    Nothing,
    /// The SQLite database file, locked with `flock`.
    File(#[allow(dead_code)] File),
    /// The Postgres session that holds the advisory lock.
    Session(#[allow(dead_code)] PgConnection),
}

/// On SQLite, takes the lock of the database file at `url` (which [`super::connect`]
/// has opened, so it exists), for `run` and `once` alike: both release every lease at
/// start. Nothing to take on Postgres.
pub fn lock_database_file(url: &str) -> StoreResult<InstanceLock> {
    let held = if is_postgres_url(url) {
        Held::Nothing
    } else {
        lock_sqlite(url)?
    };
    Ok(InstanceLock { _held: held })
}

/// On Postgres, takes the lock of the daemon `instance`, for `run`, which takes back
/// its instance's leases at start (a `once` claims under a name of its own and takes
/// nothing back). Nothing to take on SQLite, whose file [`lock_database_file`] locks.
pub async fn lock_instance(url: &str, instance: &str) -> StoreResult<InstanceLock> {
    let held = if is_postgres_url(url) {
        lock_postgres(url, instance).await?
    } else {
        Held::Nothing
    };
    Ok(InstanceLock { _held: held })
}

fn lock_sqlite(url: &str) -> StoreResult<Held> {
    let options = SqliteConnectOptions::from_str(url)?;
    let path = options.get_filename();
    if url.contains(":memory:") || path.as_os_str().is_empty() {
        return Ok(Held::Nothing);
    }
    let file = File::open(path).map_err(|e| StoreError::InUse {
        what: format!("cannot open {} to lock it: {e}", path.display()),
    })?;
    match file.try_lock() {
        Ok(()) => Ok(Held::File(file)),
        Err(TryLockError::WouldBlock) => Err(StoreError::InUse {
            what: format!(
                "another feedwatch `run` or `once` is using {} (one process owns a SQLite \
                 database; stop it first, or point this one at a database of its own)",
                path.display()
            ),
        }),
        Err(TryLockError::Error(e)) => Err(StoreError::InUse {
            what: format!("cannot lock {}: {e}", path.display()),
        }),
    }
}

async fn lock_postgres(url: &str, instance: &str) -> StoreResult<Held> {
    let mut conn = PgConnection::connect(url).await?;
    // `lock_timeout` bounds the wait of `pg_advisory_lock` like any other lock wait.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SET lock_timeout = {}",
        WAIT.as_millis()
    )))
    .execute(&mut conn)
    .await?;
    let taken =
        sqlx::query("SELECT pg_advisory_lock(hashtextextended('feedwatch instance ' || $1, 0))")
            .bind(instance)
            .execute(&mut conn)
            .await;
    match taken {
        Ok(_) => Ok(Held::Session(conn)),
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("55P03") => {
            Err(StoreError::InUse {
                what: format!(
                    "another feedwatch with daemon.instance `{instance}` is using {} \
                     (waited {} s for it to end); give each process on one database its \
                     own `daemon.instance`",
                    redact_url(url),
                    WAIT.as_secs()
                ),
            })
        }
        Err(e) => Err(e.into()),
    }
}
