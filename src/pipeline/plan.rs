//! A configured source compiled for polling: its article-page selectors, the
//! `links` selector of a listing, and the host rule that says which article
//! pages a poll of it may fetch.

use url::Url;

use crate::config::SourceConfig;
use crate::extract::{self, CompiledSelectors, PageSelectors};

/// A configured source with what its polls need compiled once.
pub struct SourcePlan {
    pub spec: SourceConfig,
    /// The source's `[sources.select]` selectors for article pages.
    pub selectors: CompiledSelectors,
    /// `links` of an html source.
    pub links: Option<scraper::Selector>,
}

impl SourcePlan {
    /// Compiles the source's selectors; the error names the source and the selector.
    pub fn new(spec: &SourceConfig) -> anyhow::Result<SourcePlan> {
        let opt = |s: &str| (!s.trim().is_empty()).then(|| s.to_string());
        let selectors = CompiledSelectors::compile(&PageSelectors {
            title: opt(&spec.select.title),
            body: opt(&spec.select.body),
            published: opt(&spec.select.published),
            author: opt(&spec.select.author),
        })
        .map_err(|e| anyhow::anyhow!("source {:?}: {e}", spec.name()))?;
        let links = match spec.links.as_deref().map(str::trim) {
            Some(css) if !css.is_empty() => Some(
                extract::compile_link_selector(css)
                    .map_err(|e| anyhow::anyhow!("source {:?}: {e}", spec.name()))?,
            ),
            _ => None,
        };
        Ok(SourcePlan {
            spec: spec.clone(),
            selectors,
            links,
        })
    }

    /// Whether article pages at `url` may be fetched for this source: the
    /// source's own host (a leading `www.` aside, same port) or one of `allow_hosts`.
    pub fn may_follow(&self, source_url: &Url, url: &Url) -> bool {
        crate::fetch::guard::HostRule::new(source_url, &self.spec.allow_hosts).allows(url)
    }
}

/// The plan of the first source of a config file's text (unit tests).
#[cfg(test)]
pub(crate) fn plan_of(toml_source: &str) -> SourcePlan {
    let config =
        crate::config::Config::from_toml(toml_source, std::path::Path::new("t.toml"), |_| None)
            .unwrap();
    SourcePlan::new(&config.sources[0]).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(toml_source: &str) -> SourcePlan {
        plan_of(toml_source)
    }

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn article_links_stay_on_the_source_host_unless_allowed() {
        let p = plan(
            "[[sources]]\nname = \"a\"\nkind = \"html\"\nurl = \"https://www.asiatimes.com/china/\"\nlinks = \"a\"\n",
        );
        let src = url("https://www.asiatimes.com/china/");
        assert!(p.may_follow(&src, &url("https://asiatimes.com/2026/11/story/")));
        assert!(
            !p.may_follow(&src, &url("http://www.asiatimes.com/2026/11/story/")),
            "another port (80 vs 443) is another host"
        );
        assert!(!p.may_follow(&src, &url("https://partner.example.com/x")));
        assert!(!p.may_follow(&src, &url("http://127.0.0.1:8080/admin")));
        assert!(!p.may_follow(&src, &url("ftp://asiatimes.com/file")));

        let p = plan(
            "[[sources]]\nname = \"a\"\nkind = \"html\"\nurl = \"https://asiatimes.com/\"\nlinks = \"a\"\nallow_hosts = [\"cdn.asiatimes.com\", \"127.0.0.1:9000\"]\n",
        );
        let src = url("https://asiatimes.com/");
        assert!(p.may_follow(&src, &url("https://cdn.asiatimes.com/a")));
        assert!(p.may_follow(&src, &url("http://127.0.0.1:9000/a")));
        assert!(!p.may_follow(&src, &url("http://127.0.0.1:9001/a")));
    }
}
