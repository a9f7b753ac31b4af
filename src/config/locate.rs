//! Source positions for YAML paths.
//!
//! serde reports where *parsing* failed, but checks that run after parsing (a path that does not
//! exist, a duplicate, a patch that matches nothing) also need a line and column. This module
//! reads a YAML text once more as parser events and remembers where every mapping key and
//! sequence item starts, keyed by a path such as `artifacts[1].context`. It knows nothing about
//! devloop's types.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// A 1-based line and column in a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

/// Positions of every key and item in each document of one YAML text.
#[derive(Debug, Default)]
pub struct YamlIndex {
    docs: Vec<HashMap<String, Position>>,
}

impl YamlIndex {
    /// Index `text`. Text that does not parse yields an empty index: the caller reports the
    /// parse error itself, with serde's location.
    pub fn new(text: &str) -> Self {
        let mut builder = Builder::default();
        let mut parser = Parser::new_from_str(text);
        if parser.load(&mut builder, true).is_err() {
            return Self::default();
        }
        Self { docs: builder.docs }
    }

    /// Where `path` (e.g. `spec.template.spec.containers[0].image`) starts in document `doc`.
    /// Falls back to the nearest parent that is known, so a missing key points at its parent.
    pub fn find(&self, doc: usize, path: &str) -> Option<Position> {
        let map = self.docs.get(doc)?;
        let mut path = path;
        loop {
            if let Some(pos) = map.get(path) {
                return Some(*pos);
            }
            let cut = path.rfind(['.', '['])?;
            path = &path[..cut];
        }
    }

    /// Where document `doc` starts.
    pub fn document(&self, doc: usize) -> Option<Position> {
        self.docs.get(doc)?.get("").copied()
    }

    pub fn documents(&self) -> usize {
        self.docs.len()
    }
}

enum Frame {
    /// `key` is the key whose value comes next; `None` while a key is expected.
    Mapping {
        path: String,
        key: Option<String>,
        seen_key: bool,
    },
    Sequence {
        path: String,
        next: usize,
    },
}

#[derive(Default)]
struct Builder {
    docs: Vec<HashMap<String, Position>>,
    stack: Vec<Frame>,
}

impl Builder {
    /// The path of the node that starts now, or `None` when it is a mapping key.
    fn node_path(&mut self, mark: Marker, key_text: Option<&str>) -> Option<String> {
        let pos = Position {
            line: mark.line(),
            column: mark.col() + 1,
        };
        let doc = self.docs.last_mut()?;
        match self.stack.last_mut() {
            None => {
                doc.insert(String::new(), pos);
                Some(String::new())
            }
            Some(Frame::Mapping {
                path,
                key,
                seen_key,
            }) => match key.take() {
                None => {
                    // A key: remember where it is and wait for its value.
                    let text = key_text.unwrap_or("?").to_string();
                    let full = join(path, &text);
                    doc.entry(full).or_insert(pos);
                    // The parser marks a block mapping late; its first key is where it starts.
                    if !*seen_key {
                        *seen_key = true;
                        if !path.is_empty() {
                            doc.insert(path.clone(), pos);
                        }
                    }
                    *key = Some(text);
                    None
                }
                Some(k) => Some(join(path, &k)),
            },
            Some(Frame::Sequence { path, next }) => {
                let full = format!("{path}[{next}]");
                *next += 1;
                doc.insert(full.clone(), pos);
                Some(full)
            }
        }
    }
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::DocumentStart => {
                self.docs.push(HashMap::new());
                self.stack.clear();
            }
            Event::Scalar(text, ..) => {
                self.node_path(mark, Some(&text));
            }
            Event::Alias(_) => {
                self.node_path(mark, None);
            }
            Event::MappingStart(..) => {
                // Complex (non-scalar) keys are not used in manifests; treat them as opaque.
                let path = self.node_path(mark, None).unwrap_or_default();
                self.stack.push(Frame::Mapping {
                    path,
                    key: None,
                    seen_key: false,
                });
            }
            Event::SequenceStart(..) => {
                let path = self.node_path(mark, None).unwrap_or_default();
                self.stack.push(Frame::Sequence { path, next: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_keys_items_and_documents() {
        let text = "a: 1\nlist:\n  - x: 1\n    y: 2\n---\nkind: Service\n";
        let index = YamlIndex::new(text);
        assert_eq!(index.documents(), 2);
        assert_eq!(index.find(0, "a"), Some(Position { line: 1, column: 1 }));
        assert_eq!(
            index.find(0, "list[0].y"),
            Some(Position { line: 4, column: 5 })
        );
        // An unknown key falls back to its nearest known parent.
        assert_eq!(
            index.find(0, "list[0].zzz"),
            Some(Position { line: 3, column: 5 })
        );
        assert_eq!(index.find(1, "kind"), Some(Position { line: 6, column: 1 }));
    }
}
