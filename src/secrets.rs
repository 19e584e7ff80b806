//! Secrets this process has handed to servers (passwords, tokens, proxy
//! passwords), so that text a server echoes back (an error body quoting our
//! Authorization header) can be scrubbed before it reaches an error message
//! or a log line. Registry text passes through `error::printable`, which
//! calls `scrub`.

use std::sync::Mutex;

/// Shorter values are not treated as secrets: scrubbing "ab" would mangle
/// ordinary text, and a 3-character password is not protected by hiding.
const MIN_LEN: usize = 4;
/// The newest secrets kept; tokens are renewed, so the list would grow.
const MAX_KNOWN: usize = 256;

static KNOWN: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Remember `secret` for scrubbing.
pub fn remember(secret: &str) {
    if secret.len() < MIN_LEN {
        return;
    }
    let mut known = KNOWN.lock().unwrap_or_else(|p| p.into_inner());
    if known.iter().any(|k| k == secret) {
        return;
    }
    if known.len() == MAX_KNOWN {
        known.remove(0);
    }
    known.push(secret.to_string());
}

/// A username and password, also in the forms a Basic header carries.
pub fn remember_basic(username: &str, password: &str) {
    remember(password);
    let pair = format!("{username}:{password}");
    remember(&crate::registry::auth::base64(pair.as_bytes()));
    remember(&pair);
}

/// `text` with every remembered secret replaced by `***`.
pub fn scrub(text: &str) -> String {
    let known = KNOWN.lock().unwrap_or_else(|p| p.into_inner());
    // Longest first, so a secret inside another is not half replaced.
    let mut hits: Vec<&String> = known.iter().filter(|k| text.contains(k.as_str())).collect();
    if hits.is_empty() {
        return text.to_string();
    }
    hits.sort_by_key(|k| std::cmp::Reverse(k.len()));
    let mut out = text.to_string();
    for k in hits {
        out = out.replace(k.as_str(), "***");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoed_credentials_are_scrubbed_in_every_form() {
        remember_basic("bob", "hunter2pw-scrub");
        remember("tok.en-abcdef");
        let echoed = "nope Basic Ym9iOmh1bnRlcjJwdy1zY3J1Yg== bob:hunter2pw-scrub tok.en-abcdef";
        let s = scrub(echoed);
        assert!(!s.contains("hunter2pw"), "{s}");
        assert!(!s.contains("Ym9iOmh1bnRlcjJwdy1zY3J1Yg"), "{s}");
        assert!(!s.contains("tok.en-abcdef"), "{s}");
        remember("abc");
        assert_eq!(scrub("abc def"), "abc def", "short values are not secrets");
    }
}
