//! Reading a policy: the top-level file and what it includes, each parsed and indexed for
//! error positions, then validated as one. Either the whole policy loads or nothing does.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::Digest;

use super::error::{PolicyError, PolicyErrors};
use super::location::LocationIndex;
use super::model::Policy;
use super::source::SourceFile;
use super::{structure, validate};

/// Includes nest at most this deep, so that a runaway chain is an error rather than a hang.
const MAX_INCLUDE_DEPTH: usize = 16;
/// A policy file larger than the limit is an error, not a memory problem: loading holds
/// several copies of a file's contents while it is parsed. The default takes about 150,000
/// rules in one file; `--max-policy-file-mib` raises it, and `include:` splits a policy.
pub const DEFAULT_MAX_FILE_MIB: u64 = 16;
static MAX_FILE_MIB: AtomicU64 = AtomicU64::new(DEFAULT_MAX_FILE_MIB);

/// Sets the largest policy file (each file, includes too) this process reads, in MiB.
pub fn set_max_file_mib(mib: u64) {
    MAX_FILE_MIB.store(mib, Ordering::Relaxed);
}

/// Loads and validates the policy at `path` and everything it includes.
pub fn load_policy(path: &Path) -> Result<Policy, PolicyErrors> {
    let mut loader = Loader {
        files: Vec::new(),
        errors: Vec::new(),
        stack: Vec::new(),
        loaded: HashSet::new(),
    };
    loader.read(path, None);
    let policy = if loader.errors.is_empty() {
        Some(validate::validate(&loader.files, &mut loader.errors))
    } else {
        None
    };
    match policy {
        Some(policy) if loader.errors.is_empty() => Ok(policy),
        _ => Err(PolicyErrors(loader.errors)),
    }
}

/// Parses a policy held in memory, as if read from `name` (which must not include files).
pub fn parse_policy_str(name: &Path, source: &str) -> Result<Policy, PolicyErrors> {
    let mut errors = Vec::new();
    let file = match parse_file(name, source, true) {
        Ok(file) => file,
        Err(errors) => return Err(PolicyErrors(errors)),
    };
    if !file.doc.include.is_empty() {
        return Err(PolicyErrors(vec![
            file.error("include", "a policy given as text cannot include files")
        ]));
    }
    let policy = validate::validate(std::slice::from_ref(&file), &mut errors);
    if errors.is_empty() {
        Ok(policy)
    } else {
        Err(PolicyErrors(errors))
    }
}

struct Loader {
    files: Vec<SourceFile>,
    errors: Vec<PolicyError>,
    /// Canonical paths of the files being read, to find include cycles.
    stack: Vec<PathBuf>,
    /// Canonical paths already read: a file included twice is read once.
    loaded: HashSet<PathBuf>,
}

/// Makes the error for a problem with an included file, positioned at its `include` entry.
type IncludeSite<'a> = &'a dyn Fn(String) -> PolicyError;

impl Loader {
    fn read(&mut self, path: &Path, site: Option<IncludeSite<'_>>) {
        let fail = |message: String| match &site {
            Some(site) => site(message),
            None => PolicyError {
                file: path.to_owned(),
                line: 0,
                column: 0,
                field: ".".into(),
                message,
            },
        };
        let canonical = match path.canonicalize() {
            Ok(canonical) => canonical,
            Err(e) => {
                // An include copied from an example often points where nothing is.
                let hint = if site.is_some() && e.kind() == std::io::ErrorKind::NotFound {
                    " (an include is relative to the file that includes it, or absolute; the \
                     shared files are in /etc/secops/common/ where the package is installed, \
                     policies/common/ in the source tree)"
                } else {
                    ""
                };
                return self.errors.push(fail(format!(
                    "cannot read policy file {}: {e}{hint}",
                    path.display()
                )));
            }
        };
        if self.stack.contains(&canonical) {
            return self.errors.push(fail(format!(
                "include cycle: {} includes itself",
                path.display()
            )));
        }
        if self.stack.len() >= MAX_INCLUDE_DEPTH {
            return self.errors.push(fail(format!(
                "includes nest deeper than {MAX_INCLUDE_DEPTH}"
            )));
        }
        if !self.loaded.insert(canonical.clone()) {
            return;
        }
        let source = match read_bounded(&canonical) {
            Ok(source) => source,
            Err(message) => {
                return self.errors.push(fail(format!(
                    "cannot read policy file {}: {message}",
                    path.display()
                )))
            }
        };
        let file = match parse_file(path, &source, site.is_none()) {
            Ok(file) => file,
            Err(errors) => return self.errors.extend(errors),
        };
        self.stack.push(canonical);
        let base = path.parent().unwrap_or(Path::new("."));
        for (i, include) in file.doc.include.iter().enumerate() {
            let field = format!("include[{i}]");
            let make_error = |message: String| file.error(field.clone(), message);
            if include.trim().is_empty() {
                self.errors
                    .push(make_error("an include names no file".into()));
                continue;
            }
            self.read(&base.join(include), Some(&make_error));
        }
        self.stack.pop();
        self.files.push(file);
    }
}

