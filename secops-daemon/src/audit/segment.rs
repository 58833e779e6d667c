//! Segment files: naming, reading frame by frame, and appending with one `write` and one
//! `fdatasync` per batch.
//!
//! `<audit dir>/<first seq, 20 digits>.seg`. Only the newest segment is ever appended to; a
//! segment is closed with a checkpoint of its last record and an end frame, and the log goes
//! on in a new file. Where the writer can (root with `CAP_LINUX_IMMUTABLE` on ext4, xfs,
//! btrfs, tmpfs), the open segment is append-only and closed ones immutable (inode flags), and
//! the segment's header says so, so a flag taken away is a finding of `verify`.

use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use rustix::fs::IFlags;

use super::dir;
use super::error::AuditError;
use super::frame::{self, Frame, SegmentHeader, FRAME_PREFIX, MAGIC, MAX_FRAME_PAYLOAD};

/// A segment file in the audit directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentRef {
    /// As its name says; the header is what counts.
    pub first_seq: u64,
    pub path: PathBuf,
}

pub fn segment_file_name(first_seq: u64) -> String {
    format!("{first_seq:020}.seg")
}

fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The segment files in `dir`, oldest first. Other files (the index, the lock) are ignored.
pub fn list_segments(dir: &Path) -> Result<Vec<SegmentRef>, AuditError> {
    let entries = fs::read_dir(dir).map_err(|e| AuditError::io(dir, "listing segments", e))?;
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| AuditError::io(dir, "listing segments", e))?;
        let name = entry.file_name();
        if let Some(first_seq) = name.to_str().and_then(parse_segment_name) {
            out.push(SegmentRef {
                first_seq,
                path: entry.path(),
            });
        }
    }
    out.sort_by_key(|s| s.first_seq);
    Ok(out)
}

/// One frame as found in a file.
#[derive(Clone, Debug)]
pub struct Scanned {
    /// Offset of the frame's prefix in the file.
    pub offset: u64,
    /// Bytes the frame takes, prefix included.
    pub size: u64,
    pub kind: u8,
    /// The decoded frame, or why its payload does not decode.
    pub frame: Result<Frame, String>,
}

/// Why a scan stopped before the end of the file.
#[derive(Debug)]
pub enum ScanError {
    /// The file ends inside the frame at `offset`: a write that never completed.
    Torn {
        offset: u64,
        file_len: u64,
    },
    /// The frame at `offset` claims a length no frame can have: framing is lost from here.
    BadLength {
        offset: u64,
        len: u32,
    },
    Io(AuditError),
}

impl std::fmt::Display for ScanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScanError::Torn { offset, file_len } => write!(
                f,
                "the file ends at byte {file_len} inside the frame at byte {offset} (an \
                 incomplete write)"
            ),
            ScanError::BadLength { offset, len } => write!(
                f,
                "the frame at byte {offset} claims {len} bytes, more than any frame has"
            ),
            ScanError::Io(e) => write!(f, "{e}"),
        }
    }
}

/// Reads a segment frame by frame from the start (or from a known frame boundary).
pub struct FrameScanner {
    reader: BufReader<File>,
    path: PathBuf,
    offset: u64,
    file_len: u64,
}

impl FrameScanner {
    /// Opens a segment and checks its magic.
    pub fn open(path: &Path) -> Result<FrameScanner, AuditError> {
        let file = dir::open_read(path).map_err(|e| AuditError::io(path, "opening segment", e))?;
        FrameScanner::from_file(file, path, 0)
    }

    /// Starts at `offset`, which must be a frame boundary (0 = the start of the file).
    pub fn open_at(path: &Path, offset: u64) -> Result<FrameScanner, AuditError> {
        let file = dir::open_read(path).map_err(|e| AuditError::io(path, "opening segment", e))?;
        FrameScanner::from_file(file, path, offset)
    }

