//! Pull one image with the Rust API (no C):
//!   vicpull-pull REF --store DIR [--plain-http] [--platform P] [--json]
//!   vicpull-pull OPTIONS_JSON
//! Prints plain progress lines on stderr; the result JSON on stdout (always
//! for the JSON form, with --json for the flag form). Exits 0 on success,
//! 1 on failure, 2 on bad usage. The tests also run it as a second process
//! sharing a store, and the parity test as the Rust client.

use vicpull::options::PullOptions;
use vicpull::progress::{Event, Kind};

const USAGE: &str = "usage: vicpull-pull REF --store DIR [--plain-http] [--platform P] [--json]\n\
     \x20      vicpull-pull OPTIONS_JSON";

fn usage() -> ! {
    eprintln!("{USAGE}");
    std::process::exit(2);
}

/// The options JSON and whether to print the result.
fn parse_args() -> (String, bool) {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args
        .first()
        .is_some_and(|a| a.trim_start().starts_with('{'))
    {
        if args.len() > 1 {
            eprintln!(
                "vicpull-pull: OPTIONS_JSON takes no other argument (it always prints the result)"
            );
            usage();
        }
        return (args[0].clone(), true);
    }
    let mut opts = serde_json::Map::new();
    let mut json = false;
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--store" | "--platform" => {
                let v = it.next().unwrap_or_else(|| usage());
                opts.insert(a[2..].to_string(), v.into());
            }
            "--plain-http" => {
                opts.insert("plain_http".into(), true.into());
            }
            "--json" => json = true,
            _ if !a.starts_with('-') && !opts.contains_key("reference") => {
                opts.insert("reference".into(), a.into());
            }
            _ => usage(),
        }
    }
    (serde_json::Value::Object(opts).to_string(), json)
}

fn main() {
    let (json, print_result) = parse_args();
    let opts = match PullOptions::from_json(&json).and_then(PullOptions::check) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    // Same as the C library: silent unless VICPULL_LOG asks for stderr.
    vicpull::ffi::log::install();
    let (tx, rx) = std::sync::mpsc::channel();
    let _pull = vicpull::pull::start(opts, tx);
    for event in rx {
        match event {
            Event::Progress(p) => {
                // Byte counts only when a layer is done: a plain log, not a
                // progress bar (build/pull draws those).
                if p.kind == Kind::Downloading && p.current < p.total {
                    continue;
                }
                let id = p.layer.as_deref().map(|d| &d[7..19]).unwrap_or("");
                eprintln!("{id} {} {}/{}", p.message, p.current, p.total);
            }
            Event::Commit(_, reply) => {
                let _ = reply.send(Ok(()));
            }
            Event::Done(Ok(result)) => {
                if print_result {
                    println!("{}", serde_json::to_string_pretty(&result).unwrap());
                }
                return;
            }
            Event::Done(Err(e)) => {
                eprintln!("error: {e}");
                std::process::exit(1);
            }
        }
    }
}
