//! `testkit`: the test kit for shell scripts (demo, CI, benchmarks).
//!
//! Arguments are parsed by hand to keep the build small.

use std::process::ExitCode;
use std::time::Duration;

use vicpull_testkit::{bench, push_image, Format, ImageSpec, Layer, Registry, RegistryOptions};

const USAGE: &str = "usage:
  testkit registry --dir DIR [--port P] [--access-log]
      run a registry with its files in DIR; print 127.0.0.1:PORT once it answers;
      stay in the foreground until SIGTERM, SIGINT or SIGHUP, which stop the registry too;
      --access-log writes one line per request to DIR/registry.log
  testkit seed --registry ADDR --repo REPO --tag TAG --from PATH [--from PATH...]
               [--layer-bytes N] [--format docker|oci]
      push an image with one gzip layer per --from path (real files, at most N bytes of
      content each, default 8M); print the manifest digest
  testkit bench-image --registry ADDR --repo REPO --tag TAG --seed S --layers N
                      --layer-bytes B [--format docker|oci] [--base-seed S0 --base-layers K]
      push an image of N seeded layers of B content bytes, gzip ratio about 2.6;
      with a base, the first K layers come from seed S0 (shared by images on that base);
      print the manifest digest
sizes take a K, M or G suffix (powers of 1024)";

/// Flags that take no value; they parse as "true".
const SWITCHES: [&str; 1] = ["access-log"];

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, rest)) = argv.split_first() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let result = Flags::parse(rest).and_then(|flags| match cmd.as_str() {
        "registry" => registry(&flags),
        "seed" => seed(&flags),
        "bench-image" => bench_image(&flags),
        "-h" | "--help" | "help" => {
            println!("{USAGE}");
            Ok(())
        }
        other => Err(format!("unknown command {other:?}")),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("testkit: {msg}\n\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn registry(flags: &Flags) -> Result<(), String> {
    flags.only(&["dir", "port", "access-log"])?;
    let mut opts = RegistryOptions::new()
        .dir(flags.required("dir")?)
        .access_log(flags.one("access-log")?.is_some());
    if let Some(p) = flags.one("port")? {
        opts = opts.port(p.parse().map_err(|_| format!("bad --port {p:?}"))?);
    }

    // Block the stop signals before any thread exists, so every thread inherits the mask and
    // the signals wait for sigtimedwait below. The registry child does not inherit the mask:
    // std clears it between fork and exec.
    let signals = stop_signals();
    // SAFETY: `signals` is an initialized sigset_t; a null old-mask pointer is allowed.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &signals, std::ptr::null_mut()) };

    let mut reg = Registry::start_with(opts);
    println!("{}", reg.addr());
    loop {
        if let Some(sig) = wait_signal(&signals, Duration::from_millis(250)) {
            eprintln!("testkit: signal {sig}, stopping the registry");
            drop(reg);
            return Ok(());
        }
        if let Some(status) = reg.exited() {
            eprintln!(
                "testkit: registry exited with {status}; log:\n{}",
                reg.log()
            );
            std::process::exit(1);
        }
    }
}

fn seed(flags: &Flags) -> Result<(), String> {
    flags.only(&["registry", "repo", "tag", "from", "layer-bytes", "format"])?;
    let max = match flags.one("layer-bytes")? {
        Some(n) => size(n)?,
        None => 8 << 20,
    };
    let froms = flags.all("from");
    if froms.is_empty() {
        return Err("seed needs at least one --from PATH".into());
    }
    let layers = froms.iter().map(|p| Layer::tar_of_dir(p, max)).collect();
    let spec = ImageSpec::new(layers).format(format(flags)?);
    let pushed = push_image(
        flags.required("registry")?,
        flags.required("repo")?,
        flags.required("tag")?,
        &spec,
    );
    println!("{}", pushed.manifest_digest);
    Ok(())
}

fn bench_image(flags: &Flags) -> Result<(), String> {
    flags.only(&[
        "registry",
        "repo",
        "tag",
        "seed",
        "layers",
        "layer-bytes",
        "format",
        "base-seed",
        "base-layers",
    ])?;
    let seed = number(flags.required("seed")?, "seed")?;
    let layers = number(flags.required("layers")?, "layers")?;
    let bytes = size(flags.required("layer-bytes")?)?;
    let spec = match (flags.one("base-seed")?, flags.one("base-layers")?) {
        (None, None) => bench::bench_image(seed, layers, bytes, format(flags)?),
        (Some(s), Some(k)) => {
            let base = (number(s, "base-seed")?, number(k, "base-layers")?);
            bench::bench_image_on_base(base, seed, layers, bytes, format(flags)?)
        }
        _ => return Err("--base-seed and --base-layers go together".into()),
    };
    let pushed = push_image(
        flags.required("registry")?,
        flags.required("repo")?,
        flags.required("tag")?,
        &spec,
    );
    println!("{}", pushed.manifest_digest);
    Ok(())
}

fn format(flags: &Flags) -> Result<Format, String> {
    match flags.one("format")? {
        None | Some("docker") => Ok(Format::Docker),
        Some("oci") => Ok(Format::Oci),
        Some(other) => Err(format!("bad --format {other:?} (docker or oci)")),
    }
}

fn number<T: std::str::FromStr>(text: &str, flag: &str) -> Result<T, String> {
    text.parse().map_err(|_| format!("bad --{flag} {text:?}"))
}

/// "123", "64K", "8M", "1G" (powers of 1024).
fn size(text: &str) -> Result<u64, String> {
    let (digits, unit) = match text.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&text[..i], c.to_ascii_uppercase()),
        _ => (text, ' '),
    };
    let shift = match unit {
        ' ' => 0,
        'K' => 10,
        'M' => 20,
        'G' => 30,
        _ => return Err(format!("bad size {text:?}")),
    };
    let n: u64 = digits.parse().map_err(|_| format!("bad size {text:?}"))?;
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("size {text:?} too large"))
}

