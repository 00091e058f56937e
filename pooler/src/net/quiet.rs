//! A stream socket (unix or TCP) that asks epoll for write readiness only while a write is
//! blocked.
//!
//! Tokio registers its sockets for reading and writing, edge-triggered. The kernel then reports
//! the writer writable again every time room is freed: on a unix socket when the peer reads, on
//! TCP when the peer's ACK frees the send buffer. Each query pgmux sent to PostgreSQL over its
//! unix socket woke pgmux once more when the backend read it, for nothing: one extra sleep and
//! wake-up per transaction, measured as a context switch (docs/BENCHMARKS.md). A TCP client's
//! ACK does the same whenever it is not carried by the client's next message: during a SCRAM
//! login the client computes its proof between two messages, and the ACK of pgmux's last one
//! woke pgmux each time. PgBouncer asks for write readiness only when a send would block. This
//! type does the same: the socket is registered for reading; a write goes straight to the
//! socket, and only a write that would block registers a duplicate of the descriptor for
//! writability, dropped again once a write goes through.
//!
//! Reads land in a per-thread buffer and are copied into the caller's: the caller's spare
//! capacity is uninitialised, and safe code could only read into it after zeroing all of it
//! (`ReadBuf::initialize_unfilled`), 16 KiB or more per read whatever arrived.

use std::cell::RefCell;
use std::io;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::BytesMut;
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
pub(crate) fn register<T: AsRawFd + AsFd>(inner: T, interest: Interest) -> io::Result<AsyncFd<T>> {
    AsyncFd::with_interest(inner, interest)
}

/// The stream sockets a [`Quiet`] can hold: reads and writes through a shared reference, as the
/// standard library's unix and TCP streams allow.
pub trait Socket: AsRawFd + AsFd + Sized + Unpin {
    /// One read, as `read(2)`.
    fn read_now(&self, buf: &mut [u8]) -> io::Result<usize>;
    /// One write, as `write(2)`.
    fn write_now(&self, buf: &[u8]) -> io::Result<usize>;
    /// Shuts the sending half.
    fn shutdown_write(&self) -> io::Result<()>;
    /// Makes the socket non-blocking.
    fn nonblocking(&self) -> io::Result<()>;
}

// Reads and writes are rustix's direct system calls. libc's recv and send are cancellation
// points: in a process with several threads (worker_threads > 1) each call also switched
// asynchronous cancellation on and off. With two threads a transaction took 6,693 instructions
// through libc and 6,451 this way; with one, the same (benches/instructions.sh).
macro_rules! socket {
    ($t:ty) => {
        impl Socket for $t {
            fn read_now(&self, buf: &mut [u8]) -> io::Result<usize> {
                Ok(rustix::net::recv(self, buf, rustix::net::RecvFlags::empty())?.0)
            }
            fn write_now(&self, buf: &[u8]) -> io::Result<usize> {
                // SIGPIPE is ignored by Rust's runtime; NOSIGNAL says so here as well.
                Ok(rustix::net::send(self, buf, rustix::net::SendFlags::NOSIGNAL)?)
            }
            fn shutdown_write(&self) -> io::Result<()> {
                self.shutdown(Shutdown::Write)
            }
            fn nonblocking(&self) -> io::Result<()> {
                self.set_nonblocking(true)
            }
        }
    };
}
socket!(UnixStream);
socket!(TcpStream);

/// A connected stream socket; see the module documentation.
#[derive(Debug)]
pub struct Quiet<S: Socket> {
    read: AsyncFd<S>,
    /// The same socket registered for writability, while a write waits for room (boxed: rare,
    /// and every client holds this type).
    write: Option<Box<AsyncFd<OwnedFd>>>,
}

/// A unix socket to a PostgreSQL server.
pub type QuietUnix = Quiet<UnixStream>;

