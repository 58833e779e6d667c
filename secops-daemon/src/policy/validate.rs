//! What a policy means: names resolved, patterns checked, references followed. Every problem
//! is collected (an operator fixes a file in one pass, not one error per run).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use secops_common::{ActionRegistry, AutonomyLevel, Category, CoreAction, RiskLevel, Verdict};

use super::auto_lower;
use super::error::PolicyError;
use super::model::{
    Agent, AgentUser, Approvals, Defaults, DnsRefusal, Egress, EgressEntry, EgressTarget, Layer,
    Origin, Policy, Rule, Selectors, Unlisted,
};
use super::pattern::{parse_cidr, HostPattern, PathPattern, PortRange};
use super::response::ResponsePolicy;
use super::schema::{EgressDefault, OnTimeout, SelectorSpec, UserSpec};
use super::source::SourceFile;

/// The autonomy of agents that do not name one: a human is asked before anything risky.
pub const DEFAULT_AUTONOMY: AutonomyLevel = AutonomyLevel::Supervised;
/// What `~` means by default: every user's home.
pub const DEFAULT_HOMES: &[&str] = &["/root", "/home/*"];

/// The shortest and longest time a ticket may wait for a human. Tickets are swept once a
/// second, so a shorter timeout could not be kept; past a day nobody is waiting for an answer
/// any more, and a policy that means "however long it takes" says `wait`.
pub const MIN_APPROVAL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);
pub const MAX_APPROVAL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// The risk of each core action type when no rule matches it and the policy says nothing.
pub fn builtin_default_risk(action: CoreAction) -> RiskLevel {
    use CoreAction::*;
    use RiskLevel::*;
    match action {
        FsRead | FsCreate | ProcExit | NetDns | CodeEdit | VcsCommit | DbRead | ToolOutput => Low,
        FsWrite | FsRename | FsLink | FsChmod | ProcExec | ProcSignal | NetConnect | NetSend
        | NetBind | CodeExec | VcsPush | CommsSend | DbWrite | ToolCall => Medium,
        FsDelete | FsTruncate | VcsForcePush | VcsBranchDelete | DeployRelease | DeployRollback
        | DbMigrate => High,
        ProcPtrace | SecretRead | SysBpf | SysMount | SysModule | SysNamespace | SysCgroup
        | SysAutonomy | SysPolicy | SysAudit | DbDrop => Critical,
    }
}

/// An autonomy-tiered response policy must say what to do at every level: a level it leaves
/// out would withhold at run time, which the operator should hear about now.
fn check_output_scan(policy: &ResponsePolicy) -> Result<(), String> {
    let missing: Vec<&str> = AutonomyLevel::ALL
        .iter()
        .filter(|level| policy.resolve(**level).is_err())
        .map(|level| level.as_str())
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "autonomy-tiered must name every autonomy level; missing: {}",
            missing.join(", ")
        ))
    }
}