    fn from_file(file: File, path: &Path, offset: u64) -> Result<FrameScanner, AuditError> {
        use std::io::{Seek, SeekFrom};
        let file_len = file
            .metadata()
            .map_err(|e| AuditError::io(path, "inspecting segment", e))?
            .len();
        let mut reader = BufReader::with_capacity(256 * 1024, file);
        let mut s = FrameScanner {
            reader,
            path: path.to_owned(),
            offset: 0,
            file_len,
        };
        let mut magic = [0u8; 8];
        match s.reader.read_exact(&mut magic) {
            Ok(()) if &magic == MAGIC => {}
            Ok(()) => {
                return Err(AuditError::NotAnAuditLog {
                    path: path.to_owned(),
                    why: "the file does not start like a secops audit segment".into(),
                })
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(AuditError::NotAnAuditLog {
                    path: path.to_owned(),
                    why: format!("{file_len} bytes: shorter than a segment's first bytes"),
                })
            }
            Err(e) => return Err(AuditError::io(path, "reading segment", e)),
        }
        s.offset = MAGIC.len() as u64;
        if offset > s.offset {
            reader = s.reader;
            reader
                .seek(SeekFrom::Start(offset))
                .map_err(|e| AuditError::io(path, "seeking in segment", e))?;
            s.reader = reader;
            s.offset = offset;
        }
        Ok(s)
    }

    /// Offset of the next frame (the end of the last one read).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    /// The next frame, `None` at a clean end of file.
    pub fn next_frame(&mut self) -> Result<Option<Scanned>, ScanError> {
        let offset = self.offset;
        if offset >= self.file_len {
            return Ok(None);
        }
        let torn = ScanError::Torn {
            offset,
            file_len: self.file_len,
        };
        if self.file_len - offset < FRAME_PREFIX as u64 {
            return Err(torn);
        }
        let mut prefix = [0u8; FRAME_PREFIX];
        self.read(&mut prefix)?;
        let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
        if len > MAX_FRAME_PAYLOAD {
            return Err(ScanError::BadLength { offset, len });
        }
        let size = FRAME_PREFIX as u64 + u64::from(len);
        if self.file_len - offset < size {
            return Err(torn);
        }
        let mut payload = vec![0u8; len as usize];
        self.read(&mut payload)?;
        self.offset = offset + size;
        let kind = prefix[4];
        Ok(Some(Scanned {
            offset,
            size,
            kind,
            frame: Frame::decode(kind, &payload),
        }))
    }

    fn read(&mut self, buf: &mut [u8]) -> Result<(), ScanError> {
        self.reader
            .read_exact(buf)
            .map_err(|e| ScanError::Io(AuditError::io(&self.path, "reading segment", e)))
    }
}

/// A segment's header, and the offset where its first record starts.
pub fn read_header(path: &Path) -> Result<(SegmentHeader, u64), AuditError> {
    let mut scanner = FrameScanner::open(path)?;
    match scanner.next_frame() {
        Ok(Some(Scanned {
            frame: Ok(Frame::Header(h)),
            ..
        })) => Ok((h, scanner.offset())),
        Err(ScanError::Io(e)) => Err(e),
        _ => Err(AuditError::Damaged {
            path: path.to_owned(),
            why: "the segment does not start with a header".into(),
        }),
    }
}

/// Every frame of a segment, and where (if anywhere) a torn or unframeable tail starts.
/// For tools and tests that look at or rewrite whole files.
pub fn read_frames(path: &Path) -> Result<(Vec<Scanned>, Option<u64>), AuditError> {
    let mut scanner = FrameScanner::open(path)?;
    let mut out = Vec::new();
    loop {
        match scanner.next_frame() {
            Ok(Some(s)) => out.push(s),
            Ok(None) => return Ok((out, None)),
            Err(ScanError::Torn { offset, .. }) | Err(ScanError::BadLength { offset, .. }) => {
                return Ok((out, Some(offset)))
            }
            Err(ScanError::Io(e)) => return Err(e),
        }
    }
}

/// Writes a whole segment file from frames (magic first). For tests and forensic tooling:
/// the log itself only ever appends.
pub fn write_frames(path: &Path, frames: &[Frame]) -> io::Result<()> {
    let mut bytes = MAGIC.to_vec();
    for f in frames {
        f.encode_into(&mut bytes);
    }
    fs::write(path, bytes)
}

/// What went wrong appending to a segment.
#[derive(Debug)]
pub enum AppendFailure {
    /// Nothing of the batch is in the file any more; appending may be retried.
    NotWritten(io::Error),
    /// The write or the sync failed and the file could not be put back to its last good
    /// length, or the sync failed (after which the kernel may have dropped the pages): what
    /// is on disk is unknown until the segment is read again.
    Unknown(io::Error),
}

