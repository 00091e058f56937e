//! How busy each worker thread is, and the moves that follow (policy.rs decides them): each
//! thread samples its own CPU time ten times a second, keeps a count of the clients it runs, and
//! hands a number of them to another thread, which its clients take up one by one when they are
//! next idle between transactions (`leaving`).
//!
//! Off with one thread, and with `worker_busy_percent = 0` (clients dealt to the threads in
//! turn, never moved).

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::policy::{self, WHOLE};

/// How often a thread looks at its own load.
const PERIOD: Duration = Duration::from_millis(100);

/// One thread's figures, on a cache line of its own (each is written by its thread only, and
/// read by the others at accept and at their own samples).
#[repr(align(128))]
#[derive(Default)]
struct Slot {
    /// Per mille of a core, smoothed over the last two periods.
    busy: AtomicU32,
    /// Clients whose relay runs on this thread.
    clients: AtomicU32,
    /// Clients this thread handed to another.
    moved_out: AtomicU64,
}

/// The per-thread figures and the busy mark, once the threads are planned.
struct Load {
    slots: Vec<Slot>,
    mark: u32,
}

static LOAD: OnceLock<Load> = OnceLock::new();

/// True when clients are placed and moved by load (several threads, a mark above 0): read on
/// every park, so a plain flag.
static BALANCING: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// This thread's clients still to hand over, and to which thread.
    static SHEDDING: Cell<(u16, u32)> = const { Cell::new((0, 0)) };
}

/// Sets up the figures for `threads` threads with the busy mark `percent` (0: off).
pub(super) fn plan(threads: usize, percent: u32) {
    let load = Load { slots: (0..threads).map(|_| Slot::default()).collect(), mark: percent.min(100) * 10 };
    if LOAD.set(load).is_ok() {
        BALANCING.store(threads > 1 && percent > 0, Relaxed);
    }
}

/// True when clients go where the load says.
#[inline]
pub fn balancing() -> bool {
    BALANCING.load(Relaxed)
}

/// The thread a new client goes to.
pub(super) fn place() -> usize {
    let Some(load) = LOAD.get() else { return 0 };
    let busy: Vec<u32> = load.slots.iter().map(|s| s.busy.load(Relaxed)).collect();
    policy::place(&busy, load.mark)
}

/// A client's relay runs on this thread from now on (until [`Hosted`] drops).
pub struct Hosted(Option<u16>);

impl Hosted {
    /// Counts a relay starting on this thread.
    pub fn here() -> Self {
        if !balancing() {
            return Hosted(None);
        }
        let me = super::here();
        if let Some(slot) = LOAD.get().and_then(|l| l.slots.get(usize::from(me))) {
            slot.clients.fetch_add(1, Relaxed);
        }
        Hosted(Some(me))
    }
}

impl Drop for Hosted {
    fn drop(&mut self) {
        if let Some(slot) = self.0.and_then(|me| LOAD.get()?.slots.get(usize::from(me))) {
            slot.clients.fetch_sub(1, Relaxed);
        }
    }
}

/// The thread an idle client of this thread should move to now, if any (and counts it gone).
#[inline]
pub fn leaving() -> Option<u16> {
    if !balancing() {
        return None;
    }
    SHEDDING.with(|s| {
        let (to, left) = s.get();
        (left > 0).then(|| {
            s.set((to, left - 1));
            if let Some(slot) = LOAD.get().and_then(|l| l.slots.get(usize::from(super::here()))) {
                slot.moved_out.fetch_add(1, Relaxed);
            }
            to
        })
    })
}

/// This thread's CPU time so far: the kernel's scheduler figure in nanoseconds, or (without
/// it) user and system time in clock ticks. Read from /proc ten times a second: rustix's
/// `clock_gettime` goes through the vDSO, whose set-up crashes under valgrind
/// (benches/instructions.sh).
fn thread_cpu() -> Duration {
    if let Some(ns) = std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()))
    {
        return Duration::from_nanos(ns);
    }
    let ticks = std::fs::read_to_string("/proc/thread-self/stat").ok().and_then(|s| {
        // The fields after the command name, which is in parentheses and may hold spaces.
        let rest = &s[s.rfind(')')? + 1..];
        let mut f = rest.split_whitespace().skip(11);
        Some(f.next()?.parse::<u64>().ok()? + f.next()?.parse::<u64>().ok()?)
    });
    // Linux's USER_HZ is 100 on every architecture it runs on.
    Duration::from_millis(ticks.unwrap_or(0) * 10)
}

/// Samples this thread's load every [`PERIOD`] and sets what it sheds; runs for the process's
/// life on every worker thread's runtime while balancing.
pub(super) async fn watch() {
    let Some(load) = LOAD.get().filter(|_| balancing()) else { return };
    let me = usize::from(super::here());
    let Some(slot) = load.slots.get(me) else { return };
    let mut tick = tokio::time::interval(PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is at once: the first share is measured over a whole period after it.
    tick.tick().await;
    let (mut cpu, mut at) = (thread_cpu(), Instant::now());
    loop {
        tick.tick().await;
        let (cpu_now, now) = (thread_cpu(), Instant::now());
        let wall = now.duration_since(at).as_micros().max(1);
        let used = cpu_now.saturating_sub(cpu).as_micros();
        let share = (used * u128::from(WHOLE) / wall).min(u128::from(WHOLE)) as u32;
        (cpu, at) = (cpu_now, now);
        let busy = (slot.busy.load(Relaxed) + share) / 2;
        slot.busy.store(busy, Relaxed);
        let shares: Vec<u32> = load.slots.iter().map(|s| s.busy.load(Relaxed)).collect();
        let clients: Vec<u32> = load.slots.iter().map(|s| s.clients.load(Relaxed)).collect();
        let shed = policy::shed(me, &shares, &clients, load.mark);
        SHEDDING.with(|s| {
            s.set(shed.map_or((0, 0), |d| (u16::try_from(d.to).unwrap_or(0), d.clients)));
        });
    }
}

/// Every thread's figures, for the metrics: (busy per cent, clients, clients moved out).
pub fn figures() -> Vec<(u32, u32, u64)> {
    if !balancing() {
        return Vec::new();
    }
    LOAD.get()
        .map(|l| {
            l.slots
                .iter()
                .map(|s| (s.busy.load(Relaxed) / 10, s.clients.load(Relaxed), s.moved_out.load(Relaxed)))
                .collect()
        })
        .unwrap_or_default()
}
