//! A policy file's structure (what serde reads: known keys, types, required fields), with
//! every mistake reported in one run, as the checks of meaning after it are.
//!
//! serde stops at the first mistake. So a file that does not deserialize is read again, in
//! parts and step by step: each entry of `action_types`, `agents` and `rules` on its own (one
//! entry's mistakes never hide the next one's), and within each part, a wrong key is noted
//! and taken out, and a missing field is noted and filled with a stand-in, until the part
//! reads. The stand-ins and removals only serve to find the next mistake: a file with any
//! mistake is never used.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde_yaml::{Mapping, Value};

use super::error::PolicyError;
use super::location::LocationIndex;
use super::schema::{ActionTypeDecl, AgentSpec, PolicyFile, RuleSpec};

/// Bounds the work on a file full of mistakes.
const MAX_STEPS: usize = 200;

/// Stand-ins for a missing field, tried in order until one has the field's type.
fn stand_ins() -> [Value; 6] {
    [
        Value::String(String::new()),
        Value::String("low".into()),
        Value::Number(0.into()),
        Value::Bool(false),
        Value::Sequence(Vec::new()),
        Value::Mapping(Mapping::new()),
    ]
}

/// The lists whose entries are read one by one.
type Check = fn(Value, &str, &mut Vec<(String, String)>);
const LISTS: [(&str, Check); 3] = [
    ("action_types", mistakes::<ActionTypeDecl>),
    ("agents", mistakes::<AgentSpec>),
    ("rules", mistakes::<RuleSpec>),
];

/// The file's structure, or every structural mistake in it, positioned.
pub(super) fn read(
    path: &Path,
    source: &str,
    index: &LocationIndex,
) -> Result<PolicyFile, Vec<PolicyError>> {
    let typed = match serde_yaml::from_str::<PolicyFile>(source) {
        Ok(doc) => return Ok(doc),
        Err(e) => e,
    };
    // Not YAML at all: the parser's own error, where the typed read placed it.
    let Ok(value) = serde_yaml::from_str::<Value>(source) else {
        return Err(vec![syntax_error(path, &typed)]);
    };
    let mut found = Vec::new();
    let mut rest = value;
    if let Value::Mapping(map) = &mut rest {
        for (key, check) in LISTS {
            if let Some(Value::Sequence(items)) = map.get_mut(key) {
                for (i, item) in std::mem::take(items).into_iter().enumerate() {
                    check(item, &format!("{key}[{i}]"), &mut found);
                }
            }
        }
    }
    mistakes::<PolicyFile>(rest, "", &mut found);
    if found.is_empty() {
        // Cannot happen (the whole failed, so a part must); said rather than guessed.
        found.push((
            ".".to_owned(),
            "the file does not read as a policy".to_owned(),
        ));
    }
    Err(found
        .into_iter()
        .map(|(field, message)| {
            let (line, column) = if message.starts_with("unknown field") {
                index.key_position(&field)
            } else {
                index.position(&field)
            };
            PolicyError {
                file: path.to_path_buf(),
                line,
                column,
                field,
                message,
            }
        })
        .collect())
}

/// Every mistake in `value` read as a `T`, as (field path below `prefix`, message).
fn mistakes<T: DeserializeOwned>(
    mut value: Value,
    prefix: &str,
    found: &mut Vec<(String, String)>,
) {
    let mut stood_in: Vec<(String, usize)> = Vec::new();
    let mut removed: Vec<String> = Vec::new();
    for _ in 0..MAX_STEPS {
        let error = match serde_path_to_error::deserialize::<_, T>(value.clone()) {
            Ok(_) => return,
            Err(e) => e,
        };
        let at = error.path().to_string();
        let message = error.inner().to_string();
        // A stand-in of the wrong type: the next one.
        if let Some(entry) = stood_in.iter_mut().find(|(p, _)| *p == at) {
            entry.1 += 1;
            match stand_ins().get(entry.1) {
                Some(next) if set(&mut value, &at, next.clone()) => continue,
                _ => return,
            }
        }
        if let Some(name) = missing_field(&message) {
            let field = join(&at, name);
            // Missing because its wrong value was taken out: said once already.
            if !removed.contains(&field) {
                found.push((join(prefix, &field), missing_message(name, &message)));
            }
            let [first, ..] = stand_ins();
            if !set(&mut value, &field, first) {
                return;
            }
            stood_in.push((field, 0));
            continue;
        }
        found.push((join(prefix, &at), message));
        // Out with the key that held the mistake (a list with a bad item goes whole).
        let key = strip_indexes(&at);
        if key == "." || !remove(&mut value, key) {
            return;
        }
        removed.push(key.to_owned());
    }
}

/// `missing field `risk`` names `risk`.
fn missing_field(message: &str) -> Option<&str> {
    message
        .strip_prefix("missing field `")?
        .split('`')
        .next()
        .filter(|n| !n.is_empty())
}

/// What a person needs to add, for the fields a first policy most often lacks.
fn missing_message(name: &str, message: &str) -> String {
    let hint = match name {
        "risk" => "; every rule needs a risk: low, medium, high or critical (without a verdict, the agent's autonomy turns it into one; it also ranks matching rules)",
        "id" => "; every rule needs an id, unique in the policy",
        "actions" => "; every rule names the action types it is about, e.g. [fs:delete] or [\"fs:*\"]",
        "workspace" => "; every agent needs a workspace (its own directory)",
        "name" => "; every entry needs a name",
        _ => "",
    };
    format!("{message}{hint}")
}

