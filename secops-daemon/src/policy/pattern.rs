//! Selector values, checked once when the policy loads: path globs with `~` and
//! `${workspace}`, host names, port ranges and CIDRs.

use std::net::IpAddr;

use globset::GlobBuilder;
use ipnet::{IpNet, Ipv4Net};

use super::glob::{self, Component, Components};

const WORKSPACE_VAR: &str = "${workspace}";

/// A path glob as written in a policy. `*` stays within one path component, `**` crosses
/// them, and `dir/**` also matches `dir` itself (protecting a directory's contents but not the
/// directory would let an agent delete it whole).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPattern {
    raw: String,
    base: PatternBase,
    /// The component lists the pattern stands for, relative to its base: every alternative,
    /// and for `dir/**` also `dir`.
    globs: Vec<Components>,
}

/// What a pattern's components are relative to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatternBase {
    /// `/...` and `**/...`.
    Root,
    /// `~`: the agent's home, or each of the default homes.
    Home,
    /// `${workspace}`.
    Workspace,
}

impl PathPattern {
    /// Checks the pattern: it must be anchored (`/`, `~/`, `${workspace}/` or `**/`), use no
    /// variable but `${workspace}`, have no `.` or `..` component, and be a valid glob.
    pub fn parse(raw: &str) -> Result<PathPattern, String> {
        let (base, rest) = if raw == "~" || raw.starts_with("~/") {
            (PatternBase::Home, &raw[1..])
        } else if let Some(rest) = raw.strip_prefix(WORKSPACE_VAR) {
            if !(rest.is_empty() || rest.starts_with('/')) {
                return Err(format!(
                    "{WORKSPACE_VAR} must be followed by '/' or end the pattern"
                ));
            }
            (PatternBase::Workspace, rest)
        } else if raw.starts_with('/') || raw.starts_with("**/") || raw == "**" {
            (PatternBase::Root, raw)
        } else if raw.starts_with('~') {
            return Err("only '~' and '~/...' are supported ('~user' is not)".to_owned());
        } else {
            return Err(
                "a path pattern must start with '/', '~/', '${workspace}' or '**/'".to_owned(),
            );
        };
        if rest.contains("${") {
            return Err(format!(
                "unknown variable (only {WORKSPACE_VAR} is defined, at the start)"
            ));
        }
        if rest.contains('~') && rest.split('/').any(|c| c.starts_with('~')) {
            return Err("'~' is only meaningful at the start of a pattern".to_owned());
        }
        if rest.split('/').any(|c| c == "." || c == "..") {
            return Err(
                "'.' and '..' components are not allowed (paths are matched normalized)".to_owned(),
            );
        }
        let relative = base != PatternBase::Root;
        let mut globs = glob::parse(rest, relative).map_err(|e| format!("invalid glob: {e}"))?;
        // `dir/**` also matches `dir`; `/**` matches everything already, and `dir/**/**` is
        // left as globset read it.
        let dir_too = rest
            .strip_suffix("/**")
            .is_some_and(|dir| !dir.ends_with("**") && (relative || !dir.is_empty()));
        if dir_too {
            for i in 0..globs.len() {
                if let Some((Component::Recursive, dir)) = globs[i].split_last() {
                    let dir = dir.to_vec();
                    if !globs.contains(&dir) {
                        globs.push(dir);
                    }
                }
            }
        }
        Ok(PathPattern {
            raw: raw.to_owned(),
            base,
            globs,
        })
    }

    pub fn base(&self) -> PatternBase {
        self.base
    }

    /// The component lists this pattern matches, relative to [`PathPattern::base`].
    pub fn globs(&self) -> &[Components] {
        &self.globs
    }

    pub fn as_str(&self) -> &str {
        &self.raw
    }

    pub fn uses_workspace(&self) -> bool {
        self.raw.starts_with(WORKSPACE_VAR)
    }

    /// The concrete globs this pattern stands for, for one agent. `~` becomes each home;
    /// `${workspace}` becomes the workspace, and a pattern that needs a workspace yields
    /// nothing where there is none (the caller decides what an absent match means).
    pub fn expand(&self, homes: &[String], workspace: Option<&str>) -> Vec<String> {
        let bases: Vec<String> = if self.raw == "~" || self.raw.starts_with("~/") {
            homes
                .iter()
                .map(|home| format!("{}{}", home.trim_end_matches('/'), &self.raw[1..]))
                .collect()
        } else if let Some(rest) = self.raw.strip_prefix(WORKSPACE_VAR) {
            workspace
                .map(|ws| format!("{}{rest}", ws.trim_end_matches('/')))
                .into_iter()
                .collect()
        } else {
            vec![self.raw.clone()]
        };
        let mut globs = Vec::with_capacity(bases.len() * 2);
        for base in bases {
            if let Some(dir) = base.strip_suffix("/**") {
                if !dir.is_empty() && !dir.ends_with("**") {
                    globs.push(dir.to_owned());
                }
            }
            globs.push(if base.is_empty() {
                "/".to_owned()
            } else {
                base
            });
        }
        globs
    }
}

