//! Worker threads: one single-threaded runtime per thread, each with its own epoll and timer
//! wheel, clients placed on them at accept and moved between them by load (load.rs, policy.rs).
//!
//! With `worker_threads = N` (N > 1) the main thread runs worker 0 (its runtime also serves the
//! listeners, the console's tick and the signals) and N - 1 more threads run one runtime each.
//! A client's task, its socket's readiness and its timers are one thread's at a time. With
//! `worker_busy_percent` above 0 (the default, 70) a new client goes to the first thread under
//! that mark, and a client idle between transactions may move to another thread when its own is
//! over the mark or when two threads' clients fit on one (its relay ends on one thread and
//! starts again on the other, the socket's registration moved). With 0 clients are dealt to the
//! threads in turn and stay. Tokio's multi-thread runtime shared one epoll and moved tasks
//! between workers at every wake-up; on 2 cores that cost up to 48% more CPU per transaction
//! than one thread (docs/BENCHMARKS.md).
//!
//! Servers are shared by all threads through their pool. A server's socket is registered with
//! the runtime of the thread that last used it (its home): the pool hands a thread the servers
//! at home there first, and a server leased by another thread moves its registration over
//! ([`crate::net::Stream::rehome`]), two `epoll_ctl` calls, so that its readiness wakes the
//! client's thread directly.

mod load;
mod policy;

pub use load::{balancing, figures, leaving, Hosted};

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

/// The worker threads, and where the next client goes when they are dealt in turn.
struct Workers {
    /// Senders to every worker, the main thread's (0) included.
    all: Vec<mpsc::UnboundedSender<Job>>,
    next: AtomicUsize,
}

static WORKERS: OnceLock<Workers> = OnceLock::new();

/// The main thread's job queue, until its runtime serves it ([`on_main_runtime`]).
static MAIN_JOBS: std::sync::Mutex<Option<mpsc::UnboundedReceiver<Job>>> = std::sync::Mutex::new(None);

/// The worker threads the process runs or will run (set before the pools are made, which keep
/// a copy of their counters per worker).
static COUNT: AtomicUsize = AtomicUsize::new(1);

/// How many worker threads the process runs (1 until [`plan`]).
pub fn count() -> usize {
    COUNT.load(Relaxed)
}

/// Sets the number of worker threads [`start`] will run and the busy mark (per cent of a core,
/// 0: no placing or moving by load); called before the config's pools are made.
pub fn plan(count: usize, busy_percent: u32) {
    COUNT.store(count.max(1), Relaxed);
    load::plan(count.max(1), busy_percent);
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
    WORKERS.get().is_some_and(|w| w.all.len() > 1)
}

/// Starts the planned worker threads but one beside the calling (main) one. Called once, before
/// the listeners accept; a second call is ignored.
///
/// # Errors
/// A thread or its runtime cannot be created.
pub fn start() -> std::io::Result<()> {
    let count = count();
    let mut all = Vec::with_capacity(count);
    let (main_tx, main_rx) = mpsc::unbounded_channel::<Job>();
    all.push(main_tx);
    for n in 1..count {
        let (tx, rx) = mpsc::unbounded_channel::<Job>();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let home = u16::try_from(n).unwrap_or(u16::MAX);
        std::thread::Builder::new().name(format!("pgmux-worker-{n}")).spawn(move || {
            HOME.with(|h| h.set(home));
            runtime.block_on(async {
                tokio::spawn(load::watch());
                serve(rx).await;
            });
        })?;
        all.push(tx);
    }
    if count > 1 {
        *MAIN_JOBS.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(main_rx);
    }
    let _ = WORKERS.set(Workers { all, next: AtomicUsize::new(0) });
    Ok(())
}

/// Serves the main thread's share of the work: the jobs other threads send it (clients moving
/// here) and its load samples. Called once inside the main thread's runtime.
pub fn on_main_runtime() {
    let jobs = MAIN_JOBS.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
    if let Some(rx) = jobs {
        tokio::spawn(serve(rx));
        tokio::spawn(load::watch());
    }
}

/// A worker's loop: runs each job inside its runtime until the sender goes away.
async fn serve(mut jobs: mpsc::UnboundedReceiver<Job>) {
    while let Some(job) = jobs.recv().await {
        job();
    }
}

/// Runs a new client's `job` on the worker the load says (or the next in turn); in place when
/// there is only the main one.
pub fn dispatch(job: Job) {
    let Some(w) = WORKERS.get().filter(|w| w.all.len() > 1) else {
        job();
        return;
    };
    let n = if balancing() { load::place() } else { w.next.fetch_add(1, Relaxed) % w.all.len() };
    send_to(n, job);
}

/// Runs `job` on worker `n`: in place when that is this thread (or when the worker is gone:
/// its thread panicked).
pub fn send_to(n: usize, job: Job) {
    let Some(tx) = WORKERS.get().and_then(|w| w.all.get(n)).filter(|_| n != usize::from(here())) else {
        job();
        return;
    };
    if let Err(mpsc::error::SendError(job)) = tx.send(job) {
        job();
    }
}
