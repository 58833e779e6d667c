//! The daemon's watchers: signals (SIGHUP reloads, SIGTERM and SIGINT stop) and the policy
//! files (a changed file reloads).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use super::state::Shared;

pub(crate) async fn watch_signals(shared: Arc<Shared>) {
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
pub(crate) async fn watch_policy_files(shared: Arc<Shared>) {
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
