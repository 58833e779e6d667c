//! `secops daemon`: compiles the policy into the kernel's maps, attaches the programs, turns
//! every kernel event into an audit record, and serves the control socket.
//!
//! Threads and tasks, each owned and stopped on shutdown:
//! - the event pipeline (two OS threads): ring buffer → queue → engine → audit writer; also
//!   drains the lost-event counters and the allowed-egress aggregates, and writes the
//!   heartbeat;
//! - the audit writer's own thread (inside [`AuditWriter`]);
//! - the approval timeout sweeper (an OS thread; SQLite and audit commits);
//! - tokio tasks: the control socket, SIGHUP/SIGTERM/SIGINT, the policy file watcher, and
//!   host name refresh for egress allowlists.
//!
//! On shutdown the programs and maps stay pinned, so enforcement holds while the daemon is
//! down; the next daemon adopts them.

mod agents;
pub mod approvals;
mod autonomy;
mod control;
mod count_slots;
pub mod events;
pub mod file_rules;
pub mod grants;
mod http;
pub mod metrics;
mod parked;
mod pipeline;
mod timeouts;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, Context};
use hickory_resolver::config::ResolveHosts;
use hickory_resolver::TokioResolver;
use tokio::sync::Notify;

pub use agents::{compile_allowlist, AgentSlot, AgentTable, HostAddrs};
pub use http::{ApiLimits, API_ROUTES};

use crate::api::{AgentStatus, CapabilityStatus, EventCounters, StatusReport};
use crate::approvals::TicketStore;
use crate::audit::{AuditPaths, AuditWriter, CheckpointPolicy, WriterOptions};
use crate::cgroups::CgroupDir;
use crate::engine::Engine;
use crate::kernel::{self, Capabilities, Kernel, LoadOptions};
use crate::policy::{load_policy, Policy};
use file_rules::{AgentTarget, BuiltinProtection, CompiledFiles};

/// Everything `secops daemon` can be told.
#[derive(Clone, Debug)]
pub struct DaemonOptions {
    pub policy: PathBuf,
    pub state_dir: PathBuf,
    pub socket: PathBuf,
    /// The group that may use the socket (mode 0660): admins, and the users agents run as.
    pub socket_gid: u32,
    /// Callers outside every agent cgroup with this group (or root) are admins.
    pub admin_gid: u32,
    pub api: ApiLimits,
    /// A loopback address to serve `/metrics` on, besides the socket.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// The bpffs directory for pinned programs and maps.
    pub pin_dir: PathBuf,
    /// The secops root cgroup's name, directly below the cgroup2 mount.
    pub cgroup_root: String,
    pub ring_buffer_bytes: u32,
    /// How often the policy files are checked for changes.
    pub watch_interval: Duration,
    /// How soon a host name in an allowlist that did not resolve is tried again (resolved
    /// names are refreshed when their TTL runs out).
    pub host_refresh: Duration,
    /// Where audit checkpoints are also sent.
    pub audit_witnesses: Vec<crate::audit::witness::WitnessSpec>,
}

/// Locks shared state. A panicked holder cannot leave these structures half-written in a
/// way later readers could misread (every update is a whole replacement), so a poisoned
/// lock is used as it is rather than taking the daemon down.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

/// State shared by the daemon's tasks.
pub struct Shared {
    options: DaemonOptions,
    engine: RwLock<Arc<Engine>>,
    kernel: Mutex<Kernel>,
    agents: RwLock<AgentTable>,
    hosts: Mutex<HostAddrs>,
    root: CgroupDir,
    capabilities: Vec<CapabilityStatus>,
    last_reload_error: Mutex<Option<String>>,
    counters: Counters,
    metrics: metrics::Metrics,
    /// The approval queue. Held only in blocking tasks, never across an await.
    tickets: Mutex<TicketStore>,
    /// The file rules as compiled into the kernel's inode entries (for reading LSM events).
    files: RwLock<Arc<CompiledFiles>>,
    /// Ticket decisions, for syscalls parked on them (`secops run --ask`).
    decided: parked::DecidedTickets,
    /// The policy as loaded and the autonomy overrides on top of it. Held for the whole of
    /// every change to what is in force (reload, autonomy change), so two changes cannot
    /// interleave and one undo the other. Lock order: this, then `kernel`, then `agents`.
    live: Mutex<autonomy::Live>,
    /// Recent denials per agent, for `auto_lower`.
    denials: Mutex<autonomy::DenialWindows>,
    shutdown: AtomicBool,
    shutdown_notify: Notify,
}

