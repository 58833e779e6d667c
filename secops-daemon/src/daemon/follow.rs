//! Protection that follows moved objects, kept current while the daemon runs: when a
//! protected object the file rules hold open (`enforce::followed`) is no longer where they
//! last saw it, the rules are compiled again (so the engine judges its new path as its
//! rules' path, and entries made for it follow it), and each move is audited once.
//!
//! Checked after every batch of kernel events with a rename in it, and once a second for
//! moves nobody reported (another process, a rename the kernel only counted).

use secops_common::{CoreAction, RiskLevel, Verdict};

use super::state::Shared;
use crate::audit::{AuditObject, AuditWriter, NewRecord, ObjectKind, Source};
use crate::enforce::Move;
use crate::kernel::{KernelEvent, LsmOp};
use crate::time::now_ns;

/// The moves already audited.
#[derive(Default)]
pub(crate) struct MoveWatch {
    audited: Vec<Move>,
}

/// The event may have moved a protected object (a rename, allowed or refused, seen by a
/// tracepoint or an LSM program).
pub(crate) fn may_move(event: &KernelEvent) -> bool {
    match event {
        KernelEvent::Rename { .. } => true,
        KernelEvent::Lsm { denial, .. } => {
            matches!(denial.op, LsmOp::RenameSource | LsmOp::RenameTarget)
        }
        _ => false,
    }
}

impl MoveWatch {
    /// Compiles the file rules again if a followed object moved, then audits new moves.
    pub(crate) fn check(&mut self, shared: &Shared, writer: &AuditWriter) {
        if shared.files().compiled.followed.moved_since() {
            if let Err(e) = shared.resync() {
                tracing::error!("compiling the file rules after a protected object moved: {e:#}");
            }
        }
        let moves = shared.files().compiled.moves.clone();
        for moved in moves.iter().filter(|m| !self.audited.contains(m)) {
            if let Err(e) = writer.append(move_record(moved)).wait() {
                tracing::error!(
                    "the audit record of a moved protected object was not written: {e}"
                );
            }
        }
        self.audited = moves;
    }
}

fn move_record(moved: &Move) -> NewRecord {
    NewRecord {
        object: Some(AuditObject {
            kind: ObjectKind::Path,
            value: moved.current.display().to_string(),
        }),
        ..NewRecord::new(
            now_ns(),
            CoreAction::FsRename.as_str(),
            Verdict::Allow,
            RiskLevel::High,
            format!(
                "a protected object moved: {} is now {}; its protection follows it (the \
                 kernel's entries stay on the object, and its new path is judged as its \
                 rules' path)",
                moved.original.display(),
                moved.current.display()
            ),
            Source::Daemon,
        )
    }
}
