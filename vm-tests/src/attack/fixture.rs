//! The protected directory's fixtures (`keep.txt` holding `keep\n`, and `subdir`): checked
//! before an attack (a fixture an earlier attack destroyed makes this one an ERROR, not a
//! fake block), checked after it (a block must leave it intact), and restored after an
//! ALLOWED attack so the attacks after it still test something. A restored `keep.txt` is a
//! new inode: a policy keyed on the old inode alone would not cover it, which the restore
//! note says.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::judge::{Outcome, Target};
use super::sys::describe;

pub const KEEP_CONTENT: &[u8] = b"keep\n";

/// Device and inode: "the same file", not merely a file at the same path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identity {
    dev: u64,
    ino: u64,
}

pub struct Protected {
    pub dir: PathBuf,
    pub keep: PathBuf,
    pub subdir: PathBuf,
}

impl Protected {
    pub fn new(dir: &Path) -> Protected {
        Protected {
            dir: dir.to_owned(),
            keep: dir.join("keep.txt"),
            subdir: dir.join("subdir"),
        }
    }

    /// Before an attack on keep.txt: it must be there, a regular file, with its content.
    pub fn keep_before(&self) -> Result<Identity, Outcome> {
        let meta = fs::symlink_metadata(&self.keep).map_err(|e| {
            Outcome::error(format!(
                "fixture {} missing before the attack: {}",
                self.keep.display(),
                describe(&e)
            ))
        })?;
        if !meta.is_file() {
            return Err(Outcome::error(format!(
                "fixture {} is not a regular file",
                self.keep.display()
            )));
        }
        match fs::read(&self.keep) {
            Ok(c) if c == KEEP_CONTENT => Ok(Identity {
                dev: meta.dev(),
                ino: meta.ino(),
            }),
            Ok(c) => Err(Outcome::error(format!(
                "fixture {} altered before the attack ({} bytes, not `keep\\n`)",
                self.keep.display(),
                c.len()
            ))),
            Err(e) => Err(Outcome::error(format!(
                "fixture {} unreadable: {}",
                self.keep.display(),
                describe(&e)
            ))),
        }
    }

    /// After an attack: the same inode at the same path, with the same content.
    pub fn keep_after(&self, before: Identity) -> Target {
        let meta = match fs::symlink_metadata(&self.keep) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Target::Damaged("protected keep.txt is gone".into())
            }
            Err(e) => return Target::Unverifiable(format!("stat keep.txt: {}", describe(&e))),
        };
        if (Identity {
            dev: meta.dev(),
            ino: meta.ino(),
        }) != before
        {
            return Target::Damaged("protected keep.txt was replaced by another inode".into());
        }
        match fs::read(&self.keep) {
            Ok(c) if c == KEEP_CONTENT => Target::Intact,
            Ok(c) => Target::Damaged(format!(
                "protected keep.txt content changed ({} bytes now)",
                c.len()
            )),
            Err(e) => Target::Unverifiable(format!("read keep.txt: {}", describe(&e))),
        }
    }

    /// Puts `keep\n` back at keep.txt (new file or rewritten content); says what it did.
    pub fn restore_keep(&self) -> String {
        if fs::read(&self.keep).is_ok_and(|c| c == KEEP_CONTENT) {
            return String::new();
        }
        match fs::write(&self.keep, KEEP_CONTENT) {
            Ok(()) => "restored keep.txt".into(),
            Err(e) => format!("could not restore keep.txt: {}", describe(&e)),
        }
    }

    pub fn subdir_before(&self) -> Result<Identity, Outcome> {
        match fs::symlink_metadata(&self.subdir) {
            Ok(m) if m.is_dir() => Ok(Identity {
                dev: m.dev(),
                ino: m.ino(),
            }),
            Ok(_) => Err(Outcome::error("fixture subdir is not a directory")),
            Err(e) => Err(Outcome::error(format!(
                "fixture {} missing before the attack: {}",
                self.subdir.display(),
                describe(&e)
            ))),
        }
    }

    pub fn subdir_after(&self, before: Identity) -> Target {
        match fs::symlink_metadata(&self.subdir) {
            Ok(m) if m.is_dir() && m.dev() == before.dev && m.ino() == before.ino => Target::Intact,
            Ok(_) => Target::Damaged("protected subdir was replaced".into()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Target::Damaged("protected subdir is gone".into())
            }
            Err(e) => Target::Unverifiable(format!("stat subdir: {}", describe(&e))),
        }
    }

    pub fn restore_subdir(&self) -> String {
        if self.subdir.is_dir() {
            return String::new();
        }
        match fs::create_dir(&self.subdir) {
            Ok(()) => "restored subdir".into(),
            Err(e) => format!("could not restore subdir: {}", describe(&e)),
        }
    }
}

/// Removes a workspace file an attack left, saying so only when that failed.
pub fn remove_leftover(path: &Path) -> String {
    match fs::symlink_metadata(path) {
        Err(_) => String::new(),
        Ok(_) => match fs::remove_file(path) {
            Ok(()) => String::new(),
            Err(e) => format!("could not remove {}: {}", path.display(), describe(&e)),
        },
    }
}