#[derive(Default)]
pub struct Counters {
    pub received: AtomicU64,
    pub audited: AtomicU64,
    pub lost: AtomicU64,
}

impl Shared {
    fn engine(&self) -> Arc<Engine> {
        read(&self.engine).clone()
    }

    /// The agent's slot as it is now.
    fn agent_slot(&self, name: &str) -> Option<AgentSlot> {
        read(&self.agents).by_name(name).cloned()
    }

    fn request_shutdown(&self) {
        self.shutdown.store(true, Ordering::SeqCst);
        self.shutdown_notify.notify_waiters();
    }

    /// Loads the policy again; a policy that does not load changes nothing, and the reason
    /// is kept for `secops status`.
    fn reload(&self) -> anyhow::Result<Vec<PathBuf>> {
        let result = load_policy(&self.options.policy)
            .map_err(|errors| {
                anyhow!("the new policy is not valid, the previous one stays in force:\n{errors}")
            })
            .and_then(|policy| self.apply(policy));
        let mut last = lock(&self.last_reload_error);
        match &result {
            Ok(files) => {
                *last = None;
                tracing::info!(files = ?files, "policy reloaded");
            }
            Err(e) => {
                *last = Some(format!("{e:#}"));
                tracing::error!("{e:#}");
            }
        }
        result
    }

    /// Puts a newly loaded policy in force, with the autonomy overrides on top.
    fn apply(&self, policy: Policy) -> anyhow::Result<Vec<PathBuf>> {
        let files = policy.files.clone();
        let mut live = lock(&self.live);
        let previous = std::mem::replace(&mut live.policy, Arc::new(policy));
        if let Err(e) = self.put_in_force(&live) {
            live.policy = previous;
            return Err(e);
        }
        Ok(files)
    }

    /// Makes the engine and the kernel decide by `live`: kernel maps first, then the engine,
    /// so the kernel never enforces less than the engine believes.
    fn put_in_force(&self, live: &autonomy::Live) -> anyhow::Result<()> {
        let engine = Arc::new(Engine::new(Arc::new(live.effective())));
        self.sync_kernel(&engine)?;
        *write(&self.engine) = engine;
        Ok(())
    }

    /// Writes the policy in force into the cgroups and kernel maps again (after host names
    /// resolved differently, or an agent cgroup was removed); the engine stays as it is.
    fn resync(&self) -> anyhow::Result<()> {
        let engine = self.engine();
        self.sync_kernel(&engine)
    }

    fn sync_kernel(&self, engine: &Engine) -> anyhow::Result<()> {
        let hosts = lock(&self.hosts).clone();
        let mut kernel = lock(&self.kernel);
        let mut agents = write(&self.agents);
        agents.sync(engine.policy(), &self.root, kernel.maps_mut(), &hosts)?;
        let files = compile_files(engine, &agents, &self.options)?;
        let update = kernel
            .maps_mut()
            .replace_inodes(&files.entries)
            .context("writing the file rules into the kernel")?;
        tracing::info!(
            entries = files.entries.len(),
            removed = update.removed,
            truncated = ?files.truncated,
            "file rules compiled for the LSM programs"
        );
        *write(&self.files) = Arc::new(files);
        Ok(())
    }

