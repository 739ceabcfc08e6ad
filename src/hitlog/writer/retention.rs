//! Keeping the database within bounds: retention deletes records older
//! than `retention_days`, and at the `max_db_mib` cap the oldest records
//! that the roll-ups already count make room for new ones.

use std::sync::atomic::Ordering;
use std::time::Instant;

use super::{ERROR_LOG_EVERY, RETENTION_CHUNK, Writer, forwarded};
use crate::clock::{DAY_MS, now_ms};
use crate::telemetry;

impl Writer {
    /// Delete up to `n` of the oldest records to bring the database under
    /// its cap; false when none could go (all newer than the roll-up, or
    /// the delete failed).
    pub(super) fn make_room(&mut self, n: u64) -> bool {
        let Some(store) = self.store.as_mut() else {
            return false;
        };
        let keep_above = forwarded(store, self.settings.forwarding);
        let mut evicted = store.evict_oldest(n, keep_above);
        if matches!(evicted, Ok(0)) {
            // Only rolled-up records may go: the roll-ups (the sightings'
            // waits longest) take the oldest now, then they make room.
            let rolled = store
                .roll_up_at_most(n)
                .and_then(|_| store.roll_up_sightings_at_most(n));
            if rolled.is_ok() {
                evicted = store.evict_oldest(n, keep_above);
            }
        }
        match evicted {
            Ok(0) => false,
            Ok(evicted) => {
                self.counters.evicted.fetch_add(evicted, Ordering::Relaxed);
                ::metrics::counter!(telemetry::HITLOG_EVICTED).increment(evicted);
                if self
                    .evict_logged
                    .is_none_or(|t| t.elapsed() >= ERROR_LOG_EVERY)
                {
                    tracing::warn!(
                        evicted,
                        max_db_mib = self.settings.max_bytes.unwrap_or(0) >> 20,
                        "the hit log is at its size cap; the oldest records make room \
                         (daily counts keep them; raise hitlog.max_db_mib or lower retention_days)"
                    );
                    self.evict_logged = Some(Instant::now());
                }
                true
            }
            Err(error) => {
                self.failed("cannot make room in the hit log database", &error);
                false
            }
        }
    }

    /// One round of retention; true when there may be more to delete.
    pub(super) fn expire(&mut self) -> bool {
        let cutoff = now_ms() - i64::from(self.settings.retention_days) * DAY_MS;
        let Some(store) = self.store.as_mut() else {
            return false;
        };
        let keep_above = forwarded(store, self.settings.forwarding);
        match store.expire(cutoff, RETENTION_CHUNK, keep_above) {
            Ok(0) => false,
            Ok(n) => {
                tracing::info!(
                    deleted = n,
                    days = self.settings.retention_days,
                    "hit log retention"
                );
                n >= RETENTION_CHUNK
            }
            Err(error) => {
                self.failed("hit log retention failed", &error);
                false
            }
        }
    }
}
