//! The guest kernel: a Debian `linux-image-*` package, resolved through metapackages to the
//! versioned image, downloaded with `apt-get download` and unpacked with `dpkg-deb -x` into
//! the cache (nothing is installed on the host). Everything about it (release name, config,
//! LSM list) is read from the unpacked tree, so any Debian kernel package can be named.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::apt::{Apt, Package};

/// Debian 12's cloud kernel metapackage (6.1 when this was written); the suite's own when
/// `--suite` names another.
pub const DEFAULT_PACKAGE: &str = "linux-image-cloud-amd64";

/// What the guest needs built into the kernel (`=y`), because the harness loads no
/// modules, and what each is for.
pub const REQUIRED_BUILTINS: &[(&str, &str)] = &[
    ("CONFIG_BLK_DEV_INITRD", "booting an initramfs"),
    (
        "CONFIG_SERIAL_8250_CONSOLE",
        "the results on the serial console",
    ),
    ("CONFIG_DEVTMPFS", "/dev"),
    ("CONFIG_TMPFS", "/tmp and /run"),
    ("CONFIG_CGROUPS", "cgroup2"),
    ("CONFIG_CGROUP_BPF", "the egress programs"),
    ("CONFIG_BPF_SYSCALL", "BPF and bpffs"),
    (
        "CONFIG_DEBUG_INFO_BTF",
        "kernel BTF, which LSM programs need",
    ),
    ("CONFIG_FTRACE_SYSCALLS", "the syscall tracepoints"),
    ("CONFIG_SECURITYFS", "securityfs"),
    ("CONFIG_BPF_LSM", "BPF LSM programs"),
];

/// How deep metapackages may nest (linux-image-cloud-amd64 → linux-image-6.1.0-N-cloud-amd64
/// is one level).
const MAX_META_DEPTH: usize = 4;

pub struct Kernel {
    pub package: Package,
    /// `uname -r` of the guest, e.g. `6.1.0-56-cloud-amd64`.
    pub release: String,
    pub vmlinuz: PathBuf,
    /// The kernel's build configuration, as `CONFIG_X=v` lines.
    pub config: String,
    /// lib/modules/<release> in the unpacked tree, if the package has one (unused today:
    /// everything the guest needs is built in).
    pub modules: Option<PathBuf>,
    pub downloaded: bool,
}

/// Resolves `name` to a kernel image package, and downloads and unpacks it into `cache`
/// unless an earlier run did.
pub fn fetch(apt: &Apt, name: &str, cache: &Path) -> Result<Kernel> {
    let dir_of =
        |name: &str, version: &str| cache.join(format!("{name}_{}", version.replace(':', "%3a")));
    let stamp_of = |dir: &Path| dir.join(".unpacked");
    let package = resolve(apt, name, |name, version| {
        stamp_of(&dir_of(name, version)).exists()
    })?;
    let dir = dir_of(&package.name, &package.version);
    let root = dir.join("root");
    let stamp = stamp_of(&dir);
    let downloaded = !stamp.exists();
    if downloaded {
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("removing the partial {}", dir.display()))?;
        }
        let deb = apt.download(&package, &dir)?;
        unpack(&deb, &root)?;
        std::fs::write(&stamp, b"")?;
    }
    let (release, vmlinuz) = find_vmlinuz(&root).with_context(|| {
        format!(
            "{} {} is not a kernel image package",
            package.name, package.version
        )
    })?;
    let config_path = root.join("boot").join(format!("config-{release}"));
    let config = std::fs::read_to_string(&config_path).with_context(|| {
        format!(
            "reading {} (every Debian image package ships its config)",
            config_path.display()
        )
    })?;
    let modules = ["lib/modules", "usr/lib/modules"]
        .iter()
        .map(|d| root.join(d).join(&release))
        .find(|p| p.is_dir());
    Ok(Kernel {
        package,
        release,
        vmlinuz,
        config,
        modules,
        downloaded,
    })
}

