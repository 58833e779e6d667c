//! One policy file as read: its path, its parsed document and the index that places each
//! field, shared by the loader that makes it and the validator that reports against it.

use std::path::PathBuf;

use super::error::PolicyError;
use super::location::LocationIndex;
use super::schema::PolicyFile;

/// One parsed policy file.
pub struct SourceFile {
    pub path: PathBuf,
    pub index: LocationIndex,
    pub doc: PolicyFile,
    pub is_root: bool,
    /// SHA-256 of the file's text.
    pub digest: [u8; 32],
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
