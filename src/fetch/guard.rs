//! Where the fetcher may go: the rules every request of the fetcher is checked
//! against, the first URL and each redirect hop alike (DESIGN §2). A
//! [`FetchPolicy`] is built per fetch from the source that asked for it: the
//! source's own configured host, and, for article pages (listing links,
//! full-text and excerpt pages), the [`HostRule`] of the source's host plus its
//! `allow_hosts`. Private, loopback, link-local, CGNAT, multicast and
//! unspecified addresses are refused unless the source's own configured URL
//! names such a host (an address like `127.0.0.1` or `[::1]`, or `localhost`:
//! a lab or test setup) or `http.allow_private_networks` is set; names are checked
//! on the addresses they resolve to, in the resolver the HTTP client connects
//! through ([`GuardedResolver`]), so a name that resolves to a public address
//! when configured and to 127.0.0.1 later (DNS rebinding) is still refused.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

/// The hosts article pages of one source may come from: the source's own host
/// (a leading `www.` aside, same port) or one of its `allow_hosts` (`host` or
/// `host:port`).
#[derive(Debug, Clone)]
pub struct HostRule {
    site: Option<String>,
    port: Option<u16>,
    allowed: Vec<(String, Option<u16>)>,
}

/// A host name lowercased, without a leading `www.`.
fn site_of(url: &Url) -> Option<String> {
    url.host_str().map(|h| {
        h.to_ascii_lowercase()
            .trim_start_matches("www.")
            .to_string()
    })
}

impl HostRule {
    pub fn new(source_url: &Url, allow_hosts: &[String]) -> HostRule {
        let allowed = allow_hosts
            .iter()
            .map(|allowed| {
                let allowed = allowed.trim().to_ascii_lowercase();
                let (host, port) = match allowed.rsplit_once(':') {
                    Some((h, p)) if p.parse::<u16>().is_ok() => (h.to_string(), p.parse().ok()),
                    _ => (allowed.clone(), None),
                };
                (host.trim_start_matches("www.").to_string(), port)
            })
            .collect();
        HostRule {
            site: site_of(source_url),
            port: source_url.port_or_known_default(),
            allowed,
        }
    }

    /// Whether `url` is an http(s) URL on the source's host or an allowed one.
    pub fn allows(&self, url: &Url) -> bool {
        if !matches!(url.scheme(), "http" | "https") {
            return false;
        }
        let (Some(host), port) = (site_of(url), url.port_or_known_default()) else {
            return false;
        };
        if self.site.as_deref() == Some(host.as_str()) && self.port == port {
            return true;
        }
        self.allowed
            .iter()
            .any(|(h, p)| *h == host && p.is_none_or(|p| Some(p) == port))
    }
}

/// The rules of one fetch, applied to its first URL and to every redirect hop.
#[derive(Debug, Clone)]
pub struct FetchPolicy {
    /// The host of the source's configured URL, when that names a non-public
    /// host (a loopback or private address, or `localhost`): it may be fetched.
    trusted_host: Option<Host<String>>,
    /// For article pages: the hosts they may come from.
    hosts: Option<HostRule>,
}

impl FetchPolicy {
    /// A source's own URL (a feed or a listing page) or a URL a person named
    /// (`feedwatch match URL`): redirects may lead to any host, with the scheme
    /// rules; only the configured URL's own host may be a private address.
    pub fn source(source_url: &Url) -> FetchPolicy {
        FetchPolicy {
            trusted_host: names_non_public_host(source_url),
            hosts: None,
        }
    }

    /// An article page of the source at `source_url` (a listing link, a
    /// full-text or excerpt page): it and every hop it redirects to must be on
    /// the source's host or one of `allow_hosts`.
    pub fn article(source_url: &Url, allow_hosts: &[String]) -> FetchPolicy {
        FetchPolicy {
            trusted_host: names_non_public_host(source_url),
            hosts: Some(HostRule::new(source_url, allow_hosts)),
        }
    }

    /// Why `url` may not be requested under the host rule, if it may not.
    pub fn host_refusal(&self, url: &Url) -> Option<String> {
        match &self.hosts {
            Some(rule) if !rule.allows(url) => Some(format!(
                "{} is neither the source's host nor in its allow_hosts",
                url.host_str().unwrap_or("(no host)")
            )),
            _ => None,
        }
    }

