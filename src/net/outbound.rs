//! The one outbound HTTP policy for every URL a user's object names: an IoTConnector's
//! management and ExoSense URLs (and the upload URLs the platform hands out for them), a
//! SoftwarePackage's URL sources, and any URL a later field adds. docs/security.md describes
//! it for users.
//!
//! - **Addresses.** A destination must be a public unicast address: loopback, link-local (cloud
//!   metadata at 169.254.169.254), private, carrier-grade NAT, multicast, documentation and
//!   reserved addresses are refused ([`refusal`]). The check runs at every DNS resolution the
//!   HTTP client makes ([`OutboundPolicy::client_builder`] installs a checking resolver), so a
//!   host that passed once cannot rebind to an internal address for the next connection; an
//!   address written into the URL itself is checked by [`OutboundPolicy::check_url`] (the
//!   client resolves nothing for it).
//! - **What passes anyway** is what only a cluster admin sets: `--allow-private-sources` lifts
//!   the address check for every user URL (local tests, air-gapped mirrors), and each host of
//!   the platform-host allow-list (`--platform-host`) passes whatever it resolves to. Addresses
//!   from the operator's own configuration (the leader's push URL a follower forwards to) do
//!   not go through this policy.
//! - **Redirects** are not followed by clients from [`OutboundPolicy::client_builder`]: a 3xx
//!   is an error naming the status, never the `Location`. (A package download follows up to
//!   five redirects itself, checking each hop with [`OutboundPolicy::check_url`] and the same
//!   resolver.)
//! - **Proxies** from the environment are not used: the address check must see the real
//!   destination.
//! - **Timeouts**: every client connects within [`CONNECT_TIMEOUT`]; callers set the request
//!   timeout of each call.
//! - **Bodies** are read with [`read_capped`], which stops at a cap with an error instead of
//!   holding whatever the other side sends.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use hyper::body::Bytes;

/// The flag that lifts the address check for every user URL.
pub const ALLOW_PRIVATE_FLAG: &str = "--allow-private-sources";
/// The flag that names a platform host a cluster admin trusts (repeatable).
pub const PLATFORM_HOST_FLAG: &str = "--platform-host";
/// How long a client may take to connect.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the policy stops a request before it is sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutboundError {
    /// The destination is refused as written: a scheme other than http(s), no host, or a
    /// non-public address. Trying again changes nothing.
    #[error("{0}")]
    Refused(String),
    /// The host name does not resolve right now; it may later.
    #[error("{0}")]
    Unresolvable(String),
}

/// Why an answer body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The answer is larger than the cap; reading stopped there.
    #[error("the answer is larger than {cap} bytes")]
    TooLarge {
        /// The cap, bytes.
        cap: u64,
    },
    /// The connection broke off while the body was read.
    #[error("the answer broke off")]
    Broken(#[source] reqwest::Error),
}

/// The outbound policy of one operator process: whether private addresses are allowed and
/// which hosts an admin trusts. Cheap to clone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboundPolicy {
    allow_private: bool,
    trusted_hosts: Arc<BTreeSet<String>>,
}

/// A host name as the policy compares it: lowercase, without a trailing dot or IPv6
/// brackets (the same rule as `api::opt_in::normalize_host`, which this module may not use).
pub fn normalize_host(host: &str) -> String {
    host.trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

impl OutboundPolicy {
    /// A policy that refuses non-public addresses unless `allow_private`, and lets the
    /// `trusted_hosts` (host names or addresses, no scheme or port) through whatever they
    /// resolve to. An entry that is not a bare host is an error naming it.
    pub fn new<S: AsRef<str>>(
        allow_private: bool,
        trusted_hosts: impl IntoIterator<Item = S>,
    ) -> Result<Self, String> {
        let mut hosts = BTreeSet::new();
        for entry in trusted_hosts {
            let host = normalize_host(entry.as_ref());
            if host.is_empty() {
                continue;
            }
            let bare = host.parse::<IpAddr>().is_ok()
                || host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
            if !bare {
                return Err(format!(
                    "{PLATFORM_HOST_FLAG} {:?} is not a host name: give the host alone (e.g. bizapi.hosted.exosite.io), without scheme, port or path",
                    entry.as_ref()
                ));
            }
            hosts.insert(host);
        }
        Ok(OutboundPolicy {
            allow_private,
            trusted_hosts: Arc::new(hosts),
        })
    }

    /// Whether `--allow-private-sources` lifts the address check.
    pub fn allows_private(&self) -> bool {
        self.allow_private
    }

    /// Whether `host` is on the platform-host allow-list.
    pub fn is_trusted_host(&self, host: &str) -> bool {
        self.trusted_hosts.contains(&normalize_host(host))
    }

    /// The platform-host allow-list, sorted.
    pub fn trusted_hosts(&self) -> impl Iterator<Item = &str> {
        self.trusted_hosts.iter().map(String::as_str)
    }

    /// Whether a connection to `ip`, reached through `host`, is allowed.
    pub fn check_address(&self, host: &str, ip: IpAddr) -> Result<(), OutboundError> {
        if self.allow_private || self.is_trusted_host(host) {
            return Ok(());
        }
        let Some(why) = refusal(ip) else {
            return Ok(());
        };
        let bare = normalize_host(host);
        let what = if bare.parse::<IpAddr>().is_ok() {
            format!("{ip} is {why}")
        } else {
            format!("{bare} resolves to {ip}, {why}")
        };
        Err(OutboundError::Refused(format!(
            "{what}; the operator refuses such destinations unless it runs with {ALLOW_PRIVATE_FLAG} or names the host with {PLATFORM_HOST_FLAG}"
        )))
    }

    /// Checks `url` before a request: http or https, a host, and an address written into the
    /// URL checked at once (a host name is checked when the client resolves it).
    pub fn check_url(&self, url: &url::Url) -> Result<(), OutboundError> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(OutboundError::Refused(format!(
                "the scheme {:?} is not supported: use https://",
                url.scheme()
            )));
        }
        match url.host() {
            None => Err(OutboundError::Refused("the URL has no host".to_string())),
            Some(url::Host::Ipv4(ip)) => self.check_address(&ip.to_string(), IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => self.check_address(&ip.to_string(), IpAddr::V6(ip)),
            Some(url::Host::Domain(_)) => Ok(()),
        }
    }

    /// Resolves `host` and checks every address it resolves to; the addresses to connect to
    /// (with `port`).
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, OutboundError> {
        let bare = normalize_host(host);
        let addrs: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => tokio::net::lookup_host((bare.as_str(), port))
                .await
                .map_err(|e| OutboundError::Unresolvable(format!("cannot resolve {bare}: {e}")))?
                .collect(),
        };
        if addrs.is_empty() {
            return Err(OutboundError::Unresolvable(format!(
                "{bare} resolves to no address"
            )));
        }
        for addr in &addrs {
            self.check_address(&bare, addr.ip())?;
        }
        Ok(addrs)
    }

    /// Resolves and checks the host of `url` (after [`OutboundPolicy::check_url`]), so a
    /// refused destination is reported before anything is sent.
    pub async fn check_destination(&self, url: &url::Url) -> Result<(), OutboundError> {
        self.check_url(url)?;
        let host = url.host_str().unwrap_or_default();
        let port = url.port_or_known_default().unwrap_or(443);
        self.resolve(host, port).await.map(|_| ())
    }

    /// A client builder under this policy: every name it resolves is checked, no redirect is
    /// followed, no proxy is used, connections time out after [`CONNECT_TIMEOUT`]. Callers add
    /// TLS settings and a request timeout.
    pub fn client_builder(&self) -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(CONNECT_TIMEOUT)
            .dns_resolver(Arc::new(CheckedResolver(self.clone())))
    }
}