/// The one place that says how policy globs are compiled, so that validation and matching agree.
pub fn compile_glob(glob: &str) -> Result<globset::Glob, globset::Error> {
    GlobBuilder::new(glob)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
}

/// A host name, or `*.example.com` for every name below example.com (not example.com itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    /// Lowercase, without a trailing dot; for a wildcard, the suffix with its leading dot.
    name: String,
    wildcard: bool,
}

impl HostPattern {
    pub fn parse(raw: &str) -> Result<HostPattern, String> {
        let lowered = raw.trim_end_matches('.').to_ascii_lowercase();
        let (wildcard, name) = match lowered.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, lowered.as_str()),
        };
        if name.parse::<IpAddr>().is_ok() {
            return Err(
                "an address is not a host name; use `cidrs` (or `cidr:` in egress)".to_owned(),
            );
        }
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        };
        if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
            return Err(format!("{raw:?} is not a valid host name (letters, digits, '-', dots; optionally '*.' first)"));
        }
        Ok(HostPattern {
            name: if wildcard {
                format!(".{name}")
            } else {
                name.to_owned()
            },
            wildcard,
        })
    }

    pub fn matches(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.');
        if self.wildcard {
            host.len() > self.name.len()
                && host.as_bytes()[host.len() - self.name.len()..]
                    .eq_ignore_ascii_case(self.name.as_bytes())
        } else {
            host.eq_ignore_ascii_case(&self.name)
        }
    }

    /// What to index the pattern by: whether it is a wildcard, and the lowercase name (for a
    /// wildcard, the suffix after `*.`).
    pub fn index_key(&self) -> (bool, &str) {
        if self.wildcard {
            (true, &self.name[1..])
        } else {
            (false, &self.name)
        }
    }

    /// The name to resolve, for exact names.
    pub fn exact_name(&self) -> Option<&str> {
        (!self.wildcard).then_some(self.name.as_str())
    }
}

impl std::fmt::Display for HostPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.wildcard {
            write!(f, "*{}", self.name)
        } else {
            f.write_str(&self.name)
        }
    }
}

/// An inclusive port range; a single port is `lo == hi`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
}

impl PortRange {
    /// `443`, or `"8000-8100"`.
    pub fn parse(value: &serde_yaml::Value) -> Result<PortRange, String> {
        let port = |n: i64| -> Result<u16, String> {
            u16::try_from(n)
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| format!("port {n} is out of range 1-65535"))
        };
        match value {
            serde_yaml::Value::Number(n) => match n.as_i64() {
                Some(n) => port(n).map(|p| PortRange { lo: p, hi: p }),
                None => Err(format!("{n} is not a port number")),
            },
            serde_yaml::Value::String(s) => {
                let parse = |part: &str| -> Result<u16, String> {
                    part.trim()
                        .parse::<i64>()
                        .map_err(|_| format!("{s:?} is not a port or a range like \"8000-8100\""))
                        .and_then(port)
                };
                let (lo, hi) = match s.split_once('-') {
                    Some((lo, hi)) => (parse(lo)?, parse(hi)?),
                    None => {
                        let p = parse(s)?;
                        (p, p)
                    }
                };
                if lo > hi {
                    return Err(format!("port range {s:?} runs backwards"));
                }
                Ok(PortRange { lo, hi })
            }
            other => Err(format!(
                "expected a port number or a range string, found {}",
                yaml_kind(other)
            )),
        }
    }

    pub fn contains(self, port: u16) -> bool {
        (self.lo..=self.hi).contains(&port)
    }
}

pub(super) fn yaml_kind(value: &serde_yaml::Value) -> &'static str {
    match value {
        serde_yaml::Value::Null => "nothing",
        serde_yaml::Value::Bool(_) => "a boolean",
        serde_yaml::Value::Number(_) => "a number",
        serde_yaml::Value::String(_) => "a string",
        serde_yaml::Value::Sequence(_) => "a list",
        serde_yaml::Value::Mapping(_) => "a mapping",
        serde_yaml::Value::Tagged(_) => "a tagged value",
    }
}

/// A CIDR or a bare address (a /32 or /128). Host bits must be zero, so that `10.0.0.1/8`
/// (which the writer probably meant as something else) is an error, not a silent widening.
/// IPv4-mapped IPv6 networks are turned into the IPv4 networks they are.
pub fn parse_cidr(raw: &str) -> Result<IpNet, String> {
    let net = match raw.parse::<IpNet>() {
        Ok(net) => net,
        Err(_) => match raw.parse::<IpAddr>() {
            Ok(addr) => IpNet::from(addr),
            Err(_) => {
                return Err(format!(
                    "{raw:?} is not a CIDR (like 10.0.0.0/8 or fd00::/8) or an address"
                ))
            }
        },
    };
    if net.trunc() != net {
        return Err(format!(
            "{raw:?} has host bits set; did you mean {}?",
            net.trunc()
        ));
    }
    Ok(canonical_net(net))
}

