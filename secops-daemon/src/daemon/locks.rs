//! Taking the daemon's locks (their order is in `state.rs`).

use std::sync::{Mutex, RwLock};

/// Locks shared state. A panicked holder cannot leave these structures half-written in a
/// way later readers could misread (every update is a whole replacement), so a poisoned
/// lock is used as it is rather than taking the daemon down.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}
