//! Starting and stopping the daemon, in order: the policy and the autonomy overrides, the
//! stores (audit log, approval queue), the kernel layers (programs loaded, maps written,
//! programs attached), then the services that run until SIGTERM (event pipeline, API,
//! timeout sweeper, watchers), which are stopped in the reverse order.

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, RwLock};

use anyhow::{anyhow, Context};
use tokio::sync::Notify;

use super::agents::AgentTable;
use super::autonomy;
use super::dns::{self, DnsLayer};
use super::enforcement::file_rules;
use super::http;
use super::layers::{capability_report, describe_missing, missing_layers};
use super::metrics::Metrics;
use super::options::DaemonOptions;
use super::state::{Counters, Shared};
use super::{hosts, pipeline, services, timeouts};
use crate::api::CapabilityStatus;
use crate::approvals::TicketStore;
use crate::audit::{AuditPaths, AuditWriter};
use crate::cgroups::CgroupDir;
use crate::enforce::{FileRules, HostAddrs};
use crate::engine::Engine;
use crate::kernel::{self, EventReader, Family, Kernel, LoadOptions, StartGuard};
use crate::policy::load_policy;

/// Runs the daemon until SIGTERM or SIGINT.
pub(crate) fn run(options: DaemonOptions) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("secops-daemon")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run_async(options))
}

async fn run_async(options: DaemonOptions) -> anyhow::Result<()> {
    // Nothing the daemon writes is anyone else's to read: the audit log and its WAL, the
    // approval queue, the keys, the state files. (The socket's mode is set when it is bound.)
    // SAFETY: umask(2) cannot fail.
    unsafe { libc::umask(0o077) };
    private_state_dir(&options.state_dir)?;
    let live = load_live(&options)?;
    let writer = Arc::new(open_audit_log(&options)?);
    crate::audit::policy_copy::record_at_start(&writer, &options.state_dir, &live.policy)?;
    let tickets = open_tickets(&options)?;
    let notifier = start_notifier(&options)?;
    let layers = KernelLayers::start(&options, &live)?;
    let start_guard = layers.start_guard;
    let shared = Arc::new(Shared {
        engine: RwLock::new(layers.engine),
        files: RwLock::new(Arc::new(layers.files)),
        kernel: Mutex::new(layers.kernel),
        agents: RwLock::new(layers.agents),
        hosts: Mutex::new(layers.hosts),
        root: layers.root,
        capabilities: layers.capabilities,
        last_reload_error: Mutex::new(None),
        reload_generation: AtomicU64::new(0),
        counters: Counters::default(),
        metrics: Metrics::new(),
        scanner: crate::scan::Scanner::new(),
        tickets: Mutex::new(tickets),
        decided: Default::default(),
        live: Mutex::new(live),
        denials: Mutex::new(autonomy::DenialWindows::default()),
        dns: layers.dns,
        shutdown: AtomicBool::new(false),
        shutdown_notify: Notify::new(),
        notifier,
        landlock: Default::default(),
        options: options.clone(),
    });
    let services = Services::spawn(&shared, &writer, layers.reader)?;
    start_guard.disarm();
    tracing::info!(socket = %options.socket.display(), metrics = ?options.metrics_listen, "secops daemon ready");
    super::systemd::notify("READY=1");
    shared.stopped().await;
    super::systemd::notify("STOPPING=1");
    tracing::info!(
        "shutting down; programs and maps stay pinned in {}",
        options.pin_dir.display()
    );
    services.stop().await?;
    let _ = std::fs::remove_file(&options.socket);
    match Arc::try_unwrap(writer) {
        Ok(writer) => writer.close().context("closing the audit log")?,
        Err(_) => tracing::warn!("audit writer still shared at shutdown; it closes when dropped"),
    }
    Ok(())
}

/// Makes the state directory (created if missing) this daemon's alone: mode 0700. One that
/// another user owns is refused, since its owner could rename the log away or swap the keys.
fn private_state_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating the state directory {}", dir.display()))?;
    let meta = std::fs::symlink_metadata(dir)
        .with_context(|| format!("reading the state directory {}", dir.display()))?;
    // SAFETY: geteuid(2) cannot fail.
    let me = unsafe { libc::geteuid() };
    if !meta.is_dir() || meta.uid() != me {
        anyhow::bail!(
            "the state directory {} is {} uid {}, not a directory of this daemon's user (uid {me}): \
             refused, since whoever owns it can replace the audit log or its keys; give the \
             daemon a directory of its own (--state-dir)",
            dir.display(),
            if meta.is_dir() { "owned by" } else { "not a directory but a file of" },
            meta.uid()
        );
    }
    if meta.mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("making {} private (mode 0700)", dir.display()))?;
        tracing::warn!(
            dir = %dir.display(),
            "the state directory was readable or writable by others ({:o}); it is 0700 now",
            meta.mode() & 0o777
        );
    }
    Ok(())
}

