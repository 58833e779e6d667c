//! The Landlock layer on this kernel (BPF LSM cannot load here; Landlock can): `secops run`
//! restricts the agent to the ruleset the daemon compiled from its policy. Real daemon, real
//! processes as `nobody`, real Landlock. Every attack below would succeed as `nobody` without
//! the layer (the files are world-writable and the targets run as `nobody` too): the `plain`
//! agent, which no rule names, shows it for files, `nobody` outside secops (`setpriv`) for
//! signals and sockets (scopes hold for every agent), and then `coder` is refused.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};

use secops_host_tests::daemon::{Binaries, Daemon};
use secops_host_tests::kernel::{need_root, unique_name};
use serde_json::Value;

const SECOPS: &str = env!("CARGO_BIN_EXE_secops-under-test");
const NETPROBE: &str = env!("CARGO_BIN_EXE_secops-netprobe");
/// The system's interpreter (not a per-user shim `nobody` cannot reach).
const PYTHON: &str = "/usr/bin/python3";

/// Removes the test's tree when the test ends, however it ends.
struct Tree(PathBuf);

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A process the test started; killed by its pid when the test ends.
struct Started(Child);

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn policy(base: &Path, port_allowed: u16) -> String {
    format!(
        r#"version: 1
defaults:
  egress: deny
agents:
  - {{name: coder, workspace: {b}/ws, user: nobody, create_workspace: true, require: [landlock]}}
  - {{name: plain, workspace: {b}/plainws, user: nobody, create_workspace: true}}
rules:
  - id: workspace.files
    agents: [coder]
    actions: ["fs:*"]
    paths: ["${{workspace}}/**"]
    risk: low
  - id: protected.tree
    agents: [coder]
    actions: [fs:delete, fs:rename, fs:link, fs:truncate, fs:write, fs:create]
    paths: ["{b}/protected/**"]
    verdict: deny
    risk: high
  - id: protected.asked
    agents: [coder]
    actions: [fs:delete, fs:rename]
    paths: ["{b}/asked/**"]
    verdict: escalate
    risk: high
  - id: secrets.keys
    agents: [coder]
    actions: [secret:read, fs:read]
    paths: ["{b}/secrets/**"]
    verdict: deny
    risk: critical
  - id: exec.denied
    agents: [coder]
    actions: [proc:exec]
    binaries: ["{b}/bin/denied"]
    verdict: deny
    risk: high
egress:
  coder:
    allow:
      - {{cidr: 127.0.0.1/32, ports: [{port_allowed}]}}
  plain:
    allow:
      - {{cidr: 127.0.0.1/32}}
"#,
        b = base.display()
    )
}

/// A tree where `nobody` may do everything by file modes alone.
fn make_tree(base: &Path) {
    for dir in ["protected", "asked", "secrets", "bin"] {
        let d = base.join(dir);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    std::fs::set_permissions(base, std::fs::Permissions::from_mode(0o755)).unwrap();
    for file in [
        "protected/victim",
        "protected/target",
        "protected/plain-victim",
        "asked/victim",
        "secrets/key",
    ] {
        let f = base.join(file);
        std::fs::write(&f, "precious\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o666)).unwrap();
    }
    let denied = base.join("bin/denied");
    std::fs::copy("/bin/true", &denied).unwrap();
    std::fs::set_permissions(&denied, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn sh(daemon: &Daemon, agent: &str, script: &str) -> Output {
    daemon
        .agent_program(agent, Path::new("/bin/sh"), &["-c", script])
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `script` as `agent` and asserts it printed `want` (each step echoes its status).
fn expect(daemon: &Daemon, agent: &str, script: &str, want: &str) {
    let out = sh(daemon, agent, script);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(want),
        "{agent}: `{script}` should print {want:?}\n{}\ndaemon log:\n{}",
        text(&out),
        daemon.log()
    );
}

/// Runs `script` as `nobody` outside secops: what file modes and credentials alone allow.
fn expect_as_nobody(script: &str, want: &str) {
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "/bin/sh",
            "-c",
            script,
        ])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(want),
        "nobody outside secops: `{script}` should print {want:?}\n{}",
        text(&out)
    );
}

fn landlock_runs_here(test: &str) -> bool {
    if !need_root(test) {
        return false;
    }
    if secops_daemon::launcher::landlock::kernel_abi().is_none() {
        eprintln!("skipped: {test}: the kernel has no Landlock");
        return false;
    }
    true
}

fn capability<'a>(status: &'a Value, key: &str) -> &'a Value {
    status["capabilities"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["key"] == key)
        .unwrap_or_else(|| panic!("no {key} in {status:#}"))
}