    fn status(&self) -> StatusReport {
        // Taken before `agents` (the lock order) and let go at once.
        let autonomy = lock(&self.live).view();
        let engine = self.engine();
        let agents = read(&self.agents);
        StatusReport {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            pid: std::process::id(),
            policy_files: engine.policy().files.clone(),
            last_reload_error: lock(&self.last_reload_error).clone(),
            state_dir: self.options.state_dir.clone(),
            cgroup_root: self.root.path().to_path_buf(),
            pin_dir: self.options.pin_dir.clone(),
            capabilities: self.capabilities.clone(),
            agents: agents.slots().map(|s| agent_status(s, &autonomy)).collect(),
            events: EventCounters {
                received: self.counters.received.load(Ordering::Relaxed),
                audited: self.counters.audited.load(Ordering::Relaxed),
                lost: self.counters.lost.load(Ordering::Relaxed),
            },
        }
    }
}

/// One agent as `secops agents list` and `secops status` show it.
fn agent_status(slot: &AgentSlot, autonomy: &autonomy::View) -> AgentStatus {
    let cgroup = CgroupDir::open_path(&slot.cgroup).ok();
    let (policy_autonomy, autonomy_override) = autonomy.of(&slot.name);
    AgentStatus {
        name: slot.name.clone(),
        cgroup: slot.cgroup.clone(),
        cgroup_id: slot.cgroup_id,
        autonomy: slot.autonomy.to_string(),
        // An agent gone from the policy has no policy level: it keeps the one it had.
        policy_autonomy: policy_autonomy.unwrap_or(slot.autonomy).to_string(),
        autonomy_override,
        egress_enforced: slot.egress_enforced,
        processes: cgroup
            .as_ref()
            .and_then(|c| c.procs().ok())
            .map_or(0, |p| p.len()),
        frozen: cgroup
            .as_ref()
            .and_then(|c| c.events().ok())
            .is_some_and(|e| e.frozen),
    }
}

/// What each kernel layer does here, as the daemon runs it. BPF LSM programs are not part
/// of this build yet, whatever the kernel supports.
fn capability_report(
    probed: &Capabilities,
    egress_attached: bool,
    tracepoints_attached: bool,
    lsm_attached: bool,
) -> Vec<CapabilityStatus> {
    let layer = |name: &str, active: bool, detail: String| CapabilityStatus {
        name: name.to_owned(),
        active,
        detail,
    };
    vec![
        layer(
            "egress allowlist",
            egress_attached,
            if egress_attached {
                "cgroup connect4/6 and sendmsg4/6 attached to the secops root cgroup".into()
            } else {
                probed.cgroup_sock_addr.reason.clone()
            },
        ),
        layer(
            "event tagging",
            tracepoints_attached,
            if tracepoints_attached {
                if probed.bpf_lsm.active {
                    "exec and exit tracepoints attached (deletes and renames come from BPF LSM)"
                        .into()
                } else {
                    "exec, exit, unlink/rmdir, rename tracepoints attached (observation only)"
                        .into()
                }
            } else {
                probed.tracepoints.reason.clone()
            },
        ),
        layer(
            "ring buffer",
            probed.ring_buffer.active,
            probed.ring_buffer.reason.clone(),
        ),
        layer(
            "synchronous file/exec deny (BPF LSM)",
            lsm_attached,
            if lsm_attached {
                "file deletes/renames/links/truncates/writes, secret reads, exec (by inode), raw \
                 sockets, connect backstop and self-protection enforced by BPF LSM programs"
                    .into()
            } else if probed.bpf_lsm.active {
                "not enforcing: the LSM programs did not attach (see the daemon log)".into()
            } else {
                format!("not enforcing: {}", probed.bpf_lsm.reason)
            },
        ),
    ]
}