/// Validates parsed files (includes before the files that include them, the root last) into
/// one policy, pushing every problem found onto `errors`. The returned policy is meaningless
/// unless `errors` stayed empty.
pub fn validate(files: &[SourceFile], errors: &mut Vec<PolicyError>) -> Policy {
    let mut v = Validator {
        errors,
        registry: ActionRegistry::core(),
    };
    let mut default_risk: Vec<Option<RiskLevel>> = CoreAction::ALL
        .iter()
        .map(|&c| Some(builtin_default_risk(c)))
        .collect();

    for file in files {
        if let Some(version) = file.doc.version {
            if version != 1 {
                v.push(file.error(
                    "version",
                    format!("unsupported policy version {version} (this secops reads version 1)"),
                ));
            }
        }
        if file.doc.defaults.is_some() && !file.is_root {
            v.push(file.error(
                "defaults",
                "only the top-level policy file may set defaults",
            ));
        }
        for (i, decl) in file.doc.action_types.iter().enumerate() {
            match v.registry.declare(&decl.name) {
                Ok(id) => {
                    default_risk.resize(id.index() + 1, None);
                    default_risk[id.index()] = decl.risk;
                }
                Err(e) => v.push(file.error(format!("action_types[{i}].name"), e.to_string())),
            }
        }
    }

    let root = files.iter().find(|f| f.is_root);
    let defaults_spec = root.and_then(|f| f.doc.defaults.as_ref().map(|d| (f, d)));
    let mut defaults = Defaults {
        autonomy: DEFAULT_AUTONOMY,
        homes: DEFAULT_HOMES.iter().map(|h| h.to_string()).collect(),
        home_patterns: DEFAULT_HOMES
            .iter()
            .map(|h| PathPattern::parse(h).expect("the built-in homes are valid patterns"))
            .collect(),
        egress: EgressDefault::Deny,
        output_scan: ResponsePolicy::default(),
        auto_lower: None,
        user: None,
        require: Vec::new(),
    };
    if let Some((file, spec)) = defaults_spec {
        defaults.autonomy = spec.autonomy.unwrap_or(DEFAULT_AUTONOMY);
        defaults.egress = spec.egress.unwrap_or(EgressDefault::Deny);
        if let Some(scan) = &spec.output_scan {
            match check_output_scan(scan) {
                Ok(()) => defaults.output_scan = scan.clone(),
                Err(e) => v.push(file.error("defaults.output_scan", e)),
            }
        }
        if let Some(raw) = &spec.auto_lower {
            match auto_lower::parse(raw) {
                Ok(rule) => defaults.auto_lower = rule,
                Err(errors) => {
                    for e in errors {
                        v.push(file.error(sub_field("defaults.auto_lower", e.field), e.message));
                    }
                }
            }
        }
        if let Some(user) = &spec.user {
            match check_user(user) {
                Ok(user) => defaults.user = Some(user),
                Err(e) => v.push(file.error("defaults.user", e)),
            }
        }
        if let Some(names) = &spec.require {
            match check_layers(names) {
                Ok(layers) => defaults.require = layers,
                Err(errors) => {
                    for (i, e) in errors {
                        v.push(file.error(format!("defaults.require[{i}]"), e));
                    }
                }
            }
        }
        if let Some(homes) = &spec.homes {
            defaults.homes.clear();
            defaults.home_patterns.clear();
            for (i, home) in homes.iter().enumerate() {
                match check_home_glob(home) {
                    Ok(pattern) => {
                        defaults.homes.push(pattern.as_str().to_owned());
                        defaults.home_patterns.push(pattern);
                    }
                    Err(e) => v.push(file.error(format!("defaults.homes[{i}]"), e)),
                }
            }
        }
        for (pattern, &risk) in &spec.risk {
            match v.registry.resolve_pattern(pattern) {
                Ok(ids) => ids
                    .iter()
                    .for_each(|id| default_risk[id.index()] = Some(risk)),
                Err(e) => v.push(file.error(format!("defaults.risk.{pattern}"), e.to_string())),
            }
        }
    }
    default_risk.resize(v.registry.len(), None);

    let agents = v.agents(files, &defaults);
    let rules = v.rules(files, &agents);
    let egress = v.egress(files, &agents);
    let approvals = v.approvals(files);
    let retention = super::retention::section(files, v.errors);

    Policy {
        registry: v.registry,
        defaults,
        agents,
        rules,
        egress,
        approvals,
        default_risk,
        files: files.iter().rev().map(|f| f.path.clone()).collect(),
        content_hash: content_hash(files.iter().rev()),
        retention,
    }
}

struct Validator<'e> {
    errors: &'e mut Vec<PolicyError>,
    registry: ActionRegistry,
}