/// Follows metapackages (whose dependency is another `linux-image-*`) to the real image.
/// Updates the package lists once if they do not know a name. A dependency pinned to a
/// version that is already `cached` is taken as is: each apt-cache call reads every package
/// list (over a second on hosts that keep no apt cache), and the pin says all we need.
fn resolve(apt: &Apt, name: &str, cached: impl Fn(&str, &str) -> bool) -> Result<Package> {
    let mut updated = false;
    let mut show = |name: &str| -> Result<Package> {
        if let Some(p) = apt.show(name)? {
            return Ok(p);
        }
        if !updated {
            updated = true;
            apt.update()?;
            if let Some(p) = apt.show(name)? {
                return Ok(p);
            }
        }
        bail!("apt does not know the package {name} ({})", apt.label)
    };
    let mut package = show(name)?;
    for _ in 0..MAX_META_DEPTH {
        let Some(next) = package
            .depends
            .iter()
            .find(|d| d.name.starts_with("linux-image-"))
            .cloned()
        else {
            return Ok(package);
        };
        package = match next.exact {
            Some(version) if cached(&next.name, &version) => Package {
                name: next.name,
                version,
                depends: Vec::new(),
            },
            _ => show(&next.name)?,
        };
    }
    bail!("{name}: more than {MAX_META_DEPTH} levels of linux-image metapackages")
}

fn unpack(deb: &Path, root: &Path) -> Result<()> {
    let status = Command::new("dpkg-deb")
        .arg("-x")
        .arg(deb)
        .arg(root)
        .status()
        .context("running dpkg-deb (Debian package dpkg)")?;
    if !status.success() {
        bail!("dpkg-deb -x {} failed ({status})", deb.display());
    }
    Ok(())
}

fn find_vmlinuz(root: &Path) -> Result<(String, PathBuf)> {
    let boot = root.join("boot");
    let mut found: Vec<(String, PathBuf)> = std::fs::read_dir(&boot)
        .with_context(|| format!("reading {}", boot.display()))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let release = name.strip_prefix("vmlinuz-")?.to_owned();
            Some((release, e.path()))
        })
        .collect();
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => bail!("no vmlinuz-* in {}", boot.display()),
        n => bail!("{n} vmlinuz-* files in {}; expected one", boot.display()),
    }
}

impl Kernel {
    pub fn config_value(&self, key: &str) -> Option<&str> {
        config_value(&self.config, key)
    }

    /// The `lsm=` boot parameter, when the kernel's default LSM list lacks bpf; `None` when
    /// it boots with BPF LSM as built (Debian 12's 6.1 does).
    pub fn lsm_param(&self) -> Option<String> {
        lsm_param(&self.config)
    }

    /// Built-ins from [`REQUIRED_BUILTINS`] this kernel lacks, each with what will not work.
    pub fn missing_builtins(&self) -> Vec<String> {
        REQUIRED_BUILTINS
            .iter()
            .filter(|(key, _)| self.config_value(key) != Some("y"))
            .map(|(key, why)| {
                let state = match self.config_value(key) {
                    Some("m") => "a module",
                    _ => "not set",
                };
                format!("{key} is {state}: no {why}")
            })
            .collect()
    }
}

fn config_value<'a>(config: &'a str, key: &str) -> Option<&'a str> {
    config.lines().find_map(|line| {
        let value = line.strip_prefix(key)?.strip_prefix('=')?;
        Some(value.trim().trim_matches('"'))
    })
}

fn lsm_param(config: &str) -> Option<String> {
    if config_value(config, "CONFIG_BPF_LSM") != Some("y") {
        return None;
    }
    let list = config_value(config, "CONFIG_LSM")?;
    if list.split(',').any(|l| l == "bpf") {
        None
    } else if list.is_empty() {
        Some("lsm=bpf".into())
    } else {
        Some(format!("lsm={list},bpf"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bpf_joins_the_lsm_list_only_when_missing() {
        let with = "CONFIG_BPF_LSM=y\nCONFIG_LSM=\"landlock,lockdown,yama,apparmor,bpf\"\n";
        assert_eq!(lsm_param(with), None);
        let without = "CONFIG_BPF_LSM=y\nCONFIG_LSM=\"lockdown,yama,apparmor\"\n";
        assert_eq!(
            lsm_param(without).as_deref(),
            Some("lsm=lockdown,yama,apparmor,bpf")
        );
        let no_bpf_lsm = "# CONFIG_BPF_LSM is not set\nCONFIG_LSM=\"yama\"\n";
        assert_eq!(lsm_param(no_bpf_lsm), None);
    }

    #[test]
    fn config_values_match_whole_keys() {
        let config = "CONFIG_BPF_LSM_EXTRA=m\nCONFIG_BPF_LSM=y\n";
        assert_eq!(config_value(config, "CONFIG_BPF_LSM"), Some("y"));
        assert_eq!(config_value(config, "CONFIG_BPF"), None);
    }
}
