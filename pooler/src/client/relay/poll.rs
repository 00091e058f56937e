//! The relay's one poll over both sockets: client bytes written to the server and server bytes
//! to the client (booked here, not returned as events), then a read from each side in turn, the
//! timer, and a nudge from the console.

use std::future::Future;
use std::io::ErrorKind;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::AsyncWrite;

use super::{Event, Relay, HIGH_WATER};
use crate::client::buffers;

impl Relay {
    pub(super) fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Event> {
        // Writes are booked here and the poll goes on to the reads: nothing else in the loop
        // depends on them, and a turn of the loop per write would cost more than the write.
        if let Some(s) = self.server.as_mut() {
            while self.c_ready > 0 {
                match Pin::new(&mut s.stream).poll_write(cx, &self.cin[..self.c_ready]) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Event::ServerFailed(ErrorKind::WriteZero.into())),
                    Poll::Ready(Ok(n)) => {
                        self.tracker.replay_sent(&mut s.kept_batch, &self.cin[..n]);
                        self.cin.advance(n);
                        self.c_ready -= n;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Event::ServerFailed(e)),
                    Poll::Pending => break,
                }
            }
            if self.terminate && self.c_ready == 0 {
                return Poll::Ready(Event::Sent);
            }
        }
        while self.s_ready > 0 {
            match Pin::new(&mut self.client).poll_write(cx, &self.sout[..self.s_ready]) {
                // Without a server the loop may park once this is written: it must see it.
                Poll::Ready(Ok(n)) if n > 0 && self.server.is_none() => return Poll::Ready(Event::ClientWrote(n)),
                Poll::Ready(Ok(n)) if n > 0 => self.client_wrote(n),
                Poll::Ready(_) => return Poll::Ready(Event::ClientFailed),
                Poll::Pending => break,
            }
        }
        // TLS streams may keep written records until flushed; plain sockets never do.
        if self.client.is_tls() {
            if let Poll::Ready(Err(_)) = Pin::new(&mut self.client).poll_flush(cx) {
                return Poll::Ready(Event::ClientFailed);
            }
        }
        if let Some(s) = self.server.as_mut().filter(|s| s.stream.is_tls()) {
            if let Poll::Ready(Err(e)) = Pin::new(&mut s.stream).poll_flush(cx) {
                return Poll::Ready(Event::ServerFailed(e));
            }
        }
        // Reads alternate when both sides have data: a server that never stops sending (a WAL
        // stream, a huge result) must not keep the client's next message (CopyDone, a cancel
        // of the stream) from being read, nor the other way round.
        if self.client_reads_first {
            if let Some(ev) = self.poll_read_client(cx) {
                self.client_reads_first = false;
                return Poll::Ready(ev);
            }
            if let Some(ev) = self.poll_read_server(cx) {
                return Poll::Ready(ev);
            }
        } else {
            if let Some(ev) = self.poll_read_server(cx) {
                self.client_reads_first = true;
                return Poll::Ready(ev);
            }
            if let Some(ev) = self.poll_read_client(cx) {
                return Poll::Ready(ev);
            }
        }
        match (self.timer.as_mut(), self.timer_for) {
            (Some(t), Some(_)) => {
                if t.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Event::Timer);
                }
            }
            // A timer left from the wait for a server (armed for nothing) is not polled here;
            // once it has fired (waking this task) it is dropped: an idle client keeps none.
            (Some(t), None) => {
                if t.is_elapsed() {
                    self.timer = None;
                    self.timer_due = None;
                }
            }
            (None, _) => {}
        }
        if self.session.info.poll_nudged(cx).is_ready() {
            return Poll::Ready(Event::Killed);
        }
        Poll::Pending
    }

    /// Reads from the server when it has room in `sout`.
    fn poll_read_server(&mut self, cx: &mut Context<'_>) -> Option<Event> {
        let s = self.server.as_mut()?;
        if self.sout.len() >= HIGH_WATER {
            return None;
        }
        if self.sout.capacity() > 0 && self.sout.capacity() - self.sout.len() < buffers::CHUNK / 2 {
            self.sout.reserve(buffers::CHUNK);
        }
        let room = room(&self.sout);
        match s.stream.poll_read_bytes(cx, &mut self.sout, room, buffers::take) {
            Poll::Ready(Ok(n)) => Some(Event::ServerRead(n)),
            Poll::Ready(Err(e)) => Some(Event::ServerFailed(e)),
            Poll::Pending => None,
        }
    }

    /// Reads from the client when it has room in `cin` and is taking what it was sent: pgmux
    /// answers some requests itself (a Sync with no server, a statement in a transaction its
    /// server's loss aborted, a Close the tracker fakes), so a client that sends and never reads
    /// would otherwise fill `sout` without end. The mark is twice the server's: the server's
    /// data alone stops at one, and the client is read as before while it is below two.
    pub(super) fn poll_read_client(&mut self, cx: &mut Context<'_>) -> Option<Event> {
        if self.client_eof
            || self.terminate
            || self.cin.len() >= self.client_read_limit()
            || self.sout.len() >= 2 * HIGH_WATER
        {
            return None;
        }
        // An idle client waits for readiness without holding a buffer (poll_read_bytes).
        if self.cin.capacity() > 0 && self.cin.capacity() - self.cin.len() < buffers::CHUNK / 2 {
            self.cin.reserve(buffers::CHUNK);
        }
        let room = room(&self.cin);
        match self.client.poll_read_bytes(cx, &mut self.cin, room, buffers::take) {
            Poll::Ready(Ok(n)) => Some(Event::ClientRead(n)),
            Poll::Ready(Err(_)) => Some(Event::ClientFailed),
            Poll::Pending => None,
        }
    }
}

/// How many bytes a read into `buf` may bring: its spare capacity, or a fresh buffer's.
fn room(buf: &BytesMut) -> usize {
    match buf.capacity() {
        0 => buffers::CHUNK,
        cap => cap - buf.len(),
    }
}
