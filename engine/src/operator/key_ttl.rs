//! Flink's state TTL (`table.exec.state.ttl`) for operators keeping state
//! per key in a map (Top-N partitions, ChangelogNormalize's last rows): when
//! each key was last touched, in processing time, and a sweep, at most once
//! a second, that drops the keys idle for longer than the TTL without
//! retracting anything, as Flink does, counted in
//! `weir_state_expired_keys_total`.

use std::collections::HashMap;

use super::OperatorContext;

/// When each key was last touched; inert without a TTL.
#[derive(Debug, Default)]
pub(super) struct KeyTtl {
    ttl_ms: Option<i64>,
    touched_at: HashMap<Vec<u8>, i64>,
    last_sweep: i64,
}

impl KeyTtl {
    /// A TTL of `ttl_ms` (`None` or not positive: state is kept forever).
    pub(super) fn new(ttl_ms: Option<i64>) -> Self {
        Self {
            ttl_ms: ttl_ms.filter(|&t| t > 0),
            ..Self::default()
        }
    }

    /// Notes that `key` was touched at `now`.
    pub(super) fn touch(&mut self, key: &[u8], now: i64) {
        if self.ttl_ms.is_some() {
            self.touched_at.insert(key.to_vec(), now);
        }
    }

    /// Forgets `key` (its state is gone).
    pub(super) fn forget(&mut self, key: &[u8]) {
        self.touched_at.remove(key);
    }

    /// Drops from `state` the keys idle for longer than the TTL, at most
    /// once a second; counts them and says so as `what`.
    pub(super) fn sweep<V>(
        &mut self,
        state: &mut HashMap<Vec<u8>, V>,
        ctx: &OperatorContext,
        what: &str,
    ) {
        let Some(ttl) = self.ttl_ms else {
            return;
        };
        let now = ctx.clock.now_millis();
        if now - self.last_sweep < ttl.min(1000) {
            return;
        }
        self.last_sweep = now;
        let before = state.len();
        let touched_at = &mut self.touched_at;
        state.retain(|key, _| {
            let live = touched_at.get(key).is_some_and(|&t| now - t < ttl);
            if !live {
                touched_at.remove(key);
            }
            live
        });
        let expired = before - state.len();
        if expired > 0 {
            ctx.metrics.add_state_expired(expired);
            tracing::debug!(expired, "{what} past the state TTL");
        }
    }
}