/// The next connection on `listener` (registered for reading) and its peer's address. The
/// socket is made non-blocking by the accept itself (accept4), and is not registered with the
/// runtime yet: the caller sets its options, then makes it a [`QuietTcp`].
///
/// # Errors
/// The accept failed (the caller logs it and goes on).
pub async fn accept(listener: &AsyncFd<std::net::TcpListener>) -> io::Result<(TcpStream, SocketAddr)> {
    use rustix::net::{acceptfrom_with, SocketFlags};
    loop {
        let mut guard = listener.readable().await?;
        let accepted =
            guard.try_io(|l| acceptfrom_with(l, SocketFlags::NONBLOCK | SocketFlags::CLOEXEC).map_err(io::Error::from));
        match accepted {
            Ok(Ok((fd, addr))) => {
                let s = TcpStream::from(fd);
                let addr = match addr.and_then(|a| SocketAddr::try_from(a).ok()) {
                    Some(a) => a,
                    None => s.peer_addr()?,
                };
                return Ok((s, addr));
            }
            Ok(Err(e)) => return Err(e),
            Err(_would_block) => continue,
        }
    }
}
/// A TCP connection from a client.
pub type QuietTcp = Quiet<TcpStream>;

impl<S: Socket> Quiet<S> {
    /// Takes over a connected socket (made non-blocking here). Needs a tokio runtime context.
    ///
    /// # Errors
    /// The socket cannot be made non-blocking or registered.
    pub fn new(s: S) -> io::Result<Self> {
        s.nonblocking()?;
        Self::from_nonblocking(s)
    }

    /// [`Quiet::new`] for a socket that is non-blocking already (accepted with
    /// [`accept`]).
    ///
    /// # Errors
    /// The socket cannot be registered.
    pub fn from_nonblocking(s: S) -> io::Result<Self> {
        Ok(Quiet { read: register(s, Interest::READABLE)?, write: None })
    }

    /// The socket.
    pub fn get_ref(&self) -> &S {
        self.read.get_ref()
    }

    /// The socket, out of the runtime's books (for a TLS handshake or a hand-over).
    pub fn into_inner(self) -> S {
        self.read.into_inner()
    }

    /// What has come already, read without asking epoll first: a client sends its first
    /// message as soon as it is connected, so by the time pgmux has accepted it, it is usually
    /// there, and reading it at once saves a sleep in epoll and a wake-up per login (PgBouncer
    /// reads right after its accept too). Appends at most `room` bytes to `buf`; 0 when nothing
    /// has come, and also at EOF or on an error, which the next read through readiness reports.
    /// The socket was registered before this read, so epoll still reports what comes next.
    pub fn read_waiting(&self, buf: &mut BytesMut, room: usize) -> usize {
        READ_SCRATCH.with_borrow_mut(|scratch| match self.get_ref().read_now(&mut scratch[..room.clamp(1, READ_MAX)]) {
            Ok(n) => {
                buf.extend_from_slice(&scratch[..n]);
                n
            }
            Err(_) => 0,
        })
    }

    /// Readiness for reading, without reading.
    pub fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.read.poll_read_ready(cx).map_ok(|_| ())
    }
}

impl<S: Socket> Quiet<S> {
    /// Reads at most `room` bytes into `buf`, and makes `buf` with `fresh` first if it has no
    /// memory yet, only once bytes have come: an idle connection waits without a buffer, and a
    /// read is one readiness check, not two. `Ready(Ok(0))` is EOF.
    pub fn poll_read_bytes(
        &self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
        room: usize,
        fresh: fn() -> BytesMut,
    ) -> Poll<io::Result<usize>> {
        self.poll_read_with(cx, room, |bytes| {
            if buf.capacity() == 0 {
                *buf = fresh();
            }
            buf.extend_from_slice(bytes);
        })
    }

