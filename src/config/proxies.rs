//! Which peers may tell us the client's address: `ORDERS_TRUSTED_PROXIES`, plus the Functions
//! host's loopback forwarding when the host runs this process.
//!
//! `X-Forwarded-For` is only as trustworthy as whoever appended its last entry. Reached
//! directly, a client writes the header itself, so the socket address is the only address that
//! counts unless the socket peer is a proxy listed here.

use std::net::IpAddr;

use ipnet::IpNet;

use super::ConfigError;

pub const SETTING: &str = "ORDERS_TRUSTED_PROXIES";

/// Addresses and networks of proxies whose `X-Forwarded-For` entries are believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    networks: Vec<IpNet>,
    /// Under the Functions host every request arrives from the host on 127.0.0.1 (or ::1), so
    /// loopback peers are the host forwarding a client's request.
    loopback: bool,
}

impl TrustedProxies {
    /// No proxy is trusted: the socket address is the client.
    pub fn none() -> Self {
        Self::default()
    }

    /// Reads `ORDERS_TRUSTED_PROXIES` (addresses or CIDR networks, comma-separated);
    /// `under_functions_host` adds loopback.
    pub(super) fn from_lookup(
        get: &impl Fn(&str) -> Option<String>,
        under_functions_host: bool,
    ) -> Result<Self, ConfigError> {
        let networks = match get(SETTING) {
            Some(list) => {
                Self::parse(&list).map_err(|problem| ConfigError::new(SETTING, problem))?
            }
            None => Vec::new(),
        };
        Ok(Self {
            networks,
            loopback: under_functions_host,
        })
    }

    fn parse(list: &str) -> Result<Vec<IpNet>, String> {
        list.split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(|entry| {
                entry
                    .parse::<IpNet>()
                    .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                    .map(|net| match net {
                        // `::ffff:10.0.0.0/104` is the IPv4 network the mapped form spells.
                        IpNet::V6(v6) if v6.addr().to_ipv4_mapped().is_some() => {
                            let prefix = v6.prefix_len().saturating_sub(96);
                            v6.addr()
                                .to_ipv4_mapped()
                                .and_then(|v4| ipnet::Ipv4Net::new(v4, prefix).ok())
                                .map_or(net, IpNet::V4)
                        }
                        other => other.trunc(),
                    })
                    .map_err(|_| format!("'{entry}' is not an IP address or CIDR network"))
            })
            .collect()
    }

    /// Trusts these networks (for tests and embedding), keeping the loopback rule as it is.
    pub fn with_networks(mut self, list: &str) -> Result<Self, String> {
        self.networks = Self::parse(list)?;
        Ok(self)
    }

    /// Trusts loopback peers, as under the Functions host.
    pub fn with_loopback(mut self) -> Self {
        self.loopback = true;
        self
    }

    pub fn is_empty(&self) -> bool {
        self.networks.is_empty() && !self.loopback
    }

    /// Whether `address` (already in canonical form, see [`canonical`]) is a trusted proxy.
    pub fn trusts(&self, address: IpAddr) -> bool {
        (self.loopback && address.is_loopback())
            || self.networks.iter().any(|net| net.contains(&address))
    }
}

/// `::ffff:a.b.c.d` is `a.b.c.d`: one client, one form, whichever socket family it came in on.
pub fn canonical(address: IpAddr) -> IpAddr {
    address.to_canonical()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(value: &str) -> impl Fn(&str) -> Option<String> {
        let value = value.to_owned();
        move |name| (name == SETTING).then(|| value.clone())
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn addresses_and_networks_are_read() {
        let proxies =
            TrustedProxies::from_lookup(&lookup("10.0.0.0/8, 192.0.2.7 ,2001:db8::/32"), false)
                .unwrap();
        assert!(proxies.trusts(ip("10.1.2.3")));
        assert!(proxies.trusts(ip("192.0.2.7")));
        assert!(!proxies.trusts(ip("192.0.2.8")));
        assert!(proxies.trusts(ip("2001:db8::1")));
        assert!(
            !proxies.trusts(ip("127.0.0.1")),
            "loopback only under the host"
        );
    }

    #[test]
    fn mapped_networks_mean_their_ipv4_network() {
        let proxies = TrustedProxies::from_lookup(&lookup("::ffff:10.0.0.0/104"), false).unwrap();
        assert!(proxies.trusts(ip("10.200.0.1")));
        assert_eq!(canonical(ip("::ffff:10.200.0.1")), ip("10.200.0.1"));
    }

    #[test]
    fn the_functions_host_is_trusted_on_loopback() {
        let proxies = TrustedProxies::from_lookup(&|_: &str| None, true).unwrap();
        assert!(proxies.trusts(ip("127.0.0.1")));
        assert!(proxies.trusts(ip("::1")));
        assert!(!proxies.trusts(ip("10.0.0.1")));
        assert!(TrustedProxies::none().is_empty());
    }

    #[test]
    fn a_bad_entry_names_itself() {
        let error =
            TrustedProxies::from_lookup(&lookup("10.0.0.0/8, proxy.local"), false).unwrap_err();
        assert_eq!(error.setting, SETTING);
        assert!(error.problem.contains("proxy.local"), "{}", error.problem);
        assert!(TrustedProxies::from_lookup(&lookup("10.0.0.0/33"), false).is_err());
    }
}
