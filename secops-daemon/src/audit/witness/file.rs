//! The file witness: one line per checkpoint appended to a file, synced before the
//! checkpoint counts as witnessed. Point it at a file that secops' state directory does not
//! hold: another mount, or a file owned by another user with `chattr +a` (append-only), which
//! root can append to but whoever takes over the state directory cannot quietly rewrite.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

pub struct FileWitness {
    path: PathBuf,
    file: Option<File>,
}

impl FileWitness {
    pub fn new(path: &Path) -> FileWitness {
        FileWitness {
            path: path.to_owned(),
            file: None,
        }
    }

    pub fn send(&mut self, lines: &str) -> io::Result<()> {
        if self.file.is_none() {
            self.file = Some(
                OpenOptions::new()
                    .append(true)
                    .create(true)
                    .mode(0o640)
                    .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                    .open(&self.path)?,
            );
        }
        let result = match self.file.as_mut() {
            Some(f) => f.write_all(lines.as_bytes()).and_then(|()| f.sync_data()),
            None => Ok(()),
        };
        if result.is_err() {
            // Open it again next time: it may have been replaced or its disk remounted.
            self.file = None;
        }
        result
    }
}
