//! The daemon's watchers: signals (SIGHUP reloads, SIGTERM and SIGINT stop) and the policy
//! files (a changed file reloads).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use super::enforcement::{reload_in_time, ReloadTrigger};
use super::state::Shared;
use crate::audit::AuditWriter;

pub(crate) async fn watch_signals(shared: Arc<Shared>, writer: Arc<AuditWriter>) {
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
                let _ = reload_in_time(&shared, &writer, ReloadTrigger::Sighup).await;
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
pub(crate) async fn watch_policy_files(shared: Arc<Shared>, writer: Arc<AuditWriter>) {
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
            let _ = reload_in_time(&shared, &writer, ReloadTrigger::FileChanged).await;
        }
    }
}
