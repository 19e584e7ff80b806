//! Addresses a registry may not send us to: link-local and cloud metadata
//! endpoints. A hostile registry could otherwise aim a token realm, a
//! redirect or a foreign-layer URL at the instance-metadata service and have
//! us fetch credentials from inside the host's network.
//!
//! URLs are checked here before any request; names that only resolve to
//! such addresses are refused by the resolver every client uses
//! (`resolve.rs`, which states the rule for names).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Host names that resolve to metadata services on the big clouds.
const METADATA_NAMES: [&str; 3] = ["metadata.google.internal", "metadata.goog", "metadata"];

/// Why `url` must not be fetched, or None when it may be.
pub fn refused(url: &reqwest::Url) -> Option<String> {
    if !matches!(url.scheme(), "http" | "https") {
        return Some(format!("scheme {} is not http(s)", url.scheme()));
    }
    let host = url.host_str()?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if is_metadata_name(bare) {
        return Some(format!("{host} is a cloud metadata service"));
    }
    let ip: IpAddr = bare.parse().ok()?;
    forbidden_ip(ip).then(|| format!("{host} is a link-local or metadata address"))
}

/// One of the names the clouds give their metadata service.
pub fn is_metadata_name(host: &str) -> bool {
    let name = host.trim_end_matches('.').to_ascii_lowercase();
    METADATA_NAMES.contains(&name.as_str())
}

/// A link-local or metadata address, also inside an IPv6 one.
pub fn forbidden_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => forbidden_v4(v4) || forbidden_v6(v6),
            None => forbidden_v6(v6),
        },
    }
}

/// The IPv4 address an IPv6 one carries: mapped (::ffff:a.b.c.d),
/// IPv4-compatible (::a.b.c.d) or NAT64 (64:ff9b::a.b.c.d), each of which a
/// host may route to the IPv4 address.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = ip.segments();
    let tail = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    let compat = s[..6].iter().all(|x| *x == 0);
    let nat64 = s[0] == 0x64 && s[1] == 0xff9b && s[2..6].iter().all(|x| *x == 0);
    if s[0] == 0x2002 {
        // 6to4 (2002:AABB:CCDD::/48) carries the IPv4 address up front.
        let [a, b] = s[1].to_be_bytes();
        let [c, d] = s[2].to_be_bytes();
        return Some(Ipv4Addr::new(a, b, c, d));
    }
    (compat || nat64).then_some(tail)
}

fn forbidden_v4(ip: Ipv4Addr) -> bool {
    // 169.254/16 holds AWS, GCP, Azure and OpenStack metadata; Alibaba uses
    // 100.100.100.200.
    ip.is_link_local() || ip == Ipv4Addr::new(100, 100, 100, 200)
}

fn forbidden_v6(ip: Ipv6Addr) -> bool {
    let link_local = (ip.segments()[0] & 0xffc0) == 0xfe80;
    // AWS's IPv6 instance-metadata address.
    let aws = ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);
    link_local || aws
}

/// `url` without its query and fragment: signed URLs carry their secret
/// there, so only this form goes into logs and errors.
pub fn shown(url: &reqwest::Url) -> String {
    format!("{}{}", url.origin().ascii_serialization(), url.path())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> reqwest::Url {
        reqwest::Url::parse(s).unwrap()
    }

    #[test]
    fn metadata_and_link_local_are_refused() {
        for bad in [
            "http://169.254.169.254/latest/meta-data/",
            "http://169.254.1.1:8080/token",
            "http://[fe80::1]/x",
            "http://[fd00:ec2::254]/x",
            "http://[::ffff:169.254.169.254]/x",
            "http://[::169.254.169.254]/x",
            "http://[64:ff9b::a9fe:a9fe]/x",
            "http://[2002:a9fe:a9fe::1]/x",
            "http://100.100.100.200/x",
            "http://metadata.google.internal/computeMetadata/v1/",
            "http://METADATA.GOOGLE.INTERNAL./x",
            "file:///etc/passwd",
        ] {
            assert!(refused(&url(bad)).is_some(), "{bad}");
        }
        for ok in [
            "https://auth.docker.io/token",
            "http://127.0.0.1:5000/token",
            "http://127.0.0.2:1/x",
            "https://[::1]:5000/x",
            "https://10.0.0.5/token",
        ] {
            assert!(refused(&url(ok)).is_none(), "{ok}");
        }
    }

    #[test]
    fn shown_drops_the_signed_query() {
        let u = url("http://127.0.0.2:9/store/ab?X-Sig=ab%2Fcd&X-Exp=1");
        assert_eq!(shown(&u), "http://127.0.0.2:9/store/ab");
    }
}
