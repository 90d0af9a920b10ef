//! The `drongo` binary as a child process, for the tests that run real processes.
#![allow(dead_code)]

pub mod lb;
pub mod party;
pub mod proxy;
pub mod reg;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The whole answer to `GET path` on admin port `port`, whatever its status.
pub fn admin_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

pub struct Drongo {
    pub child: Child,
    pub sip: u16,
    pub admin: u16,
    pub dir: PathBuf,
    config: String,
    args: Vec<String>,
}

impl Drongo {
    /// Starts drongo on `sip` (admin on sip + 1000) with `config` as its TOML file.
    pub fn start(sip: u16, config: &str) -> Drongo {
        Self::start_with(sip, config, &[])
    }

    /// As [`Drongo::start`], with more command-line arguments.
    pub fn start_with(sip: u16, config: &str, args: &[&str]) -> Drongo {
        let dir = std::env::temp_dir().join(format!("drongo-sipp-{sip}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut d = Drongo {
            child: Command::new("true").spawn().unwrap(),
            sip,
            admin: sip + 1000,
            dir,
            config: config.to_string(),
            args: args.iter().map(|a| a.to_string()).collect(),
        };
        d.spawn();
        d
    }

    pub fn spawn(&mut self) {
        let cfg = self.dir.join("drongo.toml");
        std::fs::write(&cfg, &self.config).unwrap();
        let log = std::fs::File::create(self.dir.join("drongo.log")).unwrap();
        self.child = Command::new(env!("CARGO_BIN_EXE_drongo"))
            .args(["run", "--sip", &format!("127.0.0.1:{}", self.sip)])
            .args(["--admin", &format!("127.0.0.1:{}", self.admin)])
            .arg("--data")
            .arg(self.dir.join("data"))
            .arg("--config")
            .arg(&cfg)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("drongo binary");
        let start = Instant::now();
        while self.http("/healthz").is_none() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "drongo did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The body of a 200 answer to `GET path`, or `None`.
    pub fn http(&self, path: &str) -> Option<String> {
        self.http_raw(path).filter(|out| out.contains("200 OK"))
    }

    /// The whole answer to `GET path`, whatever its status.
    pub fn http_raw(&self, path: &str) -> Option<String> {
        admin_get(self.admin, path)
    }

    pub fn signal(&self, sig: &str) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success());
    }

    /// Waits up to `limit` for the process to exit.
    pub fn exit_within(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn metric(&self, name: &str) -> u64 {
        let text = self.http("/metrics").expect("metrics");
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no metric {name} in\n{text}"))
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("drongo.log")).unwrap_or_default()
    }
}

impl Drop for Drongo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A child process killed and reaped when the test is done with it (or fails).
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The path of SIPp scenario `name` (tests/sipp/NAME.xml), or `name` itself when it is a
/// path.
pub fn scenario(name: &str) -> String {
    if name.contains('/') {
        return name.to_string();
    }
    format!("{}/tests/sipp/{name}.xml", env!("CARGO_MANIFEST_DIR"))
}

/// A SIPp process running one scenario once.
pub struct Sipp {
    child: Child,
    name: String,
    dir: PathBuf,
}

pub fn sipp(dir: &Path, name: &str, local_port: u16, target: Option<u16>, extra: &[&str]) -> Sipp {
    assert!(
        Command::new("sipp").arg("-v").output().is_ok(),
        "SIPp is not installed: run ci/install.sh (Debian package sip-tester)"
    );
    let mut cmd = Command::new("sipp");
    cmd.args(["-sf", &scenario(name)]);
    let name = name.rsplit('/').next().unwrap_or(name);
    if let Some(t) = target {
        cmd.arg(format!("127.0.0.1:{t}"));
    }
    cmd.args([
        "-i",
        "127.0.0.1",
        "-p",
        &local_port.to_string(),
        "-m",
        "1",
        "-nostdin",
    ])
    .args(["-trace_err", "-error_file"])
    .arg(dir.join(format!("{name}-{local_port}-errors.log")))
    .args(extra)
    .current_dir(dir)
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    Sipp {
        child: cmd.spawn().expect("sipp"),
        name: name.to_string(),
        dir: dir.to_path_buf(),
    }
}

impl Drop for Sipp {
    /// A test that fails before SIPp ends must not leave it running (holding its port).
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Sipp {
    /// Waits for SIPp to end; true when its one call succeeded.
    pub fn succeeded(mut self, within: Duration) -> bool {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                if !status.success() {
                    for e in std::fs::read_dir(&self.dir).unwrap().flatten() {
                        if e.file_name().to_string_lossy().contains(&self.name) {
                            eprintln!("{}", std::fs::read_to_string(e.path()).unwrap_or_default());
                        }
                    }
                }
                return status.success();
            }
            if start.elapsed() > within {
                let _ = self.child.kill();
                let _ = self.child.wait();
                eprintln!("{} timed out", self.name);
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

pub const SECS: Duration = Duration::from_secs(20);

/// Registers `user` from `port` (where its UAS will listen).
pub fn register(d: &Drongo, user: &str, port: u16) {
    let r = sipp(&d.dir, "register", port, Some(d.sip), &["-s", user]);
    assert!(r.succeeded(SECS), "REGISTER failed\n{}", d.log());
}

/// The URL of the test etcd cluster (`DRONGO_ETCD_ENDPOINTS`, set by `ci/test.sh`) in a
/// namespace of this process named `name`: tests running at once on the shared etcd must
/// not see each other's members (they would adopt each other's calls).
pub fn etcd_url(name: &str) -> String {
    let eps = std::env::var("DRONGO_ETCD_ENDPOINTS").expect(
        "DRONGO_ETCD_ENDPOINTS must name the etcd cluster (ci/etcd.sh start DIR prints it)",
    );
    format!("etcd://{eps}/test-{name}-{}", std::process::id())
}

/// Waits up to `limit` for process `c`: whether it exited with success (killed if it had
/// not ended by then).
pub fn finished(mut c: Child, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Ok(Some(s)) = c.try_wait() {
            return s.success();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = c.kill();
    let _ = c.wait();
    false
}

/// Cluster member `id` on store `url` behind a balancer at 127.0.0.1:`lb` (which it
/// advertises), its calls to bob going to 127.0.0.1:`uas`, with a lease of `ttl_ms`;
/// `cluster` adds to its `[cluster]` table.
pub fn member_behind(
    sip: u16,
    id: u16,
    url: &str,
    lb: u16,
    uas: u16,
    ttl_ms: u64,
    cluster: &str,
) -> Drongo {
    let config = format!(
        "[cluster]\nlease_ttl_ms = {ttl_ms}\n{cluster}\n[[routes]]\nuser = \"bob\"\ntarget = \"sip:bob@127.0.0.1:{uas}\"\n"
    );
    let advertise = format!("127.0.0.1:{lb}");
    let id = id.to_string();
    Drongo::start_with(
        sip,
        &config,
        &["--store", url, "--node-id", &id, "--advertise", &advertise],
    )
}
