//! Warnings about the data itself (a prefix outside the key layout, a value
//! that is not text), given once per process however often a load, relist or
//! watch meets them again. Failures of the API server are not warned about
//! here: they are stream items, reported by the watch driver.

use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};

use crate::layout::Plan;
use crate::NAME;

/// Things warned about already, so that a poll or relist does not repeat them.
#[derive(Debug, Default)]
pub(crate) struct WarnOnce(Mutex<HashSet<String>>);

impl WarnOnce {
    /// True the first time `what` is seen.
    fn first(&self, what: &str) -> bool {
        let mut seen = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        seen.insert(what.to_string())
    }

    /// Warns about the plan's prefixes that point outside the layout.
    pub(crate) fn ignored_prefixes(&self, plan: &Plan) {
        for prefix in &plan.ignored {
            if self.first(&format!("prefix {prefix}")) {
                tracing::warn!(
                    backend = NAME,
                    prefix = %prefix,
                    "prefix is outside the Kubernetes key layout (/configmaps/..., /secrets/...); it reads nothing"
                );
            }
        }
        for prefix in &plan.outside {
            if self.first(&format!("prefix {prefix}")) {
                tracing::warn!(
                    backend = NAME,
                    prefix = %prefix,
                    "prefix names a namespace that --namespace does not list; it reads nothing"
                );
            }
        }
    }

    /// Warns that `key` holds `bytes` bytes that are not UTF-8 and is left
    /// out. Names the key, never the value.
    pub(crate) fn binary_value(&self, key: &str, bytes: usize) {
        if self.first(key) {
            tracing::warn!(
                backend = NAME,
                key = %key,
                bytes,
                "value is not UTF-8 text; it is left out"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_thing_is_first_once() {
        let warned = WarnOnce::default();
        assert!(warned.first("/secrets/db/blob"));
        assert!(!warned.first("/secrets/db/blob"));
        assert!(warned.first("prefix /db"));
    }
}