impl Validator<'_> {
    fn push(&mut self, error: PolicyError) {
        self.errors.push(error);
    }

    fn agents(&mut self, files: &[SourceFile], defaults: &Defaults) -> Vec<Agent> {
        let mut agents: Vec<Agent> = Vec::new();
        let mut first_seen: HashMap<String, String> = HashMap::new();
        let mut cgroups: HashMap<String, String> = HashMap::new();
        for file in files {
            for (i, spec) in file.doc.agents.iter().enumerate() {
                let at = |field: &str| format!("agents[{i}].{field}");
                let here = format!(
                    "{}:{}",
                    file.path.display(),
                    file.line_of(&format!("agents[{i}]"))
                );
                let mut ok = true;
                if let Err(e) = check_name(&spec.name) {
                    self.push(file.error(at("name"), e));
                    ok = false;
                } else if let Some(first) = first_seen.get(&spec.name) {
                    self.push(file.error(
                        at("name"),
                        format!("agent {:?} is already defined at {first}", spec.name),
                    ));
                    ok = false;
                }
                let cgroup = spec.cgroup.clone().unwrap_or_else(|| spec.name.clone());
                if spec.cgroup.is_none() && !ok {
                    // The name's own error says it all.
                } else if let Err(e) = check_name(&cgroup) {
                    self.push(file.error(at("cgroup"), e));
                    ok = false;
                } else if let Some(first) = cgroups.get(&cgroup) {
                    self.push(file.error(
                        at("cgroup"),
                        format!("cgroup {cgroup:?} is already used by the agent at {first}"),
                    ));
                    ok = false;
                }
                let workspace = match check_concrete_dir(&spec.workspace) {
                    Ok(ws) => ws,
                    Err(e) => {
                        self.push(file.error(at("workspace"), e));
                        ok = false;
                        String::new()
                    }
                };
                let home = match spec.home.as_deref().map(check_concrete_dir) {
                    Some(Err(e)) => {
                        self.push(file.error(at("home"), e));
                        ok = false;
                        None
                    }
                    Some(Ok(home)) => Some(home),
                    None => None,
                };
                let output_scan = match &spec.output_scan {
                    Some(scan) => match check_output_scan(scan) {
                        Ok(()) => scan.clone(),
                        Err(e) => {
                            self.push(file.error(at("output_scan"), e));
                            ok = false;
                            ResponsePolicy::Withhold
                        }
                    },
                    None => defaults.output_scan.clone(),
                };
                let auto_lower = match spec.auto_lower.as_ref().map(auto_lower::parse) {
                    Some(Ok(rule)) => rule,
                    Some(Err(errors)) => {
                        for e in errors {
                            self.push(file.error(sub_field(&at("auto_lower"), e.field), e.message));
                        }
                        ok = false;
                        None
                    }
                    None => defaults.auto_lower,
                };
                let user = match spec.user.as_ref().map(check_user) {
                    Some(Ok(user)) => Some(user),
                    Some(Err(e)) => {
                        self.push(file.error(at("user"), e));
                        ok = false;
                        None
                    }
                    None => defaults.user.clone(),
                };
                let mut require = defaults.require.clone();
                match spec.require.as_deref().map(check_layers) {
                    Some(Ok(own)) => require.extend(own),
                    Some(Err(errors)) => {
                        for (i, e) in errors {
                            self.push(file.error(at(&format!("require[{i}]")), e));
                        }
                        ok = false;
                    }
                    None => {}
                }
                require.sort();
                require.dedup();
                if ok {
                    first_seen.insert(spec.name.clone(), here.clone());
                    cgroups.insert(cgroup.clone(), here);
                    agents.push(Agent {
                        name: spec.name.clone(),
                        cgroup,
                        workspace,
                        home,
                        autonomy: spec.autonomy.unwrap_or(defaults.autonomy),
                        output_scan,
                        auto_lower,
                        user,
                        create_workspace: spec.create_workspace.unwrap_or(false),
                        require,
                    });
                }
            }
        }
        agents
    }

    fn rules(&mut self, files: &[SourceFile], agents: &[Agent]) -> Vec<Rule> {
        let mut rules = Vec::new();
        // Rule id → (file, index) where first defined; the position is looked up only for a
        // duplicate.
        let mut first_seen: HashMap<&str, (&SourceFile, usize)> = HashMap::new();
        for file in files {
            for (i, spec) in file.doc.rules.iter().enumerate() {
                let at = |field: &str| format!("rules[{i}].{field}");
                let errors_before = self.errors.len();
                if let Err(e) = check_rule_id(&spec.id) {
                    self.push(file.error(at("id"), e));
                } else if let Some((first_file, j)) = first_seen.get(spec.id.as_str()) {
                    let first = format!(
                        "{}:{}",
                        first_file.path.display(),
                        first_file.line_of(&format!("rules[{j}].id"))
                    );
                    self.push(file.error(
                        at("id"),
                        format!("duplicate rule id {:?} (first defined at {first})", spec.id),
                    ));
                } else {
                    first_seen.insert(&spec.id, (file, i));
                }

                let mut actions = Vec::new();
                if spec.actions.is_empty() {
                    self.push(
                        file.error(at("actions"), "a rule must name at least one action type"),
                    );
                }
                for (j, name) in spec.actions.iter().enumerate() {
                    match self.registry.resolve_pattern(name) {
                        Ok(ids) => actions.extend(ids),
                        Err(e) => {
                            self.push(file.error(format!("rules[{i}].actions[{j}]"), e.to_string()))
                        }
                    }
                }
                actions.sort();
                actions.dedup();

                if let Some(scope) = &spec.agents {
                    if scope.is_empty() {
                        self.push(file.error(at("agents"), "an empty agent list would make the rule apply to no one; leave it out to mean every agent"));
                    }
                    for (j, name) in scope.iter().enumerate() {
                        if !agents.iter().any(|a| &a.name == name) {
                            self.push(file.error(
                                format!("rules[{i}].agents[{j}]"),
                                format!("no agent named {name:?} is defined"),
                            ));
                        }
                    }
                }

                let own = SelectorSpec {
                    paths: spec.paths.clone(),
                    binaries: spec.binaries.clone(),
                    cidrs: spec.cidrs.clone(),
                    hosts: spec.hosts.clone(),
                    ports: spec.ports.clone(),
                };
                let selectors = self.selectors(file, &format!("rules[{i}]"), &own);
                let unless = spec
                    .unless
                    .as_ref()
                    .map(|u| self.selectors(file, &format!("rules[{i}].unless"), u));
                if matches!(&unless, Some(u) if u.is_empty())
                    && !self.errors[errors_before..]
                        .iter()
                        .any(|e| e.field.starts_with(&at("unless")))
                {
                    self.push(file.error(
                        at("unless"),
                        "an `unless` with no selectors would exempt everything",
                    ));
                }
                self.check_applicable(file, i, &actions, &selectors, unless.as_ref());

                if spec.hard && spec.verdict != Some(Verdict::Deny) {
                    self.push(file.error(
                        at("hard"),
                        "a hard rule must say `verdict: deny` (hard rules are never relaxed, so they cannot be left to autonomy or approval)",
                    ));
                }

                if self.errors.len() == errors_before {
                    rules.push(Rule {
                        id: spec.id.clone(),
                        actions,
                        agents: spec.agents.clone(),
                        selectors,
                        unless,
                        verdict: spec.verdict,
                        risk: spec.risk,
                        hard: spec.hard,
                        reason: spec
                            .reason
                            .clone()
                            .or_else(|| spec.description.clone())
                            .unwrap_or_else(|| format!("rule {}", spec.id)),
                        origin: Origin {
                            file: file.path.clone(),
                            line: file.line_of(&format!("rules[{i}]")),
                        },
                    });
                }
            }
        }
        rules
    }

    fn selectors(&mut self, file: &SourceFile, at: &str, spec: &SelectorSpec) -> Selectors {
        let mut out = Selectors::default();
        let each = |name: &str,
                    list: &Option<Vec<String>>,
                    errors: &mut Vec<PolicyError>,
                    f: &mut dyn FnMut(&str) -> Result<(), String>| {
            if let Some(list) = list {
                if list.is_empty() {
                    errors.push(file.error(
                        format!("{at}.{name}"),
                        format!("an empty `{name}` list matches nothing; leave it out to mean any"),
                    ));
                }
                for (j, raw) in list.iter().enumerate() {
                    if let Err(e) = f(raw) {
                        errors.push(file.error(format!("{at}.{name}[{j}]"), e));
                    }
                }
            }
        };
        each("paths", &spec.paths, self.errors, &mut |raw| {
            not_folded(raw)?;
            PathPattern::parse(raw).map(|p| out.paths.push(p))
        });
        each("binaries", &spec.binaries, self.errors, &mut |raw| {
            not_folded(raw)?;
            PathPattern::parse(raw).map(|p| out.binaries.push(p))
        });
        each("cidrs", &spec.cidrs, self.errors, &mut |raw| {
            parse_cidr(raw).map(|n| out.cidrs.push(n))
        });
        each("hosts", &spec.hosts, self.errors, &mut |raw| {
            HostPattern::parse(raw).map(|h| out.hosts.push(h))
        });
        if let Some(ports) = &spec.ports {
            if ports.is_empty() {
                self.push(file.error(
                    format!("{at}.ports"),
                    "an empty `ports` list matches nothing; leave it out to mean any",
                ));
            }
            for (j, raw) in ports.iter().enumerate() {
                match PortRange::parse(raw) {
                    Ok(p) => out.ports.push(p),
                    Err(e) => self.push(file.error(format!("{at}.ports[{j}]"), e)),
                }
            }
        }
        out
    }

    /// A selector none of the rule's action types can carry would make the rule silently
    /// match nothing; that is a mistake in the policy, so it is an error.
    fn check_applicable(
        &mut self,
        file: &SourceFile,
        i: usize,
        actions: &[secops_common::ActionId],
        own: &Selectors,
        unless: Option<&Selectors>,
    ) {
        let categories: Vec<(Category, Option<CoreAction>)> = actions
            .iter()
            .filter_map(|&id| self.registry.get(id))
            .map(|t| (t.category(), t.as_core()))
            .collect();
        if categories.is_empty() {
            return;
        }
        let any = |f: &dyn Fn(Category, Option<CoreAction>) -> bool| {
            categories.iter().any(|&(c, a)| f(c, a))
        };
        let has_path =
            any(&|c, _| matches!(c, Category::Fs | Category::Secret) || !c.is_kernel_observable());
        let has_binary = any(&|c, a| a == Some(CoreAction::ProcExec) || !c.is_kernel_observable());
        let has_endpoint = any(&|c, _| c == Category::Net || !c.is_kernel_observable());
        for (prefix, sel) in [
            (format!("rules[{i}]"), Some(own)),
            (format!("rules[{i}].unless"), unless),
        ] {
            let Some(sel) = sel else { continue };
            let mut complain = |field: &str, what: &str| {
                self.errors.push(file.error(
                    format!("{prefix}.{field}"),
                    format!("never matches: none of the rule's action types has {what}"),
                ));
            };
            if !sel.paths.is_empty() && !has_path {
                complain("paths", "a path (fs:*, secret:*, in-process types)");
            }
            if !sel.binaries.is_empty() && !has_binary {
                complain("binaries", "a binary (proc:exec, in-process types)");
            }
            for (field, present) in [
                ("cidrs", !sel.cidrs.is_empty()),
                ("hosts", !sel.hosts.is_empty()),
                ("ports", !sel.ports.is_empty()),
            ] {
                if present && !has_endpoint {
                    complain(field, "a network endpoint (net:*, in-process types)");
                }
            }
        }
    }

    fn egress(
        &mut self,
        files: &[SourceFile],
        agents: &[Agent],
    ) -> std::collections::BTreeMap<String, Egress> {
        let mut out = std::collections::BTreeMap::new();
        for file in files {
            for (agent, spec) in &file.doc.egress {
                let at = format!("egress.{agent}");
                if !agents.iter().any(|a| &a.name == agent) {
                    self.push(file.error(&at, format!("no agent named {agent:?} is defined")));
                    continue;
                }
                if out.contains_key(agent) {
                    self.push(file.error(
                        &at,
                        format!("egress for {agent:?} is already defined in another file"),
                    ));
                    continue;
                }
                let mut egress = Egress::default();
                for (k, entry) in spec.allow.iter().enumerate() {
                    let entry_at = format!("{at}.allow[{k}]");
                    let target = match (&entry.cidr, &entry.host) {
                        (Some(cidr), None) => parse_cidr(cidr)
                            .map(EgressTarget::Cidr)
                            .map_err(|e| (format!("{entry_at}.cidr"), e)),
                        (None, Some(host)) => HostPattern::parse(host)
                            .map(EgressTarget::Host)
                            .map_err(|e| (format!("{entry_at}.host"), e)),
                        _ => Err((
                            entry_at.clone(),
                            "an allow entry needs exactly one of `cidr` or `host`".to_owned(),
                        )),
                    };
                    let mut ports = Vec::new();
                    let mut ports_ok = true;
                    if let Some(list) = &entry.ports {
                        if list.is_empty() {
                            self.push(file.error(format!("{entry_at}.ports"), "an empty `ports` list allows nothing; leave it out to mean every port"));
                            ports_ok = false;
                        }
                        for (j, raw) in list.iter().enumerate() {
                            match PortRange::parse(raw) {
                                Ok(p) => ports.push(p),
                                Err(e) => {
                                    self.push(file.error(format!("{entry_at}.ports[{j}]"), e));
                                    ports_ok = false;
                                }
                            }
                        }
                    }
                    let mut dns_types = Vec::new();
                    if let Some(list) = &entry.dns_types {
                        if entry.host.is_none() {
                            self.push(file.error(
                                format!("{entry_at}.dns_types"),
                                "`dns_types` needs a `host` entry: a CIDR has no name to ask about",
                            ));
                            ports_ok = false;
                        }
                        for (j, raw) in list.iter().enumerate() {
                            match dns_type_code(raw) {
                                Ok(code) => dns_types.push(code),
                                Err(e) => {
                                    self.push(file.error(format!("{entry_at}.dns_types[{j}]"), e));
                                    ports_ok = false;
                                }
                            }
                        }
                    }
                    match target {
                        Ok(target) if ports_ok => egress.allow.push(EgressEntry {
                            target,
                            ports,
                            dns_types,
                        }),
                        Ok(_) => {}
                        Err((field, e)) => self.push(file.error(field, e)),
                    }
                }
                for (k, raw) in spec.dns_resolvers.iter().enumerate() {
                    match parse_resolver(raw) {
                        Some(addr) => egress.dns_resolvers.push(addr),
                        None => self.push(file.error(
                            format!("{at}.dns_resolvers[{k}]"),
                            format!(
                                "{raw:?} is not an IP address, or an address and a port \
                                 (`10.0.0.2`, `10.0.0.2:5353`, `[fd00::2]:5353`)"
                            ),
                        )),
                    }
                }
                match spec.dns_refusal.as_deref() {
                    None | Some("refused") => {}
                    Some("nxdomain") => egress.dns_refusal = DnsRefusal::NxDomain,
                    Some(other) => self.push(file.error(
                        format!("{at}.dns_refusal"),
                        format!("{other:?}: use `refused` (the default) or `nxdomain`"),
                    )),
                }
                match spec.unlisted {
                    None | Some(Verdict::Deny) => {}
                    Some(Verdict::Escalate) => egress.unlisted = Unlisted::Escalate,
                    Some(Verdict::Allow) => self.push(file.error(
                        format!("{at}.unlisted"),
                        "`allow` would let the agent reach every destination; use `deny` or `escalate` (leave the agent out of `egress` for no allowlist)",
                    )),
                }
                out.insert(agent.clone(), egress);
            }
        }
        out
    }
}

