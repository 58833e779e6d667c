//! The kill switch and live autonomy on this kernel: real agents (started with `secops run`)
//! in real cgroups, frozen, thawed and killed through the CLI and the daemon's API; autonomy
//! changed by a person and lowered by repeated denials, seen in the engine's verdicts and in
//! the kernel's agents map; every change (and every refused attempt) in the audit log.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use secops_common::kernel::{AUTONOMY_FULL, AUTONOMY_SEMI, AUTONOMY_SUPERVISED};
use secops_host_tests::daemon::{Binaries, Daemon};
use secops_host_tests::kernel::need_root;
use secops_host_tests::openapi::OpenApi;
use serde_json::Value;

const SECOPS: &str = env!("CARGO_BIN_EXE_secops-under-test");
const NETPROBE: &str = env!("CARGO_BIN_EXE_secops-netprobe");
const APIPROBE: &str = env!("CARGO_BIN_EXE_secops-apiprobe");

const POLICY: &str = "version: 1
agents:
  - name: spin
    workspace: /tmp
    user: root
    autonomy: semi
  - name: idle
    workspace: /tmp
    user: root
    autonomy: semi
  - name: clumsy
    workspace: /tmp
    user: root
    autonomy: full
    auto_lower: {denials: 3, within: 1m}
rules:
  - id: no-force-push
    actions: [vcs:force_push]
    verdict: deny
    risk: high
";

/// nobody:nogroup on Debian.
const NOBODY: u32 = 65534;

/// A daemon whose socket nobody:nogroup may use (as a user that is not an admin).
fn start() -> Daemon {
    Daemon::start_with(
        &Binaries {
            secops: SECOPS.into(),
            probe: NETPROBE.into(),
        },
        POLICY,
        &["--socket-gid", "65534"],
    )
}

/// `secops ARGS --socket S` as this test process (root, outside every agent cgroup: an admin).
fn cli(daemon: &Daemon, args: &[&str]) -> Output {
    daemon
        .secops()
        .args(args)
        .arg("--socket")
        .arg(daemon.socket())
        .output()
        .unwrap()
}

