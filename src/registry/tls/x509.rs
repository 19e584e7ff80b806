//! The two facts of an X.509 certificate that the pinned-certificate check
//! needs and webpki keeps to itself: the validity period, and whether an
//! extended key usage extension leaves room for a TLS server. A few DER
//! reads over the certificate bytes, nothing more (RFC 5280, section 4.1).

use rustls::pki_types::UnixTime;
use std::time::Duration;

const SEQUENCE: u8 = 0x30;
const OID: u8 = 0x06;
const BOOLEAN: u8 = 0x01;
const OCTET_STRING: u8 = 0x04;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;
/// `[0] EXPLICIT Version` and `[3] EXPLICIT Extensions` in TBSCertificate.
const VERSION: u8 = 0xa0;
const EXTENSIONS: u8 = 0xa3;
/// id-ce-extKeyUsage, 2.5.29.37.
const EXT_KEY_USAGE: &[u8] = &[0x55, 0x1d, 0x25];
/// id-kp-serverAuth, 1.3.6.1.5.5.7.3.1.
const SERVER_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01];

pub struct Facts {
    pub not_before: UnixTime,
    pub not_after: UnixTime,
    /// No extended key usage, or one that lists serverAuth.
    pub server_auth: bool,
}

/// The facts of a DER certificate; None when it does not parse.
pub fn facts(der: &[u8]) -> Option<Facts> {
    let (cert, _) = take(der, SEQUENCE)?;
    let (mut tbs, _) = take(cert, SEQUENCE)?;
    if tbs.first() == Some(&VERSION) {
        tbs = tlv(tbs)?.2;
    }
    // serialNumber, signature, issuer.
    for _ in 0..3 {
        tbs = tlv(tbs)?.2;
    }
    let (validity, mut tbs) = take(tbs, SEQUENCE)?;
    let (not_before, rest) = time(validity)?;
    let (not_after, _) = time(rest)?;
    let mut server_auth = true;
    while let Some((tag, body, rest)) = tlv(tbs) {
        if tag == EXTENSIONS {
            server_auth = allows_server(body)?;
        }
        tbs = rest;
    }
    Some(Facts {
        not_before,
        not_after,
        server_auth,
    })
}

/// Whether the Extensions hold no extended key usage or one with serverAuth.
fn allows_server(extensions: &[u8]) -> Option<bool> {
    let (mut list, _) = take(extensions, SEQUENCE)?;
    while !list.is_empty() {
        let (ext, rest) = take(list, SEQUENCE)?;
        list = rest;
        let (oid, mut ext) = take(ext, OID)?;
        if oid != EXT_KEY_USAGE {
            continue;
        }
        if ext.first() == Some(&BOOLEAN) {
            ext = tlv(ext)?.2;
        }
        let (value, _) = take(ext, OCTET_STRING)?;
        let (mut purposes, _) = take(value, SEQUENCE)?;
        while !purposes.is_empty() {
            let (purpose, rest) = take(purposes, OID)?;
            if purpose == SERVER_AUTH {
                return Some(true);
            }
            purposes = rest;
        }
        return Some(false);
    }
    Some(true)
}

/// The body of a `tag` element and what follows it.
fn take(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (t, body, rest) = tlv(input)?;
    (t == tag).then_some((body, rest))
}

/// One DER element: tag, body, rest. Lengths up to four bytes are plenty
/// for a certificate read from a file capped at 1 MiB.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let (bytes, after) = rest.split_at(n);
        rest = after;
        bytes.iter().fold(0, |len, &b| len << 8 | usize::from(b))
    };
    if rest.len() < len {
        return None;
    }
    let (body, rest) = rest.split_at(len);
    Some((tag, body, rest))
}

/// A UTCTime or GeneralizedTime in the `...Z` form certificates must use.
fn time(input: &[u8]) -> Option<(UnixTime, &[u8])> {
    let (tag, body, rest) = tlv(input)?;
    let text = std::str::from_utf8(body).ok()?.strip_suffix('Z')?;
    let num = |from: usize, to: usize| -> Option<u64> {
        let digits = text.get(from..to)?;
        digits
            .bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| digits.parse().ok())?
    };
    let (year, at) = match tag {
        // RFC 5280: two-digit years 50-99 are 19xx, 00-49 are 20xx.
        UTC_TIME => (
            num(0, 2).map(|y| if y >= 50 { 1900 + y } else { 2000 + y })?,
            2,
        ),
        GENERALIZED_TIME => (num(0, 4)?, 4),
        _ => return None,
    };
    if text.len() != at + 10 || year < 1970 {
        return None;
    }
    let (month, day) = (num(at, at + 2)?, num(at + 2, at + 4)?);
    let (h, m, s) = (
        num(at + 4, at + 6)?,
        num(at + 6, at + 8)?,
        num(at + 8, at + 10)?,
    );
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || h > 23 || m > 59 || s > 59 {
        return None;
    }
    let secs = days_since_epoch(year, month, day) * 86_400 + h * 3600 + m * 60 + s;
    Some((UnixTime::since_unix_epoch(Duration::from_secs(secs)), rest))
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar
/// (year 1970 or later), counting years from March so the leap day is last.
fn days_since_epoch(year: u64, month: u64, day: u64) -> u64 {
    let year = if month <= 2 { year - 1 } else { year };
    let (era, year_of_era) = (year / 400, year % 400);
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    // 719_468 days lie between 0000-03-01 and 1970-01-01.
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(tag: u8, text: &str) -> Option<u64> {
        let mut der = vec![tag, text.len() as u8];
        der.extend(text.as_bytes());
        time(&der).map(|(t, _)| t.as_secs())
    }

    #[test]
    fn certificate_times_become_unix_seconds() {
        assert_eq!(secs(UTC_TIME, "700101000000Z"), Some(0));
        assert_eq!(secs(GENERALIZED_TIME, "20380119031408Z"), Some(1 << 31));
        assert_eq!(secs(UTC_TIME, "000229120000Z"), Some(951_825_600));
        assert_eq!(secs(UTC_TIME, "491231235959Z"), Some(2_524_607_999));
        assert_eq!(secs(UTC_TIME, "500101000000Z"), None, "1950 is before 1970");
        assert_eq!(secs(UTC_TIME, "701301000000Z"), None, "month 13");
        assert_eq!(secs(UTC_TIME, "700101000000+0100"), None, "not in Z form");
        assert_eq!(secs(OCTET_STRING, "700101000000Z"), None);
    }

    #[test]
    fn long_lengths_and_truncated_elements() {
        let mut der = vec![OCTET_STRING, 0x82, 0x01, 0x00];
        der.extend([7u8; 256]);
        der.push(0xff);
        let (tag, body, rest) = tlv(&der).unwrap();
        assert_eq!((tag, body.len(), rest), (OCTET_STRING, 256, &[0xff][..]));
        assert!(tlv(&der[..100]).is_none());
        assert!(
            tlv(&[SEQUENCE, 0x80]).is_none(),
            "indefinite length is not DER"
        );
    }
}