/// Reads a policy file, at most the file limit of it (`--max-policy-file-mib`), from a regular file on a real
/// filesystem. The size is counted while reading: `/proc` and `/sys` files report size 0 and
/// can be endless (`/proc/self/pagemap`), and a FIFO would block a reload forever, so the
/// file is opened without blocking and judged by what was opened, not by its name.
fn read_bounded(path: &Path) -> Result<String, String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| e.to_string())?;
    let metadata = file.metadata().map_err(|e| e.to_string())?;
    if !metadata.is_file() {
        return Err("not a regular file".into());
    }
    if let Some(kind) = pseudo_filesystem(&file) {
        return Err(format!("a file of {kind}, not a policy"));
    }
    let limit = MAX_FILE_MIB.load(Ordering::Relaxed) << 20;
    let too_large = |size: u64| {
        format!(
            "it is {:.1} MiB or more, larger than the {} MiB allowed for one policy file; \
             split it with `include:` or raise the limit with --max-policy-file-mib N (or \
             SECOPS_MAX_POLICY_FILE_MIB=N)",
            size as f64 / f64::from(1u32 << 20),
            limit >> 20
        )
    };
    if metadata.len() > limit {
        return Err(too_large(metadata.len()));
    }
    // Counted while reading too: the size a file reports is not what it holds.
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > limit {
        return Err(too_large(bytes.len() as u64));
    }
    String::from_utf8(bytes).map_err(|e| format!("not UTF-8 text: {e}"))
}

/// Where `[` and `{` (outside quotes and comments) first nest deeper than [`MAX_NESTING`],
/// as (line, column), both from 1.
fn flow_too_deep(source: &str) -> Option<(usize, usize)> {
    let (mut depth, mut line, mut column) = (0usize, 1usize, 0usize);
    let mut quote: Option<char> = None;
    let mut comment = false;
    let mut previous = '\n';
    for c in source.chars() {
        column += 1;
        match (quote, c) {
            (_, '\n') => {
                line += 1;
                column = 0;
                comment = false;
            }
            _ if comment => {}
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '#') if previous.is_whitespace() => comment = true,
            (None, '\'' | '"') => quote = Some(c),
            (None, '[' | '{') => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Some((line, column));
                }
            }
            (None, ']' | '}') => depth = depth.saturating_sub(1),
            _ => {}
        }
        previous = c;
    }
    None
}

/// The kernel's pseudo-filesystems, whose files are views of kernel state, not documents.
fn pseudo_filesystem(file: &std::fs::File) -> Option<&'static str> {
    use std::os::fd::AsRawFd;
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: fstatfs writes one statfs into the buffer given, for an open descriptor.
    if unsafe { libc::fstatfs(file.as_raw_fd(), &mut fs) } != 0 {
        return None;
    }
    const PROC: i64 = 0x9fa0;
    const SYSFS: i64 = 0x6265_6572;
    const DEBUGFS: i64 = 0x6462_6720;
    const TRACEFS: i64 = 0x7472_6163;
    const SECURITYFS: i64 = 0x7363_6673;
    const BPFFS: i64 = 0xcafe_4a11;
    const CGROUP2: i64 = 0x6367_7270;
    match fs.f_type as i64 {
        PROC => Some("/proc"),
        SYSFS => Some("sysfs"),
        DEBUGFS | TRACEFS => Some("a kernel tracing filesystem"),
        SECURITYFS => Some("securityfs"),
        BPFFS => Some("bpffs"),
        CGROUP2 => Some("cgroupfs"),
        _ => None,
    }
}

/// Mappings and lists nest at most this deep: no policy needs more, and each level costs
/// every later step (the position index, serde) more.
const MAX_NESTING: usize = 32;

/// Refuses a document nested deeper than [`MAX_NESTING`] before anything else reads it,
/// naming where it went too deep. One pass over the parser's events, so 80 KB of brackets
/// cost milliseconds, not the seconds (or, on reload, the hang) a full parse of them took.
fn check_nesting(path: &Path, source: &str) -> Result<(), PolicyError> {
    use yaml_rust2::parser::{Event, Parser};
    let too_deep = |line: usize, column: usize| PolicyError {
        file: path.to_owned(),
        line,
        column,
        field: ".".into(),
        message: format!(
            "mappings and lists nest deeper than {MAX_NESTING} levels here; no policy needs that"
        ),
    };
    // Flow collections (`[`, `{`) first, byte by byte: the YAML scanner's time grows with
    // the square of their depth before it reports its first event.
    if let Some((line, column)) = flow_too_deep(source) {
        return Err(too_deep(line, column));
    }
    let mut parser = Parser::new_from_str(source);
    let mut depth = 0usize;
    while let Ok((event, marker)) = parser.next_token() {
        match event {
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(too_deep(marker.line(), marker.col() + 1));
                }
            }
            Event::MappingEnd | Event::SequenceEnd => depth = depth.saturating_sub(1),
            Event::StreamEnd => break,
            _ => {}
        }
    }
    Ok(())
}

/// Parses one file; every structural mistake in it is reported (see `structure`).
fn parse_file(path: &Path, source: &str, is_root: bool) -> Result<SourceFile, Vec<PolicyError>> {
    check_nesting(path, source).map_err(|e| vec![e])?;
    let index = LocationIndex::build(source);
    // serde_yaml reads an empty document as a policy with nothing in it; an empty policy file
    // is far more likely a mistake than a wish for built-in defaults only.
    // The index tells cheaply (a full parse into a `Value` was a third of loading a large
    // policy); serde_yaml confirms.
    if index.is_empty_document()
        && matches!(
            serde_yaml::from_str::<serde_yaml::Value>(source),
            Ok(serde_yaml::Value::Null)
        )
    {
        let message = "the file holds no policy (it is empty or only comments)";
        return Err(vec![PolicyError {
            file: path.to_owned(),
            line: 1,
            column: 1,
            field: ".".into(),
            message: message.into(),
        }]);
    }
    let doc = structure::read(path, source, &index)?;
    Ok(SourceFile {
        path: path.to_owned(),
        index,
        doc,
        is_root,
        digest: sha2::Sha256::digest(source.as_bytes()).into(),
    })
}
