//! Values the cells of one run share, computed once per key by whichever
//! cell asks first while the others wait: trained adapters, base
//! evaluations, whole simulations read by several cells.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// A map from key to a value computed at most once (or the error it gave).
pub type Memo<T> = Mutex<HashMap<String, Arc<OnceLock<Result<T, String>>>>>;

/// Compute `f` once per key, whichever thread asks first; others wait.
pub fn memo<T: Clone>(m: &Memo<T>, key: String, f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
    let slot = m.lock().expect("memo lock").entry(key).or_default().clone();
    slot.get_or_init(|| f().map_err(|e| format!("{e:#}"))).clone().map_err(|e| anyhow::anyhow!(e))
}
