//! apt, used only to look packages up and download them (never to install on the host):
//! either with the host's own sources, or with a private sources list for another Debian
//! suite under `target/vm/apt/<suite>/`, which leaves the host's apt state alone.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{bail, Context, Result};

const DEBIAN_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// How old a private suite's package lists may be before a run fetches them again.
pub const LISTS_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(3600);

/// Suites that are never released, so they have no `-updates` or `-security`.
const DEVELOPMENT_SUITES: &[&str] = &["sid", "unstable", "experimental"];

/// Where the host's apt sources fetch from: the main mirror, and the security mirror when
/// they name one; each with the keyring its entry names by path.
#[derive(Clone, Debug, PartialEq, Eq)]
struct HostMirrors {
    main: (String, Option<PathBuf>),
    security: Option<(String, Option<PathBuf>)>,
}

/// The (mirror, suite, keyring) entries a private list for `suite` holds.
fn suite_sources(suite: &str, host: &HostMirrors) -> Vec<(String, String, Option<PathBuf>)> {
    let (uri, keyring) = host.main.clone();
    let mut sources = vec![(uri.clone(), suite.to_owned(), keyring.clone())];
    if DEVELOPMENT_SUITES.contains(&suite) {
        return sources;
    }
    sources.push((uri.clone(), format!("{suite}-updates"), keyring.clone()));
    let (security, security_keyring) = host
        .security
        .clone()
        .unwrap_or_else(|| (format!("{}-security", uri.trim_end_matches('/')), keyring));
    sources.push((security, format!("{suite}-security"), security_keyring));
    sources
}

pub struct Apt {
    /// `-o` options that point apt at the private lists, if any.
    options: Vec<String>,
    /// Which sources, for messages.
    pub label: String,
    root: bool,
}

/// A package as `apt-cache show` describes its candidate version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Package {
    pub name: String,
    pub version: String,
    /// The first alternative of every Depends entry.
    pub depends: Vec<Dependency>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dependency {
    pub name: String,
    /// The version when the entry pins one with `(= V)`, as kernel metapackages do.
    pub exact: Option<String>,
}

impl Apt {
    pub fn system(root: bool) -> Apt {
        Apt {
            options: Vec::new(),
            label: "the host's apt sources".into(),
            root,
        }
    }

