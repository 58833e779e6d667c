//! The reason the harness exists: this kernel lets secops load BPF LSM programs. Without a
//! daemon, `secops status` prints what the kernel supports, which runs the daemon's own
//! capability probe (it loads a trivial `lsm/file_open` program and unloads it).

use crate::fixtures::{describe, scratch_dir, secops};

pub fn run() -> Result<String, String> {
    let dir = scratch_dir("probe")?;
    let socket = dir.join("no-daemon.sock");
    let socket = socket.to_str().ok_or("scratch path is not UTF-8")?;
    let out = secops(&["status", "--socket", socket])?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    // Exit 1 is `status`'s "no daemon": the probe report follows.
    if out.status.code() != Some(1) {
        return Err(format!(
            "`secops status` without a daemon should exit 1 and print the probe\n{}",
            describe(&out)
        ));
    }
    let line = stdout
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("BPF LSM:"))
        .ok_or_else(|| format!("no `BPF LSM:` line in the probe report\n{}", describe(&out)))?;
    if line.starts_with("BPF LSM: active") {
        Ok(line.to_owned())
    } else {
        Err(format!("{line}\n{}", describe(&out)))
    }
}
