//! The DNS layer with a real daemon, a real upstream resolver (Debian's dnsmasq, started here
//! on loopback, logging every query it receives) and real resolver clients (glibc's
//! getaddrinfo, dig, nslookup, and queries built by secops-netprobe) inside agent cgroups:
//! allowed names resolve and their addresses connect; every other name and type is REFUSED
//! at whatever address it is sent to on port 53, and the upstream never sees it; addresses are
//! allowed per agent and only for the answer's TTL; non-agents are untouched.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use secops_host_tests::daemon::{Binaries, Daemon};
use secops_host_tests::dns::{free_port, Upstream};
use secops_host_tests::kernel::need_root;
use serde_json::Value;

fn binaries() -> Binaries {
    Binaries {
        secops: env!("CARGO_BIN_EXE_secops-under-test").into(),
        probe: env!("CARGO_BIN_EXE_secops-netprobe").into(),
    }
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// True when the test can run; otherwise says why not.
fn ready(test: &str) -> bool {
    if !need_root(test) {
        return false;
    }
    for tool in ["dnsmasq", "dig", "nslookup", "unshare"] {
        if !have(tool) {
            // CI installs them (`cargo xtask deps --install`); a developer may not have.
            eprintln!("skipped: {test}: {tool} is not installed (apt-get install dnsmasq-base bind9-dnsutils)");
            return false;
        }
    }
    true
}

/// TCP listeners that echo one byte, on `addrs` and one port.
fn echo_listeners(addrs: &[[u8; 4]]) -> u16 {
    let port = free_port();
    for &addr in addrs {
        let listener = TcpListener::bind(SocketAddr::from((addr, port))).expect("listen");
        std::thread::spawn(move || {
            for mut stream in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut b = [0u8; 1];
                    if stream.read_exact(&mut b).is_ok() {
                        let _ = stream.write_all(&b);
                    }
                });
            }
        });
    }
    port
}