impl Validator<'_> {
    /// The `approvals` section. Only one file of a policy may set it: merging timeouts or
    /// tiers from several files would make the answer depend on include order, and a second
    /// section is far more likely a forgotten copy than a wish.
    fn approvals(&mut self, files: &[SourceFile]) -> Approvals {
        let mut approvals = Approvals::default();
        let mut set_at: Option<String> = None;
        for file in files {
            let Some(spec) = &file.doc.approvals else {
                continue;
            };
            let here = format!("{}:{}", file.path.display(), file.line_of("approvals"));
            if let Some(first) = &set_at {
                self.push(file.error(
                    "approvals",
                    format!(
                        "approvals are already set at {first}; only one policy file may set them"
                    ),
                ));
                continue;
            }
            set_at = Some(here);
            let mut timeout = Approvals::DEFAULT_TIMEOUT;
            if let Some(raw) = &spec.timeout {
                match check_approval_timeout(raw) {
                    Ok(t) => timeout = t,
                    Err(e) => self.push(file.error("approvals.timeout", e)),
                }
            }
            let mut tiers = [OnTimeout::Deny; 4];
            if let Some(on) = &spec.on_timeout {
                let given = [on.low, on.medium, on.high, on.critical];
                for ((risk, choice), slot) in RiskLevel::ALL.into_iter().zip(given).zip(&mut tiers)
                {
                    let Some(choice) = choice else { continue };
                    if choice == OnTimeout::Allow && risk != RiskLevel::Low {
                        self.push(file.error(
                            format!("approvals.on_timeout.{risk}"),
                            format!("`allow` is accepted only for low risk: a {risk} risk action must not happen because nobody answered (use deny or wait)"),
                        ));
                    }
                    *slot = choice;
                }
            }
            approvals = Approvals::new(timeout, tiers);
        }
        approvals
    }
}