/// The policy as loaded and the autonomy overrides on top. Before anything is enforced: a
/// daemon that cannot read the overrides must not start with the policy's (possibly
/// higher) autonomy instead.
fn load_live(options: &DaemonOptions) -> anyhow::Result<autonomy::Live> {
    let policy = load_policy(&options.policy)
        .map_err(|errors| anyhow!("the policy is not valid:\n{errors}"))?;
    tracing::info!(files = ?policy.files, rules = policy.rules.len(), agents = policy.agents.len(), "policy loaded");
    let overrides = autonomy::Overrides::load(&autonomy::Overrides::path_in(&options.state_dir))?;
    let live = autonomy::Live {
        policy: Arc::new(policy),
        overrides,
    };
    for (agent, o) in live.overrides.in_force(&live.policy) {
        tracing::info!(agent, level = %o.level, set_by = %o.set_by, "autonomy override in force: {}", o.reason);
    }
    Ok(live)
}

fn open_audit_log(options: &DaemonOptions) -> anyhow::Result<AuditWriter> {
    crate::audit::daemon_log::open_daemon_log(
        &AuditPaths::new(&options.state_dir),
        &options.audit_witnesses,
    )
    .with_context(|| format!("opening the audit log in {}", options.state_dir.display()))
}

/// The webhooks of the notifications file; a file that is there but wrong stops the start.
fn start_notifier(options: &DaemonOptions) -> anyhow::Result<crate::notify::Notifier> {
    let webhooks = crate::notify::load(&options.notifications)?;
    for w in &webhooks {
        tracing::info!(url = %w.url, format = ?w.format, signed = w.secret.is_some(), "notifying a webhook of approval tickets");
    }
    crate::notify::Notifier::start(webhooks).context("starting the webhook threads")
}

fn open_tickets(options: &DaemonOptions) -> anyhow::Result<TicketStore> {
    let path = crate::approvals::db_path(&options.state_dir);
    TicketStore::open(&path)
        .with_context(|| format!("opening the approval queue {}", path.display()))
}

/// The kernel side, started: programs loaded, maps written, programs attached.
struct KernelLayers {
    kernel: Kernel,
    root: CgroupDir,
    agents: AgentTable,
    hosts: HostAddrs,
    engine: Arc<Engine>,
    files: FileRules,
    capabilities: Vec<CapabilityStatus>,
    reader: EventReader,
    dns: DnsLayer,
    /// Unpins what this start pinned if the daemon does not get to ready.
    start_guard: StartGuard,
}

impl KernelLayers {
    fn start(options: &DaemonOptions, live: &autonomy::Live) -> anyhow::Result<KernelLayers> {
        let probed = kernel::probe();
        for line in probed.to_string().lines() {
            tracing::info!("kernel: {line}");
        }
        let mount = kernel::fs::cgroup2_mount().context("finding the cgroup2 mount")?;
        let root = CgroupDir::create(&CgroupDir::root(&mount)?, &options.cgroup_root)
            .with_context(|| {
                format!(
                    "creating the secops root cgroup {}",
                    mount.join(&options.cgroup_root).display()
                )
            })?;
        // A layer the probe found this kernel cannot run is not loaded at all, and a family
        // the verifier refuses is left out (said in the log and in `secops status`): the
        // other layers keep working. The file tracepoints are loaded even with BPF LSM but
        // attached only where the LSM programs are not, since those report deletes and
        // renames with the kernel's real verdict and the tracepoints only see attempts.
        let load_options = LoadOptions {
            ring_buffer_bytes: options.ring_buffer_bytes,
            egress: probed.cgroup_sock_addr.active,
            exec: probed.tracepoints.active,
            files: probed.tracepoints.active,
            lsm: probed.bpf_lsm.active,
            ancestor_lookup: kernel::AncestorLookup::Probe,
        };
        let mut kernel = Kernel::load_available(&options.pin_dir, &load_options)
            .context("loading the BPF programs")?;
        let start_guard = kernel.start_guard();
        let config = secops_common::kernel::Config {
            root_cgroup_id: root.id()?,
            agent_level: kernel::fs::cgroup_level(root.path())
                .context("the secops root cgroup's level")?
                + 1,
            flags: 0,
            // The epoch a daemon before this one counted in, until the pipeline begins anew.
            decision_epoch: kernel.maps().config().map_or(0, |c| c.decision_epoch),
            pad: 0,
        };
        kernel
            .maps_mut()
            .set_config(&config)
            .context("writing the kernel config")?;
        kernel
            .maps_mut()
            .set_root_cgroup(root.path())
            .context("writing the secops root cgroup into the kernel")?;

        // Host names in allowlists start unresolved (they allow nothing) and are resolved in
        // the background, so a slow or unreachable DNS server cannot hold up enforcement.
        let hosts = HostAddrs::new();
        let policy = live.effective();
        // Agents' DNS is redirected by the egress programs: without them there is nothing to
        // redirect with.
        let dns_off = match kernel.family_state(Family::Egress) {
            kernel::FamilyState::Loaded | kernel::FamilyState::Attached => None,
            kernel::FamilyState::Failed(failure) => Some(format!("the egress programs: {failure}")),
            kernel::FamilyState::NotRequested => Some(probed.cgroup_sock_addr.reason.clone()),
        };
        let previous_ports = kernel.maps().dns_listeners().unwrap_or_default();
        let dns = DnsLayer::new(dns_off, previous_ports);
        let mut agents = AgentTable::default();
        agents.sync(&policy, &root, kernel.maps_mut(), &hosts, &dns)?;
        let engine = Arc::new(Engine::new(Arc::new(policy)));
        // The file rules are in the map before any LSM program is attached: no moment where
        // the programs run against an empty map.
        let files = file_rules(&engine, &agents, options)?;
        kernel
            .maps_mut()
            .replace_inodes(&files.compiled.entries)
            .context("writing the file rules into the kernel")?;
        kernel
            .maps_mut()
            .protect_only(std::process::id())
            .context("protecting the daemon's process from agents")?;

        log_attach(kernel.attach_egress(root.path()), "egress programs");
        log_attach(kernel.attach_lsm(), "BPF LSM programs");
        let tracepoints = if kernel.family_state(Family::Lsm).is_attached() {
            vec![Family::Exec]
        } else {
            vec![Family::Exec, Family::Files]
        };
        log_attach(kernel.attach_tracepoints_of(&tracepoints), "tracepoints");
        let mut capabilities = capability_report(&probed, &kernel);
        capabilities.push(dns.capability(kernel.family_state(Family::Egress).is_attached()));
        for c in &capabilities {
            if c.active {
                tracing::info!(layer = %c.key, "{}: active: {}", c.name, c.detail);
            } else {
                tracing::warn!(layer = %c.key, "{}: INACTIVE: {}", c.name, c.detail);
            }
        }
        let missing = missing_layers(&capabilities, &engine.policy().defaults.require);
        if !missing.is_empty() {
            anyhow::bail!(
                "the policy requires layers that are not active on this kernel (defaults.require): \
                 {}; not starting, and nothing of this start stays pinned",
                describe_missing(&missing)
            );
        }
        let reader = kernel
            .event_reader()
            .context("opening the event ring buffer")?;
        Ok(KernelLayers {
            kernel,
            root,
            agents,
            hosts,
            engine,
            files,
            capabilities,
            reader,
            dns,
            start_guard,
        })
    }
}

