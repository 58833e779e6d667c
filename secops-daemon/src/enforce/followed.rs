//! Protected objects followed by what they are, not by the path a rule names them by.
//!
//! The kernel's entries are keyed by inode, so a rename of an unprotected ancestor of a
//! protected tree (`mv /home/alice /home/alice2` with `/home/alice/secrets/**` denied)
//! changes nothing in the kernel, until the rules are compiled again: the compiler finds
//! anchors by path, and the renamed tree would lose its entries. So every protected anchor
//! is held open (`O_PATH`, which pins the object and nothing else). At the next compile an
//! object whose rule-given path no longer leads to it (an ancestor renamed, or replaced by
//! a symlink, or the tree itself renamed) is still an anchor at the path the kernel now
//! gives for it, judged as the path the rules named (`Engine::set_moved`), and stays
//! followed for as long as the rules protect its original path and it exists.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{Mode, OFlags};

use super::inode::kernel_inode;

/// One protected object held open.
#[derive(Clone, Debug)]
struct FollowedObject {
    /// The path the rules name it by.
    original: PathBuf,
    /// Where it was when this set was made.
    at: PathBuf,
    /// Its subtree is enumerated (a `dir/**` anchor).
    subtree: bool,
    fd: Arc<OwnedFd>,
    key: (u32, u64),
}

/// A protected object found away from the path its rules name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Move {
    pub(crate) original: PathBuf,
    pub(crate) current: PathBuf,
    pub(crate) subtree: bool,
    /// The object, (dev, inode): what carries it to the next set, wherever it is by then.
    key: (u32, u64),
}

/// The protected objects of the rules in force.
#[derive(Clone, Debug, Default)]
pub(crate) struct Followed {
    objects: Vec<FollowedObject>,
}

impl FollowedObject {
    fn open(path: &Path, subtree: bool) -> Option<FollowedObject> {
        let fd = rustix::fs::open(path, OFlags::PATH | OFlags::CLOEXEC, Mode::empty()).ok()?;
        let object = FollowedObject {
            original: path.to_path_buf(),
            at: PathBuf::new(),
            subtree,
            fd: Arc::new(fd),
            key: (0, 0),
        };
        let key = kernel_inode(&std::fs::metadata(object.fd_link()).ok()?);
        let object = FollowedObject { key, ..object };
        // Where the kernel says it is (symlinks resolved), as `current` will say it later:
        // the rules' spelling of the path (`/bin/x` with `/bin` a symlink) is not it.
        let at = object.current()?;
        Some(FollowedObject { at, ..object })
    }

    fn fd_link(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
    }

    /// Where the object is now, by the kernel's account; `None` once it is deleted (or out
    /// of this process's view).
    fn current(&self) -> Option<PathBuf> {
        let meta = std::fs::metadata(self.fd_link()).ok()?;
        if meta.nlink() == 0 {
            return None;
        }
        let current = std::fs::read_link(self.fd_link()).ok()?;
        // The name must lead back to the object: a path that does not (another mount
        // namespace's view, a race) is not where it is.
        let there = std::fs::metadata(&current).ok()?;
        (kernel_inode(&there) == self.key).then_some(current)
    }

    /// The rule-given path leads to this object.
    fn in_place(&self) -> bool {
        std::fs::metadata(&self.original).is_ok_and(|m| kernel_inode(&m) == self.key)
    }
}

impl Followed {
    /// The objects whose rule-given path no longer leads to them, with where they are now.
    pub(crate) fn moves(&self) -> Vec<Move> {
        let mut moves: Vec<Move> = self
            .objects
            .iter()
            .filter(|o| !o.in_place())
            .filter_map(|o| {
                Some(Move {
                    original: o.original.clone(),
                    current: o.current()?,
                    subtree: o.subtree,
                    key: o.key,
                })
            })
            .collect();
        moves.dedup();
        moves
    }