    /// apt with its own sources list, lists and caches in `dir`, for `suite` from `mirror`.
    /// Without `mirror`: the Debian mirror the host's apt sources use, with the suite's
    /// `-updates` and `-security` (where Debian's kernel updates arrive first) beside it, so
    /// the candidate is the suite's newest kernel. The lists are fetched again when they are
    /// older than [`LISTS_MAX_AGE`], so a run sees a kernel update the day it is published.
    pub fn private_suite(suite: &str, mirror: Option<&str>, dir: &Path, root: bool) -> Result<Apt> {
        if suite.is_empty() || !suite.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            bail!("--suite {suite:?} is not a Debian suite name");
        }
        let sources = match mirror {
            Some(uri) => vec![(uri.to_owned(), suite.to_owned(), None)],
            None => {
                let host = host_mirror()?;
                suite_sources(suite, &host)
            }
        };
        for sub in ["lists/partial", "cache/archives/partial", "sources.list.d"] {
            std::fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("creating {}", dir.join(sub).display()))?;
        }
        let list = dir.join("sources.list");
        let text: String = sources
            .iter()
            .map(|(uri, suite, keyring)| {
                let keyring = keyring.clone().or_else(|| {
                    Path::new(DEBIAN_KEYRING)
                        .exists()
                        .then(|| PathBuf::from(DEBIAN_KEYRING))
                });
                let signed_by = keyring
                    .map(|k| format!("[signed-by={}] ", k.display()))
                    .unwrap_or_default();
                format!("deb {signed_by}{uri} {suite} main\n")
            })
            .collect();
        let changed = std::fs::read_to_string(&list).ok().as_deref() != Some(text.as_str());
        std::fs::write(&list, &text).with_context(|| format!("writing {}", list.display()))?;
        let option = |key: &str, value: &Path| format!("{key}={}", value.display());
        let apt = Apt {
            options: vec![
                option("Dir::Etc::SourceList", &list),
                option("Dir::Etc::SourceParts", &dir.join("sources.list.d")),
                option("Dir::State::Lists", &dir.join("lists")),
                option("Dir::Cache", &dir.join("cache")),
                // Package lists are all a kernel lookup needs.
                "Acquire::Languages=none".into(),
            ],
            label: format!(
                "suite {suite} from {} (lists in {})",
                sources
                    .iter()
                    .map(|(uri, suite, _)| format!("{uri} {suite}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                dir.display()
            ),
            root,
        };
        let stamp = dir.join("updated");
        let fresh = std::fs::metadata(&stamp)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age < LISTS_MAX_AGE);
        if changed || !fresh {
            apt.update()?;
            std::fs::write(&stamp, b"").with_context(|| format!("writing {}", stamp.display()))?;
        }
        Ok(apt)
    }

    fn command(&self, tool: &str) -> Command {
        let mut c = Command::new(tool);
        for o in &self.options {
            c.args(["-o", o]);
        }
        if self.root {
            // apt drops to the `_apt` user for downloads, which cannot write to a root-owned
            // target directory; it would fall back to root anyway, with a warning.
            c.args(["-o", "APT::Sandbox::User=root"]);
        }
        c.env("DEBIAN_FRONTEND", "noninteractive");
        c
    }

    fn run(&self, tool: &str, args: &[&str], dir: Option<&Path>) -> Result<Output> {
        let mut c = self.command(tool);
        c.args(args);
        if let Some(dir) = dir {
            c.current_dir(dir);
        }
        c.output()
            .with_context(|| format!("running {tool} (is this a Debian host?)"))
    }

    pub fn update(&self) -> Result<()> {
        eprintln!("xtask: apt-get update ({})", self.label);
        let out = self.run("apt-get", &["update", "-q"], None)?;
        if !out.status.success() {
            bail!(
                "apt-get update failed for {} ({}):\n{}",
                self.label,
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// `version` of `name` (its candidate version when `None`), or `None` when these
    /// sources do not have it.
    pub fn show(&self, name: &str, version: Option<&str>) -> Result<Option<Package>> {
        let wanted = match version {
            Some(v) => format!("{name}={v}"),
            None => name.to_owned(),
        };
        let out = self.run("apt-cache", &["show", "--no-all-versions", &wanted], None)?;
        if !out.status.success() {
            return Ok(None);
        }
        Ok(parse_show(&String::from_utf8_lossy(&out.stdout)))
    }

    /// Downloads the .deb of `package` into `dir` and returns its path.
    pub fn download(&self, package: &Package, dir: &Path) -> Result<PathBuf> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let wanted = format!("{}={}", package.name, package.version);
        eprintln!("xtask: apt-get download {wanted} ({})", self.label);
        let out = self.run("apt-get", &["download", "-q", &wanted], Some(dir))?;
        if !out.status.success() {
            bail!(
                "apt-get download {wanted} failed ({}):\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let prefix = format!("{}_", package.name);
        let mut debs: Vec<PathBuf> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
            })
            .collect();
        match debs.len() {
            1 => Ok(debs.remove(0)),
            n => bail!(
                "apt-get download {wanted} left {n} matching .deb files in {}",
                dir.display()
            ),
        }
    }
}

/// The first stanza of `apt-cache show` output.
fn parse_show(text: &str) -> Option<Package> {
    let stanza = text.split("\n\n").next()?;
    // Join continuation lines (they start with a space) onto their field.
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in stanza.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = fields.last_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
        } else if let Some((key, value)) = line.split_once(':') {
            fields.push((key.trim().to_owned(), value.trim().to_owned()));
        }
    }
    let field = |key: &str| {
        fields
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.clone())
    };
    let depends = field("Depends")
        .unwrap_or_default()
        .split(',')
        .filter_map(|entry| {
            let first = entry.split('|').next()?.trim();
            let name = first.split([' ', '(', ':']).next()?.trim();
            let exact = first
                .split_once("(=")
                .and_then(|(_, v)| v.split(')').next())
                .map(|v| v.trim().to_owned());
            (!name.is_empty()).then(|| Dependency {
                name: name.to_owned(),
                exact,
            })
        })
        .collect();
    Some(Package {
        name: field("Package")?,
        version: field("Version")?,
        depends,
    })
}

/// The Debian mirrors (and their keyrings, when a source names one by path) from the host's
/// apt sources: the first `deb` entry of a plain suite (not -security, -updates, ...), and
/// the first of a `-security` suite.
fn host_mirror() -> Result<HostMirrors> {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut parts: Vec<PathBuf> = dir.filter_map(|e| e.ok().map(|e| e.path())).collect();
        parts.sort();
        files.extend(parts);
    }
    let mut main = None;
    let mut security = None;
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        let find = |wanted: fn(&str) -> bool| match file.extension().and_then(|e| e.to_str()) {
            Some("sources") => mirror_from_deb822(&text, wanted),
            Some("list") => mirror_from_one_line(&text, wanted),
            _ => None,
        };
        main = main.or_else(|| find(plain_suite));
        security = security.or_else(|| find(security_suite));
    }
    match main {
        Some(main) => Ok(HostMirrors { main, security }),
        None => bail!(
            "no Debian `deb` source for a plain suite in /etc/apt/sources.list{{,.d/}}; \
             give the mirror with --mirror URI"
        ),
    }
}