/// A ticket's timeout: a duration with its unit (`90s`, `10m`, `1h`), 1 s to 24 h.
fn check_approval_timeout(raw: &serde_yaml::Value) -> Result<std::time::Duration, String> {
    let text = match raw {
        serde_yaml::Value::String(text) => text,
        serde_yaml::Value::Number(n) => {
            return Err(format!(
                "{n} has no unit; write it as a duration such as `{n}s` or `10m`"
            ))
        }
        _ => return Err("must be a duration such as `10m`".to_owned()),
    };
    let timeout = humantime::parse_duration(text).map_err(|e| {
        format!("{text:?} is not a duration ({e}); write e.g. `90s`, `10m` or `1h`")
    })?;
    if timeout.is_zero() {
        return Err(
            "a zero timeout would close every ticket before anyone could see it".to_owned(),
        );
    }
    if timeout < MIN_APPROVAL_TIMEOUT {
        return Err(format!(
            "{text:?} is shorter than {} (tickets are swept once a second)",
            humantime::format_duration(MIN_APPROVAL_TIMEOUT)
        ));
    }
    if timeout > MAX_APPROVAL_TIMEOUT {
        return Err(format!(
            "{text:?} is longer than {}; to keep tickets open until a human decides, use `wait`",
            humantime::format_duration(MAX_APPROVAL_TIMEOUT)
        ));
    }
    Ok(timeout)
}

