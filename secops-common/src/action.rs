//! The action taxonomy: `category:action` types, a fixed core and a validated registry for the
//! custom in-process types a policy declares.
//!
//! Kernel-observable categories (`fs`, `proc`, `net`, `secret`, `sys`) are closed: every kernel
//! event maps to exactly one core type, so a policy cannot invent new ones there. The
//! in-process categories (`code`, `vcs`, `deploy`, `comms`, `db`, `tool`) have core types and
//! may be extended by declaration. An undeclared or misspelt type is always an error.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use serde::Serialize;

macro_rules! categories {
    ($($variant:ident => $name:literal, kernel: $kernel:literal;)+) => {
        /// The first half of an action type.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Category { $($variant),+ }

        impl Category {
            pub const ALL: &'static [Category] = &[$(Category::$variant),+];

            pub const fn as_str(self) -> &'static str {
                match self { $(Category::$variant => $name),+ }
            }

            /// Whether the kernel programs observe this category. Such categories are closed.
            pub const fn is_kernel_observable(self) -> bool {
                match self { $(Category::$variant => $kernel),+ }
            }

            pub fn from_name(name: &str) -> Option<Category> {
                match name { $($name => Some(Category::$variant),)+ _ => None }
            }
        }
    };
}

categories! {
    Fs => "fs", kernel: true;
    Proc => "proc", kernel: true;
    Net => "net", kernel: true;
    Secret => "secret", kernel: true;
    Sys => "sys", kernel: true;
    Code => "code", kernel: false;
    Vcs => "vcs", kernel: false;
    Deploy => "deploy", kernel: false;
    Comms => "comms", kernel: false;
    Db => "db", kernel: false;
    Tool => "tool", kernel: false;
}

macro_rules! core_actions {
    ($($variant:ident => ($category:ident, $name:literal),)+) => {
        /// The built-in action types. The discriminant is the type's [`ActionId`].
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[repr(u16)]
        pub enum CoreAction { $($variant),+ }

        impl CoreAction {
            pub const ALL: &'static [CoreAction] = &[$(CoreAction::$variant),+];

            pub const fn category(self) -> Category {
                match self { $(CoreAction::$variant => Category::$category),+ }
            }

            /// The part after the colon.
            pub const fn action_name(self) -> &'static str {
                match self { $(CoreAction::$variant => $name),+ }
            }

            /// The full `category:action` name.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(CoreAction::$variant => concat!(categories_name!($category), ":", $name)),+
                }
            }
        }
    };
}

macro_rules! categories_name {
    (Fs) => {
        "fs"
    };
    (Proc) => {
        "proc"
    };
    (Net) => {
        "net"
    };
    (Secret) => {
        "secret"
    };
    (Sys) => {
        "sys"
    };
    (Code) => {
        "code"
    };
    (Vcs) => {
        "vcs"
    };
    (Deploy) => {
        "deploy"
    };
    (Comms) => {
        "comms"
    };
    (Db) => {
        "db"
    };
    (Tool) => {
        "tool"
    };
}

core_actions! {
    FsRead => (Fs, "read"),
    FsWrite => (Fs, "write"),
    FsCreate => (Fs, "create"),
    FsDelete => (Fs, "delete"),
    FsRename => (Fs, "rename"),
    FsLink => (Fs, "link"),
    FsTruncate => (Fs, "truncate"),
    FsChmod => (Fs, "chmod"),
    ProcExec => (Proc, "exec"),
    ProcSignal => (Proc, "signal"),
    ProcPtrace => (Proc, "ptrace"),
    ProcExit => (Proc, "exit"),
    NetConnect => (Net, "connect"),
    NetSend => (Net, "send"),
    NetBind => (Net, "bind"),
    NetDns => (Net, "dns"),
    SecretRead => (Secret, "read"),
    SysBpf => (Sys, "bpf"),
    SysMount => (Sys, "mount"),
    SysModule => (Sys, "module"),
    SysNamespace => (Sys, "namespace"),
    SysCgroup => (Sys, "cgroup"),
    // Not a kernel event: the audit type of a change to an agent's autonomy, by a human
    // (`secops agents set-autonomy`) or by secops after repeated denials.
    SysAutonomy => (Sys, "autonomy"),
    // Not a kernel event either: the audit type of a policy reload (or a refused one), with
    // what triggered it and the policy's content hash old -> new.
    SysPolicy => (Sys, "policy"),
    CodeExec => (Code, "exec"),
    CodeEdit => (Code, "edit"),
    VcsCommit => (Vcs, "commit"),
    VcsPush => (Vcs, "push"),
    VcsForcePush => (Vcs, "force_push"),
    VcsBranchDelete => (Vcs, "branch_delete"),
    DeployRelease => (Deploy, "release"),
    DeployRollback => (Deploy, "rollback"),
    CommsSend => (Comms, "send"),
    DbRead => (Db, "read"),
    DbWrite => (Db, "write"),
    DbDrop => (Db, "drop"),
    DbMigrate => (Db, "migrate"),
    ToolCall => (Tool, "call"),
    ToolOutput => (Tool, "output"),
}

