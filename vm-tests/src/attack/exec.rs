//! Running the denied binary by other means: a renamed copy, a memfd (no file at all), and
//! the dynamic loader mapping it as a "library". The denied binary is a copy of
//! secops-attack, so a run that got through prints [`MARKER`]: the verdict comes from that
//! line, not from an exit code.

use std::ffi::CString;
use std::fs;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::fixture::remove_leftover;
use super::judge::Outcome;
use super::sys::{check_int, denial, describe, owned_fd};
use super::Ctx;

/// What `secops-attack marker` prints.
pub const MARKER: &str = "SECOPS-ATTACK-MARKER ran";

/// A child that hangs is killed (by its pid, which we hold) after this long.
const CHILD_TIMEOUT: Duration = Duration::from_secs(20);

pub struct Ran {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    pub fn printed_marker(&self) -> bool {
        self.stdout.lines().any(|l| l.trim() == MARKER)
    }

    pub fn describe(&self) -> String {
        let status = match (self.status.code(), self.status.signal()) {
            (Some(c), _) => format!("exit {c}"),
            (None, Some(s)) => format!("killed by signal {s}"),
            _ => "unknown status".into(),
        };
        let stderr = self.stderr.trim();
        if stderr.is_empty() {
            status
        } else {
            format!("{status}, stderr: {stderr}")
        }
    }
}

