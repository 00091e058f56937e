//! A unix stream socket that asks epoll for write readiness only while a write is blocked.
//!
//! Tokio registers its sockets for reading and writing, edge-triggered. On a unix stream socket
//! the kernel reports the writer writable again every time the peer reads (the peer's read
//! frees room and wakes the writer's waiters), so each query pgmux sends to PostgreSQL over its
//! unix socket woke pgmux once more when the backend read it, for nothing: one extra sleep and
//! wake-up per transaction, measured as a context switch (docs/BENCHMARKS.md). PgBouncer asks
//! for write readiness only when a send would block. This type does the same: the socket is
//! registered for reading; a write goes straight to the socket, and only a write that would
//! block registers a duplicate of the descriptor for writability, dropped again once a write
//! goes through.
//!
//! Reads land in a per-thread buffer and are copied into the caller's: the caller's spare
//! capacity is uninitialised, and safe code could only read into it after zeroing all of it
//! (`ReadBuf::initialize_unfilled`), 16 KiB or more per read whatever arrived.

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};

/// Most bytes one read takes.
const READ_MAX: usize = 64 * 1024;

thread_local! {
    /// Zeroed once per thread; every read lands here first.
    static READ_SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; READ_MAX].into_boxed_slice());
}

/// Registers `inner` with the runtime for `interest`. Tokio 1.54 deprecated the safe
/// constructor in favour of an `unsafe` one (`register_with_interest`) because an arbitrary
/// `AsRawFd` type may not own a valid descriptor; the two types used here (`UnixStream`,
/// `OwnedFd`) own theirs for as long as the `AsyncFd` lives, which is what the unsafe one asks
/// the caller to promise, and this crate forbids unsafe code.
#[allow(deprecated)]
fn register<T: std::os::fd::AsRawFd + AsFd>(inner: T, interest: Interest) -> io::Result<AsyncFd<T>> {
    AsyncFd::with_interest(inner, interest)
}

/// A connected unix stream socket; see the module documentation.
#[derive(Debug)]
pub struct QuietUnix {
    read: AsyncFd<UnixStream>,
    /// The same socket registered for writability, while a write waits for room.
    write: Option<AsyncFd<OwnedFd>>,
}

impl QuietUnix {
    /// Takes over a connected socket (made non-blocking here). Needs a tokio runtime context.
    ///
    /// # Errors
    /// The socket cannot be made non-blocking or registered.
    pub fn new(s: UnixStream) -> io::Result<Self> {
        s.set_nonblocking(true)?;
        Ok(QuietUnix { read: register(s, Interest::READABLE)?, write: None })
    }

    /// The socket.
    pub fn get_ref(&self) -> &UnixStream {
        self.read.get_ref()
    }

    /// Readiness for reading, without reading.
    pub fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.read.poll_read_ready(cx).map_ok(|_| ())
    }
}

impl AsyncRead for QuietUnix {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let want = buf.remaining().min(READ_MAX);
        loop {
            let mut guard = ready!(self.read.poll_read_ready(cx))?;
            let read = READ_SCRATCH.with_borrow_mut(|scratch| {
                let got = guard.try_io(|s| s.get_ref().read(&mut scratch[..want]));
                if let Ok(Ok(n)) = got {
                    buf.put_slice(&scratch[..n]);
                }
                got
            });
            match read {
                Ok(Ok(n)) => {
                    // A short read drained the socket (epoll is edge-triggered): the next read
                    // waits for the next edge instead of trying and getting EAGAIN.
                    if n > 0 && n < want {
                        guard.clear_ready();
                    }
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for QuietUnix {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            match this.read.get_ref().write(buf) {
                Ok(n) => {
                    this.write = None;
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() != io::ErrorKind::WouldBlock => return Poll::Ready(Err(e)),
                Err(_) => {}
            }
            if this.write.is_none() {
                // Registered now, epoll reports the current state: room made since the failed
                // write is not missed.
                let dup = this.read.get_ref().as_fd().try_clone_to_owned()?;
                this.write = Some(register(dup, Interest::WRITABLE)?);
            }
            let waiter = this.write.as_ref().expect("registered above");
            let mut guard = ready!(waiter.poll_write_ready(cx))?;
            guard.clear_ready();
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.read.get_ref().shutdown(std::net::Shutdown::Write))
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn bytes_go_both_ways_and_a_full_socket_waits_for_room() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut a = QuietUnix::new(a).unwrap();
        let mut b = QuietUnix::new(b).unwrap();
        a.write_all(b"ping").await.unwrap();
        let mut got = [0; 4];
        b.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
        // Far more than a unix socket buffers: the writer must wait for the reader, twice over.
        let big = vec![7u8; 4 << 20];
        let writer = tokio::spawn(async move {
            a.write_all(&big).await.unwrap();
            a.shutdown().await.unwrap();
            a
        });
        let mut all = Vec::new();
        b.read_to_end(&mut all).await.unwrap();
        assert_eq!(all.len(), 4 << 20);
        assert!(all.iter().all(|&x| x == 7));
        let a = writer.await.unwrap();
        assert!(a.write.is_none(), "write interest is dropped once writes go through");
    }
}