/// The policy's file rules for every agent in it, and secops' own files, as inode entries.
fn compile_files(
    engine: &Engine,
    agents: &AgentTable,
    options: &DaemonOptions,
) -> anyhow::Result<CompiledFiles> {
    let policy = engine.policy();
    let targets: Vec<AgentTarget> = agents
        .slots()
        .filter(|slot| slot.in_policy)
        .filter_map(|slot| {
            let engine_index = engine.agent_index(&slot.name)?;
            let spec = policy.agents.get(engine_index.0 as usize)?;
            Some(AgentTarget {
                engine_index,
                kernel_index: slot.index,
                workspace: PathBuf::from(&spec.workspace),
            })
        })
        .collect();
    let mounts = crate::kernel::fs::mount_points().context("listing mount points")?;
    let mut builtin: Vec<BuiltinProtection> = [&options.state_dir, &options.pin_dir]
        .into_iter()
        .chain(&policy.files)
        .map(|path| BuiltinProtection {
            path: path.clone(),
            connect_allowed: false,
        })
        .collect();
    builtin.push(BuiltinProtection {
        path: options.socket.clone(),
        connect_allowed: true,
    });
    let mut files = file_rules::compile(engine, &targets, &mounts, &builtin);
    // Counted verdicts get their counter slots before the entries reach the kernel, and the
    // table is saved first, so no count is ever made under a slot nobody can name.
    let path = count_slots::CountSlots::path_in(&options.state_dir);
    let mut slots = count_slots::CountSlots::load(&path)?;
    if slots.assign(&mut files, |index| {
        agents.by_index(index).map(|s| s.name.clone())
    }) {
        slots.save(&path)?;
    }
    files.count_slots = slots;
    Ok(files)
}

/// Runs the daemon until SIGTERM or SIGINT.
pub fn run(options: DaemonOptions) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("secops-daemon")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run_async(options))
}

