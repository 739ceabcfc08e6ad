//! The writer's CPU priority: it yields the core to queries.
//!
//! Writing a record costs the writer more CPU (mostly SQLite's insert,
//! about a microsecond and a half) than answering the blocked query cost
//! the worker. At the same priority, a core saturated with blocked
//! queries gives the writer a quarter of itself and answers a quarter
//! fewer. A record need not reach the database in the same millisecond,
//! so the writer runs at Linux's `SCHED_IDLE`: it gets the time no query
//! wants, and the channel holds what waits meanwhile.
//!
//! A flood that outlasts the spare time must not cost evidence, so a
//! keeper thread (normal priority, awake every [`TICK`] while records wait
//! and every [`QUIET_TICK`] while none do) watches the
//! backlog. Past half the channel it puts the writer back to normal
//! priority, to take its fair share until the backlog is down to a batch
//! or so; then it yields again. A sustained flood therefore slows the
//! queries as before rather than dropping records; a burst that fits in
//! the channel costs them nothing.
//!
//! Returning a thread from `SCHED_IDLE` needs `CAP_SYS_NICE` or an
//! `RLIMIT_NICE` of at least 20 (systemd: `LimitNICE=+0`). Without either
//! the writer could be put to idle and never back, so a probe thread
//! tries both switches first, and without the right the writer keeps
//! normal priority (and says so in the log).

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use super::super::Counters;
use crate::telemetry;

/// How often the keeper looks at the backlog while records wait: at
/// 200,000 blocked queries a second the channel grows by 4,000 records in
/// a tick, far less than the half of it that is kept in reserve.
pub const TICK: Duration = Duration::from_millis(20);
/// How often it looks while nothing waits: a wake-up costs some 40 us on
/// a VM, which at every 20 ms would be 0.2 % of a core on an idle server.
/// A burst has grown by 20,000 records at most when it is first seen.
pub const QUIET_TICK: Duration = Duration::from_millis(100);

/// Backlog below which a writer at normal priority yields again.
fn low_water(capacity: usize) -> u64 {
    (capacity as u64 / 16).min(super::MAX_BATCH as u64)
}

/// Whether the writer should be idle, given whether it is now and the
/// records waiting in a channel of `capacity`. Two marks, so that it does
/// not flip at every tick around one.
pub fn idle_next(idle_now: bool, backlog: u64, capacity: usize) -> bool {
    if backlog > capacity as u64 / 2 {
        false
    } else if idle_now {
        true
    } else {
        backlog <= low_water(capacity)
    }
}

/// The writer thread's id, set by the writer when it starts (0 until
/// then): the keeper changes that thread's policy, not its own.
#[derive(Default)]
pub struct WriterThread(AtomicI32);

impl WriterThread {
    /// Called on the writer thread.
    pub fn register(&self) {
        self.0.store(gettid(), Ordering::Release);
    }

    fn tid(&self) -> Option<i32> {
        Some(self.0.load(Ordering::Acquire)).filter(|&t| t != 0)
    }
}

/// Start the keeper for a writer with a channel of `capacity`, or `None`
/// when this process may not bring a thread back from idle priority.
pub fn spawn_keeper(
    writer: Arc<WriterThread>,
    counters: Arc<Counters>,
    capacity: usize,
    stop: Arc<AtomicBool>,
) -> Option<JoinHandle<()>> {
    if let Err(error) = may_yield() {
        tracing::info!(
            %error,
            "the hit log writer keeps normal priority: returning it from idle priority needs \
             CAP_SYS_NICE or RLIMIT_NICE of 20 (systemd: LimitNICE=+0)"
        );
        return None;
    }
    let spawned = std::thread::Builder::new()
        .name("portcullis-hitlog-keeper".into())
        .spawn(move || keep(&writer, &counters, capacity, &stop));
    match spawned {
        Ok(handle) => Some(handle),
        Err(error) => {
            tracing::warn!(%error, "cannot start the hit log keeper; the writer keeps normal priority");
            None
        }
    }
}