/// A dense index of an action type within one [`ActionRegistry`]: core types first, in
/// [`CoreAction`] order, then custom types in declaration order. Used to index tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ActionId(pub u16);

impl ActionId {
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

/// One `category:action` type: built in, or declared by a policy.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ActionType {
    Core(CoreAction),
    Custom { category: Category, name: Arc<str> },
}

impl ActionType {
    pub fn category(&self) -> Category {
        match self {
            ActionType::Core(core) => core.category(),
            ActionType::Custom { category, .. } => *category,
        }
    }

    /// The part after the colon.
    pub fn action_name(&self) -> &str {
        match self {
            ActionType::Core(core) => core.action_name(),
            ActionType::Custom { name, .. } => name,
        }
    }

    pub fn as_core(&self) -> Option<CoreAction> {
        match self {
            ActionType::Core(core) => Some(*core),
            ActionType::Custom { .. } => None,
        }
    }
}

impl fmt::Display for ActionType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ActionType::Core(core) => f.write_str(core.as_str()),
            ActionType::Custom { category, name } => write!(f, "{}:{name}", category.as_str()),
        }
    }
}

impl Serialize for ActionType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl From<CoreAction> for ActionType {
    fn from(core: CoreAction) -> Self {
        ActionType::Core(core)
    }
}

/// Why a string is not an action type (or not a declarable one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActionTypeError {
    #[error("{given:?} is not of the form category:action")]
    Malformed { given: String },
    #[error(
        "unknown category {category:?} in {given:?} (categories: {})",
        category_list()
    )]
    UnknownCategory { given: String, category: String },
    #[error("unknown action type {given:?}{}", suggestion_text(.suggestion))]
    Unknown {
        given: String,
        suggestion: Option<String>,
    },
    #[error("{given:?}: category {category:?} is observed by the kernel and cannot be extended")]
    ClosedCategory {
        given: String,
        category: &'static str,
    },
    #[error("{given:?} is already defined")]
    AlreadyDefined { given: String },
    #[error("too many action types (at most {})", u16::MAX)]
    TooMany,
}