async fn run_async(options: DaemonOptions) -> anyhow::Result<()> {
    let policy = load_policy(&options.policy)
        .map_err(|errors| anyhow!("the policy is not valid:\n{errors}"))?;
    tracing::info!(files = ?policy.files, rules = policy.rules.len(), agents = policy.agents.len(), "policy loaded");
    // Before anything is enforced: a daemon that cannot read the overrides must not start
    // with the policy's (possibly higher) autonomy instead.
    let overrides = autonomy::Overrides::load(&autonomy::Overrides::path_in(&options.state_dir))?;
    let live = autonomy::Live {
        policy: Arc::new(policy),
        overrides,
    };
    let policy = live.effective();
    for (agent, o) in live.overrides.in_force(&live.policy) {
        tracing::info!(agent, level = %o.level, set_by = %o.set_by, "autonomy override in force: {}", o.reason);
    }

    let audit_paths = AuditPaths::new(&options.state_dir);
    let writer = AuditWriter::open(
        &audit_paths,
        CheckpointPolicy::default(),
        WriterOptions {
            witnesses: options.audit_witnesses.clone(),
            ..WriterOptions::default()
        },
    )
    .with_context(|| format!("opening the audit log in {}", options.state_dir.display()))?;

    let tickets_path = crate::approvals::db_path(&options.state_dir);
    let tickets = TicketStore::open(&tickets_path)
        .with_context(|| format!("opening the approval queue {}", tickets_path.display()))?;

    let probed = kernel::probe();
    for line in probed.to_string().lines() {
        tracing::info!("kernel: {line}");
    }

    let mount = kernel::fs::cgroup2_mount().context("finding the cgroup2 mount")?;
    let root =
        CgroupDir::create(&CgroupDir::root(&mount)?, &options.cgroup_root).with_context(|| {
            format!(
                "creating the secops root cgroup {}",
                mount.join(&options.cgroup_root).display()
            )
        })?;
    // A layer the probe found this kernel cannot run is not loaded at all: its verifier
    // rejection would otherwise stop the daemon and take the other layers with it.
    // With BPF LSM, the LSM programs report deletes and renames (allowed ones too), with
    // the kernel's real verdict: the syscall tracepoints, which can only see attempts,
    // are then not loaded.
    let load_options = LoadOptions {
        ring_buffer_bytes: options.ring_buffer_bytes,
        egress: probed.cgroup_sock_addr.active,
        exec: probed.tracepoints.active,
        files: probed.tracepoints.active && !probed.bpf_lsm.active,
        lsm: probed.bpf_lsm.active,
    };
    let mut kernel =
        Kernel::load(&options.pin_dir, &load_options).context("loading the BPF programs")?;
    let config = secops_common::kernel::Config {
        root_cgroup_id: root.id()?,
        agent_level: u32::try_from(root.level() + 1).context("cgroup level")?,
        flags: 0,
    };
    kernel
        .maps_mut()
        .set_config(&config)
        .context("writing the kernel config")?;

    // Host names in allowlists start unresolved (they allow nothing) and are resolved in
    // the background, so a slow or unreachable DNS server cannot hold up enforcement.
    let hosts = HostAddrs::new();
    let mut table = AgentTable::default();
    table.sync(&policy, &root, kernel.maps_mut(), &hosts)?;
    let engine = Arc::new(Engine::new(Arc::new(policy)));
    // The file rules are in the map before any LSM program is attached: no moment where
    // the programs run against an empty map.
    let files = compile_files(&engine, &table, &options)?;
    kernel
        .maps_mut()
        .replace_inodes(&files.entries)
        .context("writing the file rules into the kernel")?;
    kernel
        .maps_mut()
        .protect_only(std::process::id())
        .context("protecting the daemon's process from agents")?;

    let egress_attached = match kernel.attach_egress(root.path()) {
        Ok(_) if !load_options.egress => false,
        Ok(links) => {
            tracing::info!(?links, "egress programs attached");
            true
        }
        Err(e) => {
            tracing::error!("egress allowlist NOT enforced: {e}");
            false
        }
    };
    let tracepoints_attached = match kernel.attach_tracepoints() {
        Ok(_) if !load_options.exec => false,
        Ok(links) => {
            tracing::info!(?links, "tracepoints attached");
            true
        }
        Err(e) => {
            tracing::error!("event tagging NOT active: {e}");
            false
        }
    };
    let lsm_attached = match kernel.attach_lsm() {
        Ok(_) if !load_options.lsm => false,
        Ok(links) => {
            tracing::info!(?links, "BPF LSM programs attached");
            true
        }
        Err(e) => {
            tracing::error!("synchronous file/exec deny (BPF LSM) NOT enforced: {e}");
            false
        }
    };
    let capabilities =
        capability_report(&probed, egress_attached, tracepoints_attached, lsm_attached);
    for c in &capabilities {
        tracing::info!(layer = %c.name, active = c.active, "{}", c.detail);
    }
    let reader = kernel
        .event_reader()
        .context("opening the event ring buffer")?;

    let shared = Arc::new(Shared {
        engine: RwLock::new(engine),
        files: RwLock::new(Arc::new(files)),
        kernel: Mutex::new(kernel),
        agents: RwLock::new(table),
        hosts: Mutex::new(hosts),
        root,
        capabilities,
        last_reload_error: Mutex::new(None),
        counters: Counters::default(),
        metrics: metrics::Metrics::new(),
        tickets: Mutex::new(tickets),
        decided: parked::DecidedTickets::default(),
        live: Mutex::new(live),
        denials: Mutex::new(autonomy::DenialWindows::default()),
        shutdown: AtomicBool::new(false),
        shutdown_notify: Notify::new(),
        options: options.clone(),
    });

    let writer = Arc::new(writer);
    let pipeline = pipeline::spawn(shared.clone(), reader, writer.clone())?;
    let listener = http::bind(&options.socket, options.socket_gid)?;
    // Again, now that the socket exists: its inode gets its built-in entry.
    shared
        .resync()
        .context("writing the kernel maps after binding the API socket")?;
    let api = Arc::new(http::ApiState {
        shared: shared.clone(),
        writer: writer.clone(),
        scanner: crate::scan::Scanner::new(),
        limits: options.api,
        admin_gid: options.admin_gid,
    });
    let metrics_listener = options.metrics_listen.map(http::bind_metrics).transpose()?;
    let server = http::Server::start(listener, metrics_listener, api)?;
    let sweeper = timeouts::spawn(shared.clone(), writer.clone())?;
    tracing::info!(socket = %options.socket.display(), metrics = ?options.metrics_listen, "secops daemon ready");

    let tasks = vec![
        tokio::spawn(watch_signals(shared.clone())),
        tokio::spawn(watch_policy_files(shared.clone())),
        tokio::spawn(refresh_hosts(shared.clone())),
    ];
    while !shared.shutdown.load(Ordering::SeqCst) {
        let notified = shared.shutdown_notify.notified();
        if shared.shutdown.load(Ordering::SeqCst) {
            break;
        }
        notified.await;
    }
    tracing::info!(
        "shutting down; programs and maps stay pinned in {}",
        options.pin_dir.display()
    );
    for task in &tasks {
        task.abort();
    }
    for task in tasks {
        let _ = task.await;
    }
    // The API thread holds the audit writer: stop it before the writer is closed.
    let _ = tokio::task::spawn_blocking(move || server.stop()).await;
    // So does the timeout sweeper.
    let _ = tokio::task::spawn_blocking(move || sweeper.stop()).await;
    let _ = std::fs::remove_file(&options.socket);
    pipeline
        .join()
        .map_err(|_| anyhow!("the event pipeline panicked"))??;
    match Arc::try_unwrap(writer) {
        Ok(writer) => writer.close().context("closing the audit log")?,
        Err(_) => tracing::warn!("audit writer still shared at shutdown; it closes when dropped"),
    }
    Ok(())
}