fn keep(writer: &WriterThread, counters: &Counters, capacity: usize, stop: &AtomicBool) {
    // None: the writer's policy is not set yet (it starts at normal).
    let mut idle: Option<bool> = None;
    loop {
        let backlog = counters.backlog();
        ::metrics::gauge!(telemetry::HITLOG_BACKLOG).set(backlog as f64);
        if stop.load(Ordering::Acquire) {
            // The flush must not wait for spare time. The writer may
            // have finished already (an error then is no news).
            if let Some(tid) = writer.tid() {
                let _ = set_idle(tid, false);
            }
            return;
        }
        if let Some(tid) = writer.tid() {
            let want = idle_next(idle.unwrap_or(false), backlog, capacity);
            if idle != Some(want) {
                match set_idle(tid, want) {
                    Ok(()) => {
                        if idle == Some(true) && !want {
                            counters.catch_ups.fetch_add(1, Ordering::Relaxed);
                            ::metrics::counter!(telemetry::HITLOG_CATCH_UPS).increment(1);
                        }
                        idle = Some(want);
                    }
                    Err(error) => {
                        // The writer has exited, or the right was taken
                        // away: either way there is nothing left to keep.
                        tracing::warn!(%error, "cannot change the hit log writer's priority");
                        return;
                    }
                }
            }
        }
        std::thread::sleep(if backlog == 0 { QUIET_TICK } else { TICK });
    }
}

/// Whether this process may move a thread to idle priority and back: a
/// probe thread tries both on itself (left idle if the second fails,
/// which is why it is a thread of its own).
fn may_yield() -> io::Result<()> {
    std::thread::Builder::new()
        .name("portcullis-priority-probe".into())
        .spawn(|| {
            let tid = gettid();
            set_idle(tid, true)?;
            set_idle(tid, false)
        })?
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("the priority probe panicked")))
}

fn gettid() -> i32 {
    // SAFETY: gettid has no preconditions and cannot fail.
    #[allow(unsafe_code)]
    unsafe {
        libc::gettid()
    }
}

/// Put thread `tid` at `SCHED_IDLE` or back at `SCHED_OTHER`.
fn set_idle(tid: i32, idle: bool) -> io::Result<()> {
    let policy = if idle {
        libc::SCHED_IDLE
    } else {
        libc::SCHED_OTHER
    };
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` lives across the call, which only reads it.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::sched_setscheduler(tid, policy, &param) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Thread `tid`'s policy is `SCHED_IDLE` (for tests).
#[cfg(test)]
pub fn is_idle(tid: i32) -> bool {
    // SAFETY: reads the policy of a thread id; an unknown id gives -1.
    #[allow(unsafe_code)]
    let policy = unsafe { libc::sched_getscheduler(tid) };
    policy == libc::SCHED_IDLE
}

#[cfg(test)]
pub fn writer_tid(writer: &WriterThread) -> Option<i32> {
    writer.tid()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_writer_yields_until_half_the_channel_waits_and_again_once_caught_up() {
        let cap = 262_144;
        assert!(idle_next(true, 0, cap));
        assert!(idle_next(true, 131_072, cap), "half is still in reserve");
        assert!(!idle_next(true, 131_073, cap), "past half: catch up");
        // Caught up means down to a batch, not to the mark it left at.
        assert!(!idle_next(false, 100_000, cap));
        assert!(!idle_next(false, 16_385, cap));
        assert!(idle_next(false, 16_384, cap));
        // A small channel: the low mark is a sixteenth of it.
        assert!(!idle_next(false, 65, 1024));
        assert!(idle_next(false, 64, 1024));
        // A channel of one: any record waiting is a backlog.
        assert!(!idle_next(true, 1, 1));
        assert!(idle_next(false, 0, 1));
    }
}
