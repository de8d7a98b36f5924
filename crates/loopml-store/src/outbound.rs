//! Outbound HTTP policy: which addresses server-side requests to URLs that users supply
//! (registry webhooks, monitor alert receivers) may reach.
//!
//! Refused unless explicitly allowed: loopback (`127.0.0.0/8`, `::1`), link-local
//! (`169.254.0.0/16`, `fe80::/10`, which holds the cloud metadata service), unspecified
//! (`0.0.0.0/8`, `::`), multicast and broadcast, the other clouds' metadata addresses
//! (`100.100.100.200`, `fd00:ec2::254`), IPv4-mapped and NAT64 forms of all of these, and the
//! names `localhost`, `*.localhost` and `metadata.google.internal`. Private ranges (10/8,
//! 172.16/12, 192.168/16, fc00::/7) stay reachable: in-cluster receivers live there.
//!
//! The check runs twice: on the URL when it is stored ([`OutboundPolicy::check_url`], which
//! also reads the literal IP forms `0x7f000001`, `2130706433`, `0177.0.0.1`, `127.1` the way
//! browsers and `getaddrinfo` do), and on every address the name resolves to when a request
//! is made ([`OutboundPolicy::agent`]), so a name that re-resolves to loopback (DNS
//! rebinding) is refused without a connection being opened.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;

use ipnet::IpNet;
use ureq::config::{Config, ConfigBuilder};
use ureq::typestate::AgentScope;
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{DefaultConnector, NextTimeout};

/// The prefix of every refusal message; deliveries refused by the policy are not retried.
pub const REFUSED: &str = "outbound request refused";

/// An outbound URL or allow-list entry the policy does not accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct OutboundError(pub String);

/// One entry of the allow-list.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Allow {
    /// `*`: the guard is off.
    Any,
    /// An exact host name (lower case, no trailing dot).
    Host(String),
    /// `*.example.com`: any name under this suffix (kept with its leading dot).
    Suffix(String),
    /// An address or CIDR block.
    Net(IpNet),
}

/// Which refused addresses an operator has allowed (`--outbound-allow`); cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct OutboundPolicy {
    allow: Arc<Vec<Allow>>,
}

impl fmt::Display for OutboundPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.allow.is_empty() {
            return f.write_str("loopback, link-local and metadata addresses refused");
        }
        let list: Vec<String> = self
            .allow
            .iter()
            .map(|a| match a {
                Allow::Any => "*".to_string(),
                Allow::Host(h) => h.clone(),
                Allow::Suffix(s) => format!("*{s}"),
                Allow::Net(n) => n.to_string(),
            })
            .collect();
        write!(f, "refused addresses allowed for: {}", list.join(", "))
    }
}

/// Why an address may not be reached, or `None` when it may.
pub fn refused_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => refused_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = embedded_v4(v6) {
                return refused_v4(v4);
            }
            let seg = v6.segments();
            if v6.is_loopback() {
                Some("a loopback address")
            } else if v6.is_unspecified() {
                Some("the unspecified address")
            } else if seg[0] & 0xffc0 == 0xfe80 {
                Some("a link-local address")
            } else if seg[0] & 0xff00 == 0xff00 {
                Some("a multicast address")
            } else if v6 == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
                Some("a cloud metadata address")
            } else {
                None
            }
        }
    }
}

fn refused_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let o = ip.octets();
    if ip.is_loopback() {
        Some("a loopback address")
    } else if o[0] == 0 {
        Some("the unspecified network")
    } else if ip == Ipv4Addr::new(169, 254, 169, 254) || ip == Ipv4Addr::new(100, 100, 100, 200) {
        Some("a cloud metadata address")
    } else if ip.is_link_local() {
        Some("a link-local address")
    } else if ip.is_multicast() || ip.is_broadcast() {
        Some("a multicast or broadcast address")
    } else {
        None
    }
}

