//! Frames with file descriptors over a unix socket: `u32` length, a JSON body, and the
//! descriptors riding on the frame's first bytes (SCM_RIGHTS). Blocking calls for the new
//! process before its runtime starts; async ones for the old process's console task.

use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::net::{
    recvmsg, sendmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer, SendAncillaryMessage,
    SendFlags,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::UnixStream;

/// Most descriptors one frame carries (listeners; a client frame has one).
const MAX_FDS: usize = 64;
/// Largest frame body accepted (a client's prepared statements ride in it).
const MAX_FRAME: usize = 64 << 20;

fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn send_some(sock: BorrowedFd<'_>, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<usize> {
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(fds.len().max(1)))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(io::Error::other("too many descriptors for one frame"));
    }
    Ok(sendmsg(sock, &[IoSlice::new(bytes)], &mut control, SendFlags::NOSIGNAL)?)
}

/// Reads up to `buf.len()` bytes, keeping the descriptors that came with them.
fn recv_some(sock: BorrowedFd<'_>, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> io::Result<usize> {
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let got = recvmsg(sock, &mut [IoSliceMut::new(buf)], &mut control, RecvFlags::CMSG_CLOEXEC)?;
    for msg in control.drain() {
        if let RecvAncillaryMessage::ScmRights(passed) = msg {
            fds.extend(passed);
        }
    }
    Ok(got.bytes)
}

fn body_len(head: [u8; 4]) -> io::Result<usize> {
    let n = u32::from_be_bytes(head) as usize;
    if n > MAX_FRAME {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("takeover frame of {n} bytes")));
    }
    Ok(n)
}

/// Sends one frame with `fds` (async, for the old process).
pub async fn send(sock: &mut UnixStream, body: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    let bytes = frame(body);
    let sent = sock.async_io(Interest::WRITABLE, || send_some(sock.as_fd(), &bytes, fds)).await?;
    sock.write_all(&bytes[sent..]).await
}

/// Receives one frame and its descriptors (async, for the new process once it serves).
/// `Ok(None)` at a clean end of stream.
pub async fn recv(sock: &mut UnixStream) -> io::Result<Option<(Vec<u8>, Vec<OwnedFd>)>> {
    let mut head = [0u8; 4];
    let mut fds = Vec::new();
    let mut got = 0;
    while got < 4 {
        let n = sock.async_io(Interest::READABLE, || recv_some(sock.as_fd(), &mut head[got..], &mut fds)).await?;
        if n == 0 {
            return if got == 0 { Ok(None) } else { Err(io::ErrorKind::UnexpectedEof.into()) };
        }
        got += n;
    }
    let mut body = vec![0u8; body_len(head)?];
    sock.read_exact(&mut body).await?;
    Ok(Some((body, fds)))
}

/// Receives one frame and its descriptors (blocking, before the runtime starts).
pub fn recv_blocking(sock: &mut std::os::unix::net::UnixStream) -> io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    let mut head = [0u8; 4];
    let mut fds = Vec::new();
    let mut got = 0;
    while got < 4 {
        let n = recv_some(sock.as_fd(), &mut head[got..], &mut fds)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        got += n;
    }
    let mut body = vec![0u8; body_len(head)?];
    sock.read_exact(&mut body)?;
    Ok((body, fds))
}

/// Writes raw bytes (blocking): the console login and the TAKEOVER query.
pub fn write_blocking(sock: &mut std::os::unix::net::UnixStream, bytes: &[u8]) -> io::Result<()> {
    sock.write_all(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn descriptors_arrive_with_their_frame() {
        let (mut a, b) = UnixStream::pair().unwrap();
        let mut b = b.into_std().unwrap();
        b.set_nonblocking(false).unwrap();
        let reader = std::thread::spawn(move || {
            let (body, fds) = recv_blocking(&mut b).unwrap();
            assert_eq!((body.as_slice(), fds.len()), (&b"one"[..], 1));
            let mut f = std::fs::File::from(fds.into_iter().next().unwrap());
            let mut text = String::new();
            std::io::Seek::rewind(&mut f).unwrap();
            f.read_to_string(&mut text).unwrap();
            assert_eq!(text, "passed");
            let (body, fds) = recv_blocking(&mut b).unwrap();
            assert_eq!((body.len(), fds.len()), (300_000, 0));
        });
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(b"passed").unwrap();
        send(&mut a, b"one", &[file.as_fd()]).await.unwrap();
        drop(file);
        send(&mut a, &vec![7u8; 300_000], &[]).await.unwrap();
        tokio::task::spawn_blocking(move || reader.join().unwrap()).await.unwrap();
    }
}
