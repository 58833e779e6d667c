//! The guest's whole root filesystem, as an uncompressed newc cpio: busybox (the shell /init runs
//! in, and mount/poweroff), the binaries under test in /bin, every shared library they load
//! at the path the loader will look for it, and /init itself. No kernel modules: the
//! harness relies on what the kernel has built in (see `kernel::REQUIRED_BUILTINS`).

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::cpio::Archive;
use super::ldd;

const INIT: &str = include_str!("init.sh");

/// Directories /init mounts on; the kernel-made ones (/sys/fs/cgroup, ...) appear once
/// sysfs is mounted.
const MOUNT_POINTS: &[&str] = &["/proc", "/sys", "/dev", "/tmp", "/run"];

pub struct Built {
    pub path: PathBuf,
    pub bytes: u64,
    pub libraries: Vec<PathBuf>,
}

/// Packs busybox and `binaries` (each as /bin/<its file name>) into `out`.
pub fn build(busybox: &Path, binaries: &[PathBuf], out: &Path) -> Result<Built> {
    let mut archive = Archive::default();
    for dir in MOUNT_POINTS {
        archive.dir(dir)?;
    }
    // The kernel opens /dev/console for init's stdin/stdout before devtmpfs is mounted;
    // without the node the runner's results would go nowhere.
    archive.char_device("/dev/console", 0o600, 5, 1)?;
    archive.file("/init", 0o755, INIT.as_bytes().to_vec())?;

    add_file(&mut archive, busybox, "/bin/busybox")?;
    for applet in applets(busybox)? {
        let path = format!("/bin/{applet}");
        if !archive.contains(&path) {
            archive.symlink(&path, "busybox")?;
        }
    }
    if !archive.contains("/bin/sh") {
        bail!("{} has no sh applet, which /init needs", busybox.display());
    }

    let mut libraries: Vec<PathBuf> = Vec::new();
    for binary in binaries.iter().map(PathBuf::as_path).chain([busybox]) {
        for lib in ldd::libraries(binary)? {
            if !libraries.contains(&lib) {
                libraries.push(lib);
            }
        }
    }
    for binary in binaries {
        let name = binary
            .file_name()
            .and_then(|n| n.to_str())
            .with_context(|| format!("{} has no usable file name", binary.display()))?;
        add_file(&mut archive, binary, &format!("/bin/{name}"))?;
    }
    for lib in &libraries {
        let guest = lib
            .to_str()
            .with_context(|| format!("library path {} is not UTF-8", lib.display()))?;
        // The loader opens the path ldd printed; a symlink there on the host (/lib64/ld-linux
        // -> ...) becomes the file itself in the guest.
        add_file(&mut archive, lib, guest)?;
    }

    // Uncompressed: gzip cost 1.5-3.5 s here (xtask is a debug build) and about a second of
    // emulated CPU in the guest, to save 9 MiB of a file that never leaves this machine.
    let tmp = out.with_extension("tmp");
    let file = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let mut writer = BufWriter::new(file);
    archive
        .write(&mut writer)
        .and_then(|()| writer.into_inner().map_err(|e| e.into_error()))
        .and_then(|file| file.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, out).with_context(|| format!("renaming {}", tmp.display()))?;
    let bytes = std::fs::metadata(out)?.len();
    Ok(Built {
        path: out.to_path_buf(),
        bytes,
        libraries,
    })
}

fn add_file(archive: &mut Archive, host: &Path, guest: &str) -> Result<()> {
    let data = std::fs::read(host).with_context(|| format!("reading {}", host.display()))?;
    archive.file(guest, 0o755, data)
}

/// Applet names, each to become a /bin symlink to busybox (so `#!/bin/sh`, `mount` and
/// `poweroff` resolve without `busybox --install` at boot).
fn applets(busybox: &Path) -> Result<Vec<String>> {
    let out = Command::new(busybox)
        .arg("--list")
        .output()
        .with_context(|| format!("running {} --list", busybox.display()))?;
    if !out.status.success() {
        bail!("{} --list failed ({})", busybox.display(), out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && !a.contains('/') && *a != "busybox")
        .map(str::to_owned)
        .collect())
}

/// The busybox to put in the guest: the first on PATH (Debian's busybox-static is static,
/// a dynamic one brings its libraries along through ldd).
pub fn find_busybox() -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/bin"), PathBuf::from("/usr/bin")])
        .map(|dir| dir.join("busybox"))
        .find(|p| p.is_file())
        .context("busybox is not installed: apt-get install busybox-static (or `cargo xtask deps --install`)")
}