fn cli_ok(daemon: &Daemon, args: &[&str]) -> String {
    let out = cli(daemon, args);
    assert!(
        out.status.success(),
        "secops {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        daemon.log()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn agents(daemon: &Daemon) -> Vec<Value> {
    serde_json::from_str(&cli_ok(daemon, &["agents", "list", "--json"])).unwrap()
}

fn agent(daemon: &Daemon, name: &str) -> Value {
    agents(daemon)
        .into_iter()
        .find(|a| a["name"] == name)
        .unwrap_or_else(|| panic!("no agent {name}"))
}

fn cgroup_of(daemon: &Daemon, name: &str) -> PathBuf {
    PathBuf::from(agent(daemon, name)["cgroup"].as_str().unwrap())
}

fn procs(cgroup: &Path) -> Vec<u32> {
    std::fs::read_to_string(cgroup.join("cgroup.procs"))
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect()
}

fn wait_for_procs(cgroup: &Path, n: usize) -> Vec<u32> {
    let started = Instant::now();
    loop {
        let pids = procs(cgroup);
        if pids.len() >= n {
            return pids;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{} has {} processes, expected {n}",
            cgroup.display(),
            pids.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// CPU time (user + system, clock ticks) the processes have used.
fn cpu_ticks(pids: &[u32]) -> u64 {
    pids.iter()
        .map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
            let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
            let fields: Vec<&str> = after_comm.split(' ').collect();
            // utime and stime are fields 14 and 15 of stat; after "pid (comm) " the 12th, 13th.
            fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
        })
        .sum()
}

/// A busy agent: a shell spinning, and a sleeping child of it.
fn spinner(daemon: &Daemon, name: &str) -> Child {
    daemon
        .agent_program(
            name,
            Path::new("/bin/sh"),
            &["-c", "sleep 1000 & while :; do :; done"],
        )
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

/// One request from inside `agent`'s cgroup, checked against the OpenAPI document.
fn agent_request(daemon: &Daemon, agent: &str, path: &str, body: &str, doc: &str) -> (u16, Value) {
    let line = daemon.api_probe(
        Path::new(APIPROBE),
        agent,
        "request",
        &daemon.socket(),
        &["POST", path, body],
    );
    let (status, body) = line.split_once(' ').unwrap();
    OpenApi::load().check_response("POST", doc, status.parse().unwrap(), body);
    (status.parse().unwrap(), serde_json::from_str(body).unwrap())
}

fn check(daemon: &Daemon, agent: &str, action: &str) -> String {
    let body = format!("{{\"action\": \"{action}\"}}");
    let (status, answer) = agent_request(daemon, agent, "/v1/check", &body, "/v1/check");
    assert_eq!(status, 200, "{answer}");
    answer["verdict"].as_str().unwrap().to_owned()
}

/// The autonomy code in the kernel's agents map for the agent's cgroup.
fn kernel_autonomy(daemon: &Daemon, name: &str) -> u8 {
    let cgroup_id = agent(daemon, name)["cgroup_id"].as_u64().unwrap();
    let maps = secops_daemon::kernel::KernelMaps::open(&daemon.pin_dir()).unwrap();
    maps.agents()
        .unwrap()
        .into_iter()
        .find(|(id, _)| *id == cgroup_id)
        .map(|(_, entry)| entry.autonomy)
        .unwrap_or_else(|| panic!("no kernel entry for {name}"))
}

fn records_of(daemon: &Daemon, action: &str, agent: &str) -> Vec<Value> {
    daemon
        .records()
        .into_iter()
        .filter(|r| r["action"] == action && r["agent"] == agent)
        .collect()
}

fn reasons(records: &[Value]) -> Vec<String> {
    records
        .iter()
        .map(|r| r["reason"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn freeze_stops_a_busy_agent_thaw_resumes_it_and_kill_leaves_no_process() {
    if !need_root("freeze_stops_a_busy_agent_thaw_resumes_it_and_kill_leaves_no_process") {
        return;
    }
    let daemon = start();
    let cgroup = cgroup_of(&daemon, "spin");
    let mut child = spinner(&daemon, "spin");
    let pids = wait_for_procs(&cgroup, 2);
    std::thread::sleep(Duration::from_millis(300));
    assert!(cpu_ticks(&pids) > 0, "the agent does not spin");

    let shown = cli_ok(
        &daemon,
        &["agents", "freeze", "spin", "--reason", "looks stuck"],
    );
    assert!(shown.contains("FROZEN"), "{shown}");
    assert_eq!(agent(&daemon, "spin")["frozen"], true);
    assert_eq!(agent(&daemon, "spin")["processes"], 2);
    let frozen_at = cpu_ticks(&pids);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(cpu_ticks(&pids), frozen_at, "a frozen agent used CPU");

    cli_ok(&daemon, &["agents", "thaw", "spin"]);
    assert_eq!(agent(&daemon, "spin")["frozen"], false);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        cpu_ticks(&pids) > frozen_at + 10,
        "a thawed agent did not run again"
    );

    cli_ok(&daemon, &["agents", "kill", "spin"]);
    // The kill waited for the kernel to report the cgroup empty: nothing to poll for.
    assert_eq!(procs(&cgroup), Vec::<u32>::new());
    assert_eq!(agent(&daemon, "spin")["processes"], 0);
    let status = child.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
    for pid in &pids {
        // Gone, or a zombie waiting for its new parent to reap it: not running either way.
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            let state = stat[stat.rfind(')').unwrap() + 2..].chars().next();
            assert_eq!(state, Some('Z'), "pid {pid} survived the kill: {stat}");
        }
    }

    let records = records_of(&daemon, "sys:cgroup", "spin");
    let said = reasons(&records);
    assert_eq!(records.len(), 3, "{said:#?}");
    assert!(said[0].starts_with("agent frozen by pid "), "{said:?}");
    assert!(said[0].ends_with("(admin): looks stuck"), "{said:?}");
    assert!(said[1].starts_with("agent thawed by"), "{said:?}");
    assert!(said[2].starts_with("agent killed"), "{said:?}");
    for r in &records {
        assert_eq!(r["verdict"], "allow");
        assert_eq!(r["source"], "api");
        assert_eq!(r["uid"], 0);
        assert_eq!(r["object"]["value"], cgroup.display().to_string());
    }

    // An agent nobody defined: a precise 404, exit 3.
    let out = cli(&daemon, &["agents", "kill", "nosuch"]);
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no agent named \"nosuch\" (the daemon runs: clumsy, idle, spin)"),
        "{err}"
    );
}

#[test]
fn stop_all_freezes_every_agent_and_agents_cannot_use_the_kill_switch() {
    if !need_root("stop_all_freezes_every_agent_and_agents_cannot_use_the_kill_switch") {
        return;
    }
    let daemon = start();
    let spin = cgroup_of(&daemon, "spin");
    let idle = cgroup_of(&daemon, "idle");
    let mut a = spinner(&daemon, "spin");
    let mut b = spinner(&daemon, "idle");
    let pids: Vec<u32> = [wait_for_procs(&spin, 2), wait_for_procs(&idle, 2)].concat();

    // An agent may not freeze another, stop everyone, or raise its own autonomy.
    for (path, doc) in [
        ("/v1/agents/spin/freeze", "/v1/agents/{name}/freeze"),
        ("/v1/agents/spin/kill", "/v1/agents/{name}/kill"),
        ("/v1/stop-all", "/v1/stop-all"),
    ] {
        let (status, answer) = agent_request(&daemon, "clumsy", path, "", doc);
        assert_eq!(status, 403, "{path}: {answer}");
        assert!(
            answer["error"]
                .as_str()
                .unwrap()
                .contains("inside an agent cgroup"),
            "{answer}"
        );
    }
    let (status, _) = agent_request(
        &daemon,
        "clumsy",
        "/v1/agents/clumsy/autonomy",
        "{\"level\": \"full\"}",
        "/v1/agents/{name}/autonomy",
    );
    assert_eq!(status, 403);
    // Nor may a user outside every agent cgroup who is not an admin.
    use std::os::unix::process::CommandExt;
    let out = Command::new(APIPROBE)
        .arg("request")
        .arg(daemon.socket())
        .args(["POST", "/v1/agents/spin/freeze", ""])
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&out.stdout);
    assert!(line.starts_with("403 "), "nobody froze an agent: {line}");
    assert!(
        line.contains("neither root nor in the daemon's admin group"),
        "{line}"
    );
    let by_nobody: Vec<Value> = daemon
        .records()
        .into_iter()
        .filter(|r| r["action"] == "sys:cgroup" && r["uid"] == NOBODY)
        .collect();
    assert_eq!(by_nobody.len(), 1, "{by_nobody:#?}");
    assert_eq!(by_nobody[0]["verdict"], "deny");
    assert_eq!(by_nobody[0]["agent"], Value::Null);
    assert!(by_nobody[0]["reason"]
        .as_str()
        .unwrap()
        .contains(&format!("uid {NOBODY} freeze agent \"spin\"")));

    assert_eq!(agent(&daemon, "spin")["frozen"], false);
    let refused = records_of(&daemon, "sys:cgroup", "clumsy");
    let said = reasons(&refused);
    assert_eq!(refused.len(), 3, "{said:#?}");
    assert!(
        said[0].contains("(agent clumsy) freeze agent \"spin\""),
        "{said:?}"
    );
    assert!(said[2].contains("stop every agent"), "{said:?}");
    let refused_autonomy = records_of(&daemon, "sys:autonomy", "clumsy");
    assert_eq!(refused_autonomy.len(), 1);
    assert!(
        reasons(&refused_autonomy)[0].contains("change the autonomy of agent \"clumsy\""),
        "{refused_autonomy:?}"
    );
    for r in refused.iter().chain(&refused_autonomy) {
        assert_eq!(r["verdict"], "deny");
        assert!(r["reason"]
            .as_str()
            .unwrap()
            .starts_with("refused to let pid "));
    }

    let out = cli_ok(&daemon, &["stop-all", "--reason", "incident 42"]);
    assert_eq!(out.matches("FROZEN").count(), 3, "{out}");
    for a in agents(&daemon) {
        assert_eq!(a["frozen"], true, "{a}");
    }
    let frozen_at = cpu_ticks(&pids);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(cpu_ticks(&pids), frozen_at, "a frozen agent used CPU");
    for name in ["spin", "idle", "clumsy"] {
        let said = reasons(&records_of(&daemon, "sys:cgroup", name));
        assert!(
            said.iter()
                .any(|r| r.starts_with("stop-all: agent frozen by pid ")
                    && r.ends_with("(admin): incident 42")),
            "{name}: {said:?}"
        );
    }
    cli_ok(&daemon, &["agents", "thaw", "spin"]);
    assert_eq!(agent(&daemon, "spin")["frozen"], false);
    assert_eq!(agent(&daemon, "idle")["frozen"], true);

    // A frozen agent can be killed; it stays frozen (new processes start frozen) until thawed.
    for name in ["spin", "idle"] {
        cli_ok(&daemon, &["agents", "kill", name]);
    }
    assert!(procs(&spin).is_empty() && procs(&idle).is_empty());
    assert_eq!(agent(&daemon, "idle")["frozen"], true);
    for child in [&mut a, &mut b] {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGKILL));
    }
}