/// Spawns `cmd` with its output captured; `Err` is the spawn's error (for an exec that the
/// kernel refused, the execve(2) errno, which std carries back from the child).
pub fn run(cmd: &mut Command) -> io::Result<Ran> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn()?;
    // Readers on threads: a child that fills one pipe while we wait on the other would hang.
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    let deadline = Instant::now() + CHILD_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            // Our own child, by the pid we hold.
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the child ran longer than {CHILD_TIMEOUT:?} and was killed"),
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Ok(Ran {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// The verdict of one exec attempt: the marker printed means it ran; an execve(2) denial is
/// a block, unless the file sits on a noexec mount (then EACCES says nothing about the policy).
fn judge_exec(op: &str, ran: io::Result<Ran>, noexec_dir: Option<&Path>) -> Outcome {
    match ran {
        Ok(ran) if ran.printed_marker() => {
            Outcome::allowed(format!("{op}: the marker printed ({})", ran.describe()))
        }
        Ok(ran) => Outcome::error(format!(
            "{op}: ran but no marker printed ({})",
            ran.describe()
        )),
        Err(e) => match denial(&e) {
            Some(libc::EACCES) if noexec_dir.is_some_and(is_noexec) => Outcome::error(format!(
                "{op}: EACCES, but {} is on a noexec mount",
                noexec_dir
                    .map(Path::display)
                    .map(|d| d.to_string())
                    .unwrap_or_default()
            )),
            Some(errno) => Outcome::blocked(errno, format!("{op}: execve(2) refused")),
            None => Outcome::error(format!("{op}: {}", describe(&e))),
        },
    }
}

fn is_noexec(dir: &Path) -> bool {
    let Ok(c) = super::sys::cpath(dir) else {
        return false;
    };
    // SAFETY: statvfs is plain data; c is a valid NUL-terminated string.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above; st is a valid out-pointer.
    let ret = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    ret == 0 && st.f_flag & libc::ST_NOEXEC != 0
}

fn denied_exists(ctx: &Ctx) -> Result<(), Outcome> {
    match fs::metadata(&ctx.args.denied_binary) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(_) => Err(Outcome::error("the denied binary is not a regular file")),
        Err(e) => Err(Outcome::error(format!(
            "the denied binary {}: {}",
            ctx.args.denied_binary.display(),
            describe(&e)
        ))),
    }
}

/// Reading the denied binary is a step of two attacks; a policy that refuses it has
/// blocked them (nothing ran), anything else is a broken fixture.
fn read_denied(ctx: &Ctx) -> Result<Vec<u8>, Outcome> {
    fs::read(&ctx.args.denied_binary).map_err(|e| match denial(&e) {
        Some(errno) => Outcome::blocked(errno, "reading the denied binary (op 1) was refused"),
        None => Outcome::error(format!("reading the denied binary: {}", describe(&e))),
    })
}

/// A copy of the denied binary under another name in the workspace, executed with `marker`.
pub fn renamed_denied_binary(ctx: &Ctx) -> Outcome {
    if let Err(o) = denied_exists(ctx) {
        return o;
    }
    let bytes = match read_denied(ctx) {
        Ok(b) => b,
        Err(o) => return o,
    };
    let copy = ctx.args.workspace.join("renamed-tool");
    let _ = remove_leftover(&copy);
    let written = fs::write(&copy, &bytes)
        .and_then(|()| fs::set_permissions(&copy, fs::Permissions::from_mode(0o755)));
    if let Err(e) = written {
        return Outcome::error(format!(
            "copying to workspace/renamed-tool: {}",
            describe(&e)
        ));
    }
    let ran = run(Command::new(&copy).arg("marker"));
    judge_exec(
        "execve(2) workspace/renamed-tool marker (fork+exec)",
        ran,
        Some(&ctx.args.workspace),
    )
    .note(&remove_leftover(&copy))
}

/// The denied binary's bytes in a memfd, executed with execveat(fd, "", AT_EMPTY_PATH):
/// no path on any filesystem.
pub fn memfd_exec(ctx: &Ctx) -> Outcome {
    if let Err(o) = denied_exists(ctx) {
        return o;
    }
    let bytes = match read_denied(ctx) {
        Ok(b) => b,
        Err(o) => return o,
    };
    let memfd = match memfd_create() {
        Ok(fd) => fd,
        Err(e) => return Outcome::error(format!("memfd_create(2): {}", describe(&e))),
    };
    let mut file = fs::File::from(memfd);
    if let Err(e) = io::Write::write_all(&mut file, &bytes) {
        return Outcome::error(format!("writing the memfd: {}", describe(&e)));
    }
    // execve(2) refuses a file that is open for writing (ETXTBSY), so the child gets a
    // read-only descriptor reopened through /proc and the writable one is closed first.
    let ro = match super::sys::open(
        Path::new(&format!("/proc/self/fd/{}", file.as_raw_fd())),
        libc::O_RDONLY,
    ) {
        Ok(fd) => fd,
        Err(e) => {
            return Outcome::error(format!("reopening the memfd read-only: {}", describe(&e)))
        }
    };
    drop(file);
    let fd = ro.as_raw_fd();
    let argv: Vec<CString> = vec![c"secops-attack-memfd".into(), c"marker".into()];
    let mut cmd = Command::new("memfd-exec-placeholder-never-run");
    // SAFETY: the closure runs in the forked child before std's own exec; it only calls
    // execveat(2) (async-signal-safe) with pointers prepared here, before the fork. If
    // execveat fails, its errno goes back to the parent as the spawn error.
    unsafe {
        let ptrs: Vec<usize> = argv
            .iter()
            .map(|a| a.as_ptr() as usize)
            .chain(std::iter::once(0))
            .collect();
        let env: [usize; 1] = [0];
        cmd.pre_exec(move || {
            let _keep_alive = &argv;
            libc::syscall(
                libc::SYS_execveat,
                fd,
                c"".as_ptr(),
                ptrs.as_ptr() as *const *const libc::c_char,
                env.as_ptr() as *const *const libc::c_char,
                libc::AT_EMPTY_PATH,
            );
            Err(io::Error::last_os_error())
        });
    }
    let ran = run(&mut cmd);
    drop(ro);
    judge_exec(
        "execveat(2) memfd \"\" AT_EMPTY_PATH marker (fork+execveat)",
        ran,
        None,
    )
}

fn memfd_create() -> io::Result<OwnedFd> {
    // MFD_EXEC (6.3+) asks for an executable memfd explicitly, so vm.memfd_noexec=1 does not
    // make the attack fail for a reason that is not the policy; older kernels reject the flag
    // (EINVAL) and make memfds executable by default.
    const MFD_EXEC: libc::c_uint = 0x10;
    let create = |flags: libc::c_uint| {
        // SAFETY: the name is a NUL-terminated literal.
        check_int(unsafe { libc::memfd_create(c"secops-attack".as_ptr(), flags) })
    };
    let fd = match create(libc::MFD_CLOEXEC | MFD_EXEC) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => create(libc::MFD_CLOEXEC)?,
        r => r?,
    };
    Ok(owned_fd(fd))
}

/// The dynamic loader run as a program, asked to load and run the denied binary: the
/// binary is never execve(2)d, only mmap(2)ed by ld.so.
pub fn ldso_exec(ctx: &Ctx) -> Outcome {
    if let Err(o) = denied_exists(ctx) {
        return o;
    }
    let loader = match interpreter(Path::new("/proc/self/exe")) {
        Ok(Some(l)) => l,
        Ok(None) => {
            return Outcome::error("secops-attack has no PT_INTERP (statically linked): no loader")
        }
        Err(e) => return Outcome::error(format!("reading PT_INTERP of /proc/self/exe: {e}")),
    };
    let op = format!(
        "execve(2) {} {} marker (the loader maps the binary)",
        loader.display(),
        ctx.args.denied_binary.display()
    );
    match run(Command::new(&loader)
        .arg(&ctx.args.denied_binary)
        .arg("marker"))
    {
        Ok(ran) if !ran.printed_marker() => loader_failed(&op, &ran, &ctx.args.denied_binary),
        ran => judge_exec(&op, ran, None),
    }
}

