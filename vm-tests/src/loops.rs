//! The timed loops of the LSM overhead benchmark: `secops-vm-runner --loops DIR`, run by the
//! `lsm-overhead` scenario inside or outside an agent cgroup. Each loop times every
//! operation and prints its median, so a scheduling hiccup of the emulated machine moves
//! one sample, not the figure.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Instant;

pub const UNLINKS: usize = 2_000;
pub const OPENS: usize = 2_000;
pub const EXECS: usize = 100;
/// Fewer than the others: at 2,000 each the benchmark on 5.10 (a daemon started per round)
/// ran past the boot's 240 s timeout.
pub const CHMODS: usize = 500;
pub const MKDIRS: usize = 500;

/// The line `--loops` prints: `LOOPS unlink=<ns> open_write=<ns> exec=<ns> chmod=<ns>
/// mkdir=<ns>` (medians).
pub const PREFIX: &str = "LOOPS";

/// The loops, in the order of the line and of [`parse`]'s answer.
pub const NAMES: [&str; LOOPS] = ["unlink", "open_write", "exec", "chmod", "mkdir"];
pub const LOOPS: usize = 5;

fn median(mut samples: Vec<u64>) -> u64 {
    samples.sort_unstable();
    samples.get(samples.len() / 2).copied().unwrap_or(0)
}

fn cpath(path: &Path) -> Result<CString, String> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| format!("{} has a NUL", path.display()))
}

fn create(path: &CString) -> Result<(), String> {
    // SAFETY: a NUL-terminated path; the fd is closed at once.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_CREAT | libc::O_WRONLY, 0o644) };
    if fd < 0 {
        return Err(format!("creating: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: our own fd.
    unsafe { libc::close(fd) };
    Ok(())
}

/// unlink(2) of files made beforehand (the making is not timed).
fn unlink_loop(dir: &Path) -> Result<u64, String> {
    let paths: Vec<CString> = (0..UNLINKS)
        .map(|i| cpath(&dir.join(format!("u{i}"))))
        .collect::<Result<_, _>>()?;
    for p in &paths {
        create(p)?;
    }
    let mut samples = Vec::with_capacity(UNLINKS);
    for p in &paths {
        let t = Instant::now();
        // SAFETY: a NUL-terminated path.
        let rc = unsafe { libc::unlink(p.as_ptr()) };
        samples.push(t.elapsed().as_nanos() as u64);
        if rc != 0 {
            return Err(format!("unlink: {}", std::io::Error::last_os_error()));
        }
    }
    Ok(median(samples))
}

/// open(O_WRONLY) + close of one existing file.
fn open_write_loop(dir: &Path) -> Result<u64, String> {
    let path = cpath(&dir.join("w"))?;
    create(&path)?;
    let mut samples = Vec::with_capacity(OPENS);
    for _ in 0..OPENS {
        let t = Instant::now();
        // SAFETY: a NUL-terminated path; the fd is closed at once.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY) };
        if fd >= 0 {
            // SAFETY: our own fd.
            unsafe { libc::close(fd) };
        }
        samples.push(t.elapsed().as_nanos() as u64);
        if fd < 0 {
            return Err(format!("open: {}", std::io::Error::last_os_error()));
        }
    }
    Ok(median(samples))
}

/// fork + exec of `/bin/true` + wait.
fn exec_loop() -> Result<u64, String> {
    let mut samples = Vec::with_capacity(EXECS);
    for _ in 0..EXECS {
        let t = Instant::now();
        let status = std::process::Command::new("/bin/true")
            .status()
            .map_err(|e| format!("exec /bin/true: {e}"))?;
        samples.push(t.elapsed().as_nanos() as u64);
        if !status.success() {
            return Err(format!("/bin/true exited {status}"));
        }
    }
    Ok(median(samples))
}

/// chmod(2) of one existing file, between two modes.
fn chmod_loop(dir: &Path) -> Result<u64, String> {
    let path = cpath(&dir.join("m"))?;
    create(&path)?;
    let mut samples = Vec::with_capacity(CHMODS);
    for i in 0..CHMODS {
        let mode = if i % 2 == 0 { 0o600 } else { 0o644 };
        let t = Instant::now();
        // SAFETY: a NUL-terminated path.
        let rc = unsafe { libc::chmod(path.as_ptr(), mode) };
        samples.push(t.elapsed().as_nanos() as u64);
        if rc != 0 {
            return Err(format!("chmod: {}", std::io::Error::last_os_error()));
        }
    }
    Ok(median(samples))
}

/// mkdir(2) of new names (removing them is not timed).
fn mkdir_loop(dir: &Path) -> Result<u64, String> {
    let paths: Vec<CString> = (0..MKDIRS)
        .map(|i| cpath(&dir.join(format!("d{i}"))))
        .collect::<Result<_, _>>()?;
    let mut samples = Vec::with_capacity(MKDIRS);
    for p in &paths {
        let t = Instant::now();
        // SAFETY: a NUL-terminated path.
        let rc = unsafe { libc::mkdir(p.as_ptr(), 0o755) };
        samples.push(t.elapsed().as_nanos() as u64);
        if rc != 0 {
            return Err(format!("mkdir: {}", std::io::Error::last_os_error()));
        }
    }
    for p in &paths {
        // SAFETY: a NUL-terminated path.
        unsafe { libc::rmdir(p.as_ptr()) };
    }
    Ok(median(samples))
}

/// Runs every loop in `dir` and prints the [`PREFIX`] line.
pub fn run(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let values = [
        unlink_loop(dir)?,
        open_write_loop(dir)?,
        exec_loop()?,
        chmod_loop(dir)?,
        mkdir_loop(dir)?,
    ];
    let fields: Vec<String> = NAMES
        .iter()
        .zip(values)
        .map(|(name, ns)| format!("{name}={ns}"))
        .collect();
    println!("{PREFIX} {}", fields.join(" "));
    Ok(())
}

/// The medians in ns, in [`NAMES`] order, from a `--loops` output.
pub fn parse(output: &str) -> Option<[u64; LOOPS]> {
    let line = output.lines().find(|l| l.starts_with(PREFIX))?;
    let mut values = [0u64; LOOPS];
    for (slot, name) in values.iter_mut().zip(NAMES) {
        let key = format!("{name}=");
        *slot = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix(key.as_str()))?
            .parse()
            .ok()?;
    }
    Some(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_loops_line() {
        assert_eq!(
            parse("noise\nLOOPS unlink=10 open_write=20 exec=30 chmod=40 mkdir=50\n"),
            Some([10, 20, 30, 40, 50])
        );
        assert_eq!(parse("LOOPS unlink=10\n"), None);
    }

    #[test]
    fn loops_run_and_report() {
        let dir = tempfile_dir();
        assert!(unlink_loop(&dir).is_ok_and(|ns| ns > 0));
        assert!(open_write_loop(&dir).is_ok_and(|ns| ns > 0));
        assert!(chmod_loop(&dir).is_ok_and(|ns| ns > 0));
        assert!(mkdir_loop(&dir).is_ok_and(|ns| ns > 0));
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("secops-loops-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        dir
    }
}