    /// Some object is no longer where this set last saw it (renamed, or deleted): the rules
    /// should be compiled again.
    pub(crate) fn moved_since(&self) -> bool {
        self.objects
            .iter()
            .any(|o| o.current().as_deref() != Some(o.at.as_path()))
    }

    /// The set for newly compiled rules: the `protected` anchors (path, enumerated) opened
    /// where they are, and the objects of the `kept` moves carried over.
    pub(crate) fn next<'a>(
        &self,
        protected: impl IntoIterator<Item = (&'a PathBuf, &'a bool)>,
        kept: &[Move],
    ) -> Followed {
        let mut objects: Vec<FollowedObject> = protected
            .into_iter()
            .filter_map(|(path, subtree)| FollowedObject::open(path, *subtree))
            .collect();
        for moved in kept {
            // By identity: should it have moved again since `moves`, the next check sees
            // it is not at `at` and compiles again.
            let carried = self
                .objects
                .iter()
                .find(|o| o.original == moved.original && o.key == moved.key);
            if let Some(object) = carried {
                objects.push(FollowedObject {
                    at: moved.current.clone(),
                    ..object.clone()
                });
            }
        }
        Followed { objects }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn a_renamed_ancestor_is_a_move_and_a_deleted_object_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let tree = root.join("home/alice/secrets");
        std::fs::create_dir_all(&tree).unwrap();
        let protected = BTreeMap::from([(tree.clone(), true)]);
        let followed = Followed::default().next(&protected, &[]);
        assert!(followed.moves().is_empty());
        assert!(!followed.moved_since());

        let renamed = root.join("home/alice2");
        std::fs::rename(root.join("home/alice"), &renamed).unwrap();
        assert!(followed.moved_since());
        let moves = followed.moves();
        assert_eq!(moves.len(), 1);
        assert_eq!(
            (&moves[0].original, &moves[0].current, moves[0].subtree),
            (&tree, &renamed.join("secrets"), true)
        );
        // Carried over: still followed, now seen at its new place.
        let next = followed.next(&BTreeMap::new(), &moves);
        assert!(!next.moved_since());
        assert_eq!(next.moves(), moves);

        std::fs::remove_dir(renamed.join("secrets")).unwrap();
        assert!(next.moves().is_empty());
    }

    #[test]
    fn a_path_spelled_through_a_symlink_is_not_a_move_and_a_second_move_is_carried() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("real/tree")).unwrap();
        std::os::unix::fs::symlink(root.join("real"), root.join("link")).unwrap();
        let protected = BTreeMap::from([(root.join("link/tree"), false)]);
        let followed = Followed::default().next(&protected, &[]);
        assert!(
            !followed.moved_since(),
            "spelled through a symlink, not moved"
        );
        assert!(followed.moves().is_empty());

        std::fs::rename(root.join("real"), root.join("first")).unwrap();
        let moves = followed.moves();
        // It moves again before the next set is made: still carried, and seen as moved.
        std::fs::rename(root.join("first"), root.join("second")).unwrap();
        let next = followed.next(&BTreeMap::new(), &moves);
        assert!(next.moved_since());
        assert_eq!(next.moves()[0].current, root.join("second/tree"));
    }

    #[test]
    fn a_path_that_leads_elsewhere_is_a_move_of_the_object() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let alice = root.join("alice");
        std::fs::create_dir_all(alice.join("secrets")).unwrap();
        let protected = BTreeMap::from([(alice.join("secrets"), false)]);
        let followed = Followed::default().next(&protected, &[]);
        // The ancestor moved away and a symlink to an empty lookalike put in its place.
        std::fs::rename(&alice, root.join("moved")).unwrap();
        std::fs::create_dir_all(root.join("decoy/secrets")).unwrap();
        std::os::unix::fs::symlink(root.join("decoy"), &alice).unwrap();
        let moves = followed.moves();
        assert_eq!(moves.len(), 1);
        assert_eq!(moves[0].current, root.join("moved/secrets"));
    }
}
