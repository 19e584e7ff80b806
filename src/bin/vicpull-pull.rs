//! Pull one image with the Rust API (no C): `vicpull-pull OPTIONS_JSON`.
//! Prints plain progress lines on stderr and the result JSON on stdout;
//! exits 0 on success, 1 on failure. The tests also run it as a second
//! process sharing a store.

use vicpull::options::PullOptions;
use vicpull::progress::Event;

fn main() {
    let Some(json) = std::env::args().nth(1) else {
        eprintln!("usage: vicpull-pull OPTIONS_JSON");
        std::process::exit(2);
    };
    let opts = match PullOptions::from_json(&json).and_then(PullOptions::check) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let _pull = vicpull::pull::start(opts, tx);
    for event in rx {
        match event {
            Event::Progress(p) => {
                let id = p.layer.as_deref().map(|d| &d[7..19]).unwrap_or("");
                eprintln!("{id} {} {}/{}", p.message, p.current, p.total);
            }
            Event::Commit(_, reply) => {
                let _ = reply.send(Ok(()));
            }
            Event::Done(Ok(result)) => {
                println!("{}", serde_json::to_string_pretty(&result).unwrap());
                return;
            }
            Event::Done(Err(e)) => {
                eprintln!("error: {e}");
                std::process::exit(1);
            }
        }
    }
}