fn join(prefix: &str, rest: &str) -> String {
    match (prefix, rest) {
        ("" | ".", r) => r.to_owned(),
        (p, "" | ".") => p.to_owned(),
        (p, r) if r.starts_with('[') => format!("{p}{r}"),
        (p, r) => format!("{p}.{r}"),
    }
}

/// `rules[0].actions[3]` -> `rules[0].actions`.
fn strip_indexes(path: &str) -> &str {
    let mut path = path;
    while path.ends_with(']') {
        match path.rfind('[') {
            Some(cut) => path = &path[..cut],
            None => break,
        }
    }
    if path.is_empty() {
        "."
    } else {
        path
    }
}

enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

/// `a.b[2].c` as steps; `None` for what is not a path serde_path_to_error writes.
fn steps(path: &str) -> Option<Vec<Step<'_>>> {
    let mut out = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (key, mut indexes) = match part.find('[') {
            Some(at) => (&part[..at], &part[at..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            out.push(Step::Key(key));
        }
        while let Some(rest) = indexes.strip_prefix('[') {
            let close = rest.find(']')?;
            out.push(Step::Index(rest[..close].parse().ok()?));
            indexes = &rest[close + 1..];
        }
    }
    Some(out)
}

/// The mapping that holds the last key of `path`, and that key.
fn parent<'v, 'p>(value: &'v mut Value, path: &'p str) -> Option<(&'v mut Mapping, &'p str)> {
    let mut steps = steps(path)?;
    let Some(Step::Key(last)) = steps.pop() else {
        return None;
    };
    let mut node = value;
    for step in steps {
        node = match (step, node) {
            (Step::Key(k), Value::Mapping(m)) => m.get_mut(k)?,
            (Step::Index(i), Value::Sequence(s)) => s.get_mut(i)?,
            _ => return None,
        };
    }
    match node {
        Value::Mapping(m) => Some((m, last)),
        _ => None,
    }
}

fn remove(value: &mut Value, path: &str) -> bool {
    parent(value, path).is_some_and(|(map, key)| map.remove(key).is_some())
}

fn set(value: &mut Value, path: &str, to: Value) -> bool {
    parent(value, path)
        .map(|(map, key)| map.insert(Value::String(key.to_owned()), to))
        .is_some()
}

/// serde_yaml's syntax error as `file:line:column: message`.
fn syntax_error(path: &Path, error: &serde_yaml::Error) -> PolicyError {
    let (line, column) = error
        .location()
        .map(|l| (l.line(), l.column()))
        .unwrap_or((0, 0));
    let mut message = error.to_string();
    if let Some(at) = message.rfind(" at line ") {
        message.truncate(at);
    }
    PolicyError {
        file: path.to_path_buf(),
        line,
        column,
        field: ".".into(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(source: &str) -> Vec<String> {
        let index = LocationIndex::build(source);
        match read(Path::new("p.yaml"), source, &index) {
            Ok(_) => Vec::new(),
            Err(errors) => errors.iter().map(|e| e.to_string()).collect(),
        }
    }

    /// A first policy written from the README with every structural mistake it took six runs
    /// to find: all of them in one.
    #[test]
    fn every_structural_mistake_is_reported_at_once() {
        let source = "\
version: 1
agent:
  - {name: coder, workspace: /srv/coder}
agents:
  - {name: coder, workspace: /srv/coder, autonmy: semi}
  - {name: ops}
rules:
  - id: no-etc
    actions: [fs:delete]
    paths: [/etc/**]
    verdict: deny
  - id: pushes
    actions: [vcs:push]
    verdict: maybe
    risk: low
    hard: sometimes
  - actions: [deploy:release]
defaults:
  autonomy: yolo
";
        let found = errors(source);
        let want = [
            "p.yaml:5:42: agents[0].autonmy: unknown field `autonmy`",
            "p.yaml:6:6: agents[1].workspace: missing field `workspace`; every agent needs a workspace",
            "p.yaml:8:5: rules[0].risk: missing field `risk`; every rule needs a risk",
            "p.yaml:14:14: rules[1].verdict: unknown variant `maybe`",
            "p.yaml:16:11: rules[1].hard: invalid type: string \"sometimes\", expected a boolean",
            "p.yaml:17:5: rules[2].id: missing field `id`",
            "p.yaml:17:5: rules[2].risk: missing field `risk`",
            "p.yaml:2:1: agent: unknown field `agent`",
            "p.yaml:19:13: defaults.autonomy: unknown variant `yolo`",
        ];
        assert_eq!(found.len(), want.len(), "{found:#?}");
        for (got, want) in found.iter().zip(want) {
            assert!(got.starts_with(want), "{got}\n  wanted {want}");
        }
    }

    #[test]
    fn a_syntax_error_is_one_error_where_the_parser_stopped() {
        assert_eq!(
            errors("rules: [\n"),
            ["p.yaml:2:1: .: did not find expected node content"]
        );
        assert!(errors("version: 1\nrules: []\n").is_empty());
    }

    #[test]
    fn paths_are_walked_as_serde_path_to_error_writes_them() {
        let mut value: Value =
            serde_yaml::from_str("egress: {coder: {allow: [{cidr: x, bad: 1}]}}").unwrap();
        assert!(remove(&mut value, "egress.coder.allow[0].bad"));
        assert!(!remove(&mut value, "egress.coder.allow[0].bad"));
        assert!(set(
            &mut value,
            "egress.coder.allow[0].ports",
            Value::Sequence(vec![])
        ));
        assert_eq!(strip_indexes("rules[0].actions[3]"), "rules[0].actions");
        assert_eq!(strip_indexes("[0]"), ".");
        assert_eq!(join("rules[2]", "."), "rules[2]");
        assert_eq!(join("", "defaults.risk"), "defaults.risk");
    }
}
