//! The systemd unit: `systemd-analyze verify` accepts it and `systemd-analyze
//! security --offline=true` rates its sandbox 1.5 or less (DESIGN §8). The unit
//! names the installed binary, absent on a build machine, so both run on a copy
//! whose `ExecStart` names the binary just built. Skipped, with a message, where
//! `systemd-analyze` is not installed.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The highest exposure DESIGN §8 accepts.
const MAX_EXPOSURE: f64 = 1.5;

const UNIT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/feedwatch.service");

fn systemd_analyze(args: &[&str]) -> Option<Output> {
    match Command::new("systemd-analyze").args(args).output() {
        Ok(out) => Some(out),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // Straight to stderr, not `eprintln!`: the test harness hides what a passing test prints.
            let _ = writeln!(
                std::io::stderr(),
                "skipped: systemd-analyze is not installed, so the unit is not checked"
            );
            None
        }
        Err(e) => panic!("cannot run systemd-analyze: {e}"),
    }
}

/// A copy of the unit, in `dir`, that starts the binary this build made.
fn unit_for_this_build(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(UNIT).unwrap();
    let installed = "ExecStart=/usr/local/bin/feedwatch ";
    assert!(
        text.lines().any(|l| l.starts_with(installed)),
        "the unit should start /usr/local/bin/feedwatch, as the README installs it"
    );
    let built = format!("ExecStart={} ", env!("CARGO_BIN_EXE_feedwatch"));
    let path = dir.join("feedwatch.service");
    std::fs::write(&path, text.replace(installed, &built)).unwrap();
    path
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn the_unit_passes_systemd_analyze_verify() {
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_for_this_build(dir.path());
    let Some(out) = systemd_analyze(&["verify", unit.to_str().unwrap()]) else {
        return;
    };
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        out.stderr.is_empty(),
        "verify printed warnings:\n{}",
        text(&out)
    );
}

#[test]
fn the_unit_sandbox_is_rated_at_most_1_5() {
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_for_this_build(dir.path());
    let Some(out) = systemd_analyze(&["security", "--offline=true", unit.to_str().unwrap()]) else {
        return;
    };
    let report = text(&out);
    assert!(out.status.success(), "{report}");
    let exposure: f64 = report
        .lines()
        .find_map(|l| l.split_once("Overall exposure level for feedwatch.service:"))
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no overall exposure level in:\n{report}"));
    assert!(
        exposure <= MAX_EXPOSURE,
        "exposure {exposure} is above {MAX_EXPOSURE}:\n{report}"
    );
}

#[test]
fn a_configuration_error_does_not_restart_the_service() {
    let text = std::fs::read_to_string(UNIT).unwrap();
    assert!(
        text.lines()
            .any(|l| l.trim() == "RestartPreventExitStatus=2"),
        "exit code 2 (bad config) must not be restarted forever"
    );
}
