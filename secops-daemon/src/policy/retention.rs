//! The `retention:` section: where the daemon moves sealed audit segments, which ones, and
//! how often it looks.
//!
//! ```yaml
//! retention:
//!   archive: /srv/secops-audit-archive   # must exist, be a directory and writable
//!   keep_age: 30d                         # segments whose newest record is younger stay
//!   keep_bytes: 1073741824                # at most this many bytes of segments stay live
//!   every: 1h                             # how often the daemon rotates (default 1h)
//! ```
//!
//! A missing or unwritable archive directory is an error here (at load, so the daemon does
//! not start, and a reload is refused), never a silent skip or delete later. Only one file
//! of a policy may set the section.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::error::PolicyError;
use super::source::SourceFile;

/// As written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSpec {
    pub archive: Option<String>,
    pub keep_age: Option<serde_yaml::Value>,
    pub keep_bytes: Option<serde_yaml::Value>,
    pub every: Option<serde_yaml::Value>,
}

/// As validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retention {
    pub archive: PathBuf,
    pub keep_age: Option<Duration>,
    pub keep_bytes: Option<u64>,
    pub every: Duration,
}

impl Retention {
    pub const DEFAULT_EVERY: Duration = Duration::from_secs(3600);
    pub const MIN_EVERY: Duration = Duration::from_secs(1);
}

/// The section of whichever file sets it; errors go to `errors`.
pub fn section(files: &[SourceFile], errors: &mut Vec<PolicyError>) -> Option<Retention> {
    let mut out = None;
    let mut set_at: Option<String> = None;
    for file in files {
        let Some(spec) = &file.doc.retention else {
            continue;
        };
        let here = format!("{}:{}", file.path.display(), file.line_of("retention"));
        if let Some(first) = &set_at {
            errors.push(file.error(
                "retention",
                format!("retention is already set at {first}; only one policy file may set it"),
            ));
            continue;
        }
        set_at = Some(here);
        let before = errors.len();
        let archive = match &spec.archive {
            None => {
                errors.push(file.error(
                    "retention",
                    "`archive` is missing: retention moves segments into an archive directory and never deletes them",
                ));
                None
            }
            Some(raw) => match check_archive_dir(raw) {
                Ok(p) => Some(p),
                Err(e) => {
                    errors.push(file.error("retention.archive", e));
                    None
                }
            },
        };
        let mut duration = |field: &str, raw: &Option<serde_yaml::Value>| {
            raw.as_ref().and_then(|r| match duration_of(r) {
                Ok(d) => Some(d),
                Err(e) => {
                    errors.push(file.error(format!("retention.{field}"), e));
                    None
                }
            })
        };
        let keep_age = duration("keep_age", &spec.keep_age);
        let every = duration("every", &spec.every).unwrap_or(Retention::DEFAULT_EVERY);
        let keep_bytes = match &spec.keep_bytes {
            None => None,
            Some(serde_yaml::Value::Number(n)) if n.as_u64().is_some_and(|b| b > 0) => n.as_u64(),
            Some(other) => {
                errors.push(file.error(
                    "retention.keep_bytes",
                    format!("{other:?} is not a positive number of bytes"),
                ));
                None
            }
        };
        if every < Retention::MIN_EVERY {
            errors.push(file.error("retention.every", "must be at least 1s"));
        }
        if errors.len() == before {
            out = archive.map(|archive| Retention {
                archive,
                keep_age,
                keep_bytes,
                every,
            });
        }
    }
    out
}

fn duration_of(raw: &serde_yaml::Value) -> Result<Duration, String> {
    match raw {
        serde_yaml::Value::String(text) => humantime::parse_duration(text)
            .map_err(|e| format!("{text:?} is not a duration ({e}); write e.g. `30d` or `1h`")),
        serde_yaml::Value::Number(n) => Err(format!(
            "{n} has no unit; write it as a duration such as `{n}s` or `30d`"
        )),
        _ => Err("must be a duration such as `30d`".to_owned()),
    }
}

/// The archive directory must be there, a directory (not a symlink) and writable by us.
fn check_archive_dir(raw: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(raw);
    if !path.is_absolute() {
        return Err(format!("{raw:?} is not an absolute path"));
    }
    let meta = std::fs::symlink_metadata(&path)
        .map_err(|e| format!("{raw:?} cannot be used as the archive directory: {e}"))?;
    if !meta.is_dir() {
        return Err(format!(
            "{raw:?} is not a directory (symlinks are not followed)"
        ));
    }
    rustix::fs::access(
        &path,
        rustix::fs::Access::WRITE_OK | rustix::fs::Access::EXEC_OK,
    )
    .map_err(|e| format!("{raw:?} is not writable by this user: {e}"))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use crate::policy::parse_policy_str;
    use std::path::Path;

    fn errors(retention: &str) -> String {
        let text = format!("version: 1\nretention:\n{retention}");
        match parse_policy_str(Path::new("/etc/secops/policy.yaml"), &text) {
            Ok(p) => panic!("accepted: {:?}", p.retention),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_valid_section_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "version: 1\nretention:\n  archive: {}\n  keep_age: 30d\n  keep_bytes: 1048576\n  every: 10m\n",
            dir.path().display()
        );
        let p = parse_policy_str(Path::new("/p.yaml"), &text).unwrap();
        let r = p.retention.unwrap();
        assert_eq!(r.archive, dir.path());
        assert_eq!(r.keep_age, Some(std::time::Duration::from_secs(30 * 86400)));
        assert_eq!(r.keep_bytes, Some(1048576));
        assert_eq!(r.every, std::time::Duration::from_secs(600));
        let none = parse_policy_str(Path::new("/p.yaml"), "version: 1\n").unwrap();
        assert!(none.retention.is_none());
    }

    #[test]
    fn every_mistake_names_file_line_and_field() {
        let e = errors("  archive: /nonexistent/archive\n");
        assert!(
            e.contains("/etc/secops/policy.yaml:3")
                && e.contains("retention.archive")
                && e.contains("No such file"),
            "{e}"
        );
        let e = errors("  keep_age: 30d\n");
        assert!(
            e.contains("`archive` is missing") && e.contains("policy.yaml:3"),
            "{e}"
        );
        let e = errors("  archive: relative/dir\n");
        assert!(e.contains("not an absolute path"), "{e}");
        let e = errors("  archive: /etc/passwd\n");
        assert!(e.contains("is not a directory"), "{e}");
        let e = errors("  archive: /tmp\n  keep_age: 30\n");
        assert!(
            e.contains("retention.keep_age") && e.contains("no unit") && e.contains(":4"),
            "{e}"
        );
        let e = errors("  archive: /tmp\n  keep_bytes: -5\n");
        assert!(e.contains("retention.keep_bytes"), "{e}");
        let e = errors("  archive: /tmp\n  every: 0s\n");
        assert!(
            e.contains("retention.every") && e.contains("at least 1s"),
            "{e}"
        );
        let e = errors("  archive: /tmp\n  keep: 1d\n");
        assert!(e.contains("keep"), "{e}");
    }
}
