//! One stream type over TCP, unix sockets and TLS on TCP (towards clients and towards servers),
//! so the relay has no dynamic dispatch. TLS streams are boxed: they are large, and most
//! connections are plain.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

/// Where a peer is: an IP address and port, or a unix socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerAddr {
    /// TCP peer.
    Tcp(SocketAddr),
    /// Unix-socket peer (path of the socket file, for servers).
    Unix(String),
}

impl std::fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerAddr::Tcp(a) => write!(f, "{a}"),
            PeerAddr::Unix(p) => write!(f, "unix:{p}"),
        }
    }
}

/// A connected socket.
#[derive(Debug)]
pub enum Stream {
    /// TCP.
    Tcp(TcpStream),
    /// Unix socket (clients, and tests).
    Unix(UnixStream),
    /// Unix socket to a server: write readiness asked for only while a write is blocked
    /// (quiet.rs).
    QuietUnix(Box<super::quiet::QuietUnix>),
    /// TCP from a client, the same way (quiet.rs).
    QuietTcp(super::quiet::QuietTcp),
    /// TLS from a client (pgmux is the TLS server).
    TlsAccepted(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// TLS to a server (pgmux is the TLS client).
    TlsConnected(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    /// Placeholder while a socket is handed to the TLS handshake; every operation fails.
    Detached,
}

fn detached() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "connection was detached for a TLS handshake")
}

macro_rules! each {
    ($self:expr, $s:ident => $e:expr) => {
        match $self {
            Stream::Tcp($s) => $e,
            Stream::Unix($s) => $e,
            Stream::QuietUnix($s) => $e,
            Stream::QuietTcp($s) => $e,
            Stream::TlsAccepted($s) => $e,
            Stream::TlsConnected($s) => $e,
            Stream::Detached => Poll::Ready(Err(detached())),
        }
    };
}

