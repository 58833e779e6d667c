//! Large synthetic policies and requests over them, shared by the benchmarks and the scale
//! tests so that both measure and check the same thing.

use std::fmt::Write as _;
use std::net::IpAddr;

use super::{ActionRequest, Engine, NormalizedPath};

/// A policy shaped like a large real one: `agents` agents with workspaces, and `rules` rules
/// of every glob shape (prefix trees, extensions, `**/name`, `~`, `${workspace}`), exec rules,
/// network rules and in-process rules, with and without `unless`, some for one agent only.
pub fn policy(rules: usize, agents: usize) -> String {
    let mut p = String::with_capacity(rules * 110 + agents * 80 + 200);
    p.push_str("version: 1\nagents:\n");
    for a in 0..agents {
        writeln!(
            p,
            "  - name: agent{a}\n    workspace: /srv/agents/agent{a}\n    autonomy: semi"
        )
        .expect("writing to a String");
    }
    p.push_str("rules:\n");
    let verdicts = ["allow", "deny", "escalate", ""];
    for i in 0..rules {
        let verdict = match verdicts[i % 4] {
            "" => String::new(),
            v => format!(", verdict: {v}"),
        };
        let body = match i % 10 {
            0 => format!("actions: [\"fs:*\"], paths: [\"/data/project{i}/**\"]"),
            1 => format!("actions: [fs:write, fs:delete], paths: [\"**/*.ext{i}\"]"),
            2 => format!("actions: [fs:read], paths: [\"~/.config/tool{i}/**\"]"),
            3 => format!("actions: [fs:delete], paths: [\"${{workspace}}/build{i}/**\"], unless: {{paths: [\"**/keep{i}\"]}}"),
            4 => format!("actions: [fs:read, secret:read], paths: [\"/etc/app{i}/*.key\", \"/opt/app{i}/**/secret\"]"),
            5 => format!("actions: [proc:exec], binaries: [\"/opt/bin{i}/*\", \"**/tool{i}\"]"),
            6 => format!("actions: [net:connect], cidrs: [\"10.{}.{}.0/24\"], ports: [{}]", i / 256 % 256, i % 256, 1000 + i % 60000),
            7 => format!("actions: [net:connect], hosts: [\"svc{i}.example.com\"], ports: [443]"),
            8 => format!("actions: [fs:write], paths: [\"/var/log/app{i}/**\"], agents: [agent{}]", i % agents.max(1)),
            _ => format!("actions: [tool:call, vcs:push], hosts: [\"*.host{i}.example.org\"]"),
        };
        writeln!(p, "  - {{id: rule{i}, {body}, risk: medium{verdict}}}")
            .expect("writing to a String");
    }
    p.push_str("egress:\n  agent0:\n    allow:\n      - cidr: 127.0.0.0/8\n        ports: [\"1024-65535\"]\n");
    p
}

/// One request, owning its objects.
#[derive(Clone, Debug)]
pub struct Request {
    pub name: String,
    pub agent: String,
    pub action: &'static str,
    pub path: Option<NormalizedPath>,
    pub binary: Option<NormalizedPath>,
    pub addr: Option<IpAddr>,
    pub host: Option<String>,
    pub port: Option<u16>,
}

impl Request {
    fn new(name: impl Into<String>, agent: impl Into<String>, action: &'static str) -> Request {
        Request {
            name: name.into(),
            agent: agent.into(),
            action,
            path: None,
            binary: None,
            addr: None,
            host: None,
            port: None,
        }
    }

    fn path(mut self, p: &str) -> Request {
        self.path = NormalizedPath::new(p).ok();
        self
    }

    fn binary(mut self, p: &str) -> Request {
        self.binary = NormalizedPath::new(p).ok();
        self
    }

    /// The engine's request. `None` when the action type is not in the engine's registry.
    pub fn for_engine<'a>(&'a self, engine: &Engine) -> Option<ActionRequest<'a>> {
        let (action, _) = engine.policy().registry.resolve(self.action).ok()?;
        Some(ActionRequest {
            agent: engine.agent_index(&self.agent),
            action,
            path: self.path.as_ref(),
            binary: self.binary.as_ref(),
            addr: self.addr,
            host: self.host.as_deref(),
            port: self.port,
        })
    }
}