async fn watch_signals(shared: Arc<Shared>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut hup), Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::hangup()),
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stopping");
        shared.request_shutdown();
        return;
    };
    loop {
        tokio::select! {
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading the policy");
                let shared = shared.clone();
                let _ = tokio::task::spawn_blocking(move || shared.reload()).await;
            }
            _ = term.recv() => { shared.request_shutdown(); return; }
            _ = int.recv() => { shared.request_shutdown(); return; }
        }
    }
}

fn modified_times(files: &[PathBuf]) -> Vec<Option<SystemTime>> {
    files
        .iter()
        .map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok())
        .collect()
}

/// Reloads when any file of the policy (the top-level one or an include) changes.
async fn watch_policy_files(shared: Arc<Shared>) {
    let mut files = shared.engine().policy().files.clone();
    let mut seen = modified_times(&files);
    loop {
        tokio::time::sleep(shared.options.watch_interval).await;
        let current_files = shared.engine().policy().files.clone();
        if current_files != files {
            files = current_files;
            seen = modified_times(&files);
        }
        let now = modified_times(&files);
        if now != seen {
            seen = now;
            tracing::info!("policy file changed: reloading");
            let s = shared.clone();
            let _ = tokio::task::spawn_blocking(move || s.reload()).await;
        }
    }
}

/// How soon and how late a host name is resolved again, whatever its TTL says: a zero TTL
/// must not spin, and an address that moves must not stay allowed (or denied) for a day.
const MIN_HOST_REFRESH: Duration = Duration::from_secs(1);
const MAX_HOST_REFRESH: Duration = Duration::from_secs(300);

