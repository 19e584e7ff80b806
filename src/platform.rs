//! Platforms (`os/arch[/variant]`) normalised the way containerd does, so
//! `aarch64`, `arm64` and `arm64/v8` all select the same index entry.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
}

impl Platform {
    pub fn parse(s: &str) -> Result<Platform> {
        let parts: Vec<&str> = s.split('/').collect();
        if parts.len() < 2 || parts.len() > 3 || parts.iter().any(|p| p.is_empty()) {
            return Err(Error::invalid(format!(
                "platform {s:?} must look like os/arch or os/arch/variant"
            )));
        }
        Ok(Platform {
            os: parts[0].to_ascii_lowercase(),
            architecture: parts[1].to_ascii_lowercase(),
            variant: parts.get(2).map(|v| v.to_ascii_lowercase()),
            os_version: None,
        }
        .normalized())
    }

    /// The platform this library was built for.
    pub fn host() -> Platform {
        Platform {
            os: std::env::consts::OS.to_string(),
            architecture: std::env::consts::ARCH.to_string(),
            variant: None,
            os_version: None,
        }
        .normalized()
    }

    pub fn normalized(&self) -> Platform {
        // Index entries are matched whatever their case, as containerd does.
        let architecture = self.architecture.to_ascii_lowercase();
        let lower_variant = self.variant.as_deref().map(str::to_ascii_lowercase);
        let (arch, variant) = match (architecture.as_str(), lower_variant.as_deref()) {
            ("x86_64" | "x86-64" | "amd64", v) => ("amd64", v.filter(|v| *v != "v1")),
            ("aarch64" | "arm64", Some("v8") | Some("8") | None) => ("arm64", None),
            ("aarch64" | "arm64", v) => ("arm64", v),
            ("armhf" | "arm", None) => ("arm", Some("v7")),
            ("armel", None) => ("arm", Some("v6")),
            ("arm", Some(v)) if !v.starts_with('v') => ("arm", Some(v)),
            ("i386" | "i686" | "x86" | "386", v) => ("386", v),
            (a, v) => (a, v),
        };
        let variant = variant.map(|v| match v {
            "5" | "6" | "7" | "8" => format!("v{v}"),
            other => other.to_string(),
        });
        Platform {
            os: self.os.to_ascii_lowercase(),
            architecture: arch.to_string(),
            variant,
            os_version: self.os_version.clone(),
        }
    }

    /// Whether an index entry for `candidate` can run where `self` is wanted.
    pub fn matches(&self, candidate: &Platform) -> bool {
        self.rank(candidate).is_some()
    }

    /// How well `candidate` fits where `self` is wanted: None when it cannot
    /// run, else lower is better. An arm/v7 host also runs v6 and v5 images,
    /// after any v7 one. Windows os.version is compared on its build number
    /// only; an entry that names no version is taken after exact builds.
    pub fn rank(&self, candidate: &Platform) -> Option<u32> {
        let want = self.normalized();
        let have = candidate.normalized();
        if want.os != have.os || want.architecture != have.architecture {
            return None;
        }
        let (w, h) = (want.variant.as_deref(), have.variant.as_deref());
        let mut rank = if w == h {
            0
        } else if want.architecture == "arm64" {
            arm64_fallback(w, h)?
        } else if want.architecture == "amd64" {
            amd64_fallback(w, h)?
        } else {
            arm_fallback(w, h)?
        };
        if want.os == "windows" {
            match (&want.os_version, &have.os_version) {
                (Some(w), Some(h)) if windows_build(w) != windows_build(h) => return None,
                (Some(_), None) => rank += 10,
                _ => {}
            }
        }
        Some(rank)
    }
}

/// 32-bit arm runs older variants: v7 takes v6 (rank 1), then v5 (rank 2).
fn arm_fallback(want: Option<&str>, have: Option<&str>) -> Option<u32> {
    let level = |v: Option<&str>| v?.strip_prefix('v')?.parse::<u32>().ok();
    let (w, h) = (level(want)?, level(have)?);
    (h < w && (5..=7).contains(&h) && w <= 8).then(|| w - h)
}

