//! The guest kernel: a Debian `linux-image-*` package, resolved through metapackages to the
//! versioned image, downloaded with `apt-get download` and unpacked with `dpkg-deb -x` into
//! the cache (nothing is installed on the host). Everything about it (release name, config,
//! LSM list) is read from the unpacked tree, so any Debian kernel package can be named.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

#[cfg(test)]
use super::apt::Dependency;
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
    /// The image package (for split kernels, the one that depends on the parts).
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

/// A kernel package as `--kernel-package` names it: `NAME` (the candidate version) or
/// `NAME=VERSION` (that version, as apt spells it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub name: String,
    pub version: Option<String>,
}

impl Request {
    pub fn parse(text: &str) -> Result<Request> {
        let (name, version) = match text.split_once('=') {
            Some((name, version)) => (name, Some(version)),
            None => (text, None),
        };
        let valid = |s: &str, extra: &[char]| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c) || extra.contains(&c))
        };
        if !valid(name, &[]) {
            bail!("--kernel-package {text:?}: {name:?} is not a Debian package name");
        }
        if let Some(v) = version.filter(|v| !valid(v, &[':', '~'])) {
            bail!("--kernel-package {text:?}: {v:?} is not a Debian version");
        }
        Ok(Request {
            name: name.to_owned(),
            version: version.map(str::to_owned),
        })
    }

    pub fn default_package() -> Request {
        Request {
            name: DEFAULT_PACKAGE.to_owned(),
            version: None,
        }
    }
}