/// The system's DNS configuration (resolv.conf), with /etc/hosts consulted first. `None` when
/// the configuration cannot be read: then getaddrinfo is used, which reports no TTLs.
fn system_resolver() -> Option<TokioResolver> {
    let mut builder = match TokioResolver::builder_tokio() {
        Ok(builder) => builder,
        Err(e) => {
            tracing::warn!("no DNS configuration ({e}); host names are resolved with getaddrinfo every 30 s, without TTLs");
            return None;
        }
    };
    let options = builder.options_mut();
    options.use_hosts_file = ResolveHosts::Always;
    options.timeout = Duration::from_secs(2);
    options.attempts = 2;
    builder
        .build()
        .map_err(|e| tracing::warn!("building the DNS resolver: {e}"))
        .ok()
}

/// Resolves host names for egress allowlists, all at once. Returns the addresses (a name
/// that does not resolve allows nothing) and how long until the first answer's TTL runs out.
async fn resolve_hosts(
    resolver: Option<&TokioResolver>,
    names: &[String],
    retry: Duration,
) -> (HostAddrs, Duration) {
    let mut lookups = tokio::task::JoinSet::new();
    for name in names {
        let name = name.clone();
        let resolver = resolver.cloned();
        lookups.spawn(async move {
            let result: Result<(Vec<std::net::IpAddr>, Option<Duration>), String> = match &resolver
            {
                Some(r) => r
                    .lookup_ip(name.as_str())
                    .await
                    .map_err(|e| e.to_string())
                    .map(|lookup| {
                        let ttl = lookup
                            .valid_until()
                            .saturating_duration_since(std::time::Instant::now());
                        (lookup.iter().collect(), Some(ttl))
                    }),
                None => tokio::net::lookup_host((name.as_str(), 0))
                    .await
                    .map_err(|e| e.to_string())
                    .map(|a| (a.map(|a| a.ip()).collect(), None)),
            };
            (name, result)
        });
    }
    let mut out = HostAddrs::new();
    let mut next = MAX_HOST_REFRESH;
    while let Some(joined) = lookups.join_next().await {
        let Ok((name, result)) = joined else { continue };
        match result {
            Ok((addrs, ttl)) => {
                let mut list: Vec<_> = addrs.into_iter().map(|a| a.to_canonical()).collect();
                list.sort();
                list.dedup();
                next = next.min(ttl.unwrap_or(retry));
                out.insert(name, list);
            }
            Err(e) => {
                tracing::warn!(host = %name, "egress host name does not resolve (nothing allowed for it): {e}");
                next = next.min(retry);
                out.insert(name, Vec::new());
            }
        }
    }
    (out, next.clamp(MIN_HOST_REFRESH, MAX_HOST_REFRESH))
}

/// Keeps the resolved addresses of allowlist host names current: resolved at start, then
/// again when the first answer's TTL runs out (failures are retried every `host_refresh`).
async fn refresh_hosts(shared: Arc<Shared>) {
    let resolver = system_resolver();
    loop {
        let names = agents::allowlist_hosts(shared.engine().policy());
        let (fresh, next) =
            resolve_hosts(resolver.as_ref(), &names, shared.options.host_refresh).await;
        let changed = *lock(&shared.hosts) != fresh;
        if changed {
            *lock(&shared.hosts) = fresh;
            let s = shared.clone();
            let _ = tokio::task::spawn_blocking(move || {
                if let Err(e) = s.resync() {
                    tracing::error!("updating egress after host names changed: {e:#}");
                }
            })
            .await;
        }
        tokio::time::sleep(next).await;
    }
}

/// Tears down what a daemon with these options left pinned: programs, links and maps, and
/// the secops cgroups that hold no process. For uninstalling and for tests.
pub fn teardown(pin_dir: &Path, cgroup_root: &str) -> anyhow::Result<()> {
    if pin_dir.exists() {
        kernel::unpin_all(pin_dir).with_context(|| format!("unpinning {}", pin_dir.display()))?;
    }
    let mount = kernel::fs::cgroup2_mount()?;
    let root = mount.join(cgroup_root);
    if root.exists() {
        CgroupDir::open_path(&root)?
            .remove()
            .with_context(|| format!("removing {}", root.display()))?;
    }
    Ok(())
}
