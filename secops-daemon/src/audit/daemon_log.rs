//! How the daemon opens its audit log: held to its witnesses first (a log they saw further or
//! otherwise is refused, like one behind its head file), then with inode flags on (the open
//! segment append-only, closed ones immutable, where the file system and capabilities allow).

use super::witness::{at_start::hold_to_witnesses, WitnessSpec};
use super::WriterOptions;
use super::{AuditError, AuditPaths, AuditStore, AuditWriter, CheckpointPolicy, StoreOptions};

pub fn open_daemon_log(
    paths: &AuditPaths,
    witnesses: &[WitnessSpec],
) -> Result<AuditWriter, AuditError> {
    hold_to_witnesses(paths, witnesses)?;
    let store = AuditStore::open_with(
        paths,
        StoreOptions {
            checkpoints: CheckpointPolicy::default(),
            inode_flags: true,
            ..StoreOptions::default()
        },
    )?;
    AuditWriter::start(
        store,
        WriterOptions {
            witnesses: witnesses.to_vec(),
            ..WriterOptions::default()
        },
    )
}
