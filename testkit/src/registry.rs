//! A real CNCF distribution registry (`docker-registry serve`) on a loopback port.

use std::fs;
use std::io;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::http;
use crate::tempdir::TempDir;

/// The registry binary, from Debian's `docker-registry` package (distribution 2.8).
pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// How to run a registry. `Default` gives a plain, auth-less registry in a fresh temp dir.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct RegistryOptions {
    /// Keep config, log and storage in this directory (created if missing, never removed).
    /// `None` makes a temp dir that is removed on drop.
    pub dir: Option<PathBuf>,
    /// Listen on this port. `None` picks a free one.
    pub port: Option<u16>,
    /// Require HTTP basic auth with this user and password (an htpasswd file made with
    /// `htpasswd -B`, from apache2-utils).
    pub basic_auth: Option<(String, String)>,
    /// Run as a pull-through cache of this upstream registry ("http://127.0.0.1:PORT").
    pub proxy_of: Option<String>,
    /// Serve HTTPS with this PEM certificate and key.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// With `tls`: require client certificates signed by this PEM CA.
    pub client_ca: Option<PathBuf>,
    /// Write an access log line per request (Apache combined format) to `registry.log`.
    /// Off by default; benchmarks turn it on to count blob GETs.
    pub access_log: bool,
}

impl RegistryOptions {
    /// Plain options (same as `Default`), for struct-update syntax outside this crate.
    pub fn new() -> RegistryOptions {
        RegistryOptions::default()
    }

    /// Use `dir` for config, log and storage; it is kept after the registry stops.
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> RegistryOptions {
        self.dir = Some(dir.into());
        self
    }

    /// Listen on `port` instead of a free one.
    pub fn port(mut self, port: u16) -> RegistryOptions {
        self.port = Some(port);
        self
    }

    /// Require basic auth (htpasswd) with this user and password.
    pub fn basic_auth(mut self, user: &str, password: &str) -> RegistryOptions {
        self.basic_auth = Some((user.to_string(), password.to_string()));
        self
    }

    /// Be a pull-through cache of `upstream` ("http://127.0.0.1:PORT").
    pub fn proxy_of(mut self, upstream: &str) -> RegistryOptions {
        self.proxy_of = Some(upstream.to_string());
        self
    }

    /// Serve HTTPS with this certificate and key (PEM files).
    pub fn tls(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> RegistryOptions {
        self.tls = Some((cert.into(), key.into()));
        self
    }

    /// Require client certificates signed by this CA (PEM); needs `tls`.
    pub fn client_ca(mut self, ca: impl Into<PathBuf>) -> RegistryOptions {
        self.client_ca = Some(ca.into());
        self
    }

    /// Log every request to `registry.log`, one line each, as the request ends.
    pub fn access_log(mut self, on: bool) -> RegistryOptions {
        self.access_log = on;
        self
    }
}

/// A running registry. Dropping it kills the process and removes its temp dir.
///
/// The process is also tied to the test process: it gets SIGKILL when the test process dies,
/// even when no destructor runs (a killed or aborted test run).
#[derive(Debug)]
pub struct Registry {
    addr: String,
    /// Serving HTTPS: readiness is a TCP connect, the kit's client speaks plain HTTP only.
    tls: bool,
    dir: PathBuf,
    child: Child,
    /// Dropping the sender lets the keeper thread end; see `spawn_kept`.
    keeper: Option<(mpsc::Sender<()>, JoinHandle<()>)>,
    /// Removed after the child is dead, so the registry never writes into a deleted dir.
    temp: Option<TempDir>,
}

impl Registry {
    /// Starts a plain registry in a fresh temp dir; panics (with the registry log) if it does
    /// not answer `GET /v2/` within 10 s.
    pub fn start() -> Registry {
        Registry::start_with(RegistryOptions::default())
    }

    /// Starts a registry as `opts` says; panics on failure like [`Registry::start`].
    pub fn start_with(opts: RegistryOptions) -> Registry {
        let (mut temp, dir) = match &opts.dir {
            Some(d) => {
                fs::create_dir_all(d).unwrap_or_else(|e| panic!("create {}: {e}", d.display()));
                (None, d.clone())
            }
            None => {
                let t = TempDir::new("vicpull-registry");
                let d = t.path().to_path_buf();
                (Some(t), d)
            }
        };

        // A port we pick can be taken by someone else between probing and the registry's
        // bind, so a registry that exits early gets a second and third chance.
        let attempts = if opts.port.is_some() { 1 } else { 3 };
        let mut last_log = String::new();
        for _ in 0..attempts {
            let port = opts.port.unwrap_or_else(free_port);
            let addr = format!("127.0.0.1:{port}");
            write_config(&dir, &addr, &opts);
            let (child, keeper) = spawn_kept(&dir);
            let mut reg = Registry {
                addr,
                tls: opts.tls.is_some(),
                dir: dir.clone(),
                child,
                keeper: Some(keeper),
                temp,
            };
            match reg.wait_ready() {
                Ok(()) => return reg,
                Err(log) => {
                    last_log = log;
                    temp = reg.temp.take();
                }
            }
        }
        panic!(
            "testkit: registry did not start in {}; log:\n{last_log}",
            dir.display()
        );
    }

