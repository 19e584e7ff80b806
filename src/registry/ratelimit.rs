//! Rate limits: Retry-After in both of its forms, and one gate per host so
//! that a 429 pauses every request to that host together instead of each
//! transfer hammering it on its own schedule.

use reqwest::header::{HeaderMap, RETRY_AFTER};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// First wait when the server names none; doubles per strike.
const BASE_WAIT: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How long a Retry-After asks us to wait: delta-seconds or an HTTP-date.
/// None when absent or unreadable (the caller then backs off on its own).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = http_date(v)?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
    // A date in the past means "now"; the clock skew is not worth an error.
    Some(Duration::from_secs(at.saturating_sub(now)))
}

/// Seconds since the epoch of an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37
/// GMT`), the only HTTP-date form servers may send today.
fn http_date(s: &str) -> Option<u64> {
    let rest = s.split_once(", ")?.1;
    let f: Vec<&str> = rest.split_ascii_whitespace().collect();
    if f.len() != 5 || f[4] != "GMT" {
        return None;
    }
    let day: u64 = f[0].parse().ok()?;
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.iter().position(|m| *m == f[1])? as u64 + 1;
    let year: u64 = f[2].parse().ok()?;
    let t: Vec<u64> = f[3]
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    if t.len() != 3 || t[0] > 23 || t[1] > 59 || t[2] > 60 || !(1..=31).contains(&day) {
        return None;
    }
    let days = days_since_epoch(year, month, day)?;
    Some(days * 86_400 + t[0] * 3600 + t[1] * 60 + t[2])
}

/// Days from 1970-01-01 to a civil date (proleptic Gregorian).
fn days_since_epoch(year: u64, month: u64, day: u64) -> Option<u64> {
    if year < 1970 {
        return None;
    }
    let leap = |y: u64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let before_year: u64 = (1970..year).map(|y| if leap(y) { 366 } else { 365 }).sum();
    let month_days = [
        31,
        if leap(year) { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    let before_month: u64 = month_days[..(month - 1) as usize].iter().sum();
    Some(before_year + before_month + day - 1)
}

/// One host's shared pause. Every request to the host waits here first.
#[derive(Debug, Default)]
pub struct Gate {
    state: Mutex<GateState>,
}

#[derive(Debug, Default)]
struct GateState {
    until: Option<Instant>,
    /// Recent 429s; grows the backoff and shrinks again after successes.
    strikes: u32,
}

impl Gate {
    fn state(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wait while the host has asked us to pause (cancel-safe).
    pub async fn wait(&self) {
        loop {
            let until = self.state().until;
            match until {
                Some(t) if t > Instant::now() => tokio::time::sleep_until(t.into()).await,
                _ => return,
            }
        }
    }

    /// Pause every request to the host for `wait`, or for our own growing
    /// backoff when the server named no wait. Returns the pause applied.
    pub fn pause(&self, wait: Option<Duration>) -> Duration {
        let mut s = self.state();
        s.strikes = s.strikes.saturating_add(1);
        let wait = wait.unwrap_or_else(|| backoff(s.strikes));
        let until = Instant::now() + wait;
        s.until = Some(s.until.map_or(until, |u| u.max(until)));
        wait
    }

    /// A request got through: the backoff decays.
    pub fn passed(&self) {
        let mut s = self.state();
        s.strikes = s.strikes.saturating_sub(1);
    }
}

/// 1, 2, 4 ... 30 s with +-25% jitter, so clients that were stopped
/// together do not come back together.
fn backoff(strikes: u32) -> Duration {
    let exp = BASE_WAIT.saturating_mul(1u32 << strikes.clamp(1, 6).saturating_sub(1));
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let jitter = 0.75 + (nanos % 1000) as f64 / 2000.0;
    exp.min(MAX_BACKOFF).mul_f64(jitter)
}

/// The gate for `host` (`host:port`), shared by every pull in the process:
/// a registry limits the client, not one pull.
pub fn gate(host: &str) -> Arc<Gate> {
    static GATES: Mutex<Option<HashMap<String, Arc<Gate>>>> = Mutex::new(None);
    let mut all = GATES.lock().unwrap_or_else(|p| p.into_inner());
    all.get_or_insert_with(HashMap::new)
        .entry(host.to_ascii_lowercase())
        .or_default()
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn http_dates_parse() {
        assert_eq!(
            http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(
            http_date("Tue, 29 Feb 2028 12:00:00 GMT"),
            Some(1_835_438_400)
        );
        for bad in [
            "soon",
            "Sun, 06 Nov 1994 08:49:37 PST",
            "06 Nov 1994",
            "Sun, 32 Nov 1994",
        ] {
            assert_eq!(http_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn s14_retry_after_seconds_date_and_junk() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("2"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), None);
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT"),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
    }

    #[test]
    fn backoff_grows_and_decays() {
        let g = Gate::default();
        let a = g.pause(None);
        let b = g.pause(None);
        let c = g.pause(None);
        assert!(
            a >= Duration::from_millis(750) && b > a && c > b,
            "{a:?} {b:?} {c:?}"
        );
        g.passed();
        g.passed();
        g.passed();
        assert_eq!(g.state().strikes, 0);
        assert_eq!(
            g.pause(Some(Duration::from_secs(7))),
            Duration::from_secs(7)
        );
    }
}