/// The newest segment, open for appending.
pub struct LiveSegment {
    file: File,
    pub path: PathBuf,
    pub header: SegmentHeader,
    /// Bytes known to be in the file and synced.
    pub len: u64,
}

impl LiveSegment {
    /// Creates a segment: magic and header are written under a temporary name, synced, and
    /// only then given the segment's name, so a crash never leaves a segment without header.
    pub fn create(
        audit_dir: &Path,
        mut header: SegmentHeader,
        protect: bool,
    ) -> Result<LiveSegment, AuditError> {
        let name = segment_file_name(header.first_seq);
        let path = audit_dir.join(&name);
        let tmp = audit_dir.join(format!(".{name}.{}.new", std::process::id()));
        let _ = fs::remove_file(&tmp);
        let mut file =
            dir::create_new(&tmp, 0o600).map_err(|e| AuditError::io(&tmp, "creating", e))?;
        // Only claim protection in the header if the flag can really be set here.
        let protected = protect && set_flags(&file, IFlags::APPEND).is_ok();
        if protected {
            let _ = set_flags(&file, IFlags::empty());
            header.flags |= frame::HEADER_FLAG_INODE_PROTECTED;
        } else {
            header.flags &= !frame::HEADER_FLAG_INODE_PROTECTED;
        }
        let mut bytes = MAGIC.to_vec();
        Frame::Header(header.clone()).encode_into(&mut bytes);
        let written = file.write_all(&bytes).and_then(|()| file.sync_data());
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(AuditError::io(&tmp, "writing a new segment", e));
        }
        // link(2) never replaces an existing segment, whoever made it.
        let linked = fs::hard_link(&tmp, &path);
        let _ = fs::remove_file(&tmp);
        linked.map_err(|e| AuditError::io(&path, "creating a new segment", e))?;
        dir::sync_dir(audit_dir)?;
        if protected {
            set_flags(&file, IFlags::APPEND)
                .map_err(|e| AuditError::io(&path, "making the segment append-only", e))?;
        }
        Ok(LiveSegment {
            file,
            path,
            header,
            len: bytes.len() as u64,
        })
    }

    /// Opens an existing segment whose frames up to `len` were read and found whole.
    pub fn open(path: &Path, header: SegmentHeader, len: u64) -> Result<LiveSegment, AuditError> {
        let file = dir::open_append(path).map_err(|e| AuditError::Unwritable {
            path: path.to_owned(),
            why: match e.raw_os_error() {
                Some(libc::EPERM) => format!("{e} (is it immutable? `lsattr` shows it)"),
                _ => e.to_string(),
            },
        })?;
        Ok(LiveSegment {
            file,
            path: path.to_owned(),
            header,
            len,
        })
    }

    /// Appends frames and syncs them. On failure the file is put back to its last good
    /// length where possible.
    pub fn append(&mut self, bytes: &[u8]) -> Result<(), AppendFailure> {
        if let Err(e) = self.file.write_all(bytes) {
            return match self.truncate_to(self.len) {
                Ok(()) => Err(AppendFailure::NotWritten(e)),
                Err(_) => Err(AppendFailure::Unknown(e)),
            };
        }
        if let Err(e) = rustix::fs::fdatasync(self.file.as_fd()) {
            return Err(AppendFailure::Unknown(e.into()));
        }
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// Cuts the file back to `len` bytes (an unacknowledged torn write, or a failed batch).
    pub fn truncate_to(&mut self, len: u64) -> io::Result<()> {
        let protected = self.header.inode_protected();
        if protected {
            set_flags(&self.file, IFlags::empty())?;
        }
        let result = self.file.set_len(len).and_then(|()| self.file.sync_data());
        if protected {
            set_flags(&self.file, IFlags::APPEND)?;
        }
        result?;
        self.len = len;
        Ok(())
    }

    /// The file's length as the file system reports it now (another process may have
    /// appended).
    pub fn current_len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    /// After the end frame: from append-only to immutable.
    pub fn close(self) -> Result<(), AuditError> {
        if self.header.inode_protected() {
            set_flags(&self.file, IFlags::IMMUTABLE).map_err(|e| {
                AuditError::io(&self.path, "making the closed segment immutable", e)
            })?;
        }
        Ok(())
    }
}

/// The inode flags of a file, if the file system has them.
pub fn inode_flags(path: &Path) -> io::Result<IFlags> {
    let f = dir::open_read(path)?;
    Ok(rustix::fs::ioctl_getflags(f.as_fd())?)
}

