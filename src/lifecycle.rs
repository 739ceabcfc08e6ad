//! Process lifecycle: systemd notifications, the shutdown signals, and
//! draining in-flight queries before exit.
//!
//! Draining: hickory-server aborts the tasks of queries still in flight
//! when it is shut down, so we stop it only once none are left. On SIGTERM
//! the handler starts answering new queries REFUSED (stub resolvers move to
//! their next server at once), `/readyz` turns false, and the queries
//! already being resolved finish, up to `server.shutdown_grace_secs`. The
//! count of queries in flight is striped per thread, so the query path
//! pays an uncontended increment, not a shared cache line bouncing
//! between cores.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const STRIPES: usize = 32;

/// One counter per cache line.
#[repr(align(64))]
#[derive(Default)]
struct Stripe(AtomicIsize);

/// Shared between the handler and the shutdown path.
pub struct Lifecycle {
    draining: AtomicBool,
    in_flight: [Stripe; STRIPES],
}

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle {
            draining: AtomicBool::new(false),
            in_flight: std::array::from_fn(|_| Stripe::default()),
        }
    }
}

fn stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static MINE: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    MINE.with(|m| {
        if m.get() == usize::MAX {
            m.set(NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES);
        }
        m.get()
    })
}

/// Held while a query is being answered.
pub struct InFlight<'a>(&'a Lifecycle);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        // Possibly another thread's stripe than the increment's: the sum
        // over all stripes is what counts.
        self.0.in_flight[stripe()].0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Lifecycle {
    /// Count a query in; `None` when draining (refuse it).
    pub fn enter(&self) -> Option<InFlight<'_>> {
        if self.draining.load(Ordering::Relaxed) {
            return None;
        }
        self.in_flight[stripe()].0.fetch_add(1, Ordering::Relaxed);
        Some(InFlight(self))
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    pub fn in_flight(&self) -> isize {
        self.in_flight
            .iter()
            .map(|s| s.0.load(Ordering::Relaxed))
            .sum()
    }

    /// Refuse new queries and wait until none are in flight or `grace`
    /// has passed. Returns the number still in flight (0: all answered).
    pub async fn drain(&self, grace: Duration) -> isize {
        self.draining.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + grace;
        loop {
            let left = self.in_flight();
            if left <= 0 || Instant::now() >= deadline {
                return left.max(0);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Tell systemd (when started by it with `Type=notify`) that we serve.
pub fn notify_ready(status: &str) {
    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(status),
    ]);
}

pub fn notify_status(status: &str) {
    notify(&[sd_notify::NotifyState::Status(status)]);
}

pub fn notify_stopping() {
    notify(&[
        sd_notify::NotifyState::Stopping,
        sd_notify::NotifyState::Status("draining and flushing the hit log"),
    ]);
}

fn notify(states: &[sd_notify::NotifyState<'_>]) {
    // Not under systemd: NOTIFY_SOCKET is unset and this does nothing.
    if let Err(error) = sd_notify::notify(false, states) {
        tracing::debug!(%error, "sd_notify failed");
    }
}

/// With `WatchdogSec=` set, ping systemd at half the interval from a task
/// on the runtime: if the runtime wedges, the pings stop and systemd
/// restarts the service.
pub fn spawn_watchdog() {
    // As libsystemd's sd_watchdog_enabled: WATCHDOG_PID, when set, must be
    // ours; unset means the watchdog is for this process. (The crate's
    // helper insists on WATCHDOG_PID.)
    let usec = std::env::var("WATCHDOG_USEC")
        .ok()
        .and_then(|u| u.parse::<u64>().ok())
        .unwrap_or(0);
    let for_us = std::env::var("WATCHDOG_PID")
        .ok()
        .is_none_or(|p| p.parse::<u32>().ok() == Some(std::process::id()));
    if usec == 0 || !for_us {
        return;
    }
    let every = Duration::from_micros(usec / 2);
    tracing::info!(every_ms = every.as_millis() as u64, "systemd watchdog on");
    tokio::spawn(async move {
        loop {
            notify(&[sd_notify::NotifyState::Watchdog]);
            tokio::time::sleep(every).await;
        }
    });
}

/// SIGTERM (systemd stop) and SIGINT (Ctrl-C), installed up front so a
/// signal during start-up is not lost.
pub struct ShutdownSignal {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl ShutdownSignal {
    pub fn install() -> std::io::Result<ShutdownSignal> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(ShutdownSignal {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Wait for either signal.
    pub async fn recv(mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn drain_waits_for_in_flight_queries_and_refuses_new_ones() {
        let life = std::sync::Arc::new(Lifecycle::default());
        let guard = life.enter().expect("not draining");
        let l2 = std::sync::Arc::clone(&life);
        let drained = tokio::spawn(async move { l2.drain(Duration::from_secs(5)).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(life.is_draining());
        assert!(life.enter().is_none(), "new queries are refused");
        assert!(!drained.is_finished(), "one query still in flight");
        drop(guard);
        assert_eq!(drained.await.unwrap(), 0);
    }

    #[tokio::test]
    async fn drain_gives_up_after_the_grace_period() {
        let life = Lifecycle::default();
        let _stuck = life.enter();
        assert_eq!(life.drain(Duration::from_millis(30)).await, 1);
    }
}