impl Stream {
    /// The local address of a TCP connection (`None` for unix sockets).
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        match self {
            Stream::Tcp(s) => s.local_addr().ok(),
            Stream::QuietTcp(s) => s.get_ref().local_addr().ok(),
            Stream::TlsAccepted(s) => s.get_ref().0.local_addr().ok(),
            Stream::TlsConnected(s) => s.get_ref().0.local_addr().ok(),
            _ => None,
        }
    }

    /// The uid of the process at the other end of a unix socket (SO_PEERCRED).
    pub fn peer_uid(&self) -> Option<u32> {
        match self {
            Stream::Unix(s) => s.peer_cred().ok().map(|c| c.uid()),
            _ => None,
        }
    }

    /// The process id at the other end of a unix socket (SO_PEERCRED).
    pub fn peer_pid(&self) -> Option<i32> {
        match self {
            Stream::Unix(s) => s.peer_cred().ok().and_then(|c| c.pid()),
            _ => None,
        }
    }

    /// True for TLS streams (which may hold written bytes until flushed).
    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::TlsAccepted(_) | Stream::TlsConnected(_))
    }

    /// True for TCP without TLS (yet).
    pub fn is_plain_tcp(&self) -> bool {
        matches!(self, Stream::Tcp(_) | Stream::QuietTcp(_))
    }

    /// Moves the socket's registration to the calling thread's runtime (workers.rs), so that its
    /// readiness wakes this thread; false when it stays (a TLS stream from a client, which never
    /// changes threads). On an error the stream is left `Detached`, and its next use fails.
    ///
    /// # Errors
    /// The socket cannot be taken out of the old runtime or registered with this one.
    pub fn rehome(&mut self) -> io::Result<bool> {
        if matches!(self, Stream::TlsAccepted(_) | Stream::Detached) {
            return Ok(false);
        }
        *self = match std::mem::replace(self, Stream::Detached) {
            // The TLS session cannot be taken apart and put together again (tokio-rustls has no
            // constructor from parts), so its socket is swapped under it: a duplicate of the
            // descriptor registered here takes the place of the one registered there, which is
            // closed (and so leaves the old runtime's books); the connection stays open.
            Stream::TlsConnected(mut s) => {
                let io = s.get_mut().0;
                let here = TcpStream::from_std(std::net::TcpStream::from(io.as_fd().try_clone_to_owned()?))?;
                drop(std::mem::replace(io, here));
                Stream::TlsConnected(s)
            }
            Stream::Tcp(s) => Stream::Tcp(TcpStream::from_std(s.into_std()?)?),
            Stream::Unix(s) => Stream::Unix(UnixStream::from_std(s.into_std()?)?),
            Stream::QuietUnix(s) => Stream::QuietUnix(Box::new(super::quiet::Quiet::from_nonblocking(s.into_inner())?)),
            Stream::QuietTcp(s) => Stream::QuietTcp(super::quiet::Quiet::from_nonblocking(s.into_inner())?),
            other => other,
        };
        Ok(true)
    }

    /// Takes the plain TCP socket out for a TLS handshake, leaving `Detached`.
    pub fn take_tcp(&mut self) -> Option<TcpStream> {
        match std::mem::replace(self, Stream::Detached) {
            Stream::Tcp(s) => Some(s),
            // The handshake's stream is Tokio's own: the socket moves to it.
            Stream::QuietTcp(s) => TcpStream::from_std(s.into_inner()).ok(),
            other => {
                *self = other;
                None
            }
        }
    }

    /// Readiness for reading, without reading (so an idle client needs no buffer to wait).
    /// A TLS stream may hold decrypted bytes the socket no longer shows, so it is always
    /// reported ready and the read itself decides.
    pub fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Stream::Tcp(s) => s.poll_read_ready(cx),
            Stream::Unix(s) => s.poll_read_ready(cx),
            Stream::QuietUnix(s) => s.poll_read_ready(cx),
            Stream::QuietTcp(s) => s.poll_read_ready(cx),
            Stream::TlsAccepted(_) | Stream::TlsConnected(_) => Poll::Ready(Ok(())),
            Stream::Detached => Poll::Ready(Err(detached())),
        }
    }

    /// Reads what has come into `buf` (at most `room` bytes more than it holds), making `buf`
    /// with `fresh` only once bytes are there, so that an idle connection waits without a
    /// buffer. `Ready(Ok(0))` is EOF. Quiet sockets do this in one readiness check; the others
    /// check readiness first while `buf` has no memory, then read through tokio.
    pub fn poll_read_bytes(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
        room: usize,
        fresh: fn() -> BytesMut,
    ) -> Poll<io::Result<usize>> {
        match self {
            Stream::QuietUnix(s) => s.poll_read_bytes(cx, buf, room, fresh),
            Stream::QuietTcp(s) => s.poll_read_bytes(cx, buf, room, fresh),
            _ => {
                if buf.capacity() == 0 {
                    std::task::ready!(self.poll_read_ready(cx))?;
                    *buf = fresh();
                }
                tokio_util::io::poll_read_buf(Pin::new(self), cx, buf)
            }
        }
    }

    /// A fresh connection's first bytes, read without waiting when they have come already
    /// (see [`super::quiet::Quiet::read_waiting`]); 0 when not, or for a stream that cannot.
    pub fn read_waiting(&self, buf: &mut BytesMut, room: usize) -> usize {
        match self {
            Stream::QuietTcp(s) => s.read_waiting(buf, room),
            Stream::QuietUnix(s) => s.read_waiting(buf, room),
            _ => 0,
        }
    }

    /// Peeks at the socket without waiting and without consuming: `Ok(0)` is EOF,
    /// `Err(WouldBlock)` means nothing is there. This asks the kernel directly rather than
    /// Tokio's cached readiness, which may not have seen a close yet. Used to find servers that
    /// died while idle in the pool.
    pub fn peek_now(&self) -> io::Result<usize> {
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 1];
        match self {
            Stream::Tcp(s) => socket2::SockRef::from(s).peek(&mut buf),
            Stream::Unix(s) => socket2::SockRef::from(s).peek(&mut buf),
            Stream::QuietUnix(s) => socket2::SockRef::from(s.get_ref()).peek(&mut buf),
            Stream::QuietTcp(s) => socket2::SockRef::from(s.get_ref()).peek(&mut buf),
            Stream::TlsAccepted(s) => socket2::SockRef::from(s.get_ref().0).peek(&mut buf),
            Stream::TlsConnected(s) => socket2::SockRef::from(s.get_ref().0).peek(&mut buf),
            Stream::Detached => Err(detached()),
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        each!(self.get_mut(), s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        each!(self.get_mut(), s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self.get_mut(), s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self.get_mut(), s => Pin::new(s).poll_shutdown(cx))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        each!(self.get_mut(), s => Pin::new(s).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }
}
