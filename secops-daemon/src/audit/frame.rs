//! Frames: what a segment file is made of.
//!
//! A segment file is [`MAGIC`] followed by frames, each `u32 big-endian payload length`,
//! `u8 kind`, payload. The first frame is the segment's [`SegmentHeader`]; then records,
//! checkpoints and key rotations in the order they were written; a segment that was closed
//! ends with a checkpoint of its last record and an [`Frame::End`].
//!
//! Nothing in a frame is trusted for being well-formed: records are held together by the hash
//! chain, checkpoints and rotations by their signatures, and the header by the chain too (the
//! first record of a segment links to the header's hash, [`SegmentHeader::link_hash`]).

use sha2::{Digest, Sha256};

use super::chain::{Hash, KEY_ID_LEN, LOG_ID_LEN};

/// The first bytes of every segment file.
pub const MAGIC: &[u8; 8] = b"SCAUSEG2";

/// No frame is longer: a record's strings are capped at 1 MiB each.
pub const MAX_FRAME_PAYLOAD: u32 = 16 << 20;

/// Bytes before a frame's payload: length and kind.
pub const FRAME_PREFIX: usize = 5;

/// Format version written into every header.
/// 2: record hash v3 (content hashes that open to a record's head).
pub const SEGMENT_VERSION: u16 = 2;

const SEGMENT_TAG: &[u8] = b"secops-audit-segment-v1";

/// The header flag saying the writer keeps this file append-only (and immutable once
/// closed) with inode flags, so `verify` reports a file whose flags were taken away.
pub const HEADER_FLAG_INODE_PROTECTED: u32 = 1;

const KIND_HEADER: u8 = 1;
const KIND_RECORD: u8 = 2;
const KIND_CHECKPOINT: u8 = 3;
const KIND_ROTATION: u8 = 4;
const KIND_END: u8 = 5;

/// What a segment says about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    pub version: u16,
    pub log_id: [u8; LOG_ID_LEN],
    /// The seq of the first record this segment holds (or will hold).
    pub first_seq: u64,
    /// The hash of the last record of the previous segment (the genesis hash for the first).
    pub prev_hash: Hash,
    /// When the log (not this segment) was created.
    pub log_created_ns: i64,
    /// When this segment was started.
    pub created_ns: i64,
    /// The key that signs this segment's checkpoints when it starts.
    pub public_key: [u8; 32],
    pub flags: u32,
}

impl SegmentHeader {
    /// What the segment's first record links to: the header itself, so changing any field of
    /// it breaks the chain at that record.
    pub fn link_hash(&self) -> Hash {
        let mut h = Sha256::new();
        h.update(SEGMENT_TAG);
        h.update(self.payload());
        h.finalize().into()
    }

    fn payload(&self) -> Vec<u8> {
        let mut p = Vec::with_capacity(2 + LOG_ID_LEN + 8 + 32 + 8 + 8 + 32 + 4);
        p.extend_from_slice(&self.version.to_be_bytes());
        p.extend_from_slice(&self.log_id);
        p.extend_from_slice(&self.first_seq.to_be_bytes());
        p.extend_from_slice(&self.prev_hash);
        p.extend_from_slice(&self.log_created_ns.to_be_bytes());
        p.extend_from_slice(&self.created_ns.to_be_bytes());
        p.extend_from_slice(&self.public_key);
        p.extend_from_slice(&self.flags.to_be_bytes());
        p
    }

    pub fn inode_protected(&self) -> bool {
        self.flags & HEADER_FLAG_INODE_PROTECTED != 0
    }
}

/// A record as stored: its links and its canonical encoding (which starts with its seq).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordFrame {
    pub prev: Hash,
    pub hash: Hash,
    pub encoding: Vec<u8>,
}

/// A signed statement "record `seq` of this log had hash `hash` at `ts_ns`", the log's
/// `number`th.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckpointFrame {
    pub number: u64,
    pub seq: u64,
    pub hash: Hash,
    pub ts_ns: i64,
    pub key_id: [u8; KEY_ID_LEN],
    pub signature: [u8; 64],
}

/// The old key hands the log to a new key after record `at_seq`; signed by the old key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RotationFrame {
    pub at_seq: u64,
    pub ts_ns: i64,
    pub old_key: [u8; 32],
    pub new_key: [u8; 32],
    pub signature: [u8; 64],
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    Header(SegmentHeader),
    Record(RecordFrame),
    Checkpoint(CheckpointFrame),
    Rotation(RotationFrame),
    /// The segment is closed; the log continues in the segment starting at `next_seq`.
    End {
        next_seq: u64,
    },
}

