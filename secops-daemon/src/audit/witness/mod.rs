//! Witnesses: copies of every signed checkpoint kept where whoever controls the state
//! directory cannot reach them — an append-only file owned by another user or on another
//! mount, a syslog server (RFC 5424 over TCP), an HTTP endpoint. `verify --witness` holds the
//! log to what they saw.
//!
//! Every witness gets the same line: one JSON object ([`WitnessedCheckpoint`]) with the
//! checkpoint, the log id and the public key that signed it, so a witness alone can check
//! the signatures it holds and name the key.

pub mod at_start;
mod file;
mod http;
mod read;
mod serve;
mod sink;
mod syslog;

use ed25519_dalek::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};

use super::chain::{self, Hash};
use super::frame::CheckpointFrame;

pub use read::{load_witness, parse_witness_text, WitnessError};
pub use serve::serve;
pub use sink::{WitnessSet, WitnessSpec, WitnessStatus};

/// The format version of witness lines.
pub const WITNESS_FORMAT: u32 = 1;

/// One checkpoint as a witness holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WitnessedCheckpoint {
    pub secops_checkpoint: u32,
    pub log_id: String,
    pub number: u64,
    pub seq: u64,
    pub hash: String,
    pub ts_ns: i64,
    pub key_id: String,
    pub public_key: String,
    pub signature: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

impl WitnessedCheckpoint {
    pub fn new(
        log_id: &[u8; 16],
        public_key: &[u8; 32],
        cp: &CheckpointFrame,
        host: Option<String>,
    ) -> WitnessedCheckpoint {
        WitnessedCheckpoint {
            secops_checkpoint: WITNESS_FORMAT,
            log_id: hex::encode(log_id),
            number: cp.number,
            seq: cp.seq,
            hash: hex::encode(cp.hash),
            ts_ns: cp.ts_ns,
            key_id: hex::encode(cp.key_id),
            public_key: hex::encode(public_key),
            signature: hex::encode(cp.signature),
            host,
        }
    }

    /// One line, newline included.
    pub fn json_line(&self) -> String {
        let mut s = serde_json::to_string(self).unwrap_or_default();
        s.push('\n');
        s
    }

    pub fn hash_bytes(&self) -> Option<Hash> {
        decode::<32>(&self.hash)
    }

    pub fn public_key_bytes(&self) -> Option<[u8; 32]> {
        decode::<32>(&self.public_key)
    }

    /// True if the signature is the named key's over this checkpoint.
    pub fn signature_holds(&self) -> bool {
        let (Some(log_id), Some(hash), Some(pk), Some(sig)) = (
            decode::<16>(&self.log_id),
            self.hash_bytes(),
            self.public_key_bytes(),
            decode::<64>(&self.signature),
        ) else {
            return false;
        };
        let Ok(key) = VerifyingKey::from_bytes(&pk) else {
            return false;
        };
        let msg = chain::checkpoint_message(&log_id, self.number, self.seq, &hash, self.ts_ns);
        key.verify_strict(&msg, &Signature::from_bytes(&sig))
            .is_ok()
            && hex::encode(chain::key_id(&pk)) == self.key_id
    }
}

fn decode<const N: usize>(text: &str) -> Option<[u8; N]> {
    let mut out = [0u8; N];
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}

/// This host's name, as witnesses are told it.
pub fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
}
