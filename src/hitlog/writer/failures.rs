//! How the writer reports failures: the first at once, then at most
//! every 30 s with the number suppressed in between.

use std::time::Instant;

use super::ERROR_LOG_EVERY;

/// Logs the first failure at once and then at most every 30 s, with the
/// number suppressed in between: a full disk must not flood the journal.
#[derive(Default)]
pub(super) struct Failures {
    pub(super) count: u64,
    since_logged: u64,
    last_logged: Option<Instant>,
}

impl Failures {
    pub(super) fn report(&mut self, what: &str, error: &dyn std::fmt::Display) {
        self.count += 1;
        self.since_logged += 1;
        if self
            .last_logged
            .is_none_or(|t| t.elapsed() >= ERROR_LOG_EVERY)
        {
            tracing::error!(
                %error,
                failures = self.since_logged,
                "{what}; hit records are being lost (queries are still answered)"
            );
            self.since_logged = 0;
            self.last_logged = Some(Instant::now());
        }
    }
}