fn category_list() -> String {
    Category::ALL
        .iter()
        .map(|c| c.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn suggestion_text(suggestion: &Option<String>) -> String {
    match suggestion {
        Some(s) => format!(" (did you mean {s:?}?)"),
        None => String::new(),
    }
}

/// All action types a policy may name: the core ones plus those it declared.
#[derive(Clone, Debug)]
pub struct ActionRegistry {
    types: Vec<ActionType>,
    by_name: HashMap<String, ActionId>,
}

impl Default for ActionRegistry {
    fn default() -> Self {
        Self::core()
    }
}

impl ActionRegistry {
    /// A registry holding only the built-in types.
    pub fn core() -> Self {
        let types: Vec<ActionType> = CoreAction::ALL
            .iter()
            .map(|&c| ActionType::Core(c))
            .collect();
        let by_name = CoreAction::ALL
            .iter()
            .map(|&c| (c.as_str().to_owned(), ActionId(c as u16)))
            .collect();
        ActionRegistry { types, by_name }
    }

    pub fn len(&self) -> usize {
        self.types.len()
    }

    pub fn is_empty(&self) -> bool {
        self.types.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (ActionId, &ActionType)> {
        self.types
            .iter()
            .enumerate()
            .map(|(i, t)| (ActionId(i as u16), t))
    }

    pub fn get(&self, id: ActionId) -> Option<&ActionType> {
        self.types.get(id.index())
    }

    /// The id of a type this registry knows. Core types always have their fixed id.
    pub fn id_of(&self, action: &ActionType) -> Option<ActionId> {
        match action {
            ActionType::Core(core) => Some(ActionId(*core as u16)),
            custom => self.by_name.get(custom.to_string().as_str()).copied(),
        }
    }

    /// Declares a custom in-process action type such as `db:truncate_table`.
    pub fn declare(&mut self, name: &str) -> Result<ActionId, ActionTypeError> {
        let (category, action) = split_checked(name)?;
        if category.is_kernel_observable() {
            return Err(ActionTypeError::ClosedCategory {
                given: name.to_owned(),
                category: category.as_str(),
            });
        }
        if self.by_name.contains_key(name) {
            return Err(ActionTypeError::AlreadyDefined {
                given: name.to_owned(),
            });
        }
        let id = u16::try_from(self.types.len()).map_err(|_| ActionTypeError::TooMany)?;
        self.types.push(ActionType::Custom {
            category,
            name: Arc::from(action),
        });
        self.by_name.insert(name.to_owned(), ActionId(id));
        Ok(ActionId(id))
    }

    /// Resolves `category:action` to a known type.
    pub fn resolve(&self, name: &str) -> Result<(ActionId, &ActionType), ActionTypeError> {
        if let Some(&id) = self.by_name.get(name) {
            return Ok((id, &self.types[id.index()]));
        }
        split_checked(name)?;
        Err(ActionTypeError::Unknown {
            given: name.to_owned(),
            suggestion: self.closest(name),
        })
    }

    /// Resolves a type or a `category:*` wildcard to the ids it covers (in id order).
    pub fn resolve_pattern(&self, pattern: &str) -> Result<Vec<ActionId>, ActionTypeError> {
        match pattern.strip_suffix(":*") {
            Some(category_name) => {
                let category = Category::from_name(category_name).ok_or_else(|| {
                    ActionTypeError::UnknownCategory {
                        given: pattern.to_owned(),
                        category: category_name.to_owned(),
                    }
                })?;
                Ok(self
                    .iter()
                    .filter(|(_, t)| t.category() == category)
                    .map(|(id, _)| id)
                    .collect())
            }
            None => self.resolve(pattern).map(|(id, _)| vec![id]),
        }
    }

    fn closest(&self, given: &str) -> Option<String> {
        self.by_name
            .keys()
            .map(|known| (edit_distance(given, known), known))
            .filter(|(distance, _)| *distance <= 2)
            .min()
            .map(|(_, known)| known.clone())
    }
}

/// Splits `category:action`, checking the category exists and the action is a plain name.
fn split_checked(name: &str) -> Result<(Category, &str), ActionTypeError> {
    let malformed = || ActionTypeError::Malformed {
        given: name.to_owned(),
    };
    let (category_name, action) = name.split_once(':').ok_or_else(malformed)?;
    let is_ident = |s: &str| {
        s.len() <= 64
            && s.starts_with(|c: char| c.is_ascii_lowercase())
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    };
    if !is_ident(action) || !is_ident(category_name) {
        return Err(malformed());
    }
    let category =
        Category::from_name(category_name).ok_or_else(|| ActionTypeError::UnknownCategory {
            given: name.to_owned(),
            category: category_name.to_owned(),
        })?;
    Ok((category, action))
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_ids_are_their_discriminants_and_names_are_unique() {
        let registry = ActionRegistry::core();
        assert_eq!(registry.len(), CoreAction::ALL.len());
        for &core in CoreAction::ALL {
            let (id, ty) = registry.resolve(core.as_str()).unwrap();
            assert_eq!(id, ActionId(core as u16));
            assert_eq!(ty, &ActionType::Core(core));
            assert_eq!(ty.to_string(), core.as_str());
        }
    }

    #[test]
    fn every_category_named_in_the_design_has_core_types() {
        for &category in Category::ALL {
            assert!(
                CoreAction::ALL.iter().any(|c| c.category() == category),
                "{category:?} has no core type"
            );
        }
        assert_eq!(CoreAction::VcsForcePush.as_str(), "vcs:force_push");
        assert_eq!(CoreAction::SysAutonomy.as_str(), "sys:autonomy");
        assert_eq!(
            ActionRegistry::core()
                .resolve_pattern("sys:*")
                .unwrap()
                .len(),
            6
        );
    }

    #[test]
    fn misspelt_types_are_errors_with_a_suggestion() {
        let registry = ActionRegistry::core();
        assert_eq!(
            registry.resolve("fs:delte").unwrap_err(),
            ActionTypeError::Unknown {
                given: "fs:delte".into(),
                suggestion: Some("fs:delete".into())
            }
        );
        assert!(matches!(
            registry.resolve("fss:delete"),
            Err(ActionTypeError::UnknownCategory { .. })
        ));
        assert!(matches!(
            registry.resolve("delete"),
            Err(ActionTypeError::Malformed { .. })
        ));
        assert!(matches!(
            registry.resolve("fs:Delete"),
            Err(ActionTypeError::Malformed { .. })
        ));
        assert!(matches!(
            registry.resolve("fs:"),
            Err(ActionTypeError::Malformed { .. })
        ));
        assert!(matches!(
            registry.resolve("db:truncate_table"),
            Err(ActionTypeError::Unknown { .. })
        ));
    }

    #[test]
    fn custom_types_only_in_open_categories_and_only_once() {
        let mut registry = ActionRegistry::core();
        let id = registry.declare("db:truncate_table").unwrap();
        assert_eq!(id.index(), CoreAction::ALL.len());
        assert_eq!(registry.resolve("db:truncate_table").unwrap().0, id);
        assert_eq!(registry.get(id).unwrap().category(), Category::Db);
        assert!(matches!(
            registry.declare("db:truncate_table"),
            Err(ActionTypeError::AlreadyDefined { .. })
        ));
        assert!(matches!(
            registry.declare("db:read"),
            Err(ActionTypeError::AlreadyDefined { .. })
        ));
        assert!(matches!(
            registry.declare("fs:shred"),
            Err(ActionTypeError::ClosedCategory { .. })
        ));
        assert!(matches!(
            registry.declare("nope:x"),
            Err(ActionTypeError::UnknownCategory { .. })
        ));
    }

    #[test]
    fn category_wildcards_cover_custom_types_too() {
        let mut registry = ActionRegistry::core();
        let custom = registry.declare("db:truncate_table").unwrap();
        let db = registry.resolve_pattern("db:*").unwrap();
        assert_eq!(db.len(), 5);
        assert!(db.contains(&custom));
        assert_eq!(registry.resolve_pattern("fs:*").unwrap().len(), 8);
        assert!(registry.resolve_pattern("fz:*").is_err());
    }
}