/// Agent and cgroup names end up in cgroup paths, log lines and map keys.
/// `base.field`, or `base` for an error about the value as a whole.
fn sub_field(base: &str, field: &str) -> String {
    if field.is_empty() {
        base.to_owned()
    } else {
        format!("{base}.{field}")
    }
}

fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!("{name:?} is not a valid name (1-64 of letters, digits, '_', '.', '-', starting with a letter or digit)"))
    }
}

fn check_rule_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.:-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{id:?} is not a valid rule id (letters, digits, '_', '.', ':', '-')"
        ))
    }
}

/// A workspace or home: an absolute, normalized directory without glob characters.
fn check_concrete_dir(raw: &str) -> Result<String, String> {
    if !raw.starts_with('/') {
        return Err(format!("{raw:?} must be an absolute path"));
    }
    if raw.contains(['*', '?', '[', ']', '{', '}', '\\']) || raw.contains("${") || raw.contains('~')
    {
        return Err(format!(
            "{raw:?} must be a plain directory, without glob characters or variables"
        ));
    }
    if raw.split('/').any(|c| c == "." || c == "..") {
        return Err(format!("{raw:?} must not contain '.' or '..' components"));
    }
    // `/srv//ws/` is `/srv/ws`: paths are matched normalized, and a workspace written
    // otherwise would match nothing.
    match super::path::NormalizedPath::new(raw) {
        Ok(path) if path.as_str() == "/" => {
            Err("the root directory cannot be a workspace or home".to_owned())
        }
        Ok(path) => Ok(path.as_str().to_owned()),
        Err(e) => Err(e.to_string()),
    }
}

