//! Address ranges in CIDR notation, for the URL preview deny-list.

use std::net::IpAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpRange {
    network: IpAddr,
    prefix: u8,
}

impl IpRange {
    /// `10.0.0.0/8`, `fc00::/7`, or a single address.
    pub fn parse(s: &str) -> Option<Self> {
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix.parse::<u8>().ok()?)),
            None => (s, None),
        };
        let network: IpAddr = addr.trim().parse().ok()?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        (prefix <= max).then_some(Self { network, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        // An IPv4-mapped IPv6 address is the IPv4 address it maps.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                same_prefix(&net.octets(), &ip.octets(), self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                same_prefix(&net.octets(), &ip.octets(), self.prefix)
            }
            _ => false,
        }
    }
}

fn same_prefix(a: &[u8], b: &[u8], bits: u8) -> bool {
    let full = usize::from(bits / 8);
    if a[..full] != b[..full] {
        return false;
    }
    let rest = bits % 8;
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    (a[full] & mask) == (b[full] & mask)
}

/// Whether `ip` may be fetched: not denied, or explicitly allowed.
pub fn allowed(ip: IpAddr, deny: &[IpRange], allow: &[IpRange]) -> bool {
    allow.iter().any(|r| r.contains(ip)) || !deny.iter().any(|r| r.contains(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ranges_match_their_addresses_only() {
        let r = IpRange::parse("10.0.0.0/8").unwrap();
        assert!(r.contains(ip("10.255.1.2")));
        assert!(!r.contains(ip("11.0.0.1")));
        let r = IpRange::parse("172.16.0.0/12").unwrap();
        assert!(r.contains(ip("172.31.255.255")));
        assert!(!r.contains(ip("172.32.0.0")));
        let r = IpRange::parse("fc00::/7").unwrap();
        assert!(r.contains(ip("fd12::1")));
        assert!(!r.contains(ip("fe00::1")));
        let r = IpRange::parse("127.0.0.0/8").unwrap();
        assert!(r.contains(ip("::ffff:127.0.0.1")), "mapped IPv4 is IPv4");
        assert!(IpRange::parse("1.2.3.4").unwrap().contains(ip("1.2.3.4")));
    }

    #[test]
    fn bad_ranges_are_refused() {
        for bad in ["10.0.0.0/33", "::/129", "nonsense", "10.0.0/8", "1.2.3.4/x"] {
            assert!(IpRange::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn the_allow_list_overrides_the_deny_list() {
        let deny = [IpRange::parse("127.0.0.0/8").unwrap()];
        let allow = [IpRange::parse("127.0.0.1").unwrap()];
        assert!(!allowed(ip("127.0.0.2"), &deny, &allow));
        assert!(allowed(ip("127.0.0.1"), &deny, &allow));
        assert!(allowed(ip("93.184.216.34"), &deny, &[]));
    }
}
