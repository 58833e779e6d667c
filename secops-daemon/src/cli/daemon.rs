//! `secops daemon`, `secops status`, `secops run`, `secops teardown`.

use std::ffi::OsString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::anyhow;
use clap::Args;

use crate::api::client::{Client, ClientError, Connected};
use crate::api::{Registered, StatusReport, DEFAULT_SOCKET};
use crate::daemon::{self, ApiLimits, DaemonOptions};
use crate::kernel::DEFAULT_RING_BUFFER_BYTES;
use crate::launcher::{run_in_agent_or_exit, Account, AskHandoff, Launch, EXIT_LAUNCH_FAILED};

const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/secops";
const DEFAULT_CGROUP_ROOT: &str = "secops";

#[derive(Debug, Args)]
pub struct SocketArg {
    /// The daemon's API socket.
    #[arg(long, env = "SECOPS_SOCKET", default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
}

impl SocketArg {
    pub fn client(&self) -> Client {
        Client::new(&self.socket, Duration::from_secs(10))
    }
}

#[derive(Debug, Args)]
pub struct KernelPlaceArgs {
    /// The bpffs directory where programs, links and maps are pinned (bpffs is mounted at
    /// /sys/fs/bpf if nothing is).
    #[arg(long, env = "SECOPS_PIN_DIR", default_value = DEFAULT_PIN_DIR)]
    pub pin_dir: PathBuf,
    /// The name of the secops root cgroup, directly below the cgroup2 mount; agent cgroups
    /// are made below it.
    #[arg(long, env = "SECOPS_CGROUP_ROOT", default_value = DEFAULT_CGROUP_ROOT)]
    pub cgroup_root: String,
}

#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// The policy to enforce. Reloaded on SIGHUP and when it (or a file it includes) changes;
    /// a new policy that does not validate leaves the old one in force.
    #[arg(long, env = "SECOPS_POLICY", default_value = "/etc/secops/policy.yaml")]
    pub policy: PathBuf,
    /// Where every signed audit checkpoint is also sent: `file:/PATH` (append-only, outside
    /// the state directory), `syslog+tcp://HOST:PORT` (RFC 5424) or `http://HOST:PORT/PATH`
    /// (`secops audit witness-serve`). Repeatable. `secops audit verify --witness` checks the
    /// log against them.
    #[arg(long = "audit-witness")]
    pub audit_witness: Vec<crate::audit::witness::WitnessSpec>,
    #[command(flatten)]
    pub socket: SocketArg,
    /// The group allowed to connect to the API socket (a name or a gid; the socket is mode
    /// 0660). Agents that use the API must run as users in it. Identity and rights come from
    /// the caller's cgroup and credentials, not from being able to connect.
    #[arg(long, default_value = "0", value_parser = group_id)]
    pub socket_gid: u32,
    /// Callers outside every agent cgroup that are root or in this group (a name or a gid) are
    /// admins: status, reload, approvals, agents, audit and metrics routes.
    #[arg(long, default_value = "0", value_parser = group_id)]
    pub admin_gid: u32,
    /// API connections served at once for all callers but the admins together; more wait
    /// for a turn (up to --api-agent-queue per agent).
    #[arg(long, default_value_t = ApiLimits::default().max_connections)]
    pub api_max_connections: usize,
    /// API connections served at once for one agent (or one non-admin user), so one agent
    /// cannot take the connections the others need.
    #[arg(long, default_value_t = ApiLimits::default().agent_connections)]
    pub api_agent_connections: usize,
    /// Connections of one agent (or non-admin user) accepted and waiting for a turn; further
    /// ones are answered 429 and closed at once.
    #[arg(long, default_value_t = ApiLimits::default().agent_queue)]
    pub api_agent_queue: usize,
    /// API connections reserved for admins (root or --admin-gid, outside every agent
    /// cgroup): status, approvals and the kill switch answer however busy the agents keep
    /// the API.
    #[arg(long, default_value_t = ApiLimits::default().admin_connections)]
    pub api_admin_connections: usize,
    /// Requests a second one agent (or non-admin user) may make, with bursts of twice as
    /// many; past that requests are answered 429 with retry-after.
    #[arg(long, default_value_t = ApiLimits::default().agent_rate)]
    pub api_agent_rate: u32,
    /// Time a client has to send a request's headers (and the idle limit of a kept-alive
    /// connection), e.g. `5s`.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub api_header_timeout: Duration,
    /// Time a whole request may take, body included, e.g. `10s`; slower requests get 408.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub api_request_timeout: Duration,
    /// Largest request body (bytes) of every route except /v1/scan.
    #[arg(long, default_value_t = ApiLimits::default().max_body_bytes)]
    pub api_max_body_bytes: usize,
    /// Largest /v1/scan request body (bytes).
    #[arg(long, default_value_t = ApiLimits::default().max_scan_bytes)]
    pub api_max_scan_bytes: usize,
    /// Also serve /metrics (Prometheus text format, no authentication) on this loopback
    /// address, e.g. 127.0.0.1:9464. On the socket, /metrics is for admins.
    #[arg(long)]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Webhooks told when an approval ticket is opened or decided (YAML: `webhooks: [{url,
    /// format: json|slack, secret_file, events, timeout, retries, backoff}]`). Read at start;
    /// none when the file does not exist; one that does not parse stops the daemon.
    #[arg(
        long,
        env = "SECOPS_NOTIFICATIONS",
        default_value = "/etc/secops/notifications.yaml"
    )]
    pub notifications: PathBuf,
    #[command(flatten)]
    pub kernel: KernelPlaceArgs,
    /// Size of the event ring buffer in KiB (a power of two, at least 4). An adopted, pinned
    /// ring buffer keeps the size it was made with. Bursts larger than the ring wait in a
    /// userspace queue; past both, the kernel counts what it drops and the loss is audited.
    #[arg(long, default_value_t = DEFAULT_RING_BUFFER_BYTES >> 10)]
    pub ring_buffer_kib: u32,
    /// Seconds between checks of the policy files for changes.
    #[arg(long, default_value_t = 1)]
    pub watch_secs: u64,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The agent, by its name in the daemon's policy.
    #[arg(long)]
    pub agent: String,
    #[command(flatten)]
    pub socket: SocketArg,
    /// Ask before acting: deletes, renames, execs and connects of the command (and
    /// everything it starts) wait in the kernel while the daemon judges them; one the policy
    /// escalates waits for a human's decision (bounded by the policy's approval timeout),
    /// then continues or fails with EPERM. The kernel's own checks still apply after an
    /// approval, to the object the daemon resolved.
    #[arg(long)]
    pub ask: bool,
    /// The command and its arguments.
    #[arg(required = true, last = true)]
    pub command: Vec<OsString>,
}