fn security_suite(suite: &str) -> bool {
    suite.strip_suffix("-security").is_some_and(plain_suite)
}

fn plain_suite(suite: &str) -> bool {
    !suite.is_empty() && !suite.contains(['-', '/'])
}

fn mirror_from_deb822(text: &str, wanted: fn(&str) -> bool) -> Option<(String, Option<PathBuf>)> {
    text.split("\n\n").find_map(|stanza| {
        let field = |key: &str| {
            stanza.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(key)
                    .then(|| v.trim().to_owned())
            })
        };
        let deb = field("Types")?.split_whitespace().any(|t| t == "deb");
        let enabled = field("Enabled").is_none_or(|e| e != "no");
        let plain = field("Suites")?.split_whitespace().any(wanted);
        let uri = field("URIs")?.split_whitespace().next()?.to_owned();
        let keyring = field("Signed-By")
            .filter(|k| k.starts_with('/'))
            .map(PathBuf::from);
        (deb && enabled && plain).then_some((uri, keyring))
    })
}

fn mirror_from_one_line(text: &str, wanted: fn(&str) -> bool) -> Option<(String, Option<PathBuf>)> {
    text.lines().find_map(|line| {
        let line = line.split('#').next()?.trim();
        let rest = line.strip_prefix("deb ")?.trim_start();
        let (options, rest) = match rest.strip_prefix('[') {
            Some(r) => r.split_once(']')?,
            None => ("", rest),
        };
        let mut words = rest.split_whitespace();
        let uri = words.next()?.to_owned();
        if !wanted(words.next()?) {
            return None;
        }
        let keyring = options
            .split_whitespace()
            .find_map(|o| o.strip_prefix("signed-by="))
            .map(PathBuf::from);
        Some((uri, keyring))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn show_gives_name_version_and_first_alternatives() {
        let text = "Package: linux-image-cloud-amd64
Source: linux-signed-amd64 (6.1.192+2)
Version: 6.1.192-2
Depends: linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2),
 kmod | busybox:any
Description: Linux for x86-64 cloud (meta-package)

Package: linux-image-cloud-amd64
Version: 6.1.180-1
";
        assert_eq!(
            parse_show(text),
            Some(Package {
                name: "linux-image-cloud-amd64".into(),
                version: "6.1.192-2".into(),
                depends: vec![
                    Dependency {
                        name: "linux-image-6.1.0-56-cloud-amd64".into(),
                        exact: Some("6.1.192-2".into())
                    },
                    Dependency {
                        name: "kmod".into(),
                        exact: None
                    }
                ],
            })
        );
        assert_eq!(parse_show(""), None);
    }

    #[test]
    fn mirror_from_either_sources_format() {
        let deb822 = "Types: deb
URIs: http://mirror.invalid/debian-security
Suites: bookworm-security
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb deb-src
URIs: http://mirror.invalid/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
";
        assert_eq!(
            mirror_from_deb822(deb822, plain_suite),
            Some((
                "http://mirror.invalid/debian".into(),
                Some(PathBuf::from(DEBIAN_KEYRING))
            ))
        );
        let one_line = "# comment
deb http://mirror.invalid/debian-security bookworm-security main
deb [arch=amd64 signed-by=/k.gpg] http://mirror.invalid/debian bookworm main
";
        assert_eq!(
            mirror_from_one_line(one_line, plain_suite),
            Some((
                "http://mirror.invalid/debian".into(),
                Some(PathBuf::from("/k.gpg"))
            ))
        );
        assert_eq!(
            mirror_from_deb822(deb822, security_suite).map(|(uri, _)| uri),
            Some("http://mirror.invalid/debian-security".into())
        );
        assert_eq!(
            mirror_from_one_line(one_line, security_suite).map(|(uri, _)| uri),
            Some("http://mirror.invalid/debian-security".into())
        );
    }

    #[test]
    fn released_suites_get_updates_and_security_and_sid_gets_neither() {
        let host = HostMirrors {
            main: ("http://m.invalid/debian".into(), None),
            security: Some(("http://s.invalid/debian-security".into(), None)),
        };
        let suites = |suite| -> Vec<String> {
            suite_sources(suite, &host)
                .into_iter()
                .map(|(uri, suite, _)| format!("{uri} {suite}"))
                .collect()
        };
        assert_eq!(
            suites("trixie"),
            [
                "http://m.invalid/debian trixie",
                "http://m.invalid/debian trixie-updates",
                "http://s.invalid/debian-security trixie-security"
            ]
        );
        assert_eq!(suites("sid"), ["http://m.invalid/debian sid"]);
        let no_security = HostMirrors {
            security: None,
            ..host.clone()
        };
        assert_eq!(
            suite_sources("bullseye", &no_security)[2].0,
            "http://m.invalid/debian-security"
        );
    }
}