/// The IPv4 address inside an IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`)
/// or NAT64 (`64:ff9b::a.b.c.d`) IPv6 address.
fn embedded_v4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = v6.segments();
    let tail = Ipv4Addr::new(
        (s[6] >> 8) as u8,
        (s[6] & 0xff) as u8,
        (s[7] >> 8) as u8,
        (s[7] & 0xff) as u8,
    );
    let compatible = s[..6] == [0; 6] && !v6.is_loopback() && !v6.is_unspecified();
    let nat64 = s[..6] == [0x64, 0xff9b, 0, 0, 0, 0];
    (compatible || nat64).then_some(tail)
}

/// Why a host name may not be reached, or `None` when it may (as far as its name tells).
fn refused_name(host: &str) -> Option<&'static str> {
    if host == "localhost" || host.ends_with(".localhost") || host == "localhost.localdomain" {
        Some("a loopback name")
    } else if host == "metadata.google.internal" || host == "metadata" {
        Some("a cloud metadata name")
    } else {
        None
    }
}

/// Lower case, without brackets or a trailing dot.
fn normalize_host(host: &str) -> String {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

/// Reads the literal IPv4 forms `getaddrinfo` accepts (`inet_aton`: 1 to 4 parts, each
/// decimal, octal with a leading 0 or hex with 0x), so `0x7f000001` is seen as 127.0.0.1.
fn inet_aton(host: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = host.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let mut nums = Vec::with_capacity(parts.len());
    for p in &parts {
        let n = if let Some(hex) = p.strip_prefix("0x").or_else(|| p.strip_prefix("0X")) {
            if hex.is_empty() {
                0
            } else {
                u64::from_str_radix(hex, 16).ok()?
            }
        } else if p.len() > 1 && p.starts_with('0') {
            u64::from_str_radix(&p[1..], 8).ok()?
        } else {
            p.parse::<u64>().ok()?
        };
        nums.push(n);
    }
    let (last, head) = nums.split_last()?;
    if head.iter().any(|&n| n > 255) {
        return None;
    }
    let rest_bits = 8 * (4 - head.len() as u32);
    if *last >= 1u64 << rest_bits {
        return None;
    }
    let mut value: u64 = 0;
    for (i, n) in head.iter().enumerate() {
        value |= n << (24 - 8 * i as u32);
    }
    value |= last;
    u32::try_from(value).ok().map(Ipv4Addr::from)
}

/// The address a host string names literally, in any spelling a resolver accepts.
fn literal_ip(host: &str) -> Option<IpAddr> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Some(ip);
    }
    // A zone id (`fe80::1%eth0`) still names that address.
    if let Some((addr, _zone)) = host.split_once('%')
        && let Ok(ip) = addr.parse::<Ipv6Addr>()
    {
        return Some(IpAddr::V6(ip));
    }
    inet_aton(host).map(IpAddr::V4)
}

