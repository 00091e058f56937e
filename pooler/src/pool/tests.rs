//! The pool's own logic without a PostgreSQL: servers here are one end of a socket pair, parked
//! in the idle list as if they had logged in, so that checkout, leases, hand-off to waiters and
//! the size limit can be checked message by message.

use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UnixStream;

use super::{Caller, Pool, PoolSettings};
use crate::shared::Shared;

fn shared(general: &str) -> Arc<Shared> {
    Shared::fake(general)
}

fn pool(s: &Shared) -> Arc<Pool> {
    s.fake_pool()
}

fn park(pool: &Pool, id: u64) -> UnixStream {
    pool.park_fake_server(id)
}

fn counts(pool: &Pool) -> (u32, usize, i64) {
    let st = pool.state.lock();
    (st.total, st.idle.len(), pool.clients_active.load(Relaxed))
}

#[tokio::test]
async fn a_released_lease_goes_back_idle_and_stops_counting_its_client() {
    let s = shared("");
    let p = pool(&s);
    let _backend = park(&p, 1);
    let mut lease = p.checkout().await.unwrap();
    assert_eq!(counts(&p), (1, 0, 0));
    lease.activate();
    lease.activate();
    assert_eq!(counts(&p), (1, 0, 1), "activating twice counts once");
    lease.release();
    assert_eq!(counts(&p), (1, 1, 0));
}

#[tokio::test]
async fn a_lease_dropped_without_a_verdict_closes_its_server_and_frees_the_slot() {
    let s = shared("");
    let p = pool(&s);
    let mut backend = park(&p, 1);
    let mut lease = p.checkout().await.unwrap();
    lease.activate();
    drop(lease);
    assert_eq!(counts(&p), (0, 0, 0));
    // The backend sees its connection closed.
    let mut buf = [0u8; 1];
    let n = tokio::io::AsyncReadExt::read(&mut backend, &mut buf).await.unwrap();
    assert_eq!(n, 0);
}

#[tokio::test]
async fn a_closed_lease_frees_its_slot() {
    let s = shared("");
    let p = pool(&s);
    let _backend = park(&p, 1);
    let lease = p.checkout().await.unwrap();
    lease.close("test");
    assert_eq!(counts(&p), (0, 0, 0));
}

#[tokio::test]
async fn a_released_server_goes_straight_to_the_longest_waiter() {
    let s = shared("default_pool_size = 1");
    let p = pool(&s);
    let _backend = park(&p, 7);
    let held = p.checkout().await.unwrap();
    let waiter = tokio::spawn({
        let p = p.clone();
        async move { p.checkout().await.map(|l| l.id) }
    });
    // Let the waiter queue up.
    while p.state.lock().waiters.is_empty() {
        tokio::task::yield_now().await;
    }
    held.release();
    assert_eq!(waiter.await.unwrap().unwrap(), 7);
    // The waiter's lease was dropped in its task without a verdict: closed.
    assert_eq!(counts(&p), (0, 0, 0));
}

#[tokio::test]
async fn a_waiter_that_gives_up_does_not_lose_the_server_handed_to_it() {
    let s = shared("default_pool_size = 1");
    let p = pool(&s);
    let _backend = park(&p, 3);
    let held = p.checkout().await.unwrap();
    let settings = p.settings();
    let mut waiting = Box::pin(p.checkout_with(&settings, None, Caller::Session));
    assert!(futures_poll_once(&mut waiting).await.is_none(), "a full pool makes the client wait");
    held.release();
    // The server is in the waiter's channel; the waiter goes away without reading it.
    drop(waiting);
    assert_eq!(counts(&p), (1, 1, 0), "the server is back in the idle list");
}

/// A client queued behind a full, healthy pool waits on its ticket alone (no re-check timer), so
/// a RELOAD that makes the pool bigger must give it room itself.
#[tokio::test]
async fn a_reload_that_grows_a_full_pool_gives_its_queued_clients_room_at_once() {
    let s = shared("default_pool_size = 1");
    let p = pool(&s);
    let _backend = park(&p, 5);
    p.state.lock().proven = true;
    let held = p.checkout().await.unwrap();
    let settings = p.settings();
    let mut waiting = Box::pin(p.checkout_for_caller_timed(&settings, None, Caller::Session));
    assert!(futures_poll_once(&mut waiting).await.is_none(), "a full pool makes the client wait");
    assert_eq!(p.state.lock().waiters.len(), 1);
    let bigger = shared("default_pool_size = 2");
    let config = bigger.config();
    p.set_settings(PoolSettings::derive(&config, &config.database("app").unwrap(), "u"));
    assert!(p.state.lock().waiters.is_empty(), "the queued client was handed a slot");
    assert_eq!(counts(&p).0, 2, "the slot is reserved for it");
    drop(waiting);
    assert_eq!(counts(&p).0, 1, "a client that goes away gives its slot back");
    held.release();
}