#[test]
fn the_policy_becomes_a_landlock_domain_that_blocks_the_attack_classes() {
    if !landlock_runs_here("the_policy_becomes_a_landlock_domain_that_blocks_the_attack_classes") {
        return;
    }
    let base = std::env::temp_dir().join(format!("secops-ll-{}", unique_name()));
    let _tree = Tree(base.clone());
    make_tree(&base);
    let allowed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let refused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let allowed_port = allowed.local_addr().unwrap().port();
    let refused_port = refused.local_addr().unwrap().port();
    let daemon = Daemon::start(
        &Binaries {
            secops: SECOPS.into(),
            probe: NETPROBE.into(),
        },
        &policy(&base, allowed_port),
    );
    let status = daemon.status().unwrap();
    if capability(&status, "lsm")["active"] == true {
        eprintln!("skipped: BPF LSM enforces files on this kernel; Landlock stands by");
        return;
    }
    let layer = capability(&status, "landlock");
    assert_eq!(layer["active"], true, "{layer:#}");
    assert!(
        layer["detail"]
            .as_str()
            .unwrap()
            .contains("approvals cannot widen running agents"),
        "{layer:#}"
    );
    let b = base.display();

    // `secops run` says what it applied.
    let out = sh(&daemon, "coder", "true");
    assert!(out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("secops run: landlock ABI"), "{stderr}");
    assert!(stderr.contains("TCP not handled"), "{stderr}");

    // The plain agent shows that file modes alone allow each attack.
    expect(
        &daemon,
        "plain",
        &format!("rm {b}/protected/plain-victim && echo rc=0"),
        "rc=0",
    );

    // Delete, and rmdir of a protected tree's directory.
    expect(
        &daemon,
        "coder",
        &format!("rm -f {b}/protected/victim 2>&1; echo rc=$?"),
        "rc=1",
    );
    // Rename-over: a workspace file put in place of a protected one, and a protected file
    // renamed out.
    expect(
        &daemon,
        "coder",
        &format!("echo evil > x && mv -f x {b}/protected/target 2>&1; echo rc=$?"),
        "rc=1",
    );
    expect(
        &daemon,
        "coder",
        &format!("mv {b}/protected/victim ./stolen 2>&1; echo rc=$?"),
        "rc=1",
    );
    // Hardlink carry-out: a protected file and a secret linked into the workspace.
    expect(
        &daemon,
        "coder",
        &format!("ln {b}/protected/victim ./carried 2>&1; echo rc=$?"),
        "rc=1",
    );
    expect(
        &daemon,
        "coder",
        &format!("ln {b}/secrets/key ./key 2>&1; echo rc=$?"),
        "rc=1",
    );
    // Truncate, and O_TRUNC through the shell's `>`.
    expect(
        &daemon,
        "coder",
        &format!("truncate -s 0 {b}/protected/victim 2>&1; echo rc=$?"),
        "rc=1",
    );
    expect(
        &daemon,
        "coder",
        &format!("(: > {b}/protected/victim) 2>&1; echo rc=$?"),
        "rc=2",
    );
    // Secret read, directly and through /proc/self/fd of an O_PATH descriptor.
    expect(
        &daemon,
        "coder",
        &format!("cat {b}/secrets/key 2>&1; echo rc=$?"),
        "rc=1",
    );
    let reopen = format!(
        "{PYTHON} -c \"import os\nfd = os.open('{b}/secrets/key', os.O_PATH)\ntry:\n    \
         open('/proc/self/fd/%d' % fd).read(); print('read')\nexcept PermissionError:\n    \
         print('refused')\""
    );
    expect(&daemon, "plain", &reopen, "read");
    expect(&daemon, "coder", &reopen, "refused");
    for file in ["protected/victim", "protected/target", "secrets/key"] {
        assert_eq!(
            std::fs::read_to_string(base.join(file)).unwrap(),
            "precious\n",
            "{file} was changed"
        );
    }
    assert!(!base.join("ws/carried").exists() && !base.join("ws/key").exists());

    // A denied binary does not run; through the dynamic loader it does (Landlock judges
    // execve, not the loader's mmap: the limit DESIGN-NOTES names).
    expect(
        &daemon,
        "plain",
        &format!("{b}/bin/denied; echo rc=$?"),
        "rc=0",
    );
    expect(
        &daemon,
        "coder",
        &format!("{b}/bin/denied 2>&1; echo rc=$?"),
        "rc=126",
    );
    expect(
        &daemon,
        "coder",
        &format!("/lib64/ld-linux-x86-64.so.2 {b}/bin/denied; echo rc=$?"),
        "rc=0",
    );
    // Grants are on inodes: a copy made beside it gets no exec right, and the binary renamed
    // keeps having none.
    expect(
        &daemon,
        "coder",
        &format!("cp {b}/bin/denied {b}/bin/copied && {b}/bin/copied 2>&1; echo rc=$?"),
        "rc=126",
    );
    expect(
        &daemon,
        "coder",
        &format!("mv {b}/bin/denied {b}/bin/renamed && {b}/bin/renamed 2>&1; echo rc=$?"),
        "rc=126",
    );

    // An escalation is a denial on this layer.
    expect(
        &daemon,
        "coder",
        &format!("rm -f {b}/asked/victim 2>&1; echo rc=$?"),
        "rc=1",
    );
    assert!(base.join("asked/victim").exists());

    // Signals: a process of the same user outside the agent, and the daemon.
    let outsider = Started(
        Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "sleep",
                "60",
            ])
            .spawn()
            .unwrap(),
    );
    let pid = outsider.0.id();
    // Until setpriv has changed its uid and exec'd, it is root's process.
    let started = std::time::Instant::now();
    while !std::fs::read_to_string(format!("/proc/{pid}/status"))
        .is_ok_and(|s| s.contains("Name:\tsleep") && s.contains("Uid:\t65534"))
    {
        assert!(
            started.elapsed().as_secs() < 10,
            "the outsider did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    expect_as_nobody(&format!("kill -0 {pid} && echo rc=0"), "rc=0");
    expect(
        &daemon,
        "coder",
        &format!("kill -0 {pid} 2>/dev/null; echo rc=$?"),
        "rc=1",
    );
    let daemon_pid = status["pid"].as_u64().unwrap();
    expect(
        &daemon,
        "coder",
        &format!("kill -TERM {daemon_pid} 2>/dev/null; echo rc=$?"),
        "rc=1",
    );
    // Abstract unix sockets outside the domain.
    let name = format!("secops-ll-{}", unique_name());
    let abstract_listener = {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        std::os::unix::net::UnixListener::bind_addr(&addr).unwrap()
    };
    let connect = format!(
        "{PYTHON} -c \"import socket\ns = socket.socket(socket.AF_UNIX)\ntry:\n    \
         s.connect(b'\\\\0{name}'); print('connected')\nexcept PermissionError:\n    \
         print('refused')\""
    );
    expect_as_nobody(&connect, "connected");
    expect(&daemon, "coder", &connect, "refused");
    // TCP: where the cgroup egress programs enforce (here), Landlock leaves TCP to them, so
    // the refusal is theirs (EPERM) and audited; the allowlist's port is reached.
    let tcp = |port: u16| {
        format!(
            "{PYTHON} -c \"import socket, errno\ns = socket.socket()\ntry:\n    \
             s.connect(('127.0.0.1', {port})); print('connected')\nexcept OSError as e:\n    \
             print(errno.errorcode[e.errno])\""
        )
    };
    expect(&daemon, "coder", &tcp(allowed_port), "connected");
    expect(&daemon, "coder", &tcp(refused_port), "EPERM");
    drop((allowed, refused));

    // The tracepoint's record of the refused delete says Landlock blocked it.
    let victim = format!("{b}/protected/victim");
    let records = daemon.wait_for_records(1, "the refused delete", |r| {
        r["action"] == "fs:delete" && r["object"]["value"] == victim.as_str()
    });
    let record = &records[0];
    assert_eq!(record["verdict"], "deny", "{record:#}");
    assert_eq!(record["rule_id"], "protected.tree", "{record:#}");
    let reason = record["reason"].as_str().unwrap();
    assert!(reason.contains("denied by Landlock"), "{reason}");
    assert!(!reason.contains("NOT blocked"), "{reason}");
    let asked = format!("{b}/asked/victim");
    let records = daemon.wait_for_records(1, "the refused escalated delete", |r| {
        r["action"] == "fs:delete" && r["object"]["value"] == asked.as_str()
    });
    assert!(
        records[0]["reason"]
            .as_str()
            .unwrap()
            .contains("cannot be widened"),
        "{:#}",
        records[0]
    );

    // `secops status` per agent.
    let status = daemon.status().unwrap();
    let coder = status["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "coder")
        .unwrap();
    assert!(
        coder["landlock"]
            .as_str()
            .unwrap()
            .contains("approvals cannot widen"),
        "{coder:#}"
    );
    drop(abstract_listener);
}

#[test]
fn benign_workspace_work_succeeds_under_the_layer() {
    if !landlock_runs_here("benign_workspace_work_succeeds_under_the_layer") {
        return;
    }
    let base = std::env::temp_dir().join(format!("secops-ll-{}", unique_name()));
    let _tree = Tree(base.clone());
    make_tree(&base);
    let daemon = Daemon::start(
        &Binaries {
            secops: SECOPS.into(),
            probe: NETPROBE.into(),
        },
        &policy(&base, 1),
    );
    if capability(&daemon.status().unwrap(), "lsm")["active"] == true {
        eprintln!("skipped: BPF LSM enforces files on this kernel; Landlock stands by");
        return;
    }
    let script = "set -e
        mkdir -p src/a src/b
        echo one > src/a/f.txt
        echo two >> src/a/f.txt
        mv src/a/f.txt src/b/g.txt
        ln src/b/g.txt src/b/h.txt
        : > src/b/h.txt
        rm src/b/g.txt src/b/h.txt
        rmdir src/a
        printf 'int main(void){return 0;}\\n' > m.c
        TMPDIR=$PWD cc -o m m.c
        ./m
        export HOME=$PWD GIT_CONFIG_NOSYSTEM=1
        git init -q repo
        cd repo
        echo hi > README
        git add README
        git -c user.name=a -c user.email=a@example.com commit -q -m first
        git log --oneline | wc -l
        echo done";
    let out = sh(&daemon, "coder", script);
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("done"),
        "{}",
        text(&out)
    );
}