/// The loader ran but did not run the binary. Its message names the errno when open(2)
/// failed ("Permission denied", "Operation not permitted"), but glibc prints none for a failed
/// mmap(2) ("failed to map segment from shared object"), which is where an exec-mapping
/// check refuses. Then the verdict rests on the same operation made here, in the same
/// cgroup: mmap(2) of the binary with PROT_EXEC. A noexec mount also refuses that, so it is
/// ruled out first.
fn loader_failed(op: &str, ran: &Ran, binary: &Path) -> Outcome {
    let said = ran.describe();
    if ran.stderr.contains("Operation not permitted") {
        return Outcome::blocked(libc::EPERM, format!("{op}: the loader failed ({said})"));
    }
    if ran.stderr.contains("Permission denied") {
        return Outcome::blocked(libc::EACCES, format!("{op}: the loader failed ({said})"));
    }
    if !ran.stderr.contains("failed to map segment") {
        return Outcome::error(format!("{op}: no marker ({said})"));
    }
    if binary.parent().is_some_and(is_noexec) {
        return Outcome::error(format!("{op}: {said}; the binary is on a noexec mount"));
    }
    match map_exec(binary) {
        Err(e) => match denial(&e) {
            Some(errno) => Outcome::blocked(
                errno,
                format!(
                    "{op}: the loader failed ({said}); the same mmap(2) PROT_READ|PROT_EXEC \
                     of the binary from this process: {}",
                    describe(&e)
                ),
            ),
            None => Outcome::error(format!(
                "{op}: {said}; mmap(2) PROT_EXEC of the binary here: {}",
                describe(&e)
            )),
        },
        Ok(()) => Outcome::error(format!(
            "{op}: {said}, yet mmap(2) PROT_EXEC of the binary works from this process"
        )),
    }
}

/// open(2) then mmap(2) one page of `path` PROT_READ|PROT_EXEC, MAP_PRIVATE, as ld.so maps a
/// code segment; unmapped at once.
fn map_exec(path: &Path) -> io::Result<()> {
    let fd = super::sys::open(path, libc::O_RDONLY)?;
    // SAFETY: a fresh private mapping of a file we opened, at an address of the kernel's
    // choosing, never touched and unmapped below.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_EXEC,
            libc::MAP_PRIVATE,
            fd.as_raw_fd(),
            0,
        )
    };
    if addr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the mapping made just above, of that length.
    unsafe { libc::munmap(addr, 4096) };
    Ok(())
}

/// PT_INTERP of a 64-bit little-endian ELF file (the only kind this program is built as).
pub fn interpreter(path: &Path) -> Result<Option<PathBuf>, String> {
    let elf = fs::read(path).map_err(|e| describe(&e))?;
    let u16_at = |o: usize| -> Option<u64> {
        elf.get(o..o + 2)
            .map(|b| u64::from(u16::from_le_bytes([b[0], b[1]])))
    };
    let u32_at = |o: usize| -> Option<u64> {
        let b: [u8; 4] = elf.get(o..o + 4)?.try_into().ok()?;
        Some(u64::from(u32::from_le_bytes(b)))
    };
    let u64_at = |o: usize| -> Option<u64> {
        let b: [u8; 8] = elf.get(o..o + 8)?.try_into().ok()?;
        Some(u64::from_le_bytes(b))
    };
    if elf.get(0..6) != Some(&[0x7f, b'E', b'L', b'F', 2, 1][..]) {
        return Err("not a 64-bit little-endian ELF file".into());
    }
    let bad = || "truncated ELF header".to_owned();
    let phoff = u64_at(0x20).ok_or_else(bad)?;
    let phentsize = u16_at(0x36).ok_or_else(bad)?;
    let phnum = u16_at(0x38).ok_or_else(bad)?;
    const PT_INTERP: u64 = 3;
    for i in 0..phnum {
        let ph = usize::try_from(phoff + i * phentsize).map_err(|_| bad())?;
        if u32_at(ph).ok_or_else(bad)? != PT_INTERP {
            continue;
        }
        let off = usize::try_from(u64_at(ph + 8).ok_or_else(bad)?).map_err(|_| bad())?;
        let len = usize::try_from(u64_at(ph + 0x20).ok_or_else(bad)?).map_err(|_| bad())?;
        let raw = elf.get(off..off.saturating_add(len)).ok_or_else(bad)?;
        let name = raw.split(|&b| b == 0).next().unwrap_or_default();
        let name = std::str::from_utf8(name).map_err(|_| "PT_INTERP is not UTF-8".to_owned())?;
        return Ok(Some(PathBuf::from(name)));
    }
    Ok(None)
}

/// Benign: the allowed binary, no arguments, exit 0.
pub fn exec_allowed(ctx: &Ctx) -> Result<(), String> {
    let ran = run(&mut Command::new(&ctx.args.allowed_binary)).map_err(|e| {
        format!(
            "execve(2) {}: {}",
            ctx.args.allowed_binary.display(),
            describe(&e)
        )
    })?;
    if ran.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}: {}",
            ctx.args.allowed_binary.display(),
            ran.describe()
        ))
    }
}
