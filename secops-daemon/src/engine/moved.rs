//! Paths whose protected objects moved: a tree a rule names (`/srv/data/**`) that now lives
//! elsewhere (an unprotected ancestor was renamed, or replaced by a symlink) is judged at its
//! new path as well as at the path the rule names, the strictest decision winning. The kernel
//! follows the object by inode; this keeps the engine's answers (`/v1/check`, every door)
//! the same as the kernel's. The daemon learns the moves from the objects it follows
//! (`enforce::followed`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

/// One move: what is now at `current` was at `original` when the rules were compiled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MovedPath {
    pub current: String,
    pub original: String,
}

/// The moves in force, swapped as a whole (the daemon recompiles them at every reload).
/// Almost always empty: `any` lets a decision skip the lock (no shared write per decision).
#[derive(Default)]
pub(super) struct MovedPaths {
    any: AtomicBool,
    moves: RwLock<Arc<Vec<MovedPath>>>,
}

impl MovedPaths {
    pub(super) fn set(&self, moves: Vec<MovedPath>) {
        let mut slot = self.moves.write().unwrap_or_else(|e| e.into_inner());
        self.any.store(!moves.is_empty(), Ordering::Release);
        *slot = Arc::new(moves);
    }

    /// The moves, or `None` when there are none.
    pub(super) fn get(&self) -> Option<Arc<Vec<MovedPath>>> {
        if !self.any.load(Ordering::Acquire) {
            return None;
        }
        Some(self.moves.read().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

/// `path` as it was named before each move that carried it (`current/x` -> `original/x`).
pub(super) fn earlier_names(moves: &[MovedPath], path: &str) -> Vec<String> {
    moves
        .iter()
        .filter_map(|m| {
            let rest = path.strip_prefix(m.current.trim_end_matches('/'))?;
            if rest.is_empty() {
                Some(m.original.clone())
            } else if rest.starts_with('/') {
                Some(format!("{}{rest}", m.original.trim_end_matches('/')))
            } else {
                None
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_below_a_moved_tree_gets_its_earlier_name() {
        let moves = vec![MovedPath {
            current: "/home/alice2/secrets".into(),
            original: "/home/alice/secrets".into(),
        }];
        assert_eq!(
            earlier_names(&moves, "/home/alice2/secrets/key"),
            vec!["/home/alice/secrets/key".to_owned()]
        );
        assert_eq!(
            earlier_names(&moves, "/home/alice2/secrets"),
            vec!["/home/alice/secrets".to_owned()]
        );
        assert!(earlier_names(&moves, "/home/alice2/secretsX").is_empty());
        assert!(earlier_names(&moves, "/home/alice2").is_empty());
    }
}
