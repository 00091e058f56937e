//! Named prepared statements across transaction pooling (PgBouncer's max_prepared_statements).
//! A client's statement names are mapped to server-side names derived from a hash of the query
//! text and parameter types; a server that lacks the statement gets a Parse injected before the
//! client's Bind or Describe, and the ParseComplete it produces is swallowed. Every Parse and
//! Close sent is recorded per Sync segment so that responses are matched in order, and an error
//! (after which the server skips to Sync) undoes what was assumed about the server.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use pgmux_protocol::reader::Reader;
use pgmux_protocol::ProtocolError;

use crate::server::ServerStatements;

/// A statement a client prepared, as pgmux can re-create it on any server.
#[derive(Debug)]
pub struct Statement {
    hash: u64,
    /// Everything in the Parse body after the name: query text and parameter types.
    parse_rest: Bytes,
}

fn server_name(hash: u64) -> String {
    format!("pgmux_{hash:016x}")
}

/// One client's statements by the names it gave them.
#[derive(Debug, Default)]
pub struct ClientStatements {
    map: HashMap<Bytes, Arc<Statement>>,
}

#[derive(Debug, Clone, Copy)]
enum Item {
    Parse { hash: Option<u64>, injected: bool, existed_before: bool },
    Close { hash: Option<u64>, injected: bool, was_present: bool },
}

#[derive(Debug, Default)]
struct Segment {
    items: VecDeque<Item>,
    closed: bool,
}

/// Requests in flight on the attached server, per Sync (or Query) segment.
#[derive(Debug, Default)]
pub struct Tracker {
    segments: VecDeque<Segment>,
}

/// What to do with a ParseComplete or CloseComplete.
#[derive(Debug, PartialEq, Eq)]
pub enum Response {
    /// It answers the client's own message.
    Forward,
    /// It answers a message pgmux injected.
    Swallow,
}

impl Tracker {
    fn open(&mut self) -> &mut Segment {
        if self.segments.back().is_none_or(|s| s.closed) {
            self.segments.push_back(Segment::default());
        }
        self.segments.back_mut().expect("just ensured")
    }

    fn push(&mut self, item: Item) {
        self.open().items.push_back(item);
    }

    /// A Sync was sent: the open segment will be answered by one ReadyForQuery.
    pub fn on_sync(&mut self) {
        self.open().closed = true;
    }

    /// The last Sync was ignored by the server (it arrived during COPY FROM STDIN): its segment
    /// stays open until the next Sync.
    pub fn reopen(&mut self) {
        if let Some(last) = self.segments.back_mut() {
            last.closed = false;
        }
    }

    /// A Query or FunctionCall was sent (its own segment).
    pub fn on_query(&mut self) {
        self.segments.push_back(Segment { items: VecDeque::new(), closed: true });
    }

    fn answer(&mut self, parse: bool) -> Response {
        let Some(seg) = self.segments.front_mut() else {
            return Response::Forward;
        };
        let pos = seg.items.iter().position(|i| matches!(i, Item::Parse { .. }) == parse);
        match pos.and_then(|p| seg.items.remove(p)) {
            Some(Item::Parse { injected: true, .. }) | Some(Item::Close { injected: true, .. }) => Response::Swallow,
            _ => Response::Forward,
        }
    }

    /// A ParseComplete arrived.
    pub fn on_parse_complete(&mut self) -> Response {
        self.answer(true)
    }

    /// A CloseComplete arrived.
    pub fn on_close_complete(&mut self) -> Response {
        self.answer(false)
    }

    /// An ErrorResponse arrived: the server skips to the next Sync, so nothing still expected in
    /// this segment will happen. Undo, newest first, what was assumed about the server.
    pub fn on_error(&mut self, server: &mut ServerStatements) {
        if let Some(seg) = self.segments.front_mut() {
            undo(seg, server);
        }
    }

    /// A ReadyForQuery arrived: its segment is finished.
    pub fn on_ready(&mut self, server: &mut ServerStatements) {
        if let Some(mut seg) = self.segments.pop_front() {
            undo(&mut seg, server);
        }
    }

    /// Forgets everything (a new server is attached).
    pub fn reset(&mut self) {
        self.segments.clear();
    }
}

fn undo(seg: &mut Segment, server: &mut ServerStatements) {
    while let Some(item) = seg.items.pop_back() {
        match item {
            Item::Parse { hash: Some(h), existed_before, .. } => {
                if existed_before {
                    server.insert(h)
                } else {
                    server.remove(h)
                }
            }
            Item::Close { hash: Some(h), was_present: true, .. } => server.insert(h),
            _ => {}
        }
    }
}

