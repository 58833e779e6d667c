//! Where each value of a YAML document starts, by field path.
//!
//! serde_yaml reports positions for syntax and type errors but the typed structures it
//! produces carry none, and most policy errors (a bad glob, a duplicate rule id, an undeclared
//! action type) are only found after deserializing. This index, built from yaml-rust2's event
//! stream, maps the same field paths serde_yaml uses (`rules[3].paths[0]`) to line and column.

use std::collections::HashMap;
use std::hash::BuildHasher;

use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::Marker;

/// Field paths are kept as 64-bit hashes, not strings: a policy of 50,000 rules has half a
/// million nodes, and an owned string per node was most of the cost of indexing it. A
/// collision could only misplace an error message.
type PathHash = u64;

#[derive(Debug, Default)]
pub struct LocationIndex {
    positions: HashMap<PathHash, (usize, usize), NoHash>,
    /// Where each mapping key is written, by the path of its value (for unknown keys).
    keys: HashMap<PathHash, (usize, usize), NoHash>,
    /// The first document is missing, or is a bare null (`~`, `null` or nothing).
    empty: bool,
}

/// The keys are hashes already.
#[derive(Debug, Default, Clone, Copy)]
struct NoHash;

impl BuildHasher for NoHash {
    type Hasher = NoHasher;
    fn build_hasher(&self) -> NoHasher {
        NoHasher(0)
    }
}

#[derive(Debug, Default)]
struct NoHasher(u64);

impl std::hash::Hasher for NoHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

fn hash_path(path: &str) -> PathHash {
    foldhash::fast::FixedState::with_seed(0x5ec0_9500).hash_one(path)
}

enum Frame {
    /// `start` is where the parser saw the mapping begin; for block mappings that is the end
    /// of the first key, so the first key's own position is recorded instead when it comes.
    Mapping {
        /// Where this mapping's path ends in the path buffer.
        len: usize,
        pending_key: Option<String>,
        start: Marker,
    },
    Sequence {
        len: usize,
        next: usize,
    },
}

/// Builds the index. The path of the innermost open collection is kept in one buffer (`""`
/// for the document's root, recorded as `.`), extended for each child and cut back after it.
struct Builder {
    index: LocationIndex,
    stack: Vec<Frame>,
    path: String,
}

impl LocationIndex {
    /// Indexes the first document of `source`. A document that does not parse yields an empty
    /// index: serde_yaml reports the syntax error with its own position.
    pub fn build(source: &str) -> LocationIndex {
        let mut b = Builder {
            index: LocationIndex {
                positions: HashMap::default(),
                keys: HashMap::default(),
                empty: true,
            },
            stack: Vec::new(),
            path: String::new(),
        };
        let mut parser = Parser::new_from_str(source);
        let mut documents = 0;
        let mut root_seen = false;
        while let Ok((event, marker)) = parser.next_token() {
            if b.stack.is_empty() && !root_seen {
                match &event {
                    Event::Scalar(value, ..) => {
                        root_seen = true;
                        b.index.empty =
                            matches!(value.as_str(), "" | "~" | "null" | "Null" | "NULL");
                    }
                    Event::MappingStart(..) | Event::SequenceStart(..) | Event::Alias(_) => {
                        root_seen = true;
                        b.index.empty = false;
                    }
                    _ => {}
                }
            }
            match event {
                Event::StreamEnd => break,
                Event::DocumentStart => {
                    documents += 1;
                    if documents > 1 {
                        break;
                    }
                }
                Event::Scalar(value, ..) => b.scalar(Some(value), marker),
                Event::Alias(_) => b.scalar(None, marker),
                Event::MappingStart(..) => {
                    b.key_position(marker);
                    b.enter_child(None);
                    b.stack.push(Frame::Mapping {
                        len: b.path.len(),
                        pending_key: None,
                        start: marker,
                    });
                }
                Event::SequenceStart(..) => {
                    b.key_position(marker);
                    if b.enter_child(None) {
                        b.record(marker);
                    }
                    b.stack.push(Frame::Sequence {
                        len: b.path.len(),
                        next: 0,
                    });
                }
                Event::MappingEnd => {
                    if let Some(Frame::Mapping { start, .. }) = b.stack.pop() {
                        b.record(start);
                    }
                    b.cut_to_parent();
                }
                Event::SequenceEnd => {
                    b.stack.pop();
                    b.cut_to_parent();
                }
                _ => {}
            }
        }
        b.index
    }

    /// Where the key of the value at `path` is written (an unknown key is reported there),
    /// else [`position`](Self::position).
    pub fn key_position(&self, path: &str) -> (usize, usize) {
        match self.keys.get(&hash_path(path)) {
            Some(&position) => position,
            None => self.position(path),
        }
    }

