//! Reading a policy: the top-level file and what it includes, each parsed and indexed for
//! error positions, then validated as one. Either the whole policy loads or nothing does.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::error::{PolicyError, PolicyErrors};
use super::location::LocationIndex;
use super::model::Policy;
use super::schema::PolicyFile;
use super::{structure, validate};

/// Includes nest at most this deep, so that a runaway chain is an error rather than a hang.
const MAX_INCLUDE_DEPTH: usize = 16;
/// A policy file larger than this is an error, not a memory problem.
const MAX_FILE_BYTES: u64 = 4 << 20;

/// One parsed policy file.
pub struct SourceFile {
    pub path: PathBuf,
    pub index: LocationIndex,
    pub doc: PolicyFile,
    pub is_root: bool,
}

impl SourceFile {
    /// An error at a field of this file, positioned where the field's value starts.
    pub fn error(&self, field: impl Into<String>, message: impl Into<String>) -> PolicyError {
        let field = field.into();
        let (line, column) = self.index.position(&field);
        PolicyError {
            file: self.path.clone(),
            line,
            column,
            field,
            message: message.into(),
        }
    }

    pub fn line_of(&self, field: &str) -> usize {
        self.index.position(field).0
    }
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

fn read_bounded(path: &Path) -> Result<String, String> {
    let metadata = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if !metadata.is_file() {
        return Err("not a regular file".into());
    }
    if metadata.len() > MAX_FILE_BYTES {
        return Err(format!("larger than {} MiB", MAX_FILE_BYTES >> 20));
    }
    std::fs::read_to_string(path).map_err(|e| e.to_string())
}

/// Parses one file; every structural mistake in it is reported (see `structure`).
fn parse_file(path: &Path, source: &str, is_root: bool) -> Result<SourceFile, Vec<PolicyError>> {
    let index = LocationIndex::build(source);
    // serde_yaml reads an empty document as a policy with nothing in it; an empty policy file
    // is far more likely a mistake than a wish for built-in defaults only.
    if matches!(
        serde_yaml::from_str::<serde_yaml::Value>(source),
        Ok(serde_yaml::Value::Null)
    ) {
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
    })
}
