//! A `drongo lb` process in front of a test's nodes (admin on its SIP port + 1000).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Lb {
    child: Child,
    admin: u16,
}

impl Lb {
    /// Starts `drongo lb` on `sip` with the members of the cluster at store `url` and
    /// `config` (TOML) as its file, its log in `dir`; returns once it lists `nodes` members.
    pub fn start(sip: u16, url: &str, dir: &Path, config: &str, nodes: usize) -> Lb {
        let cfg = dir.join(format!("lb-{sip}.toml"));
        std::fs::write(&cfg, config).unwrap();
        let log = std::fs::File::create(dir.join(format!("lb-{sip}.log"))).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_drongo"))
            .args(["lb", "--sip", &format!("127.0.0.1:{sip}")])
            .args(["--admin", &format!("127.0.0.1:{}", sip + 1000)])
            .args(["--store", url, "--config"])
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("drongo binary");
        let lb = Lb {
            child,
            admin: sip + 1000,
        };
        let start = Instant::now();
        while lb.pool()["nodes"].as_array().map_or(0, Vec::len) < nodes {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "lb did not see {nodes} nodes"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        lb
    }

    /// The body of the answer to `GET path` on the admin port (empty if none).
    pub fn get(&self, path: &str) -> String {
        super::admin_get(self.admin, path)
            .and_then(|out| out.split("\r\n\r\n").nth(1).map(str::to_string))
            .unwrap_or_default()
    }

    pub fn pool(&self) -> serde_json::Value {
        serde_json::from_str(&self.get("/pool")).unwrap_or_default()
    }

    /// Requests routed to each node so far (ids 1 to N).
    pub fn routed<const N: usize>(&self) -> [u64; N] {
        let pool = self.pool();
        let mut out = [0; N];
        for n in pool["nodes"].as_array().into_iter().flatten() {
            let id = n["id"].as_u64().unwrap_or(0) as usize;
            if let Some(slot) = out.get_mut(id.wrapping_sub(1)) {
                *slot = n["routed"].as_u64().unwrap_or(0);
            }
        }
        out
    }
}

impl Drop for Lb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