    /// Whether `url`'s host is the non-public host the source's own configured
    /// URL names, which may be fetched whatever its address.
    pub fn is_trusted_host(&self, url: &Url) -> bool {
        match (&self.trusted_host, url.host()) {
            (Some(Host::Domain(a)), Some(Host::Domain(b))) => a.eq_ignore_ascii_case(b),
            (Some(a), Some(b)) => *a == b.to_owned(),
            _ => false,
        }
    }
}

/// `url`'s host when it names a non-public host: an IP literal that is not
/// public, or `localhost` (which resolves to loopback by definition). A
/// configured name that merely resolves to a private address is not one: it
/// could be rebound, and `http.allow_private_networks` is the way to allow it.
fn names_non_public_host(url: &Url) -> Option<Host<String>> {
    let host = url.host()?;
    let non_public = match &host {
        Host::Ipv4(v4) => is_non_public(IpAddr::V4(*v4)),
        Host::Ipv6(v6) => is_non_public(IpAddr::V6(*v6)),
        Host::Domain(d) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            d == "localhost" || d.ends_with(".localhost")
        }
    };
    non_public.then(|| host.to_owned())
}

/// Whether `ip` is an address a fetch must not connect to unless told it may:
/// loopback, private (RFC 1918, RFC 4193), link-local (169.254.0.0/16, with
/// the cloud metadata address, and fe80::/10), CGNAT (100.64.0.0/10),
/// multicast, unspecified, "this network", broadcast and reserved; IPv6 forms
/// that embed an IPv4 address are judged by that address.
pub fn is_non_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_non_public_v4(v4),
        IpAddr::V6(v6) => is_non_public_v6(v6),
    }
}

fn is_non_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || a == 0
        || (a == 100 && (64..128).contains(&b))
        || a >= 240
}

fn is_non_public_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_non_public_v4(v4);
    }
    let s = ip.segments();
    // ::a.b.c.d (deprecated IPv4-compatible) and 64:ff9b::/96 (NAT64) embed an IPv4 address.
    let embedded = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if s[..6] == [0, 0, 0, 0, 0, 0] && !ip.is_loopback() && !ip.is_unspecified() {
        return is_non_public_v4(embedded);
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return is_non_public_v4(embedded);
    }
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00 // unique local, fc00::/7
        || (s[0] & 0xffc0) == 0xfe80 // link-local, fe80::/10
        || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated), fec0::/10
}

/// A connection refused because the address is not public.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "refused to connect to {address} ({host}): a loopback, private, link-local or otherwise non-public address (set http.allow_private_networks = true to allow)"
)]
pub struct NonPublicAddress {
    pub host: String,
    pub address: IpAddr,
}

/// The `NonPublicAddress` that `url`'s host is, when it is an IP literal that is not public.
pub fn literal_refusal(url: &Url) -> Option<NonPublicAddress> {
    let address = match url.host()? {
        Host::Ipv4(v4) => IpAddr::V4(v4),
        Host::Ipv6(v6) => IpAddr::V6(v6),
        Host::Domain(_) => return None,
    };
    is_non_public(address).then(|| NonPublicAddress {
        host: url.host_str().unwrap_or_default().to_string(),
        address,
    })
}

/// The system's resolver (getaddrinfo on tokio's blocking pool).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// Resolves through `lookup`, then keeps only the public addresses; a name with
/// none left fails with [`NonPublicAddress`]. The HTTP client connects only to
/// the addresses this returns, so the check holds for the address actually used.
pub struct GuardedResolver {
    lookup: Arc<dyn Resolve>,
}

impl GuardedResolver {
    pub fn new(lookup: Arc<dyn Resolve>) -> GuardedResolver {
        GuardedResolver { lookup }
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_string();
        let resolving = self.lookup.resolve(name);
        Box::pin(async move {
            let (public, refused): (Vec<SocketAddr>, Vec<SocketAddr>) =
                resolving.await?.partition(|a| !is_non_public(a.ip()));
            match (public.is_empty(), refused.first()) {
                (true, Some(first)) => Err(Box::new(NonPublicAddress {
                    host,
                    address: first.ip(),
                })
                    as Box<dyn std::error::Error + Send + Sync>),
                _ => Ok(Box::new(public.into_iter()) as Addrs),
            }
        })
    }
}

