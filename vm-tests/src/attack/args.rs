//! The command line of `secops-attack run`. Every option is required (a missing fixture is
//! the caller's mistake, better refused than reported as a dozen ERROR lines).

use std::ffi::OsString;
use std::path::PathBuf;

pub const USAGE: &str = "usage: secops-attack run --workspace DIR --protected DIR --secret FILE \
--prelinked-secret FILE --denied-binary FILE --allowed-binary FILE --daemon-pid PID \
--bpf-pin FILE --foreign-procs FILE --blocked-port PORT --allowed-port PORT --victim-pid PID \
--policy-file FILE --state-dir DIR [--only NAME,...]
       secops-attack list      (the attack and benign names, in order)
       secops-attack marker    (prints the marker line; what the exec attacks try to run)";

#[derive(Clone, Debug)]
pub struct Args {
    pub workspace: PathBuf,
    pub protected: PathBuf,
    pub secret: PathBuf,
    pub prelinked_secret: PathBuf,
    pub denied_binary: PathBuf,
    pub allowed_binary: PathBuf,
    pub daemon_pid: libc::pid_t,
    pub bpf_pin: PathBuf,
    pub foreign_procs: PathBuf,
    /// The daemon's policy file and state directory: what the mount and rename attacks aim at.
    pub policy_file: PathBuf,
    pub state_dir: PathBuf,
    /// A process outside the agent's cgroup that is not the daemon.
    pub victim_pid: libc::pid_t,
    pub blocked_port: u16,
    pub allowed_port: u16,
    pub only: Option<Vec<String>>,
}

/// Parses what follows `run`.
pub fn parse(argv: &[OsString]) -> Result<Args, String> {
    let mut paths: [Option<PathBuf>; 10] = Default::default();
    const PATH_OPTS: [&str; 10] = [
        "--workspace",
        "--protected",
        "--secret",
        "--prelinked-secret",
        "--denied-binary",
        "--allowed-binary",
        "--bpf-pin",
        "--foreign-procs",
        "--policy-file",
        "--state-dir",
    ];
    let (mut pid, mut victim, mut blocked, mut allowed, mut only) = (None, None, None, None, None);
    let mut it = argv.iter();
    while let Some(opt) = it.next() {
        let opt = opt
            .to_str()
            .ok_or_else(|| format!("unknown argument {opt:?}"))?;
        let value = it
            .next()
            .ok_or_else(|| format!("{opt} needs a value"))?
            .clone();
        let text = || {
            value
                .to_str()
                .map(str::to_owned)
                .ok_or_else(|| format!("{opt}: not UTF-8"))
        };
        if let Some(i) = PATH_OPTS.iter().position(|p| *p == opt) {
            paths[i] = Some(PathBuf::from(value.clone()));
            continue;
        }
        match opt {
            "--daemon-pid" => {
                let p: libc::pid_t = text()?.parse().map_err(|e| format!("--daemon-pid: {e}"))?;
                // kill(0) or kill(-1) would signal our own process group or every process;
                // pid 1 and ourselves are never the daemon.
                // SAFETY: getpid has no preconditions.
                if p <= 1 || p == unsafe { libc::getpid() } {
                    return Err(format!("--daemon-pid {p}: not a daemon's pid"));
                }
                pid = Some(p);
            }
            "--victim-pid" => {
                let p: libc::pid_t = text()?.parse().map_err(|e| format!("--victim-pid: {e}"))?;
                // SAFETY: getpid has no preconditions.
                if p <= 1 || p == unsafe { libc::getpid() } {
                    return Err(format!("--victim-pid {p}: not another process"));
                }
                victim = Some(p);
            }
            "--blocked-port" => blocked = Some(port(opt, &text()?)?),
            "--allowed-port" => allowed = Some(port(opt, &text()?)?),
            "--only" => {
                only = Some(
                    text()?
                        .split(',')
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect(),
                )
            }
            _ => return Err(format!("unknown option {opt}")),
        }
    }
    let [workspace, protected, secret, prelinked_secret, denied_binary, allowed_binary, bpf_pin, foreign_procs, policy_file, state_dir] =
        paths;
    let need = |v: Option<PathBuf>, name: &str| v.ok_or_else(|| format!("{name} is required"));
    Ok(Args {
        workspace: need(workspace, "--workspace")?,
        protected: need(protected, "--protected")?,
        secret: need(secret, "--secret")?,
        prelinked_secret: need(prelinked_secret, "--prelinked-secret")?,
        denied_binary: need(denied_binary, "--denied-binary")?,
        allowed_binary: need(allowed_binary, "--allowed-binary")?,
        bpf_pin: need(bpf_pin, "--bpf-pin")?,
        foreign_procs: need(foreign_procs, "--foreign-procs")?,
        policy_file: need(policy_file, "--policy-file")?,
        state_dir: need(state_dir, "--state-dir")?,
        victim_pid: victim.ok_or("--victim-pid is required")?,
        daemon_pid: pid.ok_or("--daemon-pid is required")?,
        blocked_port: blocked.ok_or("--blocked-port is required")?,
        allowed_port: allowed.ok_or("--allowed-port is required")?,
        only,
    })
}

fn port(opt: &str, text: &str) -> Result<u16, String> {
    match text.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!("{opt} {text}: not a TCP port")),
    }
}
