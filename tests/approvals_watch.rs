//! A person decides through `secops approvals watch` in a terminal (a real pty), with one
//! key, while the agent's check waits for the decision (`"wait"` in `/v1/check`): `a`
//! approves (the waiting check answers allow), `d` denies (it answers deny). `approvals list`
//! shows a header, the age, the risk and the agent's command line; the agent reads its own
//! ticket through `/v1/tickets/{id}`.

use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use secops_host_tests::daemon::{Binaries, Daemon};
use secops_host_tests::kernel::need_root;
use serde_json::{json, Value};

const SECOPS: &str = env!("CARGO_BIN_EXE_secops-under-test");
const NETPROBE: &str = env!("CARGO_BIN_EXE_secops-netprobe");
const APIPROBE: &str = env!("CARGO_BIN_EXE_secops-apiprobe");

const POLICY: &str = "version: 1
agents:
  - name: web
    workspace: /tmp
    user: root
    autonomy: semi
rules:
  - id: ask-before-release
    actions: [deploy:release]
    verdict: escalate
    risk: high
";

/// `secops approvals watch` on the slave side of a new pty; what it draws collects in the
/// returned buffer; keys are written to the master.
struct Watch {
    child: Child,
    master: std::fs::File,
    screen: Arc<Mutex<String>>,
}

impl Watch {
    fn start(daemon: &Daemon) -> Watch {
        let (mut master, mut slave) = (-1, -1);
        let size = libc::winsize {
            ws_row: 40,
            ws_col: 200,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: openpty writes two descriptors this test then owns.
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                &size,
            )
        };
        assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: both descriptors were just made and are owned here alone.
        let (master, slave) =
            unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        let child = daemon
            .secops()
            .args(["approvals", "watch", "--interval", "1", "--socket"])
            .arg(daemon.socket())
            .stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave))
            .spawn()
            .unwrap();
        let master = std::fs::File::from(master);
        let screen = Arc::new(Mutex::new(String::new()));
        let (mut reader, collect) = (master.try_clone().unwrap(), screen.clone());
        std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buffer) {
                if n == 0 {
                    break;
                }
                collect
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buffer[..n]));
            }
        });
        Watch {
            child,
            master,
            screen,
        }
    }

    /// Waits until the screen shows `text`; clears what was read so far.
    fn shows(&self, text: &str) {
        let started = Instant::now();
        loop {
            {
                let mut screen = self.screen.lock().unwrap();
                if screen.contains(text) {
                    screen.clear();
                    return;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(15),
                    "the watch never showed {text:?}:\n{screen}"
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn press(&mut self, key: &str) {
        self.master.write_all(key.as_bytes()).unwrap();
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An agent's check that waits up to 30 s for a human; returns the running probe.
fn waiting_check(daemon: &Daemon, host: &str) -> Child {
    let body = json!({"action": "deploy:release", "object": {"host": host}, "wait": "30s"});
    let socket = daemon.socket();
    daemon
        .agent_program(
            "web",
            Path::new(APIPROBE),
            &[
                "request",
                socket.to_str().unwrap(),
                "POST",
                "/v1/check",
                &body.to_string(),
            ],
        )
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The probe's answer: (status, body).
fn answer(child: Child) -> (u16, Value) {
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let (status, body) = text.split_once(' ').unwrap_or_else(|| panic!("{text}"));
    (status.parse().unwrap(), serde_json::from_str(body).unwrap())
}

fn open_ticket(daemon: &Daemon, host: &str) -> u64 {
    let started = Instant::now();
    loop {
        let list: Value = daemon
            .admin_client()
            .get("/v1/approvals?status=open")
            .unwrap();
        let found = list["tickets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["object"] == host)
            .and_then(|t| t["id"].as_u64());
        if let Some(id) = found {
            return id;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "no ticket for {host}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_person_approves_and_denies_with_one_key_while_the_agent_waits() {
    if !need_root("a_person_approves_and_denies_with_one_key_while_the_agent_waits") {
        return;
    }
    let binaries = Binaries {
        secops: SECOPS.into(),
        probe: NETPROBE.into(),
    };
    let daemon = Daemon::start_with(&binaries, POLICY, &[]);
    let mut watch = Watch::start(&daemon);
    watch.shows("0 open");

    let first = waiting_check(&daemon, "prod");
    let id = open_ticket(&daemon, "prod");
    watch.shows(&format!("#{id}"));
    let started = Instant::now();
    watch.press("a");
    let (status, decision) = answer(first);
    assert_eq!(status, 200, "{decision}");
    assert_eq!(decision["verdict"], "allow", "{decision}");
    assert!(
        decision["reason"]
            .as_str()
            .unwrap()
            .starts_with(&format!("approved in ticket #{id}")),
        "{decision}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the waiting check answered {:?} after the key",
        started.elapsed()
    );

    let second = waiting_check(&daemon, "staging");
    let denied = open_ticket(&daemon, "staging");
    watch.shows(&format!("#{denied}"));
    watch.press("d");
    let (status, decision) = answer(second);
    assert_eq!(
        (status, &decision["verdict"]),
        (200, &json!("deny")),
        "{decision}"
    );
    assert!(
        decision["reason"]
            .as_str()
            .unwrap()
            .contains("was denied by a human"),
        "{decision}"
    );
    watch.press("q");
    let started = Instant::now();
    let exit = loop {
        if let Some(status) = watch.child.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "q did not quit");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "{exit}");

    // The agent reads its own ticket (an admin's route would refuse it).
    let socket = daemon.socket();
    let line = daemon.api_probe(
        Path::new(APIPROBE),
        "web",
        "request",
        &socket,
        &["GET", &format!("/v1/tickets/{id}?wait=1s"), ""],
    );
    assert!(
        line.starts_with("200 ") && line.contains("\"approved\""),
        "{line}"
    );

    let out = daemon
        .secops()
        .args(["approvals", "list", "--all", "--socket"])
        .arg(daemon.socket())
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&out.stdout);
    let mut lines = list.lines();
    assert!(
        lines
            .next()
            .unwrap()
            .starts_with("ID     STATUS             AGE   AGENT        RISK"),
        "{list}"
    );
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 2, "{list}");
    for row in rows {
        assert!(
            row.contains(" web ")
                && row.contains(" high ")
                && row.contains("secops-apiprobe request"),
            "{row}"
        );
    }
    let json = daemon
        .secops()
        .args(["approvals", "list", "--all", "--json", "--socket"])
        .arg(daemon.socket())
        .output()
        .unwrap();
    let tickets: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert!(tickets[0]["decided_by"].is_string(), "{tickets}");
    assert!(tickets[0]["command"].is_string() && tickets[0]["first_seen_ns"].is_i64());
}