impl OutboundPolicy {
    /// Reads an allow-list: comma- or space-separated entries, each a host name
    /// (`hooks.internal`), a suffix (`*.svc.cluster.local`), an address or CIDR block
    /// (`127.0.0.1`, `10.0.0.0/8`, `::1`), or `*` for everything.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, OutboundError> {
        let mut allow = Vec::new();
        for raw in entries.iter().flat_map(|e| {
            e.as_ref()
                .split([',', ' '])
                .map(str::to_string)
                .collect::<Vec<_>>()
        }) {
            let entry = raw.trim();
            if entry.is_empty() {
                continue;
            }
            let parsed = if entry == "*" {
                Allow::Any
            } else if let Some(suffix) = entry.strip_prefix("*.") {
                let s = normalize_host(suffix);
                if s.is_empty() || s.contains('*') {
                    return Err(bad_entry(entry));
                }
                Allow::Suffix(format!(".{s}"))
            } else if let Ok(net) = entry.parse::<IpNet>() {
                Allow::Net(net.trunc())
            } else if let Some(ip) = literal_ip(&normalize_host(entry)) {
                Allow::Net(IpNet::from(ip))
            } else {
                let h = normalize_host(entry);
                let valid = !h.is_empty()
                    && h.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_');
                if !valid {
                    return Err(bad_entry(entry));
                }
                Allow::Host(h)
            };
            allow.push(parsed);
        }
        Ok(Self {
            allow: Arc::new(allow),
        })
    }

    /// A policy that allows everything (the guard off): for tests and trusted tooling.
    pub fn allow_all() -> Self {
        Self {
            allow: Arc::new(vec![Allow::Any]),
        }
    }

    fn allows_any(&self) -> bool {
        self.allow.contains(&Allow::Any)
    }

    fn allows_name(&self, host: &str) -> bool {
        self.allow.iter().any(|a| match a {
            Allow::Any => true,
            Allow::Host(h) => h == host,
            Allow::Suffix(s) => host.ends_with(s.as_str()),
            Allow::Net(_) => false,
        })
    }

    fn allows_ip(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => embedded_v4(v6).map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.allow.iter().any(|a| match a {
            Allow::Any => true,
            Allow::Net(n) => n.contains(&ip),
            _ => false,
        })
    }

    /// Whether a connection to `ip` (reached through the name `host`) is allowed; the error
    /// says why not.
    pub fn check_ip(&self, host: &str, ip: IpAddr) -> Result<(), OutboundError> {
        let host = normalize_host(host);
        if self.allows_name(&host) || self.allows_ip(ip) {
            return Ok(());
        }
        match refused_reason(ip) {
            None => Ok(()),
            Some(why) => Err(refusal(&host, &ip.to_string(), why)),
        }
    }

    /// Checks a URL users supply: `http` or `https`, a host, and (unless allowed) no host
    /// that is, or is named as, a refused address. Names are not resolved here; the request
    /// checks what they resolve to.
    pub fn check_url(&self, url: &str) -> Result<(), OutboundError> {
        let parsed = url::Url::parse(url).map_err(|e| {
            OutboundError(format!(
                "Invalid URL {url:?}: {e}; expected http(s)://host/…"
            ))
        })?;
        let scheme = parsed.scheme();
        if scheme != "http" && scheme != "https" {
            return Err(OutboundError(format!(
                "Invalid URL scheme: '{scheme}'. Allowed schemes are: http, https."
            )));
        }
        let Some(host) = parsed.host_str().filter(|h| !h.is_empty()) else {
            return Err(OutboundError(format!(
                "URL must include a hostname: {url:?}"
            )));
        };
        // The raw authority too: `url` normalises 0x7f000001 to 127.0.0.1, but a resolver
        // may be handed the original spelling.
        let raw = raw_host(url).unwrap_or_default();
        for candidate in [normalize_host(host), normalize_host(&raw)] {
            if candidate.is_empty() || self.allows_name(&candidate) {
                continue;
            }
            if let Some(ip) = literal_ip(&candidate) {
                if !self.allows_ip(ip)
                    && let Some(why) = refused_reason(ip)
                {
                    return Err(refusal(&candidate, &ip.to_string(), why));
                }
            } else if let Some(why) = refused_name(&candidate) {
                return Err(refusal(&candidate, &candidate, why));
            }
        }
        Ok(())
    }

    /// Checks a URL and, when its name resolves here, that not every address it resolves to
    /// is refused (so a name for loopback is rejected when stored, not only when used). A
    /// name that does not resolve yet is accepted. Blocks on DNS: call off the async runtime.
    pub fn check_url_resolving(&self, url: &str) -> Result<(), OutboundError> {
        self.check_url(url)?;
        if self.allows_any() {
            return Ok(());
        }
        let Ok(parsed) = url::Url::parse(url) else {
            return Ok(());
        };
        let (Some(host), Some(port)) = (parsed.host_str(), parsed.port_or_known_default()) else {
            return Ok(());
        };
        let host = normalize_host(host);
        if self.allows_name(&host) || literal_ip(&host).is_some() {
            return Ok(());
        }
        let Ok(addrs) = (host.as_str(), port).to_socket_addrs() else {
            return Ok(());
        };
        let addrs: Vec<SocketAddr> = addrs.collect();
        let mut first_refusal = None;
        for a in &addrs {
            match self.check_ip(&host, a.ip()) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    first_refusal.get_or_insert(e);
                }
            }
        }
        first_refusal.map_or(Ok(()), Err)
    }

    /// An HTTP agent with `config` whose every connection is checked against this policy
    /// after name resolution (refused addresses are dropped; with none left the request
    /// fails with a [`REFUSED`] error before connecting). Redirects are not followed.
    pub fn agent(&self, config: ConfigBuilder<AgentScope>) -> ureq::Agent {
        let config = config
            .max_redirects(0)
            .max_redirects_will_error(false)
            .build();
        ureq::Agent::with_parts(
            config,
            DefaultConnector::new(),
            CheckedResolver {
                policy: self.clone(),
                inner: DefaultResolver::default(),
            },
        )
    }
}