/// `--name value` and `--name=value` pairs, in order; a name may repeat.
struct Flags(Vec<(String, String)>);

impl Flags {
    fn parse(args: &[String]) -> Result<Flags, String> {
        let mut out = Vec::new();
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let Some(name) = arg.strip_prefix("--") else {
                return Err(format!("unexpected argument {arg:?}"));
            };
            let (name, value) = match name.split_once('=') {
                Some((n, v)) => (n.to_string(), v.to_string()),
                None if SWITCHES.contains(&name) => (name.to_string(), "true".to_string()),
                None => {
                    let v = it.next().ok_or_else(|| format!("--{name} needs a value"))?;
                    (name.to_string(), v.clone())
                }
            };
            out.push((name, value));
        }
        Ok(Flags(out))
    }

    fn only(&self, known: &[&str]) -> Result<(), String> {
        match self.0.iter().find(|(n, _)| !known.contains(&n.as_str())) {
            Some((n, _)) => Err(format!("unknown flag --{n}")),
            None => Ok(()),
        }
    }

    fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn one(&self, name: &str) -> Result<Option<&str>, String> {
        match self.all(name)[..] {
            [] => Ok(None),
            [v] => Ok(Some(v)),
            _ => Err(format!("--{name} given more than once")),
        }
    }

    fn required(&self, name: &str) -> Result<&str, String> {
        self.one(name)?
            .ok_or_else(|| format!("--{name} is required"))
    }
}

fn stop_signals() -> libc::sigset_t {
    // SAFETY: sigemptyset initializes the set before sigaddset reads it; both only write
    // into the local value.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, sig);
        }
        set
    }
}

/// The next blocked signal of `set`, or `None` after `wait`.
fn wait_signal(set: &libc::sigset_t, wait: Duration) -> Option<i32> {
    let ts = libc::timespec {
        tv_sec: wait.as_secs() as _,
        tv_nsec: wait.subsec_nanos() as _,
    };
    // SAFETY: `set` and `ts` are valid for the call; a null siginfo pointer is allowed.
    let sig = unsafe { libc::sigtimedwait(set, std::ptr::null_mut(), &ts) };
    (sig > 0).then_some(sig)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_suffixes() {
        assert_eq!(size("123"), Ok(123));
        assert_eq!(size("64k"), Ok(64 << 10));
        assert_eq!(size("8M"), Ok(8 << 20));
        assert!(size("8X").is_err() && size("M").is_err() && size("").is_err());
    }

    #[test]
    fn flags_repeat_and_take_both_spellings() {
        let args: Vec<String> = ["--from", "/a", "--from=/b", "--tag", "v1"]
            .map(String::from)
            .into();
        let f = Flags::parse(&args).unwrap();
        assert_eq!(f.all("from"), vec!["/a", "/b"]);
        assert_eq!(f.required("tag"), Ok("v1"));
        assert!(f.one("from").is_err());
        assert!(f.only(&["from"]).is_err());
        assert!(Flags::parse(&["--tag".to_string()]).is_err());
        let args: Vec<String> = ["--access-log", "--dir", "d"].map(String::from).into();
        let f = Flags::parse(&args).unwrap();
        assert_eq!(f.one("access-log"), Ok(Some("true")));
        assert_eq!(f.required("dir"), Ok("d"));
    }
}
