//! Worker threads: one single-threaded runtime per thread, each with its own epoll and timer
//! wheel, and clients spread over them at accept.
//!
//! With `worker_threads = N` (N > 1) the main thread runs worker 0 (its runtime also serves the
//! listeners, the console's tick and the signals) and N - 1 more threads run one runtime each.
//! A client stays on the thread it was given for its whole life, so its task, its socket's
//! readiness and its timers never cross threads. Tokio's multi-thread runtime shared one epoll
//! and moved tasks between workers at every wake-up; on 2 cores that cost up to 48% more CPU per
//! transaction than one thread (docs/BENCHMARKS.md).
//!
//! Servers are shared by all threads through their pool. A server's socket is registered with
//! the runtime of the thread that last used it (its home): the pool hands a thread the servers
//! at home there first, and a server leased by another thread moves its registration over
//! ([`crate::net::Stream::rehome`]), two `epoll_ctl` calls, so that its readiness wakes the
//! client's thread directly.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::OnceLock;

use tokio::sync::mpsc;

/// Work handed to a worker: runs inside its runtime (registers sockets there, spawns there).
pub type Job = Box<dyn FnOnce() + Send>;

thread_local! {
    /// This thread's worker number (0: the main thread, and any thread not started here).
    static HOME: Cell<u16> = const { Cell::new(0) };
}

/// The worker threads past the main one, and where the next client goes.
struct Workers {
    /// Senders to workers 1..N (worker 0, the main thread, runs its jobs in place).
    others: Vec<mpsc::UnboundedSender<Job>>,
    next: AtomicUsize,
}

static WORKERS: OnceLock<Workers> = OnceLock::new();

/// The worker threads the process runs or will run (set before the pools are made, which keep
/// a copy of their counters per worker).
static COUNT: AtomicUsize = AtomicUsize::new(1);

/// How many worker threads the process runs (1 until [`plan`]).
pub fn count() -> usize {
    COUNT.load(Relaxed)
}

/// Sets the number of worker threads [`start`] will run; called before the config's pools are
/// made.
pub fn plan(count: usize) {
    COUNT.store(count.max(1), Relaxed);
}

/// This thread's worker number: the home its newly registered sockets get.
pub fn here() -> u16 {
    HOME.with(Cell::get)
}

/// Makes the calling thread count as worker `home` (benches and tests that drive a pool from
/// threads of their own; the process's workers are numbered by [`start`]).
pub fn adopt(home: u16) {
    HOME.with(|h| h.set(home));
}

/// This thread's worker number when several workers share the pools (what pool choices that
/// favour the calling thread go by), `None` with one worker.
#[inline]
pub fn local() -> Option<u16> {
    several().then(here)
}

/// True when more than one worker serves clients (servers may then be at home elsewhere).
pub fn several() -> bool {
    WORKERS.get().is_some_and(|w| !w.others.is_empty())
}

/// Starts the planned worker threads but one beside the calling (main) one. Called once, before
/// the listeners accept; a second call is ignored.
///
/// # Errors
/// A thread or its runtime cannot be created.
pub fn start() -> std::io::Result<()> {
    let count = count();
    let mut others = Vec::with_capacity(count.saturating_sub(1));
    for n in 1..count {
        let (tx, rx) = mpsc::unbounded_channel::<Job>();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let home = u16::try_from(n).unwrap_or(u16::MAX);
        std::thread::Builder::new().name(format!("pgmux-worker-{n}")).spawn(move || {
            HOME.with(|h| h.set(home));
            runtime.block_on(serve(rx));
        })?;
        others.push(tx);
    }
    let _ = WORKERS.set(Workers { others, next: AtomicUsize::new(0) });
    Ok(())
}

/// A worker's loop: runs each job inside its runtime until the sender goes away.
async fn serve(mut jobs: mpsc::UnboundedReceiver<Job>) {
    while let Some(job) = jobs.recv().await {
        job();
    }
}

/// Runs `job` on the next worker in turn (in place when there is only the main one).
pub fn dispatch(job: Job) {
    let Some(w) = WORKERS.get().filter(|w| !w.others.is_empty()) else {
        job();
        return;
    };
    let n = w.next.fetch_add(1, Relaxed) % (w.others.len() + 1);
    if n == 0 {
        job();
        return;
    }
    if let Err(mpsc::error::SendError(job)) = w.others[n - 1].send(job) {
        // The worker is gone (its thread panicked): serve the client here instead.
        job();
    }
}
