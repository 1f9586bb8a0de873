//! Reloading the config on SIGHUP, the daemon's side door: what a reloaded file
//! changes in the running daemon (sources added, removed and changed; how many
//! topics and webhooks are in force) and what it cannot change without a restart.
//! [`crate::app::App::reload`] applies a file; this says what the change was.

use crate::config::{Config, SourceConfig};

/// What a reload changed.
#[derive(Debug, Clone, Default)]
pub struct ReloadReport {
    /// Sources the file added, removed (disabled; their stories stay) and changed.
    pub sources_added: Vec<String>,
    pub sources_removed: Vec<String>,
    pub sources_changed: Vec<String>,
    /// How many topics and webhooks are in force now.
    pub topics: usize,
    pub webhooks: usize,
    /// Settings that differ from the running ones but take effect only at restart.
    pub restart_only: Vec<&'static str>,
    /// What the new file holds that is valid but probably not meant ([`Config::warnings`]).
    pub warnings: Vec<String>,
}

impl ReloadReport {
    /// A report of the sources `after` adds to, removes from and changes in `before`,
    /// by name: a changed source has another kind, URL, interval, `enabled`, selectors
    /// or host rule.
    pub(crate) fn sources(before: &Config, after: &Config) -> ReloadReport {
        let mut report = ReloadReport::default();
        for new in &after.sources {
            match before.sources.iter().find(|s| s.name() == new.name()) {
                None => report.sources_added.push(new.name().to_string()),
                Some(old) if !same_source(before, old, after, new) => {
                    report.sources_changed.push(new.name().to_string())
                }
                Some(_) => {}
            }
        }
        for old in &before.sources {
            if !after.sources.iter().any(|s| s.name() == old.name()) {
                report.sources_removed.push(old.name().to_string());
            }
        }
        report
    }
}

/// Whether two configs' versions of a source poll the same way.
fn same_source(before: &Config, old: &SourceConfig, after: &Config, new: &SourceConfig) -> bool {
    let select = |s: &SourceConfig| {
        [
            s.select.title.clone(),
            s.select.body.clone(),
            s.select.published.clone(),
            s.select.author.clone(),
        ]
    };
    old.kind == new.kind
        && old.url == new.url
        && before.interval_of(old) == after.interval_of(new)
        && old.enabled == new.enabled
        && old.full_text == new.full_text
        && old.links == new.links
        && old.allow_hosts == new.allow_hosts
        && select(old) == select(new)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn config(text: &str) -> Config {
        Config::from_toml(text, Path::new("t.toml"), |_| None).unwrap()
    }

    fn source(name: &str, extra: &str) -> String {
        format!(
            "[[sources]]\nname = \"{name}\"\nkind = \"feed\"\nurl = \"https://{name}.example/feed\"\n{extra}"
        )
    }

    #[test]
    fn sources_are_added_removed_or_changed_by_name() {
        let before = config(&[source("a", ""), source("b", ""), source("c", "")].concat());
        let after = config(
            &[
                source("b", "interval = \"5m\"\n"),
                source("c", ""),
                source("d", ""),
            ]
            .concat(),
        );
        let report = ReloadReport::sources(&before, &after);
        assert_eq!(report.sources_added, ["d"]);
        assert_eq!(report.sources_removed, ["a"]);
        assert_eq!(
            report.sources_changed,
            ["b"],
            "b's interval went from 10m to 5m"
        );
    }

    #[test]
    fn a_new_default_interval_changes_the_sources_that_use_it() {
        let before = config(&[source("a", ""), source("b", "interval = \"1h\"\n")].concat());
        let after = config(
            &[
                "[defaults]\ninterval = \"2m\"\n".to_string(),
                source("a", ""),
                source("b", "interval = \"1h\"\n"),
            ]
            .concat(),
        );
        assert_eq!(
            ReloadReport::sources(&before, &after).sources_changed,
            ["a"]
        );
        let disabled = config(&source("a", "enabled = false\n"));
        let selectors = config(&source(
            "a",
            "full_text = true\n[sources.select]\nbody = \"article\"\n",
        ));
        let plain = config(&source("a", ""));
        for other in [&disabled, &selectors] {
            assert_eq!(ReloadReport::sources(&plain, other).sources_changed, ["a"]);
        }
        assert!(
            ReloadReport::sources(&plain, &plain)
                .sources_changed
                .is_empty()
        );
    }
}
