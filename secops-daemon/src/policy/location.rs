//! Where each value of a YAML document starts, by field path.
//!
//! serde_yaml reports positions for syntax and type errors but the typed structures it
//! produces carry none, and most policy errors (a bad glob, a duplicate rule id, an undeclared
//! action type) are only found after deserializing. This index, built from yaml-rust2's event
//! stream, maps the same field paths serde_yaml uses (`rules[3].paths[0]`) to line and column.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::Marker;

#[derive(Debug, Default)]
pub struct LocationIndex {
    positions: HashMap<String, (usize, usize)>,
    /// Where each mapping key is written, by the path of its value (for unknown keys).
    keys: HashMap<String, (usize, usize)>,
}

enum Frame {
    /// `start` is where the parser saw the mapping begin; for block mappings that is the end
    /// of the first key, so the first key's own position is recorded instead when it comes.
    Mapping {
        path: String,
        pending_key: Option<String>,
        start: Marker,
    },
    Sequence {
        path: String,
        next: usize,
    },
}

impl LocationIndex {
    /// Indexes the first document of `source`. A document that does not parse yields an empty
    /// index: serde_yaml reports the syntax error with its own position.
    pub fn build(source: &str) -> LocationIndex {
        let mut index = LocationIndex::default();
        let mut parser = Parser::new_from_str(source);
        let mut stack: Vec<Frame> = Vec::new();
        let mut documents = 0;
        while let Ok((event, marker)) = parser.next_token() {
            match event {
                Event::StreamEnd => break,
                Event::DocumentStart => {
                    documents += 1;
                    if documents > 1 {
                        break;
                    }
                }
                Event::Scalar(value, ..) => {
                    index.child_path(&mut stack, Some(value), marker);
                }
                Event::Alias(_) => {
                    index.child_path(&mut stack, None, marker);
                }
                Event::MappingStart(..) => {
                    let path = index
                        .node_path(&mut stack, None)
                        .unwrap_or_else(|| ".".to_owned());
                    stack.push(Frame::Mapping {
                        path,
                        pending_key: None,
                        start: marker,
                    });
                }
                Event::SequenceStart(..) => {
                    let path = index
                        .child_path(&mut stack, None, marker)
                        .unwrap_or_else(|| ".".to_owned());
                    stack.push(Frame::Sequence { path, next: 0 });
                }
                Event::MappingEnd => {
                    if let Some(Frame::Mapping { path, start, .. }) = stack.pop() {
                        index.record(path, start);
                    }
                }
                Event::SequenceEnd => {
                    stack.pop();
                }
                _ => {}
            }
        }
        index
    }

    /// Handles a node that starts at `marker`: records and returns its path, or `None` when
    /// it is a mapping key.
    fn child_path(
        &mut self,
        stack: &mut [Frame],
        scalar: Option<String>,
        marker: Marker,
    ) -> Option<String> {
        if let Some(Frame::Mapping {
            path,
            pending_key: None,
            ..
        }) = stack.last()
        {
            let mapping = path.clone();
            if let Some(key) = &scalar {
                let key_path = if mapping == "." {
                    key.clone()
                } else {
                    format!("{mapping}.{key}")
                };
                self.keys
                    .entry(key_path)
                    .or_insert((marker.line(), marker.col() + 1));
            }
            self.record(mapping, marker);
        }
        let path = self.node_path(stack, scalar)?;
        self.record(path.clone(), marker);
        Some(path)
    }

    fn record(&mut self, path: String, marker: Marker) {
        self.positions
            .entry(path)
            .or_insert((marker.line(), marker.col() + 1));
    }

    /// The path of the node that comes next in the innermost collection, or `None` when that
    /// node is a mapping key (only scalar keys are tracked).
    fn node_path(&mut self, stack: &mut [Frame], scalar: Option<String>) -> Option<String> {
        let path = match stack.last_mut() {
            None => ".".to_owned(),
            Some(Frame::Sequence { path, next }) => {
                let child = format!("{}[{next}]", if path == "." { "" } else { path });
                *next += 1;
                child
            }
            Some(Frame::Mapping {
                path, pending_key, ..
            }) => match pending_key.take() {
                None => {
                    // A key. Non-scalar keys get a placeholder so their value is skipped.
                    *pending_key = Some(scalar.unwrap_or_default());
                    return None;
                }
                Some(key) => {
                    if path == "." {
                        key
                    } else {
                        format!("{path}.{key}")
                    }
                }
            },
        };
        Some(path)
    }

    /// Where the key of the value at `path` is written (an unknown key is reported there),
    /// else [`position`](Self::position).
    pub fn key_position(&self, path: &str) -> (usize, usize) {
        match self.keys.get(path) {
            Some(&position) => position,
            None => self.position(path),
        }
    }

    /// The line and column (1-based) where the value at `path` starts, or of its nearest
    /// indexed parent.
    pub fn position(&self, path: &str) -> (usize, usize) {
        let mut candidate = path;
        loop {
            if let Some(&position) = self.positions.get(candidate) {
                return position;
            }
            match candidate.rfind(['.', '[']) {
                Some(cut) if cut > 0 => candidate = &candidate[..cut],
                _ => return self.positions.get(".").copied().unwrap_or((1, 1)),
            }
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