/// The eight request shapes of the engine bench, all from `agent0`.
pub fn shaped_requests() -> Vec<Request> {
    let r = |name: &str, action| Request::new(name, "agent0", action);
    vec![
        r("fs:write in workspace, no rule", "fs:write").path("/srv/agents/agent0/src/lib.rs"),
        r("fs:delete hitting a prefix rule", "fs:delete").path("/data/project500/deep/file.txt"),
        r("fs:write hitting an extension rule", "fs:write").path("/srv/agents/agent0/x/y.ext31"),
        r("fs:delete with unless", "fs:delete").path("/srv/agents/agent0/build3/out/keep3"),
        r("secret:read miss", "secret:read").path("/etc/app99/server.pem"),
        r("proc:exec hitting a binary rule", "proc:exec").binary("/opt/bin405/run"),
        Request {
            addr: "10.1.226.0".parse().ok(),
            port: Some(1482),
            ..r("net:connect hitting a cidr rule", "net:connect")
        },
        Request {
            addr: "127.0.0.1".parse().ok(),
            port: Some(8080),
            ..r("net:connect via egress", "net:connect")
        },
    ]
}

/// A small deterministic generator, so that every run draws the same requests (and the
/// tests the same random globs and paths).
pub(crate) struct Lcg(pub(crate) u64);

impl Lcg {
    pub(crate) fn next(&mut self) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) as usize
    }

    pub(crate) fn below(&mut self, n: usize) -> usize {
        self.next() % n.max(1)
    }

    pub(crate) fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

/// `n` requests spread over every rule shape, every agent and rule numbers up to twice the
/// policy's (so about half hit a rule), with objects of random depth and names.
pub fn random_requests(rules: usize, agents: usize, n: usize, seed: u64) -> Vec<Request> {
    const FS: &[&str] = &[
        "fs:read",
        "fs:write",
        "fs:create",
        "fs:delete",
        "fs:rename",
        "fs:truncate",
    ];
    let mut rng = Lcg(seed);
    let mut out = Vec::with_capacity(n);
    for k in 0..n {
        let agent = format!("agent{}", rng.below(agents));
        let i = rng.below(rules * 2);
        let depth: String = (0..rng.below(4))
            .map(|d| format!("/d{}", rng.below(50) + d))
            .collect();
        let fs = rng.pick(FS);
        let name = format!("random {k}");
        let r = Request::new(name, agent.clone(), fs);
        let request = match rng.below(12) {
            0 => r.path(&format!("/data/project{i}{depth}/file{}.txt", rng.below(9))),
            1 => r.path(&format!("/srv/agents/{agent}{depth}/f.ext{i}")),
            2 => r.path(&format!("/home/u{}/.config/tool{i}{depth}/c", rng.below(9))),
            3 => r.path(&format!(
                "/srv/agents/{agent}/build{i}{depth}/keep{}",
                rng.below(rules)
            )),
            4 => Request {
                action: "secret:read",
                ..r.path(&format!("/etc/app{i}/k{}.key", rng.below(5)))
            },
            5 => r.path(&format!("/opt/app{i}{depth}/secret")),
            6 => Request {
                action: "proc:exec",
                ..r.binary(&format!("/opt/bin{i}/run{}", rng.below(5)))
            },
            7 => Request {
                action: "proc:exec",
                ..r.binary(&format!("/usr{depth}/bin/tool{i}"))
            },
            8 => Request {
                action: "net:connect",
                addr: Some(IpAddr::from([
                    10,
                    (i / 256 % 256) as u8,
                    (i % 256) as u8,
                    7,
                ])),
                port: Some((1000 + rng.below(rules)) as u16),
                ..r
            },
            9 => Request {
                action: "net:connect",
                host: Some(format!("svc{i}.example.com")),
                port: Some(443),
                ..r
            },
            10 => r.path(&format!("/var/log/app{i}{depth}/out.log")),
            _ => Request {
                action: if rng.below(2) == 0 {
                    "tool:call"
                } else {
                    "vcs:push"
                },
                host: Some(format!("api.host{i}.example.org")),
                ..r
            },
        };
        out.push(request);
    }
    out
}