/// Clients queued behind a full, healthy pool wait on their tickets alone, with no timer. When a
/// server is lost and the connect that should replace it fails, the failed connect empties the
/// queue (pool/open.rs), so that they look at the pool again on their own: a server that comes
/// back reaches them without anyone handing it over.
#[tokio::test]
async fn a_failed_connect_sends_quiet_waiters_back_to_looking_on_their_own() {
    // Nothing listens at the fake pool's target (/tmp, port 5432): every connect fails.
    let s = shared("default_pool_size = 1\nserver_login_retry = 0.05");
    let p = pool(&s);
    let _backend = park(&p, 1);
    p.state.lock().proven = true;
    let held = p.checkout().await.unwrap();
    let settings = p.settings();
    let waiter = |p: Arc<Pool>, settings: Arc<PoolSettings>| {
        tokio::spawn(async move { p.checkout_for_caller_timed(&settings, None, Caller::Session).await.map(|l| l.id) })
    };
    let first = waiter(p.clone(), settings.clone());
    while p.state.lock().waiters.is_empty() {
        tokio::task::yield_now().await;
    }
    let second = waiter(p.clone(), settings.clone());
    while p.state.lock().waiters.len() < 2 {
        tokio::task::yield_now().await;
    }
    // The held server is lost: its slot goes to the first waiter, whose connect fails.
    held.close("test");
    tokio::time::timeout(Duration::from_secs(5), async {
        while p.state.lock().last_failure.is_none() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the first waiter's connect failed");
    first.abort();
    // A server turns up in the idle list without a hand-off (as one that finished connecting
    // for another client would be parked): the second waiter must find it.
    let _back = park(&p, 2);
    let got = tokio::time::timeout(Duration::from_secs(5), second).await;
    assert_eq!(got.expect("the second waiter found the server").unwrap().unwrap(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_size_holds_across_threads() {
    let s = shared("default_pool_size = 2");
    let p = pool(&s);
    let _backends = [park(&p, 1), park(&p, 2)];
    let holding = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (p, holding, most) = (p.clone(), holding.clone(), most.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..200 {
                let mut lease = p.checkout().await.unwrap();
                lease.activate();
                let now = holding.fetch_add(1, SeqCst) + 1;
                most.fetch_max(now, SeqCst);
                tokio::task::yield_now().await;
                holding.fetch_sub(1, SeqCst);
                lease.release();
            }
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(30), t).await.unwrap().unwrap();
    }
    assert!(most.load(SeqCst) <= 2, "at most pool_size servers out at once, saw {}", most.load(SeqCst));
    assert_eq!(most.load(SeqCst), 2, "both servers were used");
    assert_eq!(counts(&p), (2, 2, 0));
}

/// Polls a future once: `Some` when it finished at once.
async fn futures_poll_once<F: std::future::Future + Unpin>(f: &mut F) -> Option<F::Output> {
    std::future::poll_fn(|cx| {
        std::task::Poll::Ready(match std::pin::Pin::new(&mut *f).poll(cx) {
            std::task::Poll::Ready(v) => Some(v),
            std::task::Poll::Pending => None,
        })
    })
    .await
}

/// Several workers (workers.rs): a take prefers the idle server whose socket is registered on
/// the calling thread, in the list's usual order, and falls back to the usual one.
#[tokio::test]
async fn a_take_prefers_a_server_at_home_on_the_calling_thread() {
    let s = shared("");
    let p = pool(&s);
    let _backends: Vec<_> = (1..=4).map(|id| park(&p, id)).collect();
    let mut st = p.state.lock();
    for (server, home) in st.idle.iter_mut().zip([0, 1, 0, 1]) {
        server.home = home;
    }
    let id = |s: Option<Box<crate::server::ServerConn>>| s.map(|s| s.id);
    assert_eq!(id(st.pop_idle(false, Some(0))), Some(3), "the last released at home");
    assert_eq!(id(st.pop_idle(true, Some(1))), Some(2), "the first at home (server_round_robin)");
    assert_eq!(id(st.pop_idle(false, Some(2))), Some(4), "none at home: the last released");
    assert_eq!(id(st.pop_idle(false, None)), Some(1), "one worker: the last released");
    assert_eq!(id(st.pop_idle(false, Some(0))), None);
}

/// Several workers: a release hands its server to the longest waiter of its own thread ahead
/// of a longer one elsewhere, four times in a row at most; then the longest waiter gets it.
#[tokio::test]
async fn a_release_serves_its_own_threads_waiter_first_at_most_four_times_in_a_row() {
    let s = shared("");
    let p = pool(&s);
    let mut st = p.state.lock();
    let mut receivers = Vec::new();
    for home in [1, 0, 0, 0, 0, 0, 1, 0] {
        let (tx, rx) = tokio::sync::oneshot::channel();
        receivers.push(rx);
        st.waiters.push_back(super::Waiter { since: tokio::time::Instant::now(), home, tx });
    }
    let mut served = Vec::new();
    while let Some(w) = st.next_waiter(Some(0)) {
        served.push(w.home);
    }
    assert_eq!(served, [0, 0, 0, 0, 1, 0, 0, 1]);
    for home in [1, 0] {
        let (tx, rx) = tokio::sync::oneshot::channel();
        receivers.push(rx);
        st.waiters.push_back(super::Waiter { since: tokio::time::Instant::now(), home, tx });
    }
    assert_eq!(st.next_waiter(None).map(|w| w.home), Some(1), "one worker: the longest waiter");
}
