//! The pooler's own work per transaction, in nanoseconds, without sockets or PostgreSQL
//! (`cargo bench --bench hot_path`). What every transaction does besides reading and writing:
//!
//! - `pool_lease`: take an idle server from the pool, attach, release it (the pool mutex and
//!   `cl_active`), and add the transaction to the pool's counters and histograms, as the relay
//!   does at each ReadyForQuery. This is the only state clients on different threads share: run
//!   with 1, 2 and 4 threads on one pool it shows what contention costs. Each bench thread counts
//!   as a worker of its own (workers.rs): it takes the servers at home on it first and bumps its
//!   own copy of the counters, as pgmux's worker threads do.
//! - `extended_round`: pgbench -M extended's transaction through the prepared-statement mapping
//!   (rewrite Parse/Bind/Describe/Execute/Sync, match the five answers), with the cache of unnamed
//!   statements on (a cache hit: the Parse is answered by pgmux) and off. Per-client state only.
//! - `framing`: a pgbench -S answer (RowDescription, DataRow, CommandComplete, ReadyForQuery)
//!   split by headers and ReadyForQuery read, with the transaction books (`Flow`).
//!
//! docs/BENCHMARKS.md records a run and docs/ARCHITECTURE.md what it says about many cores.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU16, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};

use bytes::BytesMut;
use pgmux::client::ExtendedRound;
use pgmux::pool::{Pool, PoolStats};
use pgmux::shared::Shared;
use pgmux_protocol::backend::ready_for_query;
use pgmux_protocol::flow::Flow;
use pgmux_protocol::frame::peek_header;
use pgmux_protocol::tags;

fn main() {
    divan::main();
}

/// Idle servers in the shared pool: more than threads, so that a take never waits.
const SERVERS: u64 = 20;

struct Rig {
    pool: Arc<Pool>,
    // The runtime the fake servers' sockets are registered with (it also runs the probe of a
    // server idle too long), and their other ends.
    runtime: tokio::runtime::Runtime,
    _backends: Vec<tokio::net::UnixStream>,
}

fn rig() -> &'static Rig {
    static RIG: OnceLock<Rig> = OnceLock::new();
    RIG.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let _entered = runtime.enter();
        // As many workers as the most threads a bench runs with.
        pgmux::workers::plan(4, 0);
        let shared = Shared::fake("pool_mode = transaction\ndefault_pool_size = 20");
        let pool = shared.fake_pool();
        let backends = (1..=SERVERS).map(|id| pool.park_fake_server(id)).collect();
        // The pool keeps a reference to its state; the rest of `shared` may go.
        std::mem::forget(shared);
        drop(_entered);
        Rig { pool, runtime, _backends: backends }
    })
}

/// Makes the calling bench thread a worker of its own, inside the rig's runtime (a server it
/// takes from another thread moves its socket's registration, as in pgmux), once per thread.
fn become_worker(rig: &'static Rig) {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    thread_local! {
        static ENTERED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    if !ENTERED.replace(true) {
        // Never left: a guard dropped with the thread's locals would find tokio's gone.
        std::mem::forget(rig.runtime.enter());
        pgmux::workers::adopt(NEXT.fetch_add(1, Relaxed) % 4);
    }
}

#[divan::bench(threads = [1, 2, 4], sample_count = 200, sample_size = 2000)]
fn pool_lease(bencher: divan::Bencher) {
    let rig = rig();
    let pool = &rig.pool;
    let settings = pool.settings();
    bencher.bench(|| {
        become_worker(rig);
        // A server idle for more than 20 ms (between samples) is probed first: the slow path.
        let mut lease = match pool.take_ready(&settings, pgmux::clock::Micros::now()) {
            Some(lease) => lease,
            None => rig.runtime.handle().block_on(pool.checkout()).expect("an idle server"),
        };
        lease.activate();
        lease.release_with(&settings);
        let counters = pool.counters.here();
        let stats = &counters.stats;
        PoolStats::add(&stats.query_count, 1);
        PoolStats::add(&stats.query_time_us, 120);
        PoolStats::add(&stats.xact_count, 1);
        PoolStats::add(&stats.xact_time_us, 120);
        counters.histograms.query.observe(120);
        counters.histograms.xact.observe(120);
    });
}

#[divan::bench(threads = [1, 2], args = [true, false], sample_count = 200, sample_size = 2000)]
fn extended_round(bencher: divan::Bencher, cache_unnamed: bool) {
    thread_local! {
        static ROUNDS: RefCell<[Option<ExtendedRound>; 2]> = const { RefCell::new([None, None]) };
    }
    bencher.bench(|| {
        ROUNDS.with(|r| {
            let mut r = r.borrow_mut();
            let round = r[cache_unnamed as usize].get_or_insert_with(|| ExtendedRound::new(cache_unnamed));
            divan::black_box(round.run())
        })
    });
}

/// A pgbench -S answer: one int4 column, one row.
fn select_answer() -> BytesMut {
    use pgmux_protocol::build;
    let mut b = BytesMut::new();
    build::row_description(&mut b, &[("abalance", 23)]);
    build::data_row(&mut b, &[Some(b"0")]);
    build::command_complete(&mut b, "SELECT 1");
    build::ready_for_query(&mut b, b'I');
    b
}

#[divan::bench]
fn framing(bencher: divan::Bencher) {
    let answer = select_answer();
    let mut flow = Flow::default();
    bencher.bench_local(|| {
        flow.request(false);
        let mut at = 0;
        while let Some((tag, total)) = peek_header(&answer[at..], usize::MAX).unwrap() {
            if tag == tags::backend::READY_FOR_QUERY {
                flow.ready(ready_for_query(&answer[at + 5..at + total]).unwrap());
            }
            at += total;
        }
        divan::black_box(flow.idle())
    });
}
