//! A cpio archive in the "newc" format, the one the kernel unpacks as an initramfs
//! (Documentation/driver-api/early-userspace/buffer-format.rst). Written here rather than
//! with `cpio` so that device nodes need no mknod on the host and the archive is the same
//! bytes for the same inputs (owners root, times zero, sorted names).

use std::collections::BTreeMap;
use std::io::{self, Write};

use anyhow::{bail, Result};

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

enum Entry {
    Dir,
    File { mode: u32, data: Vec<u8> },
    Symlink { target: String },
    CharDevice { mode: u32, major: u32, minor: u32 },
}

/// Paths are absolute in the guest (`/bin/sh`); parent directories are made as needed.
#[derive(Default)]
pub struct Archive {
    // Sorted, so every directory is written before what it holds.
    entries: BTreeMap<String, Entry>,
}

impl Archive {
    pub fn dir(&mut self, path: &str) -> Result<()> {
        let key = self.parents_of(path)?;
        match self.entries.get(&key) {
            None | Some(Entry::Dir) => {
                self.entries.insert(key, Entry::Dir);
                Ok(())
            }
            Some(_) => bail!("{path} is already in the initramfs as something else"),
        }
    }

    pub fn file(&mut self, path: &str, mode: u32, data: Vec<u8>) -> Result<()> {
        self.insert(path, Entry::File { mode, data })
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> Result<()> {
        self.insert(
            path,
            Entry::Symlink {
                target: target.to_owned(),
            },
        )
    }

    pub fn char_device(&mut self, path: &str, mode: u32, major: u32, minor: u32) -> Result<()> {
        self.insert(path, Entry::CharDevice { mode, major, minor })
    }

    pub fn contains(&self, path: &str) -> bool {
        self.entries.contains_key(path.trim_start_matches('/'))
    }

    fn insert(&mut self, path: &str, entry: Entry) -> Result<()> {
        let key = self.parents_of(path)?;
        if self.entries.contains_key(&key) {
            bail!("{path} is twice in the initramfs");
        }
        self.entries.insert(key, entry);
        Ok(())
    }

    /// Makes the parent directories of `path` and returns its key (no leading `/`).
    fn parents_of(&mut self, path: &str) -> Result<String> {
        let key = path.trim_start_matches('/');
        if key.is_empty()
            || key
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
        {
            bail!("bad initramfs path {path:?}");
        }
        let mut at = 0;
        while let Some(slash) = key[at..].find('/') {
            let parent = &key[..at + slash];
            match self.entries.get(parent) {
                None => {
                    self.entries.insert(parent.to_owned(), Entry::Dir);
                }
                Some(Entry::Dir) => {}
                Some(_) => bail!("{parent} is in the initramfs but is not a directory"),
            }
            at += slash + 1;
        }
        Ok(key.to_owned())
    }

    pub fn write(&self, out: &mut impl Write) -> io::Result<()> {
        let mut offset = 0u64;
        for (ino, (name, entry)) in (1u32..).zip(&self.entries) {
            let (mode, nlink, data, rdev): (u32, u32, &[u8], (u32, u32)) = match entry {
                Entry::Dir => (S_IFDIR | 0o755, 2, &[], (0, 0)),
                Entry::File { mode, data } => (S_IFREG | mode, 1, data, (0, 0)),
                Entry::Symlink { target } => (S_IFLNK | 0o777, 1, target.as_bytes(), (0, 0)),
                Entry::CharDevice { mode, major, minor } => {
                    (S_IFCHR | mode, 1, &[], (*major, *minor))
                }
            };
            offset += write_entry(out, offset, ino, mode, nlink, rdev, name, data)?;
        }
        write_entry(out, offset, 0, 0, 1, (0, 0), "TRAILER!!!", &[])?;
        Ok(())
    }
}

/// One header, name and data, each padded to four bytes; returns the bytes written.
#[allow(clippy::too_many_arguments)]
fn write_entry(
    out: &mut impl Write,
    offset: u64,
    ino: u32,
    mode: u32,
    nlink: u32,
    (rdev_major, rdev_minor): (u32, u32),
    name: &str,
    data: &[u8],
) -> io::Result<u64> {
    let size = u32::try_from(data.len())
        .map_err(|_| io::Error::other(format!("{name} is over 4 GiB, too big for newc")))?;
    let name_size = name.len() as u32 + 1;
    let header = format!(
        "070701{ino:08x}{mode:08x}{uid:08x}{gid:08x}{nlink:08x}{mtime:08x}{size:08x}\
         {major:08x}{minor:08x}{rdev_major:08x}{rdev_minor:08x}{name_size:08x}{check:08x}",
        uid = 0,
        gid = 0,
        mtime = 0,
        major = 0,
        minor = 0,
        check = 0,
    );
    let name_end = 110 + u64::from(name_size);
    let name_pad = pad(offset + name_end);
    let data_pad = pad(offset + name_end + name_pad as u64 + data.len() as u64);
    out.write_all(header.as_bytes())?;
    out.write_all(name.as_bytes())?;
    out.write_all(&[0])?;
    out.write_all(&[0; 3][..name_pad])?;
    out.write_all(data)?;
    out.write_all(&[0; 3][..data_pad])?;
    Ok(name_end + name_pad as u64 + data.len() as u64 + data_pad as u64)
}

fn pad(at: u64) -> usize {
    ((4 - at % 4) % 4) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (name, mode, data, rdev) of one entry read back.
    type ReadBack = (String, u32, Vec<u8>, (u32, u32));

    /// Reads a newc archive back, trailer excluded.
    fn read(bytes: &[u8]) -> Vec<ReadBack> {
        let hex = |at: usize| {
            u32::from_str_radix(std::str::from_utf8(&bytes[at..at + 8]).unwrap(), 16).unwrap()
        };
        let mut at = 0;
        let mut out = Vec::new();
        loop {
            assert_eq!(&bytes[at..at + 6], b"070701", "magic at {at}");
            let field = |i: usize| hex(at + 6 + 8 * i);
            let (mode, size, rdev, name_size) = (
                field(1),
                field(6) as usize,
                (field(9), field(10)),
                field(11) as usize,
            );
            let name = std::str::from_utf8(&bytes[at + 110..at + 110 + name_size - 1]).unwrap();
            let data_at = (at + 110 + name_size).next_multiple_of(4);
            if name == "TRAILER!!!" {
                return out;
            }
            out.push((
                name.to_owned(),
                mode,
                bytes[data_at..data_at + size].to_vec(),
                rdev,
            ));
            at = (data_at + size).next_multiple_of(4);
        }
    }

    #[test]
    fn entries_come_back_with_parents_first() {
        let mut a = Archive::default();
        a.file("/bin/busybox", 0o755, b"ELF...".to_vec()).unwrap();
        a.symlink("/bin/sh", "busybox").unwrap();
        a.char_device("/dev/console", 0o600, 5, 1).unwrap();
        a.dir("/proc").unwrap();
        let mut bytes = Vec::new();
        a.write(&mut bytes).unwrap();
        assert_eq!(bytes.len() % 4, 0);
        let entries = read(&bytes);
        let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            names,
            ["bin", "bin/busybox", "bin/sh", "dev", "dev/console", "proc"]
        );
        assert_eq!(entries[1].1, S_IFREG | 0o755);
        assert_eq!(entries[1].2, b"ELF...");
        assert_eq!(entries[2].1, S_IFLNK | 0o777);
        assert_eq!(entries[2].2, b"busybox");
        assert_eq!(entries[4].1, S_IFCHR | 0o600);
        assert_eq!(entries[4].3, (5, 1));
    }

    #[test]
    fn conflicts_and_bad_paths_are_errors() {
        let mut a = Archive::default();
        a.file("/bin/sh", 0o755, vec![]).unwrap();
        assert!(a.symlink("/bin/sh", "busybox").is_err());
        assert!(a.file("/bin/sh/x", 0o644, vec![]).is_err());
        assert!(a.dir("/bin/sh").is_err());
        assert!(a.file("/../etc/passwd", 0o644, vec![]).is_err());
        assert!(a.file("/", 0o644, vec![]).is_err());
        a.dir("/bin").unwrap();
    }
}
