//! `rust-pull REF --store DIR [--plain-http] [--json]`: one pull through
//! vicpull's Rust API. With --json, prints the result JSON exactly as
//! vic_pull_result_json would (pretty-printed serde of PullResult).

use std::process::ExitCode;
use vicpull::progress::Event;
use vicpull::PullOptions;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (mut reference, mut store, mut plain, mut json) = (None, None, false, false);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--store" => store = args.next(),
            "--plain-http" => plain = true,
            "--json" => json = true,
            _ if !a.starts_with('-') && reference.is_none() => reference = Some(a),
            _ => return usage(),
        }
    }
    let (Some(reference), Some(store)) = (reference, store) else {
        return usage();
    };
    let options = serde_json::json!({
        "reference": reference, "store": store, "plain_http": plain,
    });
    let checked = match PullOptions::from_json(&options.to_string()).and_then(PullOptions::check) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("rust-pull: {e:?}");
            return ExitCode::from(1);
        }
    };

    let (tx, rx) = std::sync::mpsc::channel();
    let _handle = vicpull::pull::start(checked, tx);
    for event in rx {
        match event {
            Event::Progress(p) => match &p.layer {
                Some(l) => eprintln!("{}: {}", &l[7.min(l.len())..19.min(l.len())], p.message),
                None => eprintln!("{}", p.message),
            },
            Event::Commit(_, reply) => {
                let _ = reply.send(Ok(()));
            }
            Event::Done(Ok(result)) => {
                if json {
                    println!("{}", serde_json::to_string_pretty(&result).unwrap());
                } else {
                    println!("{} {}", result.reference, result.manifest_digest);
                }
                return ExitCode::SUCCESS;
            }
            Event::Done(Err(e)) => {
                eprintln!("rust-pull: {e:?}");
                return ExitCode::from(1);
            }
        }
    }
    eprintln!("rust-pull: the pull ended without a result");
    ExitCode::from(1)
}

fn usage() -> ExitCode {
    eprintln!("usage: rust-pull REF --store DIR [--plain-http] [--json]");
    ExitCode::from(2)
}