/// The host part of a URL's authority as written (no userinfo, port or brackets).
fn raw_host(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split(']').next()?
    } else {
        host_port.rsplit_once(':').map_or(host_port, |(h, _)| h)
    };
    Some(host.to_string())
}

fn bad_entry(entry: &str) -> OutboundError {
    OutboundError(format!(
        "Invalid outbound allow-list entry {entry:?}: expected a host name, *.suffix, an IP \
         address, a CIDR block or *"
    ))
}

fn refusal(host: &str, addr: &str, why: &str) -> OutboundError {
    let shown = if host == addr {
        host.to_string()
    } else {
        format!("{host} ({addr})")
    };
    OutboundError(format!(
        "{REFUSED}: {shown} is {why}. Server-side requests may not reach loopback, \
         link-local or metadata addresses; allow it with --outbound-allow (LOOPML_OUTBOUND_ALLOW)."
    ))
}

/// Resolves as usual, then drops the addresses the policy refuses.
#[derive(Debug)]
struct CheckedResolver {
    policy: OutboundPolicy,
    inner: DefaultResolver,
}

impl Resolver for CheckedResolver {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        config: &Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let resolved = self.inner.resolve(uri, config, timeout)?;
        let host = uri.host().unwrap_or_default();
        // The operator's configured proxy is trusted wherever it listens.
        if let Some(proxy) = config.proxy()
            && proxy.host().eq_ignore_ascii_case(host)
            && uri.port_u16().is_none_or(|p| p == proxy.port())
        {
            return Ok(resolved);
        }
        let mut kept = self.empty();
        let mut refusal = None;
        for addr in resolved.iter() {
            match self.policy.check_ip(host, addr.ip()) {
                Ok(()) => kept.push(*addr),
                Err(e) => {
                    refusal.get_or_insert(e);
                }
            }
        }
        match refusal {
            Some(e) if kept.is_empty() => Err(ureq::Error::Io(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                e.0,
            ))),
            _ => Ok(kept),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(entries: &[&str]) -> OutboundPolicy {
        OutboundPolicy::parse(entries).unwrap()
    }

    #[test]
    fn refuses_loopback_link_local_and_metadata_in_every_spelling() {
        let p = OutboundPolicy::default();
        for url in [
            "http://127.0.0.1/x",
            "http://127.0.0.2:8080/",
            "http://[::1]/",
            "http://0x7f000001/",
            "http://2130706433/",
            "http://0177.0.0.1/",
            "http://127.1/",
            "http://0/",
            "http://0.0.0.0:5000/",
            "http://[::]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:7f00:1]/",
            "http://[64:ff9b::7f00:1]/",
            "http://169.254.169.254/latest/meta-data/",
            "http://[fd00:ec2::254]/",
            "http://100.100.100.200/",
            "http://[fe80::1]/",
            "http://localhost:5000/",
            "http://LOCALHOST./",
            "http://api.localhost/",
            "http://metadata.google.internal/computeMetadata/v1/",
            "http://user:pw@127.0.0.1:9/",
            "http://224.0.0.1/",
            "http://255.255.255.255/",
        ] {
            let err = p.check_url(url).unwrap_err().0;
            assert!(err.starts_with(REFUSED), "{url}: {err}");
            assert!(err.contains("--outbound-allow"), "{url}: {err}");
        }
    }

    #[test]
    fn accepts_public_and_private_hosts() {
        let p = OutboundPolicy::default();
        for url in [
            "https://hooks.example.com/a?b=c",
            "http://10.0.0.5:8080/hook",
            "http://192.168.1.20/",
            "http://172.16.3.4/",
            "http://[fd12::1]/",
            "http://receiver.default.svc.cluster.local/",
            "http://8.8.8.8/",
        ] {
            assert_eq!(p.check_url(url), Ok(()), "{url}");
        }
    }