#[test]
fn set_autonomy_changes_verdicts_and_the_kernel_entry_and_survives_reload_and_restart() {
    if !need_root(
        "set_autonomy_changes_verdicts_and_the_kernel_entry_and_survives_reload_and_restart",
    ) {
        return;
    }
    let mut daemon = start();
    // comms:send is medium risk by default: semi allows it, supervised asks a human.
    assert_eq!(check(&daemon, "spin", "comms:send"), "allow");
    assert_eq!(kernel_autonomy(&daemon, "spin"), AUTONOMY_SEMI);

    let out = cli_ok(
        &daemon,
        &[
            "agents",
            "set-autonomy",
            "spin",
            "supervised",
            "--reason",
            "new hire",
        ],
    );
    assert_eq!(
        out.trim(),
        "spin: autonomy semi -> supervised (overrides the policy until changed again)"
    );
    assert_eq!(check(&daemon, "spin", "comms:send"), "escalate");
    assert_eq!(kernel_autonomy(&daemon, "spin"), AUTONOMY_SUPERVISED);
    let shown = agent(&daemon, "spin");
    assert_eq!(shown["autonomy"], "supervised");
    assert_eq!(shown["policy_autonomy"], "semi");
    assert_eq!(shown["autonomy_override"]["reason"], "new hire");
    let status = cli_ok(&daemon, &["status"]);
    assert!(status.contains("supervised (policy: semi)"), "{status}");
    let said = reasons(&records_of(&daemon, "sys:autonomy", "spin"));
    assert_eq!(said.len(), 1);
    assert!(
        said[0].starts_with("autonomy semi -> supervised, set by pid "),
        "{said:?}"
    );
    assert!(said[0].ends_with("(admin): new hire"), "{said:?}");

    // A reload through the API, and a changed policy file (the watcher and SIGHUP): the
    // override stays in force over the file.
    let reloaded: Value = daemon
        .admin_client()
        .post("/v1/reload", &serde_json::json!({}))
        .unwrap();
    assert!(reloaded["policy_files"].is_array());
    let policy_file = daemon.dir.join("policy.yaml");
    std::fs::write(
        &policy_file,
        POLICY.replace(
            "autonomy: semi\n  - name: idle",
            "autonomy: full\n  - name: idle",
        ),
    )
    .unwrap();
    daemon.signal(libc::SIGHUP);
    let started = Instant::now();
    while agent(&daemon, "spin")["policy_autonomy"] != "full" {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(agent(&daemon, "spin")["autonomy"], "supervised");
    assert_eq!(check(&daemon, "spin", "comms:send"), "escalate");
    assert_eq!(kernel_autonomy(&daemon, "spin"), AUTONOMY_SUPERVISED);

    // A restarted daemon: still overridden, in the engine and in the kernel.
    daemon.kill_and_wait();
    daemon.spawn();
    assert_eq!(agent(&daemon, "spin")["autonomy"], "supervised");
    assert_eq!(check(&daemon, "spin", "comms:send"), "escalate");
    assert_eq!(kernel_autonomy(&daemon, "spin"), AUTONOMY_SUPERVISED);

    // Back to what the (edited) policy says.
    let out = cli_ok(&daemon, &["agents", "set-autonomy", "spin", "policy"]);
    assert_eq!(
        out.trim(),
        "spin: autonomy supervised -> full (the policy's level)"
    );
    assert_eq!(agent(&daemon, "spin")["autonomy_override"], Value::Null);
    assert_eq!(kernel_autonomy(&daemon, "spin"), AUTONOMY_FULL);

    // Mistakes are precise, and change nothing.
    let out = cli(&daemon, &["agents", "set-autonomy", "spin", "root"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("field `level`: \"root\""));
    let out = cli(&daemon, &["agents", "set-autonomy", "nosuch", "locked"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no agent named \"nosuch\""));

    // A corrupt overrides file stops the daemon from starting, naming the file: never a
    // silent return to the policy's (higher) levels.
    cli_ok(&daemon, &["agents", "set-autonomy", "spin", "locked"]);
    daemon.kill_and_wait();
    let file = daemon.dir.join("state").join("autonomy.json");
    std::fs::write(&file, "{\"version\": 1, \"agents\": {\"spin\": ").unwrap();
    let out = Command::new(SECOPS)
        .arg("--state-dir")
        .arg(daemon.dir.join("state"))
        .args(["daemon", "--policy"])
        .arg(&policy_file)
        .arg("--socket")
        .arg(daemon.socket())
        .arg("--pin-dir")
        .arg(daemon.pin_dir())
        .args(["--cgroup-root", &daemon.name])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "the autonomy overrides {} are corrupt",
            file.display()
        )),
        "{err}"
    );
}

