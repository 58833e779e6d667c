//! The checkpoint signing key: created once, kept private, never trusted if others could read
//! or replace it.
//!
//! `keys/audit-signing.key` holds the 32-byte Ed25519 seed as hex text; `keys/audit-signing.pub`
//! holds the public key as hex text, so `secops audit verify` (and anyone holding a copy of
//! the public key) can check checkpoints without the private key.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use ed25519_dalek::{SigningKey, VerifyingKey};
use rand_core::{OsRng, RngCore};

use super::error::AuditError;
use super::paths::AuditPaths;

/// A key file is a few dozen bytes; anything much longer is not ours.
const MAX_KEY_FILE: u64 = 1024;

/// Loads the signing key, creating it (and `keys/`) on first start. Also makes sure the public
/// key file exists and matches.
pub fn load_or_create_signing_key(paths: &AuditPaths) -> Result<SigningKey, AuditError> {
    match load_signing_key(paths)? {
        Some(key) => Ok(key),
        None => {
            let key = create_signing_key(paths)?;
            ensure_public_key_file(paths, &key.verifying_key())?;
            Ok(key)
        }
    }
}

/// Loads the signing key if it exists (checking its permissions), without creating one. Also
/// restores a missing public key file.
pub fn load_signing_key(paths: &AuditPaths) -> Result<Option<SigningKey>, AuditError> {
    ensure_key_dir(&paths.keys_dir)?;
    let Some(key) = read_signing_key(&paths.signing_key)? else {
        return Ok(None);
    };
    ensure_public_key_file(paths, &key.verifying_key())?;
    Ok(Some(key))
}

/// Reads the public key that checkpoints are verified against. Needs no secret.
pub fn load_verifying_key(paths: &AuditPaths) -> Result<VerifyingKey, AuditError> {
    let path = &paths.public_key;
    let file =
        open_nofollow(path).map_err(|e| AuditError::io(path, "reading the audit public key", e))?;
    let text = read_small(path, file)?;
    parse_public_key(path, text.trim())
}

/// Parses a hex public key (as stored in the key file and in the log's meta table).
pub fn parse_public_key(path: &Path, hex_text: &str) -> Result<VerifyingKey, AuditError> {
    let bytes: [u8; 32] = decode_hex32(hex_text.as_bytes()).map_err(|why| AuditError::BadKey {
        path: path.to_owned(),
        why: format!("public key: {why}"),
    })?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| AuditError::BadKey {
        path: path.to_owned(),
        why: format!("public key is not a valid Ed25519 point: {e}"),
    })
}

fn ensure_key_dir(dir: &Path) -> Result<(), AuditError> {
    match DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {
            tracing::info!(dir = %dir.display(), "created audit key directory");
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(AuditError::io(dir, "creating the key directory", e)),
    }
    let md = fs::symlink_metadata(dir)
        .map_err(|e| AuditError::io(dir, "inspecting the key directory", e))?;
    if !md.is_dir() {
        return Err(AuditError::BadKey {
            path: dir.to_owned(),
            why: "the key directory is not a directory (or is a symlink)".into(),
        });
    }
    let mode = md.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(AuditError::KeyDirPermissions {
            path: dir.to_owned(),
            mode,
        });
    }
    check_owner(dir, md.uid())
}

fn check_owner(path: &Path, owner: u32) -> Result<(), AuditError> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if owner != euid {
        return Err(AuditError::KeyOwner {
            path: path.to_owned(),
            owner,
            euid,
        });
    }
    Ok(())
}

/// `O_NOFOLLOW`: a symlink planted in place of the key is refused instead of followed.
fn open_nofollow(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

fn read_small(path: &Path, file: File) -> Result<String, AuditError> {
    let md = file
        .metadata()
        .map_err(|e| AuditError::io(path, "inspecting key file", e))?;
    if !md.is_file() {
        return Err(AuditError::BadKey {
            path: path.to_owned(),
            why: "not a regular file".into(),
        });
    }
    let mut text = String::new();
    file.take(MAX_KEY_FILE)
        .read_to_string(&mut text)
        .map_err(|e| AuditError::io(path, "reading key file", e))?;
    Ok(text)
}

fn read_signing_key(path: &Path) -> Result<Option<SigningKey>, AuditError> {
    let file = match open_nofollow(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(AuditError::io(path, "opening the audit signing key", e)),
    };
    // Check permissions on the open descriptor, so the file checked is the file read.
    let md = file
        .metadata()
        .map_err(|e| AuditError::io(path, "inspecting the audit signing key", e))?;
    let mode = md.mode() & 0o7777;
    if md.is_file() && mode & 0o077 != 0 {
        return Err(AuditError::KeyPermissions {
            path: path.to_owned(),
            mode,
        });
    }
    check_owner(path, md.uid())?;
    let mut text = read_small(path, file)?.into_bytes();
    let seed = decode_hex32(text.trim_ascii());
    // Do not leave the secret lying around in freed memory longer than needed.
    text.fill(0);
    let mut seed = seed.map_err(|why| AuditError::BadKey {
        path: path.to_owned(),
        why,
    })?;
    let key = SigningKey::from_bytes(&seed);
    seed.fill(0);
    Ok(Some(key))
}

fn create_signing_key(paths: &AuditPaths) -> Result<SigningKey, AuditError> {
    let path = &paths.signing_key;
    let key = SigningKey::generate(&mut OsRng);
    let tmp = temp_path(paths, "audit-signing.key");
    // O_EXCL + mode 0600 at creation: there is no moment at which the file exists with wider
    // permissions, and no existing file or symlink is ever written through.
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .map_err(|e| AuditError::io(&tmp, "creating the audit signing key", e))?;
    let mut text = hex::encode(key.to_bytes()).into_bytes();
    text.push(b'\n');
    let written = file.write_all(&text).and_then(|()| file.sync_all());
    text.fill(0);
    drop(file);
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(AuditError::io(&tmp, "writing the audit signing key", e));
    }
    // link(2) never replaces an existing name: if another process created the key in the
    // meantime, theirs wins and we use it, so both sign with the same key. The file is only
    // visible under its real name once it is complete.
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            sync_dir(&paths.keys_dir)?;
            tracing::info!(path = %path.display(), "created audit signing key");
            Ok(key)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            read_signing_key(path)?.ok_or_else(|| {
                AuditError::io(
                    path,
                    "reading the audit signing key",
                    io::ErrorKind::NotFound.into(),
                )
            })
        }
        Err(e) => Err(AuditError::io(path, "creating the audit signing key", e)),
    }
}

