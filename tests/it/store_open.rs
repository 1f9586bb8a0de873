//! Opening the store, as an operator meets it: a store that cannot be opened is
//! one clear error line naming what happened and where (password redacted),
//! exit 1; a refused server fails at once; a relative SQLite path belongs to the
//! config file's directory; commands that only read never create a database.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::both_backends;
use crate::support::*;

/// A config with only a database.
fn database_only(url: &str) -> TestConfig {
    TestConfig::write(&format!(
        "[database]\nurl = \"{url}\"\nmax_connections = 2\n"
    ))
}

/// Runs feedwatch with `args` in the working directory `cwd`.
async fn feedwatch_in(cwd: &Path, args: &[&str]) -> std::process::Output {
    let mut cmd = command(args);
    cmd.current_dir(cwd);
    tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .expect("feedwatch finished")
        .expect("feedwatch ran")
}

/// Asserts exit 1 and exactly one error line, containing every one of `wanted`; returns it.
fn the_one_error(out: &std::process::Output, wanted: &[&str]) -> String {
    assert_eq!(out.status.code(), Some(1), "{}", describe(out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("error:") || l.contains("ERROR"))
        .collect();
    assert_eq!(errors.len(), 1, "one error line:\n{}", describe(out));
    for w in wanted {
        assert!(errors[0].contains(w), "{w:?} missing from: {}", errors[0]);
    }
    errors[0].to_string()
}

#[tokio::test]
async fn a_refused_postgres_port_is_reported_at_once_with_the_password_redacted() {
    let port = free_port().port();
    let config = database_only(&format!(
        "postgres://feedwatch:hunter2@127.0.0.1:{port}/feedwatch"
    ));
    let started = Instant::now();
    let out = feedwatch(&["once", "--config", config.path.to_str().unwrap()]).await;
    let took = started.elapsed();
    let line = the_one_error(
        &out,
        &[
            "connection refused by 127.0.0.1:",
            &format!(":{port}"),
            "feedwatch:***@",
        ],
    );
    assert!(!describe(&out).contains("hunter2"), "{line}");
    // Not a pool timeout (10 s): the first connection is made directly.
    assert!(took < Duration::from_secs(8), "took {took:?}: {line}");
}

#[tokio::test]
async fn a_missing_postgres_database_is_named() {
    let Some(admin) = db::postgres_admin_url() else {
        return;
    };
    let name = format!("t_missing_{}", uuid::Uuid::new_v4().simple());
    let mut url = url::Url::parse(&admin).unwrap();
    url.set_path(&format!("/{name}"));
    let config = database_only(url.as_str());
    let out = feedwatch(&["once", "--config", config.path.to_str().unwrap()]).await;
    the_one_error(&out, &[&format!("database \"{name}\" does not exist")]);
}

#[tokio::test]
async fn an_unknown_postgres_user_is_an_authentication_failure() {
    let Some(admin) = db::postgres_admin_url() else {
        return;
    };
    let mut url = url::Url::parse(&admin).unwrap();
    url.set_username("no_such_feedwatch_role").unwrap();
    url.set_password(Some("pw")).unwrap();
    let config = database_only(url.as_str());
    let out = feedwatch(&[
        "deliveries",
        "--config",
        config.path.to_str().unwrap(),
        "list",
    ])
    .await;
    the_one_error(
        &out,
        &[
            "authentication failed for user \"no_such_feedwatch_role\"",
            "no_such_feedwatch_role:***@",
        ],
    );
}

#[tokio::test]
async fn a_sqlite_path_that_cannot_be_created_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain-file");
    std::fs::write(&plain, "not a directory").unwrap();
    let config = database_only(&format!("sqlite://{}/feedwatch.db", plain.display()));
    let out = feedwatch(&["once", "--config", config.path.to_str().unwrap()]).await;
    the_one_error(
        &out,
        &["cannot create or write", "plain-file is not a directory"],
    );

    let config = database_only(&format!(
        "sqlite://{}/no/such/dir/feedwatch.db",
        dir.path().display()
    ));
    let out = feedwatch(&["once", "--config", config.path.to_str().unwrap()]).await;
    the_one_error(&out, &["no/such/dir does not exist"]);
}