/// The layers a `require:` list names; each unknown name is an error at its index.
fn check_layers(names: &[String]) -> Result<Vec<Layer>, Vec<(usize, String)>> {
    let mut layers = Vec::new();
    let mut errors = Vec::new();
    for (i, name) in names.iter().enumerate() {
        match Layer::parse(name) {
            Some(layer) => layers.push(layer),
            None => errors.push((
                i,
                format!(
                    "{name:?} is not a layer; the layers are {}",
                    Layer::ALL.map(Layer::as_str).join(", ")
                ),
            )),
        }
    }
    if errors.is_empty() {
        layers.sort();
        layers.dedup();
        Ok(layers)
    } else {
        Err(errors)
    }
}

/// A user name as `useradd` accepts them (or a number): it is looked up when the agent starts.
fn check_user(spec: &UserSpec) -> Result<AgentUser, String> {
    match spec {
        UserSpec::Id(uid) => Ok(AgentUser::Id(*uid)),
        UserSpec::Name(name) => {
            let valid = name.len() <= 32
                && name
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-.".contains(c));
            if valid {
                Ok(AgentUser::Name(name.clone()))
            } else {
                Err(format!(
                    "{name:?} is not a user name (lowercase letters, digits, `_`, `-`, `.`, \
                     starting with a letter or `_`) or a uid"
                ))
            }
        }
    }
}

