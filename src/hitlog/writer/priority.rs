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
//! backlog. Past half the channel it gives the writer a small share of a
//! busy core (nice 10, about a tenth), which moves the queries' latency
//! little; past three quarters, an equal share (nice 0). Once the backlog
//! is down to a batch or so, the writer yields again. A sustained flood
//! therefore slows the queries as before rather than dropping records; a
//! burst that fits in the channel costs them nothing.
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

/// The writer's priority, from yielding everything to an equal share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// `SCHED_IDLE`: only the time nothing else wants.
    Idle,
    /// `SCHED_OTHER` at nice 10: about a tenth of a core the workers
    /// keep busy, so catching up barely moves their latency.
    Behind,
    /// `SCHED_OTHER` at nice 0, the workers' own: an equal share, for a
    /// flood that a tenth cannot keep up with.
    Flooded,
}

/// Backlog at or below which a catching-up writer yields again.
fn low_water(capacity: u64) -> u64 {
    (capacity / 16).min(super::MAX_BATCH as u64)
}

/// The writer's next level, given its level now and the records waiting
/// in a channel of `capacity`. It climbs past half and past three
/// quarters of the channel, and yields again only once the backlog is
/// down to the low mark, so that it does not flip at every tick.
pub fn next_level(now: Level, backlog: u64, capacity: usize) -> Level {
    let capacity = capacity as u64;
    if backlog * 4 > capacity * 3 {
        Level::Flooded
    } else if backlog * 2 > capacity {
        now.max(Level::Behind)
    } else if backlog > low_water(capacity) {
        now
    } else {
        Level::Idle
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
    // None: not set yet (the writer starts as the workers are, Flooded).
    let mut level: Option<Level> = None;
    loop {
        let backlog = counters.backlog();
        ::metrics::gauge!(telemetry::HITLOG_BACKLOG).set(backlog as f64);
        if stop.load(Ordering::Acquire) {
            // The flush must not wait for spare time. The writer may
            // have finished already (an error then is no news).
            if let Some(tid) = writer.tid() {
                let _ = set_level(tid, Level::Flooded);
            }
            return;
        }
        if let Some(tid) = writer.tid() {
            let want = next_level(level.unwrap_or(Level::Flooded), backlog, capacity);
            if level != Some(want) {
                match set_level(tid, want) {
                    Ok(()) => {
                        if level == Some(Level::Idle) {
                            counters.catch_ups.fetch_add(1, Ordering::Relaxed);
                            ::metrics::counter!(telemetry::HITLOG_CATCH_UPS).increment(1);
                        }
                        level = Some(want);
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
            set_level(tid, Level::Idle)?;
            set_level(tid, Level::Behind)?;
            set_level(tid, Level::Flooded)
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

/// Put thread `tid` at `level`. The nice value goes first: leaving
/// `SCHED_IDLE` is judged against the nice value the thread has then.
/// Plain system calls rather than the `thread-priority` crate (which the
/// compiler thread uses for itself): for a normal policy that crate sets
/// the nice value of the calling thread, and here the keeper changes the
/// writer's.
fn set_level(tid: i32, level: Level) -> io::Result<()> {
    let (policy, nice) = match level {
        Level::Idle => (libc::SCHED_IDLE, 0),
        Level::Behind => (libc::SCHED_OTHER, 10),
        Level::Flooded => (libc::SCHED_OTHER, 0),
    };
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: plain system calls on a thread id; `param` lives across the
    // call that reads it.
    #[allow(unsafe_code)]
    let rc = unsafe {
        // A thread's nice value is its own on Linux (PRIO_PROCESS with a
        // thread id).
        if libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice) == 0 {
            libc::sched_setscheduler(tid, policy, &param)
        } else {
            -1
        }
    };
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
    fn the_writer_climbs_past_half_and_three_quarters_and_yields_once_caught_up() {
        use Level::*;
        let cap = 262_144;
        assert_eq!(next_level(Idle, 0, cap), Idle);
        assert_eq!(next_level(Idle, 131_072, cap), Idle, "half is in reserve");
        assert_eq!(next_level(Idle, 131_073, cap), Behind, "past half");
        assert_eq!(next_level(Behind, 196_608, cap), Behind);
        assert_eq!(next_level(Behind, 196_609, cap), Flooded, "past 3/4");
        assert_eq!(next_level(Idle, 200_000, cap), Flooded);
        // Flooded stays so until caught up; it does not step down to
        // Behind on the way.
        assert_eq!(next_level(Flooded, 150_000, cap), Flooded);
        assert_eq!(next_level(Flooded, 16_385, cap), Flooded);
        assert_eq!(next_level(Behind, 16_385, cap), Behind);
        // Caught up means down to a batch, not to the mark it left at.
        assert_eq!(next_level(Flooded, 16_384, cap), Idle);
        assert_eq!(next_level(Behind, 0, cap), Idle);
        // A small channel: the low mark is a sixteenth of it.
        assert_eq!(next_level(Behind, 65, 1024), Behind);
        assert_eq!(next_level(Behind, 64, 1024), Idle);
        // A channel of one: any record waiting is past three quarters.
        assert_eq!(next_level(Idle, 1, 1), Flooded);
        assert_eq!(next_level(Flooded, 0, 1), Idle);
    }
}
