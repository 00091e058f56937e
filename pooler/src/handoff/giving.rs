//! The running process's side of a takeover as state: the listeners it keeps to pass on, how
//! far the takeover has come, and the channel idle clients hand themselves over on.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use tokio::sync::mpsc;

use super::{ClientRecord, ListenerKind};

/// A client's state and socket on their way to the new process.
pub type Parcel = (ClientRecord, OwnedFd);

/// What the running process keeps for a takeover, and its progress.
#[derive(Debug, Default)]
pub struct Giving {
    listeners: Mutex<Vec<(ListenerKind, OwnedFd)>>,
    started: AtomicBool,
    requested: AtomicBool,
    given: AtomicBool,
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

    /// True once the new process serves: idle clients hand themselves over.
    #[inline]
    pub fn requested(&self) -> bool {
        self.requested.load(Ordering::Relaxed)
    }

    /// True once the new process serves on the listeners: this process accepts nothing more,
    /// and the unix socket file and the pidfile are the new process's, whatever happens here.
    pub fn given(&self) -> bool {
        self.given.load(Ordering::Acquire)
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

    /// Copies of the kept listeners, to send.
    pub fn copies(&self) -> std::io::Result<Vec<(ListenerKind, OwnedFd)>> {
        self.listeners.lock().iter().map(|(k, fd)| Ok((k.clone(), fd.try_clone()?))).collect()
    }

    /// Begins a takeover: false when one has begun already.
    pub fn start(&self) -> bool {
        !self.started.swap(true, Ordering::AcqRel)
    }

    /// Opens the channel clients are handed over on.
    pub fn open(&self) -> mpsc::UnboundedReceiver<Parcel> {
        let (tx, rx) = mpsc::unbounded_channel();
        *self.tx.lock() = Some(tx);
        rx
    }

    /// The new process serves: this one accepts nothing more, and idle clients move.
    pub fn serving(&self) {
        self.given.store(true, Ordering::Release);
        self.requested.store(true, Ordering::Release);
    }

    /// Every client has moved or left.
    pub fn finish(&self) {
        self.finished.store(true, Ordering::Release);
    }

    /// The new process went away after it took the listeners: clients stay here until they
    /// leave.
    pub fn stop_handing(&self) {
        self.tx.lock().take();
        self.requested.store(false, Ordering::Release);
    }

    /// Back to serving alone: the new process did not start, or went away.
    pub fn withdraw(&self) {
        self.tx.lock().take();
        self.requested.store(false, Ordering::Release);
        self.started.store(false, Ordering::Release);
    }
}