#[tokio::test]
async fn a_sqlite_directory_without_write_permission_is_named() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let locked = dir.path().join("locked");
    std::fs::create_dir(&locked).unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o555)).unwrap();
    if std::fs::write(locked.join("probe"), "x").is_ok() {
        // Straight to stderr: the test harness hides what a passing test prints.
        let _ = writeln!(
            std::io::stderr(),
            "skipped: this user writes through directory permissions (root?)"
        );
        return;
    }
    let config = database_only(&format!("sqlite://{}/feedwatch.db", locked.display()));
    let out = feedwatch(&["once", "--config", config.path.to_str().unwrap()]).await;
    the_one_error(&out, &["cannot create or write", "not writable"]);
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[tokio::test]
async fn a_relative_sqlite_path_is_resolved_against_the_config_directory() {
    let config = database_only("sqlite://relative.db");
    let elsewhere = tempfile::tempdir().unwrap();
    let path = config.path.to_str().unwrap();
    let out = feedwatch_in(elsewhere.path(), &["once", "--config", path]).await;
    assert!(out.status.success(), "{}", describe(&out));
    assert!(config.dir.path().join("relative.db").exists());
    assert!(!elsewhere.path().join("relative.db").exists());
    let out = feedwatch_in(elsewhere.path(), &["deliveries", "--config", path, "list"]).await;
    assert!(out.status.success(), "{}", describe(&out));
    let out = feedwatch_in(elsewhere.path(), &["check-config", "--config", path]).await;
    let shown = format!(
        "database: sqlite://{}",
        config.dir.path().join("relative.db").display()
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&shown),
        "{}",
        describe(&out)
    );
}

#[tokio::test]
async fn commands_that_only_read_never_create_a_sqlite_file() {
    let config = database_only("sqlite://feedwatch.db");
    let path = config.path.to_str().unwrap();
    let db = config.dir.path().join("feedwatch.db");
    for args in [
        vec!["deliveries", "--config", path, "list"],
        vec!["deliveries", "--config", path, "retry", "--dead"],
    ] {
        let out = feedwatch(&args).await;
        the_one_error(&out, &["no database file at", &db.display().to_string()]);
        assert!(!db.exists(), "{args:?} created {}", db.display());
    }
    let story = config.dir.path().join("story.txt");
    std::fs::write(&story, "Tariffs\nNew tariffs on steel.\n").unwrap();
    let out = feedwatch(&["match", "--config", path, story.to_str().unwrap()]).await;
    assert!(out.status.success(), "{}", describe(&out));
    let out = feedwatch(&["check-config", "--config", path]).await;
    assert!(out.status.success(), "{}", describe(&out));
    let left: Vec<_> = std::fs::read_dir(config.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.starts_with("feedwatch.db"))
        .collect();
    assert!(left.is_empty(), "created {left:?}");
}

/// A database that exists but that feedwatch never set up is not mistaken for an
/// empty outbox, and is left as it was.
async fn a_database_without_the_schema_is_refused_by_deliveries(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    if let Some(file) = db.url.strip_prefix("sqlite://") {
        std::fs::write(file, "").unwrap();
    }
    let config = database_only(&db.url);
    let out = feedwatch(&[
        "deliveries",
        "--config",
        config.path.to_str().unwrap(),
        "list",
    ])
    .await;
    the_one_error(&out, &["holds no feedwatch tables"]);
    let out = feedwatch(&["once", "--config", config.path.to_str().unwrap()]).await;
    assert!(out.status.success(), "{}", describe(&out));
    let out = feedwatch(&[
        "deliveries",
        "--config",
        config.path.to_str().unwrap(),
        "list",
    ])
    .await;
    assert!(out.status.success(), "{}", describe(&out));
    db.cleanup().await;
}
both_backends!(a_database_without_the_schema_is_refused_by_deliveries);