/// arm64 runs older variants as containerd's matcher says: v8.x takes
/// v8.0 to v8.x, v9.x also takes v8.0 to v8.(x+5); nearer first. No
/// variant means v8.0.
fn arm64_fallback(want: Option<&str>, have: Option<&str>) -> Option<u32> {
    let level = |v: Option<&str>| -> Option<(u32, u32)> {
        let Some(v) = v else { return Some((8, 0)) };
        let v = v.strip_prefix('v').unwrap_or(v);
        let (major, minor) = v.split_once('.').unwrap_or((v, "0"));
        Some((major.parse().ok()?, minor.parse().ok()?))
    };
    let (w, h) = (level(want)?, level(have)?);
    let fits = match (w.0, h.0) {
        (a, b) if a == b => h.1 <= w.1,
        (9, 8) => h.1 <= w.1 + 5,
        _ => false,
    };
    fits.then(|| 1 + (w.0 * 10 + w.1).saturating_sub(h.0 * 10 + h.1))
}

/// An x86-64-vN host runs images built for lower levels (no variant is
/// v1), as containerd matches them; nearer first.
fn amd64_fallback(want: Option<&str>, have: Option<&str>) -> Option<u32> {
    let level = |v: Option<&str>| v.map_or(Some(1), |v| v.strip_prefix('v')?.parse::<u32>().ok());
    let (w, h) = (level(want)?, level(have)?);
    (h < w && w <= 4).then(|| w - h)
}

fn windows_build(v: &str) -> Option<&str> {
    let mut it = v.split('.');
    let (major, minor, build) = (it.next()?, it.next()?, it.next()?);
    let _ = (major, minor);
    Some(build)
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        if let Some(v) = &self.os_version {
            write!(f, " ({v})")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Platform {
        Platform::parse(s).unwrap()
    }

    #[test]
    fn normalises_arm_and_x86() {
        assert_eq!(p("linux/aarch64/v8"), p("linux/arm64"));
        assert_eq!(p("linux/x86_64"), p("linux/amd64"));
        assert_eq!(p("linux/arm").variant.as_deref(), Some("v7"));
        assert!(p("linux/arm64/v8").matches(&p("linux/arm64")));
        assert_eq!(p("linux/arm").rank(&p("linux/arm/v7")), Some(0));
        assert_eq!(p("linux/arm").rank(&p("linux/arm/v6")), Some(1));
        assert_eq!(p("linux/arm/v6").rank(&p("linux/arm/v7")), None);
        assert_eq!(p("linux/arm64").rank(&p("linux/arm/v7")), None);
        assert!(Platform::parse("linux").is_err());
    }

    #[test]
    fn arm64_takes_older_variants_like_containerd() {
        assert!(p("linux/arm64/v9").matches(&p("linux/arm64")));
        assert!(p("linux/arm64/v8.2").matches(&p("linux/arm64/v8")));
        assert!(p("linux/arm64/v8.2").matches(&p("linux/arm64/v8.1")));
        assert!(!p("linux/arm64/v8.1").matches(&p("linux/arm64/v8.2")));
        assert!(!p("linux/arm64").matches(&p("linux/arm64/v9")));
        let nearer = p("linux/arm64/v9").rank(&p("linux/arm64/v8.4"));
        assert!(nearer < p("linux/arm64/v9").rank(&p("linux/arm64")));
    }

    #[test]
    fn amd64_levels_take_lower_levels() {
        assert_eq!(p("linux/amd64/v2").rank(&p("linux/amd64")), Some(1));
        assert_eq!(p("linux/amd64/v3").rank(&p("linux/amd64/v2")), Some(1));
        assert_eq!(p("linux/amd64").rank(&p("linux/amd64/v3")), None);
    }

    #[test]
    fn index_entries_match_whatever_their_case() {
        let entry = Platform {
            os: "Linux".into(),
            architecture: "AMD64".into(),
            variant: None,
            os_version: None,
        };
        assert!(p("linux/amd64").matches(&entry));
        let arm = Platform {
            os: "linux".into(),
            architecture: "ARM".into(),
            variant: Some("V7".into()),
            os_version: None,
        };
        assert_eq!(p("linux/arm/v7").rank(&arm), Some(0));
    }

    #[test]
    fn windows_matches_on_build_number() {
        let mut want = p("windows/amd64");
        want.os_version = Some("10.0.20348.1234".into());
        let mut a = p("windows/amd64");
        a.os_version = Some("10.0.17763.5000".into());
        let mut b = a.clone();
        b.os_version = Some("10.0.20348.2000".into());
        assert!(!want.matches(&a));
        assert!(want.matches(&b));
    }
}