/// The `NonPublicAddress` somewhere in `e`'s chain of causes, if there is one.
pub fn find_non_public(e: &(dyn std::error::Error + 'static)) -> Option<NonPublicAddress> {
    let mut current = Some(e);
    while let Some(err) = current {
        if let Some(found) = err.downcast_ref::<NonPublicAddress>() {
            return Some(found.clone());
        }
        current = err.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn non_public_addresses_are_recognised() {
        let refused = [
            "127.0.0.1",
            "127.8.9.10",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "224.0.0.1",
            "239.255.255.250",
            "0.0.0.0",
            "0.1.2.3",
            "255.255.255.255",
            "240.0.0.1",
            "::1",
            "::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::10.0.0.1",
            "64:ff9b::a9fe:a9fe",
        ];
        for a in refused {
            assert!(is_non_public(a.parse().unwrap()), "{a} must be refused");
        }
        let public = [
            "1.1.1.1",
            "93.184.216.34",
            "172.32.0.1",
            "100.128.0.1",
            "192.169.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ];
        for a in public {
            assert!(!is_non_public(a.parse().unwrap()), "{a} is public");
        }
    }

    #[test]
    fn only_the_configured_host_may_be_private() {
        let p = FetchPolicy::source(&url("http://127.0.0.1:8000/feed"));
        assert!(p.is_trusted_host(&url("http://127.0.0.1:9000/other")));
        assert!(!p.is_trusted_host(&url("http://169.254.169.254/latest")));
        let p = FetchPolicy::source(&url("http://LocalHost:8000/feed"));
        assert!(p.is_trusted_host(&url("http://localhost/x")));
        assert!(!p.is_trusted_host(&url("http://127.0.0.1/x")));
        let p = FetchPolicy::source(&url("https://intranet.example/feed"));
        assert!(
            !p.is_trusted_host(&url("https://intranet.example/x")),
            "a name that resolves to a private address is not trusted: it could be rebound"
        );
        let p = FetchPolicy::source(&url("https://93.184.216.34/feed"));
        assert!(!p.is_trusted_host(&url("https://93.184.216.34/x")));
        let p = FetchPolicy::source(&url("http://[::1]:8000/feed"));
        assert!(p.is_trusted_host(&url("http://[::1]:8001/")));
        assert!(literal_refusal(&url("http://[::1]/")).is_some());
        assert!(literal_refusal(&url("http://169.254.169.254/")).is_some());
        assert!(literal_refusal(&url("http://8.8.8.8/")).is_none());
        assert!(literal_refusal(&url("http://example.org/")).is_none());
    }

    #[test]
    fn article_hops_keep_to_the_host_rule() {
        let p = FetchPolicy::article(
            &url("https://www.asiatimes.com/china/"),
            &["cdn.asiatimes.com".into(), "127.0.0.1:9000".into()],
        );
        assert_eq!(p.host_refusal(&url("https://asiatimes.com/a")), None);
        assert_eq!(p.host_refusal(&url("https://cdn.asiatimes.com/a")), None);
        assert_eq!(p.host_refusal(&url("http://127.0.0.1:9000/a")), None);
        assert!(p.host_refusal(&url("http://127.0.0.1:9001/a")).is_some());
        assert!(p.host_refusal(&url("http://169.254.169.254/")).is_some());
        assert!(
            FetchPolicy::source(&url("https://a.test/"))
                .host_refusal(&url("https://b.test/"))
                .is_none()
        );
    }

    struct Fixed(Vec<IpAddr>);
    impl Resolve for Fixed {
        fn resolve(&self, _: Name) -> Resolving {
            let addrs: Vec<SocketAddr> = self.0.iter().map(|ip| SocketAddr::new(*ip, 0)).collect();
            Box::pin(async move { Ok(Box::new(addrs.into_iter()) as Addrs) })
        }
    }

    #[tokio::test]
    async fn the_resolver_drops_private_answers_and_names_the_address() {
        let name = || "news.example.test".parse::<Name>().unwrap();
        let mixed = GuardedResolver::new(Arc::new(Fixed(vec![
            "127.0.0.1".parse().unwrap(),
            "93.184.216.34".parse().unwrap(),
        ])));
        let got: Vec<SocketAddr> = mixed.resolve(name()).await.unwrap().collect();
        assert_eq!(got, vec!["93.184.216.34:0".parse().unwrap()]);
        let private =
            GuardedResolver::new(Arc::new(Fixed(vec!["169.254.169.254".parse().unwrap()])));
        let err = match private.resolve(name()).await {
            Ok(_) => panic!("a metadata address must be refused"),
            Err(e) => e,
        };
        let found = find_non_public(err.as_ref()).expect("a NonPublicAddress");
        assert_eq!(found.address.to_string(), "169.254.169.254");
        assert!(err.to_string().contains("news.example.test"), "{err}");
    }
}