/// A group by gid or by name (the package's `secops` group), looked up through NSS.
fn group_id(text: &str) -> Result<u32, String> {
    if let Ok(gid) = text.parse::<u32>() {
        return Ok(gid);
    }
    let name = std::ffi::CString::new(text).map_err(|_| format!("{text:?} is not a group name"))?;
    // SAFETY: `group` is plain old data, for which all zeroes is a valid value.
    let mut group: libc::group = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::group = std::ptr::null_mut();
    let mut buffer = vec![0 as libc::c_char; 16 << 10];
    // SAFETY: getgrnam_r writes only into `group` and `buffer` (whose length it is given) and
    // sets `found` to `&group` or null.
    let rc = unsafe {
        libc::getgrnam_r(
            name.as_ptr(),
            &mut group,
            buffer.as_mut_ptr(),
            buffer.len(),
            &mut found,
        )
    };
    if rc != 0 {
        return Err(format!(
            "looking up group {text:?}: {}",
            std::io::Error::from_raw_os_error(rc)
        ));
    }
    if found.is_null() {
        return Err(format!("no group named {text:?}"));
    }
    Ok(group.gr_gid)
}

pub fn run_daemon(args: DaemonArgs, state_dir: &Path) -> anyhow::Result<u8> {
    let ring_buffer_bytes = args
        .ring_buffer_kib
        .checked_mul(1 << 10)
        .filter(|b| b.is_power_of_two() && *b >= 4096)
        .ok_or_else(|| anyhow!("--ring-buffer-kib must be a power of two from 4 to 2097152"))?;
    daemon::run(DaemonOptions {
        policy: args.policy,
        state_dir: state_dir.to_path_buf(),
        socket: args.socket.socket,
        socket_gid: args.socket_gid,
        admin_gid: args.admin_gid,
        api: ApiLimits {
            max_connections: args.api_max_connections.max(1),
            agent_connections: args.api_agent_connections.max(1),
            agent_queue: args.api_agent_queue,
            admin_connections: args.api_admin_connections.max(1),
            agent_rate: args.api_agent_rate.max(1),
            header_timeout: args.api_header_timeout,
            request_timeout: args.api_request_timeout,
            max_body_bytes: args.api_max_body_bytes,
            max_scan_bytes: args.api_max_scan_bytes,
        },
        metrics_listen: args.metrics_listen,
        notifications: args.notifications,
        pin_dir: args.kernel.pin_dir,
        cgroup_root: args.kernel.cgroup_root,
        ring_buffer_bytes,
        watch_interval: Duration::from_secs(args.watch_secs.max(1)),
        host_refresh: Duration::from_secs(30),
        audit_witnesses: args.audit_witness,
    })?;
    Ok(0)
}