/// SHA-256 over each file's path and the digest of its text, in order.
fn content_hash<'a>(files: impl Iterator<Item = &'a SourceFile>) -> String {
    policy_hash(files.map(|f| (f.path.to_string_lossy().into_owned(), f.digest)))
}

/// The policy's content hash from each file's path and text digest, in load order: also how
/// an evidence bundle's copy of a policy is checked against the hash the audit log names.
pub fn policy_hash(files: impl Iterator<Item = (String, [u8; 32])>) -> String {
    use sha2::Digest;
    let mut hash = sha2::Sha256::new();
    for (path, digest) in files {
        hash.update((path.len() as u64).to_le_bytes());
        hash.update(path.as_bytes());
        hash.update(digest);
    }
    hex::encode(hash.finalize())
}

/// A list item that holds ` - ` before something path-like is almost always two items YAML
/// folded into one string (a continuation line indented past the dash), which would
/// silently match neither. A path that really holds ` - ` can say so with `?` for the spaces.
fn not_folded(raw: &str) -> Result<(), String> {
    let folded = raw.match_indices(" - ").any(|(at, _)| {
        raw[at + 3..]
            .chars()
            .next()
            .is_some_and(|c| matches!(c, '/' | '~' | '$' | '*'))
    });
    if folded {
        return Err(format!(
            "{raw:?} looks like two list items folded into one string (check the indentation \
             of the line after it); a path that really holds \" - \" can write it as \"?-?\""
        ));
    }
    Ok(())
}

fn check_home_glob(raw: &str) -> Result<PathPattern, String> {
    if !raw.starts_with('/') || raw.contains("${") || raw.contains('~') {
        return Err(format!(
            "{raw:?} must be an absolute path (globs like /home/* are allowed)"
        ));
    }
    let trimmed = raw.trim_end_matches('/');
    if trimmed.is_empty() {
        return Err("the root directory cannot be a home".to_owned());
    }
    PathPattern::parse(trimmed)
}

/// A resolver as the policy writes it: an address (port 53) or an address and a port.
fn parse_resolver(raw: &str) -> Option<SocketAddr> {
    let addr = match raw.parse::<IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, 53),
        Err(_) => raw.parse::<SocketAddr>().ok()?,
    };
    (addr.port() != 0).then(|| SocketAddr::new(addr.ip().to_canonical(), addr.port()))
}

/// The code of a DNS query type a policy may allow for a name. Meta types (ANY, zone
/// transfers, OPT) are not types of data: allowing them would allow everything.
fn dns_type_code(raw: &str) -> Result<u16, String> {
    use hickory_proto::rr::RecordType;
    let t: RecordType = raw
        .to_ascii_uppercase()
        .parse()
        .map_err(|_| format!("{raw:?} is not a DNS record type (`TXT`, `MX`, `SRV`, ...)"))?;
    match t {
        RecordType::ANY | RecordType::AXFR | RecordType::IXFR | RecordType::OPT => Err(format!(
            "{raw:?} is a meta query, not a type of record: it cannot be allowed"
        )),
        RecordType::Unknown(_) => Err(format!("{raw:?} is not a DNS record type")),
        t => Ok(u16::from(t)),
    }
}