impl Frame {
    /// Appends the frame, prefix included.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            Frame::Header(h) => put_frame(out, KIND_HEADER, &h.payload()),
            Frame::Record(r) => {
                let start = begin_frame(out, KIND_RECORD);
                out.extend_from_slice(&r.prev);
                out.extend_from_slice(&r.hash);
                out.extend_from_slice(&r.encoding);
                end_frame(out, start);
            }
            Frame::Checkpoint(c) => {
                let start = begin_frame(out, KIND_CHECKPOINT);
                out.extend_from_slice(&c.number.to_be_bytes());
                out.extend_from_slice(&c.seq.to_be_bytes());
                out.extend_from_slice(&c.hash);
                out.extend_from_slice(&c.ts_ns.to_be_bytes());
                out.extend_from_slice(&c.key_id);
                out.extend_from_slice(&c.signature);
                end_frame(out, start);
            }
            Frame::Rotation(r) => {
                let start = begin_frame(out, KIND_ROTATION);
                out.extend_from_slice(&r.at_seq.to_be_bytes());
                out.extend_from_slice(&r.ts_ns.to_be_bytes());
                out.extend_from_slice(&r.old_key);
                out.extend_from_slice(&r.new_key);
                out.extend_from_slice(&r.signature);
                end_frame(out, start);
            }
            Frame::End { next_seq } => put_frame(out, KIND_END, &next_seq.to_be_bytes()),
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    /// Decodes a payload of the given kind.
    pub fn decode(kind: u8, payload: &[u8]) -> Result<Frame, String> {
        let mut p = Fields {
            bytes: payload,
            at: 0,
        };
        let frame = match kind {
            KIND_HEADER => Frame::Header(SegmentHeader {
                version: u16::from_be_bytes(p.array()?),
                log_id: p.array()?,
                first_seq: p.u64()?,
                prev_hash: p.array()?,
                log_created_ns: p.u64()? as i64,
                created_ns: p.u64()? as i64,
                public_key: p.array()?,
                flags: u32::from_be_bytes(p.array()?),
            }),
            KIND_RECORD => {
                let prev = p.array()?;
                let hash = p.array()?;
                Frame::Record(RecordFrame {
                    prev,
                    hash,
                    encoding: p.rest().to_vec(),
                })
            }
            KIND_CHECKPOINT => Frame::Checkpoint(CheckpointFrame {
                number: p.u64()?,
                seq: p.u64()?,
                hash: p.array()?,
                ts_ns: p.u64()? as i64,
                key_id: p.array()?,
                signature: p.array()?,
            }),
            KIND_ROTATION => Frame::Rotation(RotationFrame {
                at_seq: p.u64()?,
                ts_ns: p.u64()? as i64,
                old_key: p.array()?,
                new_key: p.array()?,
                signature: p.array()?,
            }),
            KIND_END => Frame::End { next_seq: p.u64()? },
            other => return Err(format!("unknown frame kind {other}")),
        };
        if kind != KIND_RECORD && p.at != payload.len() {
            return Err(format!(
                "frame kind {kind}: {} byte(s) too many",
                payload.len() - p.at
            ));
        }
        Ok(frame)
    }
}

/// Starts a frame in `out` and returns where it starts; [`end_frame`] fills in the length.
pub fn begin_frame(out: &mut Vec<u8>, kind: u8) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0, 0, 0, 0, kind]);
    start
}

/// Writes the length of the frame begun at `start`.
pub fn end_frame(out: &mut [u8], start: usize) {
    let len = u32::try_from(out.len() - start - FRAME_PREFIX).unwrap_or(u32::MAX);
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

/// The kind byte of record frames, for the writer's in-place encoder.
pub const RECORD_KIND: u8 = KIND_RECORD;

fn put_frame(out: &mut Vec<u8>, kind: u8, payload: &[u8]) {
    let start = begin_frame(out, kind);
    out.extend_from_slice(payload);
    end_frame(out, start);
}

struct Fields<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Fields<'_> {
    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let end = self.at + N;
        let slice = self
            .bytes
            .get(self.at..end)
            .ok_or_else(|| format!("frame payload ends early ({} bytes)", self.bytes.len()))?;
        self.at = end;
        let mut out = [0u8; N];
        out.copy_from_slice(slice);
        Ok(out)
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn rest(&mut self) -> &[u8] {
        let r = &self.bytes[self.at..];
        self.at = self.bytes.len();
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(f: Frame) {
        let bytes = f.to_bytes();
        let len = u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
        assert_eq!(len, bytes.len() - FRAME_PREFIX);
        assert_eq!(Frame::decode(bytes[4], &bytes[FRAME_PREFIX..]).unwrap(), f);
    }

    #[test]
    fn frames_round_trip() {
        let header = SegmentHeader {
            version: SEGMENT_VERSION,
            log_id: [7; 16],
            first_seq: 1001,
            prev_hash: [1; 32],
            log_created_ns: 5,
            created_ns: -3,
            public_key: [2; 32],
            flags: HEADER_FLAG_INODE_PROTECTED,
        };
        round_trip(Frame::Header(header.clone()));
        round_trip(Frame::Record(RecordFrame {
            prev: [3; 32],
            hash: [4; 32],
            encoding: vec![9; 77],
        }));
        round_trip(Frame::Checkpoint(CheckpointFrame {
            number: 3,
            seq: 99,
            hash: [5; 32],
            ts_ns: 123,
            key_id: [6; 8],
            signature: [8; 64],
        }));
        round_trip(Frame::Rotation(RotationFrame {
            at_seq: 4,
            ts_ns: 5,
            old_key: [1; 32],
            new_key: [2; 32],
            signature: [3; 64],
        }));
        round_trip(Frame::End { next_seq: 17 });
        let mut changed = header.clone();
        changed.flags = 0;
        assert_ne!(header.link_hash(), changed.link_hash());
    }

    #[test]
    fn short_and_long_payloads_are_errors() {
        let bytes = Frame::End { next_seq: 1 }.to_bytes();
        assert!(Frame::decode(bytes[4], &bytes[FRAME_PREFIX..bytes.len() - 1]).is_err());
        let mut long = bytes[FRAME_PREFIX..].to_vec();
        long.push(0);
        assert!(Frame::decode(bytes[4], &long).is_err());
        assert!(Frame::decode(99, &[]).is_err());
    }
}