    /// Whether the first document is missing or a bare null: a policy file with nothing in it.
    pub fn is_empty_document(&self) -> bool {
        self.empty
    }

    /// The line and column (1-based) where the value at `path` starts, or of its nearest
    /// indexed parent.
    pub fn position(&self, path: &str) -> (usize, usize) {
        let mut candidate = path;
        loop {
            if let Some(&position) = self.positions.get(&hash_path(candidate)) {
                return position;
            }
            match candidate.rfind(['.', '[']) {
                Some(cut) if cut > 0 => candidate = &candidate[..cut],
                _ => {
                    return self
                        .positions
                        .get(&hash_path("."))
                        .copied()
                        .unwrap_or((1, 1))
                }
            }
        }
    }
}

impl Builder {
    /// Records the node whose path is in the buffer (first position wins).
    fn record(&mut self, marker: Marker) {
        let path = if self.path.is_empty() {
            "."
        } else {
            &self.path
        };
        self.index
            .positions
            .entry(hash_path(path))
            .or_insert((marker.line(), marker.col() + 1));
    }

    /// A block mapping's position is its first key's: records the innermost mapping when
    /// the node at `marker` is one of its keys.
    fn key_position(&mut self, marker: Marker) {
        if let Some(Frame::Mapping {
            pending_key: None, ..
        }) = self.stack.last()
        {
            self.record(marker);
        }
    }

    fn scalar(&mut self, value: Option<String>, marker: Marker) {
        if let (
            Some(Frame::Mapping {
                pending_key: None, ..
            }),
            Some(key),
        ) = (self.stack.last(), &value)
        {
            let key_path = if self.path.is_empty() {
                key.clone()
            } else {
                format!("{}.{key}", self.path)
            };
            self.index
                .keys
                .entry(hash_path(&key_path))
                .or_insert((marker.line(), marker.col() + 1));
        }
        self.key_position(marker);
        if self.enter_child(value) {
            self.record(marker);
            self.cut_to_parent();
        }
    }

    /// Cuts the buffer back to the innermost open collection's path.
    fn cut_to_parent(&mut self) {
        let len = match self.stack.last() {
            None => 0,
            Some(Frame::Mapping { len, .. } | Frame::Sequence { len, .. }) => *len,
        };
        self.path.truncate(len);
    }

    /// Extends the buffer with the path of the node that comes next in the innermost
    /// collection and returns `true`; or returns `false`, leaving the buffer, when that node
    /// is a mapping key (only scalar keys are tracked; a key that is a collection indexes
    /// its contents under its mapping, harmlessly: serde_yaml refuses such keys).
    fn enter_child(&mut self, scalar: Option<String>) -> bool {
        match self.stack.last_mut() {
            None => true,
            Some(Frame::Sequence { next, .. }) => {
                use std::fmt::Write as _;
                let _ = write!(self.path, "[{next}]");
                *next += 1;
                true
            }
            Some(Frame::Mapping { pending_key, .. }) => match pending_key.take() {
                None => {
                    *pending_key = Some(scalar.unwrap_or_default());
                    false
                }
                Some(key) => {
                    if !self.path.is_empty() {
                        self.path.push('.');
                    }
                    self.path.push_str(&key);
                    true
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
version: 1
rules:
  - id: a
    paths: [\"/x\", \"/y/**\"]
  - id: b
    unless:
      paths:
        - /z
egress:
  coder:
    allow:
      - cidr: 10.0.0.0/8
";

    #[test]
    fn paths_resolve_to_where_the_value_starts() {
        let index = LocationIndex::build(DOC);
        assert_eq!(index.position("version"), (1, 10));
        assert_eq!(index.position("rules[0].id"), (3, 9));
        assert_eq!(index.position("rules[0].paths[1]"), (4, 19));
        assert_eq!(index.position("rules[1].unless.paths[0]"), (8, 11));
        assert_eq!(index.position("egress.coder.allow[0].cidr"), (12, 15));
        assert_eq!(index.position("egress.coder.allow[0]"), (12, 9));
        assert_eq!(index.position("egress.coder"), (11, 5));
        assert_eq!(index.position("rules[1]"), (5, 5));
    }

    #[test]
    fn unknown_paths_fall_back_to_the_nearest_parent() {
        let index = LocationIndex::build(DOC);
        assert_eq!(
            index.position("rules[1].unless.paths[7]"),
            index.position("rules[1].unless.paths")
        );
        assert_eq!(
            index.position("rules[1].nothing"),
            index.position("rules[1]")
        );
    }
}