fn message(out: &mut BytesMut, tag: u8, parts: &[&[u8]]) {
    let len: usize = 4 + parts.iter().map(|p| p.len()).sum::<usize>();
    out.put_u8(tag);
    out.put_i32(len as i32);
    for p in parts {
        out.put_slice(p);
    }
}

/// Everything the rewrite needs, borrowed from the relay.
pub struct Rewrite<'a> {
    /// The client's statements.
    pub client: &'a mut ClientStatements,
    /// The attached server's statements.
    pub server: &'a mut ServerStatements,
    /// Requests in flight on it.
    pub tracker: &'a mut Tracker,
    /// max_prepared_statements.
    pub max: usize,
    /// Parses sent to the server (SHOW STATS total_server_parse_count).
    pub server_parses: u64,
}

impl Rewrite<'_> {
    fn emit_parse(&mut self, out: &mut BytesMut, st: &Statement, injected: bool) {
        if let Some(victim) = self.server.evict_candidate(self.max) {
            let name = server_name(victim);
            message(out, b'C', &[b"S", name.as_bytes(), b"\0"]);
            self.tracker.push(Item::Close { hash: Some(victim), injected: true, was_present: true });
        }
        let name = server_name(st.hash);
        message(out, b'P', &[name.as_bytes(), b"\0", &st.parse_rest]);
        self.tracker.push(Item::Parse { hash: Some(st.hash), injected, existed_before: false });
        self.server.insert(st.hash);
        self.server_parses += 1;
    }

    fn ensure_prepared(&mut self, out: &mut BytesMut, st: &Statement) {
        if !self.server.contains(st.hash) {
            self.emit_parse(out, st, true);
        }
    }

    /// Rewrites one whole client message with tag P, B, D or C. `None` means forward it as is.
    ///
    /// # Errors
    /// A malformed body.
    pub fn message(&mut self, tag: u8, body: &[u8]) -> Result<Option<BytesMut>, ProtocolError> {
        match tag {
            b'P' => {
                let mut r = Reader::new(body, "Parse");
                let name = r.cstr()?;
                if name.is_empty() {
                    self.tracker.push(Item::Parse { hash: None, injected: false, existed_before: false });
                    self.server_parses += 1;
                    return Ok(None);
                }
                let rest = r.rest();
                let mut h = DefaultHasher::new();
                rest.hash(&mut h);
                let st = Arc::new(Statement { hash: h.finish(), parse_rest: Bytes::copy_from_slice(rest) });
                self.client.map.insert(Bytes::copy_from_slice(name), st.clone());
                let mut out = BytesMut::with_capacity(body.len() + 64);
                if self.server.contains(st.hash) {
                    // Already there (another client, or this one under another name): close and
                    // parse again so that the client gets the ParseComplete it expects.
                    let sname = server_name(st.hash);
                    message(&mut out, b'C', &[b"S", sname.as_bytes(), b"\0"]);
                    self.tracker.push(Item::Close { hash: Some(st.hash), injected: true, was_present: true });
                    self.server.remove(st.hash);
                }
                self.emit_parse(&mut out, &st, false);
                Ok(Some(out))
            }
            b'B' => {
                let mut r = Reader::new(body, "Bind");
                let portal = r.cstr()?;
                let name = r.cstr()?;
                let Some(st) = (!name.is_empty()).then(|| self.client.map.get(name).cloned()).flatten() else {
                    return Ok(None);
                };
                let mut out = BytesMut::with_capacity(body.len() + 64);
                self.ensure_prepared(&mut out, &st);
                let sname = server_name(st.hash);
                message(&mut out, b'B', &[portal, b"\0", sname.as_bytes(), b"\0", r.rest()]);
                Ok(Some(out))
            }
            b'D' => {
                let mut r = Reader::new(body, "Describe");
                let kind = r.u8()?;
                let name = r.cstr()?;
                if kind != b'S' || name.is_empty() {
                    return Ok(None);
                }
                let Some(st) = self.client.map.get(name).cloned() else {
                    return Ok(None);
                };
                let mut out = BytesMut::with_capacity(64);
                self.ensure_prepared(&mut out, &st);
                let sname = server_name(st.hash);
                message(&mut out, b'D', &[b"S", sname.as_bytes(), b"\0"]);
                Ok(Some(out))
            }
            b'C' => {
                let mut r = Reader::new(body, "Close");
                let kind = r.u8()?;
                let name = r.cstr()?;
                let st = if kind == b'S' && !name.is_empty() { self.client.map.remove(name) } else { None };
                let Some(st) = st else {
                    self.tracker.push(Item::Close { hash: None, injected: false, was_present: false });
                    return Ok(None);
                };
                let was_present = self.server.contains(st.hash);
                self.server.remove(st.hash);
                self.tracker.push(Item::Close { hash: Some(st.hash), injected: false, was_present });
                let sname = server_name(st.hash);
                let mut out = BytesMut::with_capacity(64);
                message(&mut out, b'C', &[b"S", sname.as_bytes(), b"\0"]);
                Ok(Some(out))
            }
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgmux_protocol::split_frame;

    fn frames(mut b: BytesMut) -> Vec<(u8, Vec<u8>)> {
        let mut v = Vec::new();
        while let Some(f) = split_frame(&mut b, 1 << 20).unwrap() {
            v.push((f.tag, f.body().to_vec()));
        }
        v
    }

    #[test]
    fn bind_on_a_new_server_injects_parse_and_swallows_its_completion() {
        let mut client = ClientStatements::default();
        let (mut s1, mut s2) = (ServerStatements::default(), ServerStatements::default());
        let mut tracker = Tracker::default();
        let mut rw = Rewrite { client: &mut client, server: &mut s1, tracker: &mut tracker, max: 10, server_parses: 0 };
        let parse = rw.message(b'P', b"s1\0SELECT $1\0\0\x01\0\0\0\x17").unwrap().unwrap();
        let f = frames(parse);
        assert_eq!(f.len(), 1);
        assert!(f[0].1.starts_with(b"pgmux_"));
        rw.tracker.on_sync();
        assert_eq!(rw.tracker.on_parse_complete(), Response::Forward);
        rw.tracker.on_ready(rw.server);
        assert_eq!(rw.server.len(), 1);

        // Same client, another server: Bind brings its Parse along.
        tracker.reset();
        let mut rw = Rewrite { client: &mut client, server: &mut s2, tracker: &mut tracker, max: 10, server_parses: 0 };
        let bind = rw.message(b'B', b"\0s1\0\0\0\0\x01\0\0\0\x011\0\0").unwrap().unwrap();
        let f = frames(bind);
        assert_eq!(f.iter().map(|x| x.0).collect::<Vec<_>>(), vec![b'P', b'B']);
        rw.tracker.on_sync();
        assert_eq!(rw.tracker.on_parse_complete(), Response::Swallow);
        rw.tracker.on_ready(rw.server);
        assert!(rw.server.len() == 1);
    }

    #[test]
    fn an_error_undoes_assumed_statements() {
        let mut client = ClientStatements::default();
        let mut server = ServerStatements::default();
        let mut tracker = Tracker::default();
        let mut rw =
            Rewrite { client: &mut client, server: &mut server, tracker: &mut tracker, max: 10, server_parses: 0 };
        rw.message(b'P', b"bad\0SELEC oops\0\0\0").unwrap().unwrap();
        rw.tracker.on_sync();
        assert_eq!(rw.server.len(), 1);
        rw.tracker.on_error(rw.server);
        rw.tracker.on_ready(rw.server);
        assert!(rw.server.is_empty(), "a Parse that failed left nothing on the server");
    }

    #[test]
    fn eviction_closes_the_oldest() {
        let mut client = ClientStatements::default();
        let mut server = ServerStatements::default();
        let mut tracker = Tracker::default();
        let mut rw =
            Rewrite { client: &mut client, server: &mut server, tracker: &mut tracker, max: 2, server_parses: 0 };
        for q in [&b"a\0SELECT 1\0\0\0"[..], b"b\0SELECT 2\0\0\0", b"c\0SELECT 3\0\0\0"] {
            rw.message(b'P', q).unwrap();
        }
        assert_eq!(rw.server.len(), 2);
        rw.tracker.on_sync();
        assert_eq!(rw.tracker.on_parse_complete(), Response::Forward);
        assert_eq!(rw.tracker.on_parse_complete(), Response::Forward);
        assert_eq!(rw.tracker.on_close_complete(), Response::Swallow);
        assert_eq!(rw.tracker.on_parse_complete(), Response::Forward);
    }
}