    /// One read of at most `want` bytes into the thread's scratch buffer, handed to `put` when
    /// bytes came. `Ready(Ok(0))` is EOF.
    fn poll_read_with(&self, cx: &mut Context<'_>, want: usize, mut put: impl FnMut(&[u8])) -> Poll<io::Result<usize>> {
        let want = want.clamp(1, READ_MAX);
        loop {
            let mut guard = ready!(self.read.poll_read_ready(cx))?;
            let read = READ_SCRATCH.with_borrow_mut(|scratch| {
                let got = guard.try_io(|s| s.get_ref().read_now(&mut scratch[..want]));
                if let Ok(Ok(n @ 1..)) = got {
                    put(&scratch[..n]);
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
                    return Poll::Ready(Ok(n));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl<S: Socket> AsyncRead for Quiet<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let want = buf.remaining();
        if want == 0 {
            return Poll::Ready(Ok(()));
        }
        self.poll_read_with(cx, want, |bytes| buf.put_slice(bytes)).map_ok(|_| ())
    }
}

impl<S: Socket> AsyncWrite for Quiet<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            match this.read.get_ref().write_now(buf) {
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
                this.write = Some(Box::new(register(dup, Interest::WRITABLE)?));
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
        Poll::Ready(self.read.get_ref().shutdown_write())
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn bytes_go_both_ways_and_a_full_socket_waits_for_room() {
        let (a, b) = UnixStream::pair().unwrap();
        both_ways(QuietUnix::new(a).unwrap(), QuietUnix::new(b).unwrap()).await;
    }

    #[tokio::test]
    async fn over_tcp_too() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (b, _) = listener.accept().unwrap();
        both_ways(QuietTcp::new(a).unwrap(), QuietTcp::new(b).unwrap()).await;
    }

    #[tokio::test]
    async fn a_read_makes_its_buffer_only_once_bytes_have_come() {
        let (a, b) = UnixStream::pair().unwrap();
        let (reader, mut writer) = (QuietUnix::new(a).unwrap(), QuietUnix::new(b).unwrap());
        fn fresh() -> BytesMut {
            BytesMut::with_capacity(64)
        }
        let mut buf = BytesMut::new();
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(reader.poll_read_bytes(&mut cx, &mut buf, 64, fresh).is_pending());
        assert_eq!(buf.capacity(), 0, "nothing came: no buffer");
        writer.write_all(b"hello").await.unwrap();
        let n = std::future::poll_fn(|cx| reader.poll_read_bytes(cx, &mut buf, 64, fresh)).await.unwrap();
        assert_eq!((n, &buf[..], buf.capacity() >= 64), (5, &b"hello"[..], true));
        // At most `room` bytes are taken; the rest stays for the next read.
        writer.write_all(b"0123456789").await.unwrap();
        let n = std::future::poll_fn(|cx| reader.poll_read_bytes(cx, &mut buf, 4, fresh)).await.unwrap();
        assert_eq!((n, &buf[..]), (4, &b"hello0123"[..]));
        let mut idle = BytesMut::new();
        let n = std::future::poll_fn(|cx| reader.poll_read_bytes(cx, &mut idle, 64, fresh)).await.unwrap();
        assert_eq!(&idle[..n], b"456789");
        // EOF: zero bytes, and still no buffer for a connection that had none.
        writer.shutdown().await.unwrap();
        let mut none = BytesMut::new();
        let n = std::future::poll_fn(|cx| reader.poll_read_bytes(cx, &mut none, 64, fresh)).await.unwrap();
        assert_eq!((n, none.capacity()), (0, 0));
    }

    #[tokio::test]
    async fn what_came_before_the_first_wait_is_read_at_once_and_the_rest_still_wakes() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut writer = QuietUnix::new(b).unwrap();
        writer.write_all(b"startup").await.unwrap();
        let reader = QuietUnix::new(a).unwrap();
        let mut buf = BytesMut::new();
        // Read without any readiness known yet, at most `room` bytes.
        assert_eq!(reader.read_waiting(&mut buf, 5), 5);
        assert_eq!(reader.read_waiting(&mut buf, 64), 2);
        assert_eq!(&buf[..], b"startup");
        assert_eq!(reader.read_waiting(&mut buf, 64), 0, "nothing more has come");
        // What comes next wakes a read through readiness as usual.
        let mut next = [0u8; 8];
        let read = tokio::spawn(async move {
            let mut reader = reader;
            let n = reader.read(&mut next).await.unwrap();
            next[..n].to_vec()
        });
        tokio::task::yield_now().await;
        writer.write_all(b"query").await.unwrap();
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), read).await.expect("woken").unwrap();
        assert_eq!(got, b"query");
    }

    async fn both_ways<S: Socket + Send + 'static>(mut a: Quiet<S>, mut b: Quiet<S>) {
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