/// Prints what the running daemon enforces; without a daemon, says so and what this kernel
/// could do.
pub fn status(socket: &SocketArg, json: bool) -> anyhow::Result<u8> {
    match socket.client().get::<StatusReport>("/v1/status") {
        Ok(report) => {
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!("{report}");
            }
            Ok(0)
        }
        Err(e @ ClientError::Refused { .. }) => Err(e.into()),
        Err(e) => {
            println!("daemon: NOT RUNNING ({e})");
            println!("nothing is enforced by secops now (pinned programs of an earlier daemon may still be).");
            println!("what this kernel supports:");
            for line in crate::kernel::probe().to_string().lines() {
                println!("  {line}");
            }
            Ok(1)
        }
    }
}

/// Asks the daemon for the agent's cgroup, then becomes the command inside it.
pub fn run_agent(args: RunArgs) -> anyhow::Result<u8> {
    let path = format!("/v1/agents/{}/register", args.agent);
    let registered: Result<Registered, _> =
        args.socket.client().post(&path, &serde_json::json!({}));
    let registered = match registered {
        Ok(registered) => registered,
        Err(e) => {
            eprintln!("secops run: {e}");
            return Ok(EXIT_LAUNCH_FAILED as u8);
        }
    };
    if !registered.identity_enforced {
        eprintln!(
            "secops run: warning: agent {} runs as root and no kernel layer (BPF LSM) holds it \
             in its cgroup on this host: its identity is not enforceable (it could leave its \
             cgroup and act as an admin). Give it its own `user:` in the policy.",
            registered.agent
        );
    }
    let account = Account::from(&registered.run_as);
    let launch = Launch {
        cgroup: &registered.cgroup,
        account: Some(&account),
        workspace: Some(&registered.workspace),
        create_workspace: registered.create_workspace,
        landlock: registered.landlock.as_ref(),
    };
    let (cmd, rest) = args
        .command
        .split_first()
        .ok_or_else(|| anyhow!("no command given"))?;
    let client = args.socket.client();
    let mut handoff = DaemonHandoff {
        client: &client,
        connection: None,
    };
    let ask = args.ask.then_some(&mut handoff as &mut dyn AskHandoff);
    run_in_agent_or_exit(&launch, cmd, rest, ask)
}

/// `--ask`: the listener goes to the daemon, which takes it from this process by pidfd (only
/// the number travels in the request) and serves it before answering.
struct DaemonHandoff<'a> {
    client: &'a Client,
    connection: Option<Connected<'a>>,
}

impl AskHandoff for DaemonHandoff<'_> {
    fn prepare(&mut self) -> Result<(), String> {
        self.connection = Some(self.client.connect_now().map_err(|e| e.to_string())?);
        Ok(())
    }

    fn hand_over(&mut self, listener: OwnedFd) -> Result<(), String> {
        let connection = self
            .connection
            .take()
            .ok_or("no connection to the daemon was prepared")?;
        let request = crate::api::AskRequest {
            fd: listener.as_raw_fd(),
        };
        let _: crate::api::AskAccepted = connection
            .post("/v1/ask", &request)
            .map_err(|e| e.to_string())?;
        // The daemon holds its own copy now; ours must not reach the command.
        drop(listener);
        Ok(())
    }
}

pub fn teardown(kernel: &KernelPlaceArgs) -> anyhow::Result<u8> {
    daemon::teardown(&kernel.pin_dir, &kernel.cgroup_root)?;
    println!(
        "unpinned {} and removed the empty secops cgroups below {}",
        kernel.pin_dir.display(),
        kernel.cgroup_root
    );
    Ok(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn groups_are_given_by_number_or_name() {
        assert_eq!(super::group_id("0"), Ok(0));
        assert_eq!(super::group_id("root"), Ok(0));
        assert_eq!(super::group_id("1234567"), Ok(1234567));
        assert!(super::group_id("no-such-group-here")
            .unwrap_err()
            .contains("no group named"));
    }
}