/// Where a key that is taking over sits until the log has said so (a rotation frame).
fn next_key_path(paths: &AuditPaths) -> PathBuf {
    paths.keys_dir.join("audit-signing.key.next")
}

/// Writes a new signing key beside the current one (`audit-signing.key.next`, 0600, synced),
/// before the log hands over to it: a crash after the handover then still finds the key.
pub fn stage_next_key(paths: &AuditPaths, key: &SigningKey) -> Result<(), AuditError> {
    ensure_key_dir(&paths.keys_dir)?;
    let path = next_key_path(paths);
    let _ = fs::remove_file(&path);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .map_err(|e| AuditError::io(&path, "creating the next audit signing key", e))?;
    let mut text = hex::encode(key.to_bytes()).into_bytes();
    text.push(b'\n');
    let written = file.write_all(&text).and_then(|()| file.sync_all());
    text.fill(0);
    written.map_err(|e| AuditError::io(&path, "writing the next audit signing key", e))?;
    sync_dir(&paths.keys_dir)
}

/// The staged next key, if there is one.
pub fn read_next_key(paths: &AuditPaths) -> Result<Option<SigningKey>, AuditError> {
    read_signing_key(&next_key_path(paths))
}

/// Makes the staged key the signing key (after the log's rotation frame is durable).
pub fn promote_next_key(paths: &AuditPaths) -> Result<SigningKey, AuditError> {
    let next = next_key_path(paths);
    let key = read_signing_key(&next)?.ok_or_else(|| {
        AuditError::io(
            &next,
            "reading the next audit signing key",
            io::ErrorKind::NotFound.into(),
        )
    })?;
    fs::rename(&next, &paths.signing_key)
        .map_err(|e| AuditError::io(&paths.signing_key, "installing the new signing key", e))?;
    let _ = fs::remove_file(&paths.public_key);
    ensure_public_key_file(paths, &key.verifying_key())?;
    sync_dir(&paths.keys_dir)?;
    Ok(key)
}

fn ensure_public_key_file(paths: &AuditPaths, public: &VerifyingKey) -> Result<(), AuditError> {
    let path = &paths.public_key;
    let want = hex::encode(public.as_bytes());
    match open_nofollow(path) {
        Ok(file) => {
            let have = read_small(path, file)?;
            if have.trim() == want {
                return Ok(());
            }
            return Err(AuditError::KeyMismatch {
                path: path.clone(),
                why: format!(
                    "public key file does not match the signing key {} (one of them was replaced)",
                    paths.signing_key.display()
                ),
            });
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(AuditError::io(path, "opening the audit public key", e)),
    }
    let tmp = temp_path(paths, "audit-signing.pub");
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        f.write_all(format!("{want}\n").as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(AuditError::io(path, "writing the audit public key", e));
    }
    sync_dir(&paths.keys_dir)
}

/// A fresh name in the key directory: unique across processes and threads starting at once.
fn temp_path(paths: &AuditPaths, name: &str) -> PathBuf {
    let mut nonce = [0u8; 8];
    OsRng.fill_bytes(&mut nonce);
    paths.keys_dir.join(format!(
        ".{name}.{}.{}",
        std::process::id(),
        hex::encode(nonce)
    ))
}

fn sync_dir(dir: &Path) -> Result<(), AuditError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| AuditError::io(dir, "syncing directory", e))
}

fn decode_hex32(text: &[u8]) -> Result<[u8; 32], String> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).map_err(|e| format!("expected 64 hex digits: {e}"))?;
    Ok(out)
}