fn set_flags(file: &File, flags: IFlags) -> io::Result<()> {
    let current = rustix::fs::ioctl_getflags(file.as_fd())?;
    let wanted = (current - (IFlags::APPEND | IFlags::IMMUTABLE)) | flags;
    if wanted != current {
        rustix::fs::ioctl_setflags(file.as_fd(), wanted)?;
    }
    Ok(())
}

/// Takes the append-only and immutable flags off a file (retention moving it, tests cleaning
/// up). Silently does nothing where the file system has no such flags.
pub fn clear_protection(path: &Path) -> io::Result<()> {
    let f = dir::open_read(path)?;
    match set_flags(&f, IFlags::empty()) {
        Err(e) if is_unsupported(&e) => Ok(()),
        r => r,
    }
}

/// Puts a closed segment back to immutable (after it was moved, or a failed move).
pub fn protect_closed(path: &Path) -> io::Result<()> {
    let f = dir::open_read(path)?;
    set_flags(&f, IFlags::IMMUTABLE)
}

fn is_unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOTTY) | Some(libc::EOPNOTSUPP) | Some(libc::EINVAL)
    )
}

/// Free space under `dir` in bytes, and whether its file system is mounted read-only.
pub fn free_space(dir: &Path) -> Result<(u64, bool), AuditError> {
    let f = File::open(dir).map_err(|e| AuditError::io(dir, "opening", e))?;
    let st = rustix::fs::fstatvfs(f.as_fd())
        .map_err(|e| AuditError::io(dir, "asking the file system for free space", e.into()))?;
    let read_only = st.f_flag.contains(rustix::fs::StatVfsMountFlags::RDONLY);
    Ok((st.f_bavail.saturating_mul(st.f_frsize), read_only))
}

/// Clears the protection of every segment under `dir` (tests' and tools' cleanup).
pub fn unprotect_tree(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        match entry.file_type() {
            Ok(t) if t.is_dir() => unprotect_tree(&path),
            Ok(t) if t.is_file() => {
                let _ = clear_protection(&path);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::frame::{CheckpointFrame, SEGMENT_VERSION};

    fn header(first_seq: u64) -> SegmentHeader {
        SegmentHeader {
            version: SEGMENT_VERSION,
            log_id: [1; 16],
            first_seq,
            prev_hash: [0; 32],
            log_created_ns: 1,
            created_ns: 2,
            public_key: [3; 32],
            flags: 0,
        }
    }

    #[test]
    fn names_sort_and_parse() {
        assert_eq!(segment_file_name(1), "00000000000000000001.seg");
        assert_eq!(parse_segment_name("00000000000000000001.seg"), Some(1));
        assert_eq!(parse_segment_name("1.seg"), None);
        assert_eq!(parse_segment_name("0000000000000000000x.seg"), None);
    }

    #[test]
    fn append_scan_and_torn_tail() {
        let t = tempfile::tempdir().unwrap();
        let mut seg = LiveSegment::create(t.path(), header(1), false).unwrap();
        let cp = Frame::Checkpoint(CheckpointFrame {
            number: 1,
            seq: 1,
            hash: [9; 32],
            ts_ns: 3,
            key_id: [0; 8],
            signature: [0; 64],
        });
        seg.append(&cp.to_bytes()).unwrap();
        let (frames, torn) = read_frames(&seg.path).unwrap();
        assert!(torn.is_none());
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[1].frame.as_ref().unwrap(), &cp);
        // Half a frame: torn at the frame's offset.
        let mut f = dir::open_append(&seg.path).unwrap();
        f.write_all(&cp.to_bytes()[..20]).unwrap();
        let (_, torn) = read_frames(&seg.path).unwrap();
        assert_eq!(torn, Some(frames[1].offset + frames[1].size));
        seg.truncate_to(seg.len).unwrap();
        assert!(read_frames(&seg.path).unwrap().1.is_none());
        assert_eq!(list_segments(t.path()).unwrap().len(), 1);
    }

    #[test]
    fn an_existing_segment_is_never_replaced() {
        let t = tempfile::tempdir().unwrap();
        LiveSegment::create(t.path(), header(5), false).unwrap();
        assert!(LiveSegment::create(t.path(), header(5), false).is_err());
    }
}