    #[test]
    fn rejects_bad_schemes_and_missing_hosts() {
        let p = OutboundPolicy::default();
        assert!(p.check_url("ftp://x/").unwrap_err().0.contains("scheme"));
        assert!(p.check_url("file:///etc/passwd").is_err());
        assert!(p.check_url("gopher://x/").is_err());
        assert!(p.check_url("http://").is_err());
        assert!(p.check_url("nope").is_err());
    }

    #[test]
    fn allow_list_entries() {
        let p = policy(&["127.0.0.1, ::1", "*.localhost", "10.0.0.0/8"]);
        assert_eq!(p.check_url("http://127.0.0.1:9/x"), Ok(()));
        assert_eq!(p.check_url("http://0x7f000001:9/x"), Ok(()));
        assert_eq!(p.check_url("http://[::1]/"), Ok(()));
        assert_eq!(p.check_url("http://[::ffff:127.0.0.1]/"), Ok(()));
        assert_eq!(p.check_url("http://hooks.localhost/"), Ok(()));
        assert!(p.check_url("http://127.0.0.2/").is_err());
        assert!(p.check_url("http://localhost/").is_err());
        assert!(p.check_url("http://169.254.169.254/").is_err());
        let host = policy(&["localhost"]);
        assert_eq!(host.check_url("http://localhost:5000/"), Ok(()));
        assert_eq!(
            host.check_ip("localhost", "127.0.0.1".parse().unwrap()),
            Ok(())
        );
        assert!(
            host.check_ip("evil.example", "127.0.0.1".parse().unwrap())
                .is_err()
        );
        let all = OutboundPolicy::allow_all();
        assert_eq!(all.check_url("http://169.254.169.254/"), Ok(()));
        for bad in ["*.", "a b/c", "*.x*y", "ex ample!"] {
            assert!(OutboundPolicy::parse(&[bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn inet_aton_forms() {
        assert_eq!(inet_aton("0x7f000001"), Some(Ipv4Addr::new(127, 0, 0, 1)));
        assert_eq!(inet_aton("2130706433"), Some(Ipv4Addr::new(127, 0, 0, 1)));
        assert_eq!(inet_aton("0177.0.0.1"), Some(Ipv4Addr::new(127, 0, 0, 1)));
        assert_eq!(inet_aton("127.1"), Some(Ipv4Addr::new(127, 0, 0, 1)));
        assert_eq!(
            inet_aton("10.1.65535"),
            Some(Ipv4Addr::new(10, 1, 255, 255))
        );
        assert_eq!(inet_aton("example.com"), None);
        assert_eq!(inet_aton("256.1.1.1"), None);
        assert_eq!(inet_aton("1.2.3.4.5"), None);
        assert_eq!(inet_aton("4294967296"), None);
    }

    #[test]
    fn resolver_refuses_names_resolving_to_loopback_before_connecting() {
        let p = OutboundPolicy::default();
        let agent = p.agent(Config::builder());
        // `localhost` resolves to loopback here; the name check is bypassed by calling the
        // agent directly, as a stored URL whose name later re-resolves would.
        let err = agent
            .post("http://localhost:9/never")
            .send("x")
            .unwrap_err()
            .to_string();
        assert!(err.contains(REFUSED), "{err}");
        // Allowed explicitly, the same request reaches the network (and fails to connect).
        let allowed = policy(&["127.0.0.1", "::1"]).agent(Config::builder());
        let err = allowed
            .post("http://127.0.0.1:9/never")
            .send("x")
            .unwrap_err()
            .to_string();
        assert!(!err.contains(REFUSED), "{err}");
    }

    #[test]
    fn resolving_check_rejects_names_for_loopback() {
        let p = OutboundPolicy::default();
        // `localhost` is refused by name; `ip6-localhost` or the like by what it resolves to
        // where /etc/hosts has it. A name that does not resolve is accepted when stored.
        assert!(p.check_url_resolving("http://localhost/").is_err());
        assert_eq!(
            p.check_url_resolving("http://no-such-host.invalid/"),
            Ok(())
        );
    }
}