impl std::fmt::Display for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.version {
            Some(v) => write!(f, "{}={v}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// Resolves `request` to a kernel image package, and downloads and unpacks it (with the
/// packages it is split into, on suites that split it) into `cache` unless an earlier run
/// did.
pub fn fetch(apt: &Apt, request: &Request, cache: &Path) -> Result<Kernel> {
    let dir_of =
        |name: &str, version: &str| cache.join(format!("{name}_{}", version.replace(':', "%3a")));
    let stamp_of = |dir: &Path| dir.join(".unpacked");
    let package = resolve(apt, request, |name, version| {
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
        for part in std::iter::once(package.clone()).chain(split_parts(&package)) {
            let deb = apt.download(&part, &dir)?;
            unpack(&deb, &root)?;
        }
        std::fs::write(&stamp, b"")?;
    }
    let not_an_image = || {
        format!(
            "{} {} is not a kernel image package (nor one split into linux-binary-* and linux-base-*)",
            package.name, package.version
        )
    };
    let (release, vmlinuz) = find_vmlinuz(&root).with_context(not_an_image)?;
    let config_paths = [
        root.join("boot").join(format!("config-{release}")),
        root.join("usr/lib/modules").join(&release).join("config"),
        root.join("lib/modules").join(&release).join("config"),
    ];
    let config = config_paths
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .with_context(|| {
            format!(
                "no kernel config in {} (looked for {})",
                root.display(),
                config_paths
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
    let modules = ["lib/modules", "usr/lib/modules"]
        .iter()
        .map(|d| root.join(d).join(&release).join("kernel"))
        .find(|p| p.is_dir())
        .and_then(|p| p.parent().map(Path::to_path_buf));
    Ok(Kernel {
        package,
        release,
        vmlinuz,
        config,
        modules,
        downloaded,
    })
}

/// The packages a split kernel image (Debian 14 on: sid, forky) consists of besides itself:
/// `linux-binary-<release>` holds vmlinuz and `linux-base-<release>` the config; both are
/// pinned to the image's own version. The modules (`linux-modules-<release>`, 23 MB) are
/// left out: the guest loads none. Older images contain everything and have no such parts.
fn split_parts(image: &Package) -> Vec<Package> {
    image
        .depends
        .iter()
        .filter(|d| d.exact.as_deref() == Some(image.version.as_str()))
        .filter(|d| {
            ["linux-binary-", "linux-base-"]
                .iter()
                .any(|prefix| d.name.starts_with(prefix))
        })
        .map(|d| Package {
            name: d.name.clone(),
            version: image.version.clone(),
            depends: Vec::new(),
        })
        .collect()
}

/// Follows metapackages (whose dependency is another `linux-image-*`) to the real image.
/// Updates the package lists once if they do not know a name. A dependency pinned to a
/// version that is already `cached` is taken as is: each apt-cache call reads every package
/// list (over a second on hosts that keep no apt cache), and the pin says all we need.
fn resolve(apt: &Apt, request: &Request, cached: impl Fn(&str, &str) -> bool) -> Result<Package> {
    let mut updated = false;
    let mut show = |name: &str, version: Option<&str>| -> Result<Package> {
        if let Some(p) = apt.show(name, version)? {
            return Ok(p);
        }
        if !updated {
            updated = true;
            apt.update()?;
            if let Some(p) = apt.show(name, version)? {
                return Ok(p);
            }
        }
        let what = match version {
            Some(v) => format!("{name} version {v}"),
            None => format!("the package {name}"),
        };
        bail!("apt does not know {what} ({})", apt.label)
    };
    let mut package = show(&request.name, request.version.as_deref())?;
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
            // A split image's parts are read from its own entry: only a cached one may skip it.
            Some(version) if cached(&next.name, &version) => Package {
                name: next.name,
                version,
                depends: Vec::new(),
            },
            Some(version) => show(&next.name, Some(&version))?,
            None => show(&next.name, None)?,
        };
    }
    bail!(
        "{}: more than {MAX_META_DEPTH} levels of linux-image metapackages",
        request.name
    )
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

/// The kernel's release and image: `boot/vmlinuz-<release>` (Debian up to 13), or
/// `usr/lib/modules/<release>/vmlinuz` (split images, Debian 14 on).
fn find_vmlinuz(root: &Path) -> Result<(String, PathBuf)> {
    let boot = root.join("boot");
    let mut found: Vec<(String, PathBuf)> = std::fs::read_dir(&boot)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let release = name.strip_prefix("vmlinuz-")?.to_owned();
            Some((release, e.path()))
        })
        .collect();
    for modules in ["usr/lib/modules", "lib/modules"] {
        let dir = root.join(modules);
        found.extend(
            std::fs::read_dir(&dir)
                .into_iter()
                .flatten()
                .filter_map(|e| e.ok())
                .filter(|e| e.path().join("vmlinuz").is_file())
                .filter_map(|e| {
                    Some((e.file_name().into_string().ok()?, e.path().join("vmlinuz")))
                }),
        );
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => bail!(
            "no boot/vmlinuz-* nor usr/lib/modules/*/vmlinuz in {}",
            root.display()
        ),
        n => bail!("{n} kernel images in {}; expected one", root.display()),
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

    /// `lsm=` with the kernel's built-in LSM list minus `bpf`: a boot where BPF LSM
    /// programs load nowhere. `None` if the config names no list.
    pub fn lsm_param_without_bpf(&self) -> Option<String> {
        let list = config_value(&self.config, "CONFIG_LSM")?;
        let kept: Vec<&str> = list
            .split(',')
            .filter(|l| !l.is_empty() && *l != "bpf")
            .collect();
        (!kept.is_empty()).then(|| format!("lsm={}", kept.join(",")))
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
    fn kernel_requests_name_a_package_and_maybe_a_version() {
        let r = Request::parse("linux-image-cloud-amd64").unwrap();
        assert_eq!(
            (r.name.as_str(), r.version),
            ("linux-image-cloud-amd64", None)
        );
        let r = Request::parse("linux-image-6.12.38+deb13-cloud-amd64=6.12.38-1").unwrap();
        assert_eq!(r.name, "linux-image-6.12.38+deb13-cloud-amd64");
        assert_eq!(r.version.as_deref(), Some("6.12.38-1"));
        assert_eq!(
            r.to_string(),
            "linux-image-6.12.38+deb13-cloud-amd64=6.12.38-1"
        );
        for bad in [
            "",
            "=1.0",
            "linux image",
            "linux-image=",
            "linux-image=1 0",
            "x;rm",
        ] {
            assert!(Request::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_split_image_downloads_its_binary_and_base_but_not_its_modules() {
        let dep = |name: &str, exact: Option<&str>| Dependency {
            name: name.into(),
            exact: exact.map(Into::into),
        };
        let image = Package {
            name: "linux-image-7.2.13+deb14-cloud-amd64".into(),
            version: "7.2.13-1".into(),
            depends: vec![
                dep("dracut", None),
                dep("linux-base-7.2.13+deb14-cloud-amd64", Some("7.2.13-1")),
                dep("linux-binary-7.2.13+deb14-cloud-amd64", Some("7.2.13-1")),
                dep("linux-modules-7.2.13+deb14-cloud-amd64", Some("7.2.13-1")),
            ],
        };
        let names: Vec<String> = split_parts(&image).into_iter().map(|p| p.name).collect();
        assert_eq!(
            names,
            [
                "linux-base-7.2.13+deb14-cloud-amd64",
                "linux-binary-7.2.13+deb14-cloud-amd64"
            ]
        );
        // Debian 12's image depends on the generic linux-base, by no exact version.
        let bookworm = Package {
            name: "linux-image-6.1.0-57-cloud-amd64".into(),
            version: "6.1.192-3".into(),
            depends: vec![dep("kmod", None), dep("linux-base", None)],
        };
        assert!(split_parts(&bookworm).is_empty());
    }

    #[test]
    fn vmlinuz_is_found_in_boot_or_in_the_modules_directory() {
        let root = std::env::temp_dir().join(format!("xtask-vmlinuz-{}", std::process::id()));
        let split = root.join("usr/lib/modules/7.2.13+deb14-cloud-amd64");
        std::fs::create_dir_all(&split).unwrap();
        std::fs::write(split.join("vmlinuz"), b"").unwrap();
        let (release, path) = find_vmlinuz(&root).unwrap();
        assert_eq!(release, "7.2.13+deb14-cloud-amd64");
        assert_eq!(path, split.join("vmlinuz"));
        std::fs::create_dir_all(root.join("boot")).unwrap();
        std::fs::write(root.join("boot/vmlinuz-6.1.0-57-cloud-amd64"), b"").unwrap();
        assert!(find_vmlinuz(&root).is_err(), "two images must be an error");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn config_values_match_whole_keys() {
        let config = "CONFIG_BPF_LSM_EXTRA=m\nCONFIG_BPF_LSM=y\n";
        assert_eq!(config_value(config, "CONFIG_BPF_LSM"), Some("y"));
        assert_eq!(config_value(config, "CONFIG_BPF"), None);
    }
}