fn canonical_net(net: IpNet) -> IpNet {
    if let IpNet::V6(v6) = net {
        if let Some(v4) = v6.network().to_ipv4_mapped() {
            if v6.prefix_len() >= 96 {
                if let Ok(v4net) = Ipv4Net::new(v4, v6.prefix_len() - 96) {
                    return IpNet::V4(v4net);
                }
            }
        }
    }
    net
}

/// An address as the policy judges it: an IPv4-mapped IPv6 address is the IPv4 address it is.
pub fn canonical_addr(addr: IpAddr) -> IpAddr {
    addr.to_canonical()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn homes() -> Vec<String> {
        vec!["/root".into(), "/home/*".into()]
    }

    #[test]
    fn tilde_and_workspace_expand_per_agent() {
        let p = PathPattern::parse("~/.ssh/**").unwrap();
        assert_eq!(
            p.expand(&homes(), None),
            [
                "/root/.ssh",
                "/root/.ssh/**",
                "/home/*/.ssh",
                "/home/*/.ssh/**"
            ]
        );
        let w = PathPattern::parse("${workspace}/.git/hooks/**").unwrap();
        assert_eq!(
            w.expand(&homes(), Some("/srv/ws/")),
            ["/srv/ws/.git/hooks", "/srv/ws/.git/hooks/**"]
        );
        assert!(w.expand(&homes(), None).is_empty());
        assert_eq!(
            PathPattern::parse("~")
                .unwrap()
                .expand(&["/root".into()], None),
            ["/root"]
        );
        assert_eq!(
            PathPattern::parse("**/.env")
                .unwrap()
                .expand(&homes(), None),
            ["**/.env"]
        );
        assert_eq!(
            PathPattern::parse("/**").unwrap().expand(&homes(), None),
            ["/**"]
        );
    }

    #[test]
    fn bad_path_patterns_are_rejected_with_a_reason() {
        for (bad, why) in [
            ("relative/path", "must start"),
            ("~bob/.ssh", "~user"),
            ("${home}/x", "must start"),
            ("${workspace}x", "followed by"),
            ("/a/${workspace}", "unknown variable"),
            ("/a/../etc", "'..'"),
            ("/a/[z-a]", "invalid glob"),
            ("/a/{b,c", "invalid glob"),
        ] {
            let err = PathPattern::parse(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn hosts() {
        let exact = HostPattern::parse("PyPI.org.").unwrap();
        assert!(
            exact.matches("pypi.org") && exact.matches("PYPI.ORG.") && !exact.matches("x.pypi.org")
        );
        let wild = HostPattern::parse("*.github.com").unwrap();
        assert!(wild.matches("api.github.com") && wild.matches("a.b.github.com"));
        assert!(!wild.matches("github.com") && !wild.matches("evilgithub.com"));
        assert!(HostPattern::parse("10.0.0.1").is_err());
        assert!(HostPattern::parse("bad host").is_err());
        assert!(HostPattern::parse("-x.com").is_err());
        assert!(HostPattern::parse("a..com").is_err());
    }

    #[test]
    fn ports() {
        let v = |s: &str| serde_yaml::from_str::<serde_yaml::Value>(s).unwrap();
        assert_eq!(
            PortRange::parse(&v("443")),
            Ok(PortRange { lo: 443, hi: 443 })
        );
        assert_eq!(
            PortRange::parse(&v("'8000-8100'")),
            Ok(PortRange { lo: 8000, hi: 8100 })
        );
        assert!(PortRange::parse(&v("0"))
            .unwrap_err()
            .contains("out of range"));
        assert!(PortRange::parse(&v("65536"))
            .unwrap_err()
            .contains("out of range"));
        assert!(PortRange::parse(&v("'9-1'"))
            .unwrap_err()
            .contains("backwards"));
        assert!(PortRange::parse(&v("'http'")).is_err());
        assert!(PortRange::parse(&v("[1]")).unwrap_err().contains("a list"));
        assert!(PortRange::parse(&v("4.5")).is_err());
    }

    #[test]
    fn cidrs() {
        assert_eq!(parse_cidr("10.0.0.0/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(parse_cidr("127.0.0.1").unwrap().to_string(), "127.0.0.1/32");
        assert_eq!(parse_cidr("::1").unwrap().to_string(), "::1/128");
        assert!(parse_cidr("10.0.0.1/8")
            .unwrap_err()
            .contains("did you mean 10.0.0.0/8"));
        assert!(parse_cidr("10.0.0.0/33").is_err());
        assert!(parse_cidr("example.com").is_err());
        assert_eq!(
            parse_cidr("::ffff:10.0.0.0/104").unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(
            canonical_addr("::ffff:127.0.0.1".parse().unwrap()).to_string(),
            "127.0.0.1"
        );
    }
}