    /// "127.0.0.1:PORT".
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// "http://127.0.0.1:PORT".
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The directory holding `config.yml`, `registry.log` and the storage in `data/`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What the registry wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("registry.log")).unwrap_or_default()
    }

    /// The exit status if the registry process has stopped on its own.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Polls `GET /v2/` until it answers 200; on timeout or early exit returns the log.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = self.exited() {
                return Err(format!("registry exited with {status}\n{}", self.log()));
            }
            if self.tls {
                if std::net::TcpStream::connect(&self.addr).is_ok() {
                    return Ok(());
                }
            } else if let Ok(r) = http::request(&self.addr, "GET", "/v2/", &[], &[]) {
                // 401: ready, and asking for the credentials it was told to want.
                if r.status == 200 || r.status == 401 {
                    return Ok(());
                }
            }
            thread::sleep(Duration::from_millis(25));
        }
        Err(format!(
            "no answer on {} after {READY_TIMEOUT:?}\n{}",
            self.addr,
            self.log()
        ))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some((stop, thread)) = self.keeper.take() {
            drop(stop);
            let _ = thread.join();
        }
        self.temp.take();
    }
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    l.local_addr().expect("local addr").port()
}

fn write_config(dir: &Path, addr: &str, opts: &RegistryOptions) {
    let data = dir.join("data");
    fs::create_dir_all(&data).unwrap_or_else(|e| panic!("create {}: {e}", data.display()));
    let mut extra = String::new();
    if let Some(upstream) = &opts.proxy_of {
        extra.push_str(&format!("proxy:\n  remoteurl: {}\n", yaml_quote(upstream)));
    }
    if let Some((user, password)) = &opts.basic_auth {
        let file = dir.join("htpasswd");
        write_htpasswd(&file, user, password);
        extra.push_str(&format!(
            "auth:\n  htpasswd:\n    realm: testkit\n    path: {}\n",
            yaml_quote(&file.display().to_string())
        ));
    }
    let mut http_extra = String::new();
    if let Some((cert, key)) = &opts.tls {
        http_extra.push_str(&format!(
            "  tls:\n    certificate: {}\n    key: {}\n",
            yaml_quote(&cert.display().to_string()),
            yaml_quote(&key.display().to_string())
        ));
        if let Some(ca) = &opts.client_ca {
            http_extra.push_str(&format!(
                "    clientcas:\n      - {}\n",
                yaml_quote(&ca.display().to_string())
            ));
        }
    }
    // Upload purging and, unless asked for, access logs are off: tests want a quiet,
    // deterministic registry.
    let config = format!(
        "version: 0.1
log:
  level: error
  accesslog:
    disabled: {}
storage:
  filesystem:
    rootdirectory: {}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: {addr}
{http_extra}{extra}",
        !opts.access_log,
        yaml_quote(&data.display().to_string())
    );
    let path = dir.join("config.yml");
    fs::write(&path, config).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Writes a one-user htpasswd file with a bcrypt hash, the only kind distribution accepts.
fn write_htpasswd(file: &Path, user: &str, password: &str) {
    let out = Command::new("htpasswd")
        .args(["-nbB", user, password])
        .output()
        .unwrap_or_else(|e| {
            panic!("testkit: cannot run htpasswd (apt install apache2-utils): {e}")
        });
    assert!(out.status.success(), "testkit: htpasswd failed: {out:?}");
    fs::write(file, &out.stdout).unwrap_or_else(|e| panic!("write {}: {e}", file.display()));
}

/// A single-quoted YAML scalar, so paths with spaces or colons stay one value.
fn yaml_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Spawns the registry from a dedicated "keeper" thread that lives until the `Registry` drops.
///
/// PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, not the process.
/// Spawning from the caller's thread would kill a registry kept in a shared static as soon as
/// the test that happened to start it finished.
fn spawn_kept(dir: &Path) -> (Child, (mpsc::Sender<()>, JoinHandle<()>)) {
    let log = dir.join("registry.log");
    let config = dir.join("config.yml");
    let (child_tx, child_rx) = mpsc::channel();
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let thread = thread::Builder::new()
        .name("registry-keeper".into())
        .spawn(move || {
            let _ = child_tx.send(spawn_registry(&config, &log));
            // Returns once the sender is dropped, i.e. after the child has been killed.
            let _ = stop_rx.recv();
        })
        .expect("spawn registry keeper thread");
    let child = child_rx.recv().expect("keeper thread ended early");
    let child = child.unwrap_or_else(|e| panic!("testkit: cannot run {REGISTRY_BIN}: {e}"));
    (child, (stop_tx, thread))
}

fn spawn_registry(config: &Path, log: &Path) -> io::Result<Child> {
    let out = fs::OpenOptions::new().create(true).append(true).open(log)?;
    let err = out.try_clone()?;
    let parent = std::process::id() as libc::pid_t;
    let mut cmd = Command::new(REGISTRY_BIN);
    cmd.arg("serve")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe calls (prctl, getppid, _exit); it allocates nothing and takes no lock.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died before prctl took effect; then no signal will come.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    cmd.spawn()
}