/// Logs how attaching went; where each family stands is in [`Kernel::families`].
fn log_attach<T: std::fmt::Debug, E: std::fmt::Display>(result: Result<Vec<T>, E>, what: &str) {
    match result {
        Ok(links) if links.is_empty() => {}
        Ok(links) => tracing::info!(?links, "{what} attached"),
        Err(e) => tracing::error!("{what} NOT attached: {e}"),
    }
}

/// What runs until shutdown, each owned and stopped in [`Services::stop`].
struct Services {
    pipeline: std::thread::JoinHandle<anyhow::Result<()>>,
    server: http::Server,
    sweeper: timeouts::Sweeper,
    dns: Option<dns::DnsServer>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Services {
    fn spawn(
        shared: &Arc<Shared>,
        writer: &Arc<AuditWriter>,
        reader: EventReader,
    ) -> anyhow::Result<Services> {
        let options = &shared.options;
        let pipeline = pipeline::spawn(shared.clone(), reader, writer.clone())?;
        let listener = http::bind(&options.socket, options.socket_gid)?;
        // Again, now that the socket exists: its inode gets its built-in entry.
        shared
            .resync()
            .context("writing the kernel maps after binding the API socket")?;
        let api = Arc::new(http::ApiState {
            shared: shared.clone(),
            writer: writer.clone(),
            limits: options.api,
            admin_gid: options.admin_gid,
        });
        let metrics_listener = options.metrics_listen.map(http::bind_metrics).transpose()?;
        let server = http::Server::start(listener, metrics_listener, api)?;
        let sweeper = timeouts::spawn(shared.clone(), writer.clone())?;
        let dns = dns::spawn(shared.clone(), writer.clone())?;
        let tasks = vec![
            tokio::spawn(services::watch_signals(shared.clone(), writer.clone())),
            tokio::spawn(services::watch_policy_files(shared.clone(), writer.clone())),
            tokio::spawn(hosts::refresh_hosts(shared.clone())),
            tokio::spawn(super::retention::rotate_on_timer(shared.clone())),
        ];
        Ok(Services {
            pipeline,
            server,
            sweeper,
            dns,
            tasks,
        })
    }

    /// Stops everything, the audit writer's users first, so the writer can be closed.
    async fn stop(self) -> anyhow::Result<()> {
        for task in &self.tasks {
            task.abort();
        }
        for task in self.tasks {
            let _ = task.await;
        }
        let (server, sweeper) = (self.server, self.sweeper);
        let _ = tokio::task::spawn_blocking(move || server.stop()).await;
        let _ = tokio::task::spawn_blocking(move || sweeper.stop()).await;
        if let Some(dns) = self.dns {
            let _ = tokio::task::spawn_blocking(move || dns.join()).await;
        }
        self.pipeline
            .join()
            .map_err(|_| anyhow!("the event pipeline panicked"))?
    }
}
