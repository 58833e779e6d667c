//! Directories nobody else controls, and files opened without following symlinks.
//!
//! A directory another user owns or can write is one whose files that user can rename away,
//! replace or plant symlinks in, so the audit log, its keys and the daemon's other state are
//! only kept in directories owned by the user secops runs as and writable by nobody else. The
//! same holds for every directory above them (the way OpenSSH's StrictModes judges a home
//! directory), except that a sticky directory such as `/tmp` may be writable by all: there
//! only a name's owner can rename or remove it.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::error::AuditError;

/// The effective uid secops runs as.
pub fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Creates `dir` (mode 0700) if it does not exist, then checks it and every directory above it
/// with [`check_dir_chain`].
pub fn ensure_private_dir(dir: &Path, what: &'static str) -> Result<(), AuditError> {
    match DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => tracing::info!(dir = %dir.display(), "created {what}"),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // Parents are created 0700 as well: secops' own tree.
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| AuditError::io(dir, "creating the directory", e))?;
        }
        Err(e) => return Err(AuditError::io(dir, "creating the directory", e)),
    }
    check_dir_chain(dir, what)
}

/// Refuses `dir` unless it is a real directory (not a symlink) owned by secops' user that
/// no group or other user can write, and every directory above it is owned by root or that
/// user and writable by nobody else unless it is sticky.
pub fn check_dir_chain(dir: &Path, what: &'static str) -> Result<(), AuditError> {
    let euid = euid();
    let md = fs::symlink_metadata(dir).map_err(|e| AuditError::io(dir, "inspecting", e))?;
    let unsafe_dir = |path: &Path, why: String| AuditError::UnsafeDir {
        path: path.to_owned(),
        what,
        why,
    };
    if md.file_type().is_symlink() {
        return Err(unsafe_dir(
            dir,
            "it is a symlink; give the directory it points to instead".into(),
        ));
    }
    if !md.is_dir() {
        return Err(unsafe_dir(dir, "it is not a directory".into()));
    }
    if md.uid() != euid {
        return Err(unsafe_dir(
            dir,
            format!(
                "it is owned by uid {}, but secops runs as uid {euid}: that user could rename \
                 or replace what is in it",
                md.uid()
            ),
        ));
    }
    let mode = md.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(unsafe_dir(
            dir,
            format!(
                "it has mode {mode:04o}: group or others can write it and so rename or replace \
                 what is in it (expected 0700; `chmod go-w` it only after checking nobody did)"
            ),
        ));
    }
    let real = fs::canonicalize(dir).map_err(|e| AuditError::io(dir, "resolving", e))?;
    let mut above: Option<&Path> = real.parent();
    while let Some(parent) = above {
        let md =
            fs::metadata(parent).map_err(|e| AuditError::io(parent, "inspecting a parent", e))?;
        let mode = md.mode() & 0o7777;
        if md.uid() != 0 && md.uid() != euid {
            return Err(unsafe_dir(
                dir,
                format!(
                    "the directory above it, {}, is owned by uid {}: that user could move it \
                     away and put another in its place",
                    parent.display(),
                    md.uid()
                ),
            ));
        }
        if mode & 0o022 != 0 && mode & 0o1000 == 0 {
            return Err(unsafe_dir(
                dir,
                format!(
                    "the directory above it, {}, has mode {mode:04o}: others can write it and \
                     so move it away and put another in its place",
                    parent.display()
                ),
            ));
        }
        above = parent.parent();
    }
    Ok(())
}

/// Opens an existing file for reading; a symlink in its place is an error, not followed.
pub fn open_read(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Opens an existing file for appending (and reading); never follows a symlink.
pub fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .append(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Creates a new file (it must not exist, not even as a dangling symlink) for appending.
pub fn create_new(path: &Path, mode: u32) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .append(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// fsyncs a directory, so a name created or removed in it survives a crash.
pub fn sync_dir(dir: &Path) -> Result<(), AuditError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| AuditError::io(dir, "syncing the directory", e))
}

/// Writes `bytes` to `path` atomically: a temporary file in the same directory, fsync,
/// rename over the old name, fsync of the directory.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), AuditError> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp: PathBuf = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let _ = fs::remove_file(&tmp);
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(AuditError::io(path, "writing", e));
    }
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn private_dir_is_created_and_accepted() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("a/b");
        ensure_private_dir(&d, "state directory").unwrap();
        assert_eq!(fs::metadata(&d).unwrap().mode() & 0o777, 0o700);
    }

    #[test]
    fn writable_by_others_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("s");
        fs::create_dir(&d).unwrap();
        fs::set_permissions(&d, fs::Permissions::from_mode(0o777)).unwrap();
        let e = check_dir_chain(&d, "state directory")
            .unwrap_err()
            .to_string();
        assert!(e.contains("mode 0777"), "{e}");
    }

    #[test]
    fn parent_writable_by_others_without_sticky_bit_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("open");
        fs::create_dir(&p).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o777)).unwrap();
        let d = p.join("s");
        fs::create_dir(&d).unwrap();
        fs::set_permissions(&d, fs::Permissions::from_mode(0o700)).unwrap();
        let e = check_dir_chain(&d, "state directory")
            .unwrap_err()
            .to_string();
        assert!(e.contains("directory above it"), "{e}");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o1777)).unwrap();
        check_dir_chain(&d, "state directory").unwrap();
    }

    #[test]
    fn symlinked_dir_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let real = t.path().join("real");
        fs::create_dir(&real).unwrap();
        let link = t.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let e = check_dir_chain(&link, "state directory")
            .unwrap_err()
            .to_string();
        assert!(e.contains("symlink"), "{e}");
    }

    #[test]
    fn files_are_never_opened_through_symlinks() {
        let t = tempfile::tempdir().unwrap();
        let link = t.path().join("audit");
        std::os::unix::fs::symlink(t.path().join("missing"), &link).unwrap();
        assert!(create_new(&link, 0o600).is_err());
        assert!(!t.path().join("missing").exists());
        assert!(open_append(&link).is_err());
    }
}