/// The resolver of every client under the policy: the system resolver, then the address
/// check on each answer.
#[derive(Debug)]
struct CheckedResolver(OutboundPolicy);

impl reqwest::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.0.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs = policy
                .resolve(&host, 0)
                .await
                .map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { Box::new(e) })?;
            let addrs: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

/// Reads `response`'s body, at most `cap` bytes: a longer body (announced or sent) stops the
/// read with [`BodyError::TooLarge`] without holding more than `cap` bytes.
pub async fn read_capped(response: reqwest::Response, cap: u64) -> Result<Bytes, BodyError> {
    if response.content_length().is_some_and(|n| n > cap) {
        return Err(BodyError::TooLarge { cap });
    }
    let hint = response.content_length().unwrap_or(0).min(cap);
    let mut body = Vec::with_capacity(usize::try_from(hint).unwrap_or(0));
    let mut chunks = response.bytes_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(BodyError::Broken)?;
        if (body.len() + chunk.len()) as u64 > cap {
            return Err(BodyError::TooLarge { cap });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(body))
}

/// Why an address is refused, or `None` when it is a public unicast address.
pub fn refusal(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_refusal(v4),
        IpAddr::V6(v6) => v6_refusal(v6),
    }
}

fn v4_refusal(ip: Ipv4Addr) -> Option<&'static str> {
    let o = ip.octets();
    if ip.is_loopback() {
        Some("a loopback address")
    } else if ip.is_link_local() {
        Some("a link-local address (cloud metadata services live there)")
    } else if ip.is_private() {
        Some("a private address")
    } else if ip.is_unspecified() || o[0] == 0 {
        Some("an unspecified address")
    } else if o[0] == 100 && (o[1] & 0xc0) == 64 {
        Some("a carrier-grade NAT address")
    } else if ip.is_multicast() || ip.is_broadcast() || o[0] >= 240 {
        Some("a multicast, broadcast or reserved address")
    } else if (o[0] == 192 && o[1] == 0 && o[2] == 0) || (o[0] == 198 && (o[1] & 0xfe) == 18) {
        Some("a special-purpose address")
    } else if matches!(
        (o[0], o[1], o[2]),
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113)
    ) {
        Some("a documentation address")
    } else {
        None
    }
}

fn v6_refusal(ip: Ipv6Addr) -> Option<&'static str> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return v4_refusal(v4);
    }
    let s = ip.segments();
    if ip.is_loopback() {
        Some("a loopback address")
    } else if ip.is_unspecified() {
        Some("an unspecified address")
    } else if (s[0] & 0xffc0) == 0xfe80 || (s[0] & 0xffc0) == 0xfec0 {
        Some("a link-local address")
    } else if (s[0] & 0xfe00) == 0xfc00 {
        Some("a unique local (private) address")
    } else if ip.is_multicast() {
        Some("a multicast address")
    } else if s[0] == 0x64 && s[1] == 0xff9b {
        // NAT64: judge the embedded IPv4 address.
        let v4 = Ipv4Addr::new(
            (s[6] >> 8) as u8,
            (s[6] & 0xff) as u8,
            (s[7] >> 8) as u8,
            (s[7] & 0xff) as u8,
        );
        v4_refusal(v4)
    } else if s[0] == 0x2001 && s[1] == 0x0db8 {
        Some("a documentation address")
    } else if s[0..6] == [0, 0, 0, 0, 0, 0] {
        Some("an IPv4-compatible (deprecated) address")
    } else {
        None
    }
}

#[cfg(test)]
mod tests;