#[test]
fn repeated_denials_lower_autonomy_one_step_from_the_api_and_from_the_kernel() {
    if !need_root("repeated_denials_lower_autonomy_one_step_from_the_api_and_from_the_kernel") {
        return;
    }
    let daemon = start();
    assert_eq!(kernel_autonomy(&daemon, "clumsy"), AUTONOMY_FULL);
    // Through the API: three denials within the minute.
    for _ in 0..2 {
        assert_eq!(check(&daemon, "clumsy", "vcs:force_push"), "deny");
    }
    assert_eq!(agent(&daemon, "clumsy")["autonomy"], "full");
    assert_eq!(check(&daemon, "clumsy", "vcs:force_push"), "deny");
    // In force before the third denial was answered.
    let shown = agent(&daemon, "clumsy");
    assert_eq!(shown["autonomy"], "semi", "{shown}");
    assert_eq!(shown["autonomy_override"]["set_by"], "secops (automatic)");
    assert_eq!(kernel_autonomy(&daemon, "clumsy"), AUTONOMY_SEMI);
    // Full allowed high-risk actions; semi asks.
    assert_eq!(check(&daemon, "clumsy", "deploy:release"), "escalate");
    let said = reasons(&records_of(&daemon, "sys:autonomy", "clumsy"));
    assert_eq!(
        said,
        ["autonomy full -> semi, set by secops (automatic): lowered automatically: 3 denials within 1m"]
    );

    // The count started again: two more are not enough.
    assert_eq!(check(&daemon, "clumsy", "vcs:force_push"), "deny");
    assert_eq!(check(&daemon, "clumsy", "vcs:force_push"), "deny");
    assert_eq!(agent(&daemon, "clumsy")["autonomy"], "semi");

    // The kernel's denials count too: a connect outside the (empty) allowlist is the third.
    let out = daemon.agent("clumsy", &["tcp", "10.255.255.1:443"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("errno EPERM"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let records = daemon.wait_for_records(2, "automatic lowerings", |r| {
        r["action"] == "sys:autonomy" && r["agent"] == "clumsy"
    });
    assert_eq!(records[1]["source"], "kernel");
    assert!(records[1]["reason"]
        .as_str()
        .unwrap()
        .starts_with("autonomy semi -> supervised, set by secops (automatic)"));
    assert_eq!(agent(&daemon, "clumsy")["autonomy"], "supervised");
    assert_eq!(kernel_autonomy(&daemon, "clumsy"), AUTONOMY_SUPERVISED);

    // Only a person raises it again.
    cli_ok(&daemon, &["agents", "set-autonomy", "clumsy", "full"]);
    assert_eq!(kernel_autonomy(&daemon, "clumsy"), AUTONOMY_FULL);
    // The person's judgement restarts the count.
    assert_eq!(check(&daemon, "clumsy", "vcs:force_push"), "deny");
    assert_eq!(check(&daemon, "clumsy", "vcs:force_push"), "deny");
    assert_eq!(agent(&daemon, "clumsy")["autonomy"], "full");
}
