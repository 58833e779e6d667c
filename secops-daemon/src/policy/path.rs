//! Paths as policies name them and the engine judges them: absolute and lexically
//! normalized, so that `/ws/../etc/shadow` is judged as `/etc/shadow` and cannot borrow the
//! workspace's allowance.

use std::fmt;

const MAX_PATH_BYTES: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NormalizedPath(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("{0:?} is not an absolute path")]
    NotAbsolute(String),
    #[error("path contains a NUL byte")]
    Nul,
    #[error("path is longer than {MAX_PATH_BYTES} bytes")]
    TooLong,
}

impl NormalizedPath {
    /// Collapses `//`, `.` and `..` (which cannot climb above `/`). Symlinks are not
    /// resolved here: the kernel side judges objects by inode, not by name.
    pub fn new(raw: &str) -> Result<NormalizedPath, PathError> {
        if !raw.starts_with('/') {
            return Err(PathError::NotAbsolute(raw.to_owned()));
        }
        if raw.contains('\0') {
            return Err(PathError::Nul);
        }
        if raw.len() > MAX_PATH_BYTES {
            return Err(PathError::TooLong);
        }
        let mut parts: Vec<&str> = Vec::new();
        for component in raw.split('/') {
            match component {
                "" | "." => {}
                ".." => {
                    parts.pop();
                }
                other => parts.push(other),
            }
        }
        let mut out = String::with_capacity(raw.len());
        for part in &parts {
            out.push('/');
            out.push_str(part);
        }
        if out.is_empty() {
            out.push('/');
        }
        Ok(NormalizedPath(out))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NormalizedPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_lexically() {
        let n = |s: &str| NormalizedPath::new(s).unwrap().0;
        assert_eq!(n("/srv/ws/../../etc/shadow"), "/etc/shadow");
        assert_eq!(n("/../../etc//passwd/."), "/etc/passwd");
        assert_eq!(n("/a/./b/"), "/a/b");
        assert_eq!(n("/"), "/");
        assert_eq!(n("/.."), "/");
        assert_eq!(
            NormalizedPath::new("etc/passwd"),
            Err(PathError::NotAbsolute("etc/passwd".into()))
        );
        assert_eq!(NormalizedPath::new("/a\0b"), Err(PathError::Nul));
        assert_eq!(
            NormalizedPath::new(&format!("/{}", "a".repeat(5000))),
            Err(PathError::TooLong)
        );
    }
}
