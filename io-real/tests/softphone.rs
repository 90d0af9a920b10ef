//! Two real softphones (baresip, from Debian) register with digest authentication on the
//! default config, call each other through Drongo, and hang up: what a new user tries first.
//!
//! Needs `baresip` (Debian package `baresip`); `ci/install.sh` installs it. Each baresip
//! runs headless (no sound card: a sine source, ALSA's null player) with a 60 s limit of
//! its own, and is stopped by its pid.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SIP: u16 = 26460;
const ADMIN: u16 = 27460;

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn metric(name: &str) -> Option<u64> {
    let mut s = TcpStream::connect(("127.0.0.1", ADMIN)).ok()?;
    write!(s, "GET /metrics HTTP/1.0\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool, logs: &Path) {
    let start = Instant::now();
    while !ok() {
        if start.elapsed() > limit {
            let mut all = String::new();
            for name in ["drongo.log", "alice/log", "bob/log"] {
                let text = std::fs::read_to_string(logs.join(name)).unwrap_or_default();
                all.push_str(&format!("--- {name}\n{text}\n"));
            }
            panic!("{what} did not happen within {limit:?}\n{all}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A headless baresip for `user` (password `pass`) listening on `port` (TLS takes port + 1),
/// with its control socket on `ctrl`.
fn baresip(dir: &Path, user: &str, pass: &str, port: u16, ctrl: u16) -> Proc {
    let home = dir.join(user);
    std::fs::create_dir_all(&home).unwrap();
    let config = format!(
        "poll_method epoll\nsip_listen 127.0.0.1:{port}\nnet_interface 127.0.0.1\n\
         call_local_timeout 120\naudio_player alsa,null\naudio_source ausine,440\n\
         audio_alert alsa,null\nausrc_srate 48000\nauplay_srate 48000\nausrc_channels 2\n\
         auplay_channels 1\nrtp_ports 41000-41999\nmodule_path /usr/lib/baresip/modules\n\
         module g711.so\nmodule ausine.so\nmodule alsa.so\nmodule_app account.so\n\
         module_app menu.so\nmodule_app ctrl_tcp.so\nctrl_tcp_listen 127.0.0.1:{ctrl}\n"
    );
    std::fs::write(home.join("config"), config).unwrap();
    std::fs::write(
        home.join("accounts"),
        format!(
            "<sip:{user}@127.0.0.1:{SIP}>;auth_pass={pass};regint=300;answermode=auto;audio_codecs=PCMU\n"
        ),
    )
    .unwrap();
    std::fs::write(home.join("contacts"), "").unwrap();
    let log = std::fs::File::create(home.join("log")).unwrap();
    let child = Command::new("baresip")
        .arg("-f")
        .arg(&home)
        .args(["-t", "60"])
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("baresip is not installed: run ci/install.sh (Debian package baresip)");
    Proc(child)
}

/// Sends one command to baresip's ctrl_tcp (netstring-framed JSON).
fn ctrl(port: u16, command: &str, params: &str) {
    let start = Instant::now();
    let mut s = loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => break s,
            Err(e) if start.elapsed() > Duration::from_secs(5) => panic!("ctrl_tcp {port}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    let body = format!(r#"{{"command":"{command}","params":"{params}","token":"t"}}"#);
    write!(s, "{}:{body},", body.len()).unwrap();
    // Wait for baresip's answer: closing at once may lose the command.
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("\"response\":true") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => panic!("no answer to {command}: {}", String::from_utf8_lossy(&got)),
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[test]
fn two_baresip_phones_register_with_digest_call_and_hang_up() {
    let dir: PathBuf =
        std::env::temp_dir().join(format!("drongo-softphone-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // The default digest algorithms, with authentication on.
    let cfg = dir.join("drongo.toml");
    std::fs::write(
        &cfg,
        "auth_required = true\n[[users]]\nname = \"alice\"\npassword = \"secret-a\"\n\
         [[users]]\nname = \"bob\"\npassword = \"secret-b\"\n",
    )
    .unwrap();
    let _drongo = Proc(
        Command::new(env!("CARGO_BIN_EXE_drongo"))
            .args(["run", "--sip", &format!("127.0.0.1:{SIP}")])
            .args(["--admin", &format!("127.0.0.1:{ADMIN}"), "--store", "mem:"])
            .arg("--config")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("drongo.log")).unwrap())
            .spawn()
            .expect("drongo binary"),
    );
    wait_for(
        "drongo start",
        Duration::from_secs(10),
        || metric("drongo_registrations").is_some(),
        &dir,
    );
    let _alice = baresip(&dir, "alice", "secret-a", 26490, 26494);
    let _bob = baresip(&dir, "bob", "secret-b", 26496, 26499);
    wait_for(
        "both phones registered",
        Duration::from_secs(15),
        || metric("drongo_registrations") == Some(2),
        &dir,
    );
    ctrl(26494, "dial", &format!("sip:bob@127.0.0.1:{SIP}"));
    wait_for(
        "the call answered",
        Duration::from_secs(15),
        || metric("drongo_calls_answered_total") == Some(1),
        &dir,
    );
    // The call stays up while the phones talk.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(metric("drongo_active_dialogs"), Some(1));
    ctrl(26494, "hangup", "");
    wait_for(
        "the call ended on both legs",
        Duration::from_secs(15),
        || metric("drongo_active_dialogs") == Some(0),
        &dir,
    );
    let bob_log = std::fs::read_to_string(dir.join("bob/log")).unwrap_or_default();
    assert!(
        bob_log.contains("alice"),
        "bob never saw alice's call:\n{bob_log}"
    );
}