/// Runs `program args` inside `cgroup` (joined before exec, so everything the program does
/// is the cgroup's), without `secops run`'s seccomp filter (the getaddrinfo case needs a mount
/// namespace of its own).
fn run_in(cgroup: &Path, program: &str, args: &[&str]) -> Output {
    let procs = std::ffi::CString::new(
        cgroup
            .join("cgroup.procs")
            .to_str()
            .expect("utf-8")
            .as_bytes(),
    )
    .expect("path");
    let mut command = Command::new(program);
    command.args(args);
    // SAFETY: only open/write/close between fork and exec.
    unsafe {
        command.pre_exec(move || {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let ok = libc::write(fd, b"0".as_ptr().cast(), 1) == 1;
            libc::close(fd);
            if ok {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    command.output().expect("running in the cgroup")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

struct Setup {
    daemon: Daemon,
    upstream: Upstream,
    port: u16,
    probe: String,
}

impl Setup {
    fn start(test: &str) -> Setup {
        let dir = std::env::temp_dir().join(format!("secops-dns-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let upstream = Upstream::start(
            &dir,
            &[
                "--host-record=pkg.test,127.0.0.1".into(),
                "--host-record=a-only.test,127.0.0.2".into(),
                "--address=/wild.test/127.0.0.3".into(),
                "--txt-record=pkg.test,secops".into(),
                "--txt-record=txt-ok.test,hello".into(),
            ],
            // The daemon clamps this TTL to its minimum of 5 s.
            1,
            true,
        );
        let port = echo_listeners(&[[127, 0, 0, 1], [127, 0, 0, 2], [127, 0, 0, 3]]);
        let resolver = format!("\"127.0.0.1:{}\"", upstream.port);
        let policy = format!(
            "version: 1\nagents:\n  - {{name: a, workspace: /tmp, user: root, autonomy: semi}}\n  - {{name: b, workspace: /tmp, user: root, autonomy: semi}}\n\
             egress:\n  a:\n    allow:\n\
             \x20     - {{host: pkg.test, ports: [{port}]}}\n\
             \x20     - {{host: a-only.test, ports: [{port}]}}\n\
             \x20     - {{host: \"*.wild.test\", ports: [{port}]}}\n\
             \x20     - {{host: txt-ok.test, dns_types: [TXT]}}\n\
             \x20   dns_resolvers: [{resolver}]\n\
             \x20 b:\n    allow:\n      - {{host: pkg.test, ports: [{port}]}}\n\
             \x20   dns_resolvers: [{resolver}]\n"
        );
        let daemon = Daemon::start(&binaries(), &policy);
        Setup {
            daemon,
            upstream,
            port,
            probe: binaries().probe.to_str().expect("utf-8").to_owned(),
        }
    }

    fn status(&self) -> Value {
        self.daemon.status().expect("status")
    }

    fn cgroup(&self, agent: &str) -> PathBuf {
        let status = self.status();
        let found = status["agents"]
            .as_array()
            .expect("agents")
            .iter()
            .find(|a| a["name"] == agent)
            .unwrap_or_else(|| panic!("no agent {agent}: {status}"));
        PathBuf::from(found["cgroup"].as_str().expect("cgroup"))
    }

    fn listener_port(&self, agent: &str) -> u16 {
        let status = self.status();
        status["dns"]["agents"]
            .as_array()
            .expect("dns agents")
            .iter()
            .find(|a| a["agent"] == agent)
            .and_then(|a| a["port"].as_u64())
            .unwrap_or_else(|| panic!("no DNS listener for {agent}: {status}")) as u16
    }

    fn probe(&self, agent: &str, args: &[&str]) -> String {
        stdout(&run_in(&self.cgroup(agent), &self.probe, args))
    }

    /// getaddrinfo with resolv.conf saying `nameserver 127.0.0.53` (a mount namespace of
    /// the probe's own), then a connect to the first address on the test's port.
    fn lookup(&self, agent: &str, name: &str) -> String {
        let dir = std::env::temp_dir().join(format!("secops-dns-resolv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let resolv = dir.join("resolv.conf");
        std::fs::write(
            &resolv,
            "nameserver 127.0.0.53\noptions attempts:1 timeout:2\n",
        )
        .expect("resolv.conf");
        let script = format!(
            "mount --bind {} /etc/resolv.conf && exec {} lookup {name}:{}",
            resolv.display(),
            self.probe,
            self.port
        );
        stdout(&run_in(
            &self.cgroup(agent),
            "unshare",
            &["-m", "sh", "-c", &script],
        ))
    }

    fn dig(&self, agent: &str, args: &[&str]) -> String {
        let mut all = vec!["+tries=1", "+time=3"];
        all.extend_from_slice(args);
        stdout(&run_in(&self.cgroup(agent), "dig", &all))
    }

    /// Audit records of the DNS door.
    fn dns_records(&self) -> Vec<Value> {
        self.daemon
            .records()
            .into_iter()
            .filter(|r| r["source"] == "dns")
            .collect()
    }
}

fn status_of(dig_output: &str) -> &str {
    dig_output
        .split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or("(no status)")
}

#[test]
fn allowed_names_resolve_and_connect_and_nothing_else_reaches_the_upstream() {
    let test = "allowed_names_resolve_and_connect_and_nothing_else_reaches_the_upstream";
    if !ready(test) {
        return;
    }
    let s = Setup::start("main");
    let port = s.port.to_string();
    let up = s.upstream.port;

    // Names gate addresses: before any lookup, the wildcard's address is not reachable.
    assert_eq!(
        s.probe("a", &["tcp", &format!("127.0.0.3:{port}")]),
        format!("tcp 127.0.0.3:{port} errno EPERM")
    );
    // glibc's resolver, through whatever resolv.conf says, then a connect to the answer.
    assert_eq!(
        s.lookup("a", "pkg.test"),
        "lookup pkg.test addrs 127.0.0.1 connect ok",
        "{}",
        s.daemon.log()
    );
    assert!(s.upstream.queries_for("pkg.test") >= 1);
    // dig to any address on port 53: secops answers.
    let answer = s.dig("a", &["@127.9.9.9", "pkg.test", "A"]);
    assert_eq!(status_of(&answer), "NOERROR", "{answer}");
    assert!(answer.contains("127.0.0.1"), "{answer}");
    let wild = "q3r7x9k2m4n8p1s5t6v0w.a1b2c3d4e5f6g7h8i9j0.wild.test";
    let answer = s.dig("a", &["@127.0.0.1", wild, "+tcp"]);
    assert_eq!(
        status_of(&answer),
        "NOERROR",
        "a wildcard allows it: {answer}"
    );
    assert_eq!(
        s.probe("a", &["tcp", &format!("127.0.0.3:{port}")]),
        format!("tcp 127.0.0.3:{port} ok"),
        "the answer opened the wildcard's address"
    );

    // Names outside the list, asked every way, at every address: REFUSED, never forwarded.
    let secret = "mfrggzdfmztwq2lkmnxw6zlpmfrggzdfmztwq2lkmnxw6zlpmfrggzdfmztwq2l"; // base32
    let refused = [
        format!("{secret}.attacker.test"),
        format!("{secret}.test"),
        format!("{secret}.pkg.test"),
        "other.test".to_owned(),
    ];
    let servers = ["127.0.0.53", "127.0.0.1", "127.9.9.9", "::1"];
    for (i, name) in refused.iter().enumerate() {
        let server = servers[i % servers.len()];
        let out = s.dig("a", &[&format!("@{server}"), name]);
        assert_eq!(status_of(&out), "REFUSED", "dig @{server} {name}: {out}");
        let out = s.dig("a", &[&format!("@{server}"), name, "+tcp"]);
        assert_eq!(
            status_of(&out),
            "REFUSED",
            "dig +tcp @{server} {name}: {out}"
        );
    }
    let out = stdout(&run_in(
        &s.cgroup("a"),
        "nslookup",
        &["-timeout=3", "-retry=0", &refused[3], "127.0.0.53"],
    ));
    assert!(out.contains("REFUSED"), "nslookup: {out}");
    for (server, mode) in [
        ("127.0.0.53:53", "udp"),
        ("127.0.0.53:53", "udp-connected"),
        ("127.0.0.53:53", "tcp"),
        ("[::1]:53", "udp"),
        ("[::1]:53", "tcp"),
        ("[::ffff:127.8.8.8]:53", "udp"),
        ("[::ffff:127.8.8.8]:53", "udp-connected"),
        ("[::ffff:127.8.8.8]:53", "tcp"),
    ] {
        let out = s.probe("a", &["dnsq", &refused[0], "1", server, mode]);
        assert_eq!(
            out,
            format!("dnsq {} 1 rcode 5 answers 0", refused[0]),
            "raw {mode} query to {server}"
        );
    }
    // The configured resolver itself, addressed directly (not port 53): not in the allowlist.
    let out = s.probe(
        "a",
        &["dnsq", &refused[0], "1", &format!("127.0.0.1:{up}"), "udp"],
    );
    assert_eq!(out, format!("dnsq {} 1 errno EPERM", refused[0]));
    // TXT of an allowed name: refused; of a name whose entry allows TXT: answered.
    let out = s.dig("a", &["@127.0.0.53", "pkg.test", "TXT"]);
    assert_eq!(status_of(&out), "REFUSED", "{out}");
    let out = s.dig("a", &["@127.0.0.53", "txt-ok.test", "TXT"]);
    assert_eq!(status_of(&out), "NOERROR", "{out}");
    assert!(out.contains("hello"), "{out}");
    let out = s.dig("a", &["@127.0.0.53", "pkg.test", "ANY"]);
    assert_eq!(status_of(&out), "REFUSED", "{out}");

    // An answer asked for again at once comes from the cache.
    for _ in 0..2 {
        s.dig("a", &["@127.0.0.53", "pkg.test", "A"]);
    }

    // Every query before this one is in the upstream's log by now.
    s.dig("a", &["@127.0.0.53", "marker.wild.test"]);
    s.upstream.wait_for_query("marker.wild.test");
    for name in &refused {
        assert_eq!(
            s.upstream.queries_for(name),
            0,
            "{name} reached the upstream"
        );
    }
    assert_eq!(
        s.upstream.queries_of("TXT", "pkg.test"),
        0,
        "an allowed name's TXT"
    );

    // No agent reaches another agent's listener (it would speak as that agent); its own is
    // itself, however it is addressed.
    for (server, mode) in [
        (format!("127.0.0.1:{}", s.listener_port("b")), "udp"),
        (format!("127.0.0.1:{}", s.listener_port("b")), "tcp"),
        (format!("[::1]:{}", s.listener_port("b")), "udp"),
        (
            format!("[::ffff:127.0.0.1]:{}", s.listener_port("b")),
            "udp",
        ),
    ] {
        let out = s.probe("a", &["dnsq", "pkg.test", "1", &server, mode]);
        assert_eq!(
            out, "dnsq pkg.test 1 errno EPERM",
            "b's listener at {server} {mode}"
        );
    }
    let own = format!("127.0.0.1:{}", s.listener_port("a"));
    let out = s.probe("a", &["dnsq", "pkg.test", "1", &own, "udp"]);
    assert_eq!(out, "dnsq pkg.test 1 rcode 0 answers 1", "its own listener");
    let denied = s.daemon.wait_for_records(1, "the listener denial", |r| {
        r["agent"] == "a" && r["rule_id"] == "egress.a.dns-listener"
    });
    assert_eq!(denied[0]["verdict"], "deny");

    // Not an agent (a cgroup below the secops root, where the programs run): untouched.
    let root = s.cgroup("a").parent().expect("root").to_path_buf();
    let outsider = root.join("not-an-agent");
    std::fs::create_dir_all(&outsider).expect("cgroup");
    let direct = stdout(&run_in(
        &outsider,
        &s.probe,
        &["dnsq", &refused[0], "1", &format!("127.0.0.1:{up}"), "udp"],
    ));
    assert_eq!(direct, format!("dnsq {} 1 rcode 5 answers 0", refused[0]));
    s.upstream.wait_for_query(&refused[0]);
    let port53 = stdout(&run_in(
        &outsider,
        &s.probe,
        &["dnsq", "pkg.test", "1", "127.0.0.1:53", "udp"],
    ));
    assert!(
        port53.contains("error"),
        "nothing listens on 127.0.0.1:53, and a non-agent's query goes there: {port53}"
    );
    let _ = std::fs::remove_dir(&outsider);

    // The audit log: refusals with agent, name and rule; answers with their addresses.
    let records = s.dns_records();
    let refusal = records
        .iter()
        .find(|r| r["object"]["value"] == refused[0].as_str() && r["verdict"] == "deny")
        .unwrap_or_else(|| panic!("no refusal record: {records:#?}"));
    assert_eq!(refusal["agent"], "a");
    assert_eq!(refusal["action"], "net:dns");
    assert_eq!(refusal["rule_id"], "egress.a.default-deny");
    let txt = records
        .iter()
        .find(|r| r["object"]["value"] == "pkg.test" && r["verdict"] == "deny")
        .expect("the TXT refusal");
    assert_eq!(txt["rule_id"], "egress.a.dns-types");
    // The A answer's record (resolver libraries ask A and AAAA at once: either may be first).
    let answered = records
        .iter()
        .find(|r| {
            r["object"]["value"] == "pkg.test"
                && r["verdict"] == "allow"
                && r["reason"]
                    .as_str()
                    .is_some_and(|r| r.starts_with("A answered"))
        })
        .unwrap_or_else(|| panic!("no record of the A answer: {records:#?}"));
    assert!(
        answered["reason"]
            .as_str()
            .is_some_and(|r| r.contains("-> 127.0.0.1")),
        "{answered}"
    );
    // Repeats are counted into one record when the window closes (every 5 s).
    let repeats = s.daemon.wait_for_records(1, "aggregated DNS repeats", |r| {
        r["source"] == "dns"
            && r["object"]["value"] == refused[0].as_str()
            && r["reason"]
                .as_str()
                .is_some_and(|t| t.contains("(aggregated)"))
    });
    assert_eq!(repeats[0]["verdict"], "deny");

    let status = s.status();
    assert_eq!(status["dns"]["active"], true, "{status}");
    let agents = status["dns"]["agents"].as_array().expect("agents");
    assert!(agents
        .iter()
        .all(|a| a["upstreams"][0] == format!("127.0.0.1:{up}").as_str()));
    assert!(status["dns"]["refused"].as_u64().unwrap_or(0) >= 10);
    assert!(status["dns"]["cache_hits"].as_u64().unwrap_or(0) >= 1);
}

#[test]
fn an_address_is_allowed_only_to_the_agent_that_resolved_it_and_only_for_its_ttl() {
    let test = "an_address_is_allowed_only_to_the_agent_that_resolved_it_and_only_for_its_ttl";
    if !ready(test) {
        return;
    }
    let s = Setup::start("ttl");
    let target = format!("127.0.0.2:{}", s.port);

    // b's list lacks a-only.test: refused, and its address stays closed to b.
    let out = s.probe("b", &["dnsq", "a-only.test", "1", "127.0.0.53:53", "udp"]);
    assert_eq!(out, "dnsq a-only.test 1 rcode 5 answers 0");
    assert_eq!(
        s.lookup("a", "a-only.test"),
        "lookup a-only.test addrs 127.0.0.2 connect ok"
    );
    assert_eq!(
        s.probe("b", &["tcp", &target]),
        format!("tcp {target} errno EPERM"),
        "a's answer is a's"
    );
    // pkg.test is in both lists: b's own lookup opens it for b.
    assert_eq!(
        s.lookup("b", "pkg.test"),
        "lookup pkg.test addrs 127.0.0.1 connect ok"
    );

    // A connection made while the name held outlives the TTL; a new connect does not.
    let started = Instant::now();
    let held = std::thread::scope(|scope| {
        let held = scope.spawn(|| s.probe("a", &["hold", &target, "7000"]));
        std::thread::sleep(Duration::from_millis(500));
        held.join().expect("hold")
    });
    assert!(started.elapsed() >= Duration::from_secs(6));
    assert_eq!(held, format!("hold {target} ok"));
    assert_eq!(
        s.probe("a", &["tcp", &target]),
        format!("tcp {target} errno EPERM"),
        "5 s (the TTL of 1 s, clamped) after the lookup, without a new one"
    );
    // A new lookup opens it again (from the cache or upstream).
    assert_eq!(
        s.lookup("a", "a-only.test"),
        "lookup a-only.test addrs 127.0.0.2 connect ok"
    );
    let denied = s.daemon.wait_for_records(1, "b's denied connect", |r| {
        r["agent"] == "b" && r["action"] == "net:connect" && r["verdict"] == "deny"
    });
    assert_eq!(denied[0]["object"]["value"], target.as_str());
}
