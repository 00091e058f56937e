//! The running process's side of an online restart: on the console command `TAKEOVER` (user
//! `pgbouncer`, unix socket, same OS user) it passes its listeners, stops accepting, and hands
//! each client over as soon as the client is idle; `Done` when none is left.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::net::UnixStream;
use tokio::sync::mpsc;

use super::{fds, ClientRecord, Frame, ListenerKind};
use crate::shared::{RunState, Shared};

/// A client's state and socket on their way to the new process.
type Parcel = (ClientRecord, OwnedFd);

/// What the running process keeps for a takeover, and its progress.
#[derive(Debug, Default)]
pub struct Giving {
    listeners: Mutex<Vec<(ListenerKind, OwnedFd)>>,
    requested: AtomicBool,
    finished: AtomicBool,
    tx: Mutex<Option<mpsc::UnboundedSender<Parcel>>>,
}

impl Giving {
    /// Keeps a duplicate of a listening socket, to pass on a takeover.
    pub fn keep_listener(&self, kind: ListenerKind, fd: OwnedFd) {
        self.listeners.lock().push((kind, fd));
    }

    /// Closes the kept duplicates: on shutdown the listening sockets must really close, so that
    /// connects are refused at once (what a peer behind so_reuseport relies on).
    pub fn drop_listeners(&self) {
        self.listeners.lock().clear();
    }

    /// True once a takeover started: idle clients hand themselves over.
    #[inline]
    pub fn requested(&self) -> bool {
        self.requested.load(Ordering::Relaxed)
    }

    /// True once every client has moved or left.
    pub fn finished(&self) -> bool {
        self.finished.load(Ordering::Acquire)
    }

    /// Passes a client on. If the new process has gone meanwhile, the socket is closed.
    pub fn hand(&self, record: ClientRecord, fd: OwnedFd) {
        if let Some(tx) = self.tx.lock().as_ref() {
            let _ = tx.send((record, fd));
        }
    }
}

fn encode(frame: &Frame) -> Vec<u8> {
    serde_json::to_vec(frame).expect("takeover frames serialize")
}

/// Clients other than console sessions (the takeover's own included), logging in or logged in.
fn pooled_clients(shared: &Shared) -> i64 {
    shared.client_count() as i64 - shared.admin_clients.load(Ordering::Relaxed)
}

/// Runs a takeover over `sock` (the console connection of the new process) to its end.
pub async fn give(shared: Arc<Shared>, mut sock: UnixStream) {
    let giving = &shared.giving;
    if giving.requested.swap(true, Ordering::AcqRel) {
        tracing::warn!("takeover: refused a second takeover request");
        return;
    }
    let (tx, mut rx) = mpsc::unbounded_channel::<Parcel>();
    *giving.tx.lock() = Some(tx);
    let listeners = std::mem::take(&mut *giving.listeners.lock());
    let kinds: Vec<ListenerKind> = listeners.iter().map(|(k, _)| k.clone()).collect();
    let raw: Vec<BorrowedFd<'_>> = listeners.iter().map(|(_, fd)| fd.as_fd()).collect();
    let sent = fds::send(&mut sock, &encode(&Frame::Listeners(kinds)), &raw).await;
    drop(raw);
    if let Err(e) = sent {
        // Nothing has moved yet: go on serving as before.
        tracing::error!("takeover: could not pass the listening sockets: {e}");
        giving.listeners.lock().extend(listeners);
        giving.tx.lock().take();
        giving.requested.store(false, Ordering::Release);
        return;
    }
    drop(listeners);
    tracing::info!("takeover: listening sockets passed to the new process, handing over clients as they become idle");
    // The accept loops stop; clients that are idle now are woken to move at once.
    shared.set_state(RunState::TakenOver);
    for c in shared.client_registry.all() {
        if !c.is_console() {
            c.kill.notify_one();
        }
    }
    let mut moved = 0usize;
    let mut lost = false;
    loop {
        tokio::select! {
            parcel = rx.recv() => {
                let Some((record, fd)) = parcel else { break };
                if lost {
                    continue;
                }
                let frame = encode(&Frame::Client(Box::new(record)));
                match fds::send(&mut sock, &frame, &[fd.as_fd()]).await {
                    Ok(()) => moved += 1,
                    Err(e) => {
                        // The new process is gone: clients that are still here stay until they
                        // leave, as after SHUTDOWN WAIT_FOR_CLIENTS.
                        tracing::error!("takeover: the new process stopped taking clients: {e}");
                        lost = true;
                        giving.tx.lock().take();
                        giving.requested.store(false, Ordering::Release);
                        shared.set_state(RunState::WaitForClients);
                    }
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(50)) => {
                if lost || (pooled_clients(&shared) <= 0 && rx.is_empty()) {
                    break;
                }
            }
        }
    }
    if !lost {
        let _ = fds::send(&mut sock, &encode(&Frame::Done), &[]).await;
        tracing::info!("takeover: {moved} clients handed over, exiting");
        giving.finished.store(true, Ordering::Release);
        shared.set_state(RunState::TakenOver);
    }
}
