//! The policy's `retention:` on a timer: what `secops audit rotate --archive DIR` does (close
//! the open segment, move sealed segments out, each move a signed `sys:audit` record in the
//! live log), every `retention.every`. It appends through a store of its own, beside the
//! writer's, as the command does while the daemon runs (appenders interleave under the log's
//! lock). The section is read afresh each time, so a reload changes it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::state::Shared;
use crate::audit::retention::{archive, RetentionPolicy};
use crate::audit::{AuditPaths, AuditStore};
use crate::policy::retention::Retention;

/// How often the task looks whether the section changed or a rotation is due.
const TICK: Duration = Duration::from_secs(1);

pub(crate) async fn rotate_on_timer(shared: Arc<Shared>) {
    let paths = AuditPaths::new(&shared.options.state_dir);
    let mut last: Option<(Retention, Instant)> = None;
    loop {
        tokio::time::sleep(TICK).await;
        let Some(retention) = shared.engine().policy().retention.clone() else {
            last = None;
            continue;
        };
        let due = match &last {
            Some((r, at)) if *r == retention => at.elapsed() >= retention.every,
            // A new or changed section counts from now.
            _ => {
                last = Some((retention, Instant::now()));
                continue;
            }
        };
        if !due {
            continue;
        }
        last = Some((retention.clone(), Instant::now()));
        let p = paths.clone();
        match tokio::task::spawn_blocking(move || rotate_once(&p, &retention)).await {
            Ok(Ok(n)) => tracing::info!(segments = n, "audit retention: rotated"),
            Ok(Err(e)) => tracing::error!("audit retention: rotation failed (nothing was removed that is not archived): {e:#}"),
            Err(e) => tracing::error!("audit retention: the rotation did not finish: {e}"),
        }
    }
}

/// One rotation; returns how many segments were archived.
fn rotate_once(paths: &AuditPaths, retention: &Retention) -> anyhow::Result<usize> {
    let mut store = AuditStore::open(paths, Default::default())?;
    store.close_segment()?;
    let policy = RetentionPolicy {
        archive_dir: retention.archive.clone(),
        keep_age: retention.keep_age,
        keep_bytes: retention.keep_bytes,
    };
    Ok(archive(&mut store, &policy, crate::time::now_ns())?.len())
}
