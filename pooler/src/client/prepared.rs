//! Named prepared statements across transaction pooling, as PgBouncer 1.21+ with
//! `max_prepared_statements` (its src/prepare.c): a client's statement names are mapped to
//! server-side names derived from a hash of query text and parameter types, so clients that
//! prepare the same query share it on a server. No I/O here: the relay hands in its buffers.
//!
//! - Parse of a new name is renamed; if the server already has the statement nothing is sent
//!   and pgmux answers ParseComplete itself, in order. Reusing a name closes the client.
//! - Bind / Describe of a statement the server lacks get a Parse injected in front; its
//!   ParseComplete is swallowed. An unknown name closes the client (`prepared statement did not
//!   exist`), as PgBouncer does.
//! - Close of a named statement only forgets the client's name and is answered by pgmux.
//! - Every request in flight is queued ([`Tracker`]): responses are matched in order, an
//!   ErrorResponse (after which PostgreSQL skips to Sync) undoes, newest first, what was assumed
//!   about the server and the client.
//! - The unnamed statement is passed through; a Bind or Describe of it on a server this client
//!   did not Parse it on gets the client's last unnamed Parse injected (or a Close, so that the
//!   server answers "does not exist" as PostgreSQL would), never another client's statement.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use pgmux_protocol::extended::{self, STATEMENT};
use pgmux_protocol::{tags, ProtocolError};

use super::splice;
use crate::server::ServerStatements;

/// A statement a client prepared, as pgmux can re-create it on any server.
#[derive(Debug)]
pub struct Statement {
    hash: u64,
    /// Everything in the Parse body after the name: query text and parameter types.
    parse_rest: Bytes,
}

/// Length of a server-side name: `pgmux_` and 16 hex digits.
const NAME_LEN: usize = 22;

fn server_name(hash: u64) -> [u8; NAME_LEN] {
    let mut out = *b"pgmux_0000000000000000";
    let hex = b"0123456789abcdef";
    for i in 0..16 {
        out[6 + i] = hex[((hash >> (60 - 4 * i)) & 0xf) as usize];
    }
    out
}

/// One client's statements by the names it gave them, and its unnamed statement.
#[derive(Debug, Default)]
pub struct ClientStatements {
    map: HashMap<Bytes, Arc<Statement>>,
    /// Query text and types of the client's last unnamed Parse (buffer reused).
    unnamed: BytesMut,
    /// `unnamed` is the client's unnamed statement (no Query or Close destroyed it since).
    unnamed_valid: bool,
}

/// Named statements as (name, Parse body after the name), for an online restart.
pub type NamedStatements = Vec<(Vec<u8>, Vec<u8>)>;

impl ClientStatements {
    /// Named statements (name, Parse body after the name) and the unnamed one, for handing the
    /// client to a new process (online restart).
    pub fn export(&self) -> (NamedStatements, Option<Vec<u8>>) {
        let named = self.map.iter().map(|(name, st)| (name.to_vec(), st.parse_rest.to_vec())).collect();
        (named, self.unnamed_valid.then(|| self.unnamed.to_vec()))
    }

    /// The statements of a client handed over by the previous process.
    pub fn import(named: NamedStatements, unnamed: Option<Vec<u8>>) -> Self {
        let map = named
            .into_iter()
            .map(|(name, rest)| {
                let mut h = DefaultHasher::new();
                rest.as_slice().hash(&mut h);
                (Bytes::from(name), Arc::new(Statement { hash: h.finish(), parse_rest: Bytes::from(rest) }))
            })
            .collect();
        let unnamed_valid = unnamed.is_some();
        ClientStatements { map, unnamed: unnamed.map(|u| BytesMut::from(&u[..])).unwrap_or_default(), unnamed_valid }
    }
}

#[cfg(test)]
impl ClientStatements {
    fn len(&self) -> usize {
        self.map.len()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Parse,
    Bind,
    Describe,
    Execute,
    Close,
    /// Sync, answered by ReadyForQuery.
    Sync,
    /// Query or FunctionCall, answered by ReadyForQuery.
    Query,
    /// pgmux answers ParseComplete itself when this reaches the front.
    FakeParse,
    /// pgmux answers CloseComplete itself when this reaches the front.
    FakeClose,
}

/// What to undo on the client's side if the request is skipped by the server.
#[derive(Debug)]
enum ClientUndo {
    None,
    /// The name was added by this Parse.
    Added(Bytes),
    /// The name was removed by this Close.
    Removed(Bytes, Arc<Statement>),
    /// This unnamed Parse replaced the client's unnamed statement.
    Unnamed,
}

#[derive(Debug)]
struct Item {
    kind: Kind,
    /// The response answers a message pgmux injected: the client must not see it.
    swallow: bool,
    /// Statement hash this request added to (true) or removed from (false) the server's set.
    server: Option<(u64, bool)>,
    client: ClientUndo,
}

impl Item {
    fn plain(kind: Kind) -> Self {
        Item { kind, swallow: false, server: None, client: ClientUndo::None }
    }

    fn undo(self, server: &mut ServerStatements, client: &mut ClientStatements) {
        match self.server {
            Some((h, true)) => server.remove(h),
            Some((h, false)) => server.insert(h),
            None => {}
        }
        match self.client {
            ClientUndo::None => {}
            ClientUndo::Added(name) => {
                client.map.remove(&name);
            }
            ClientUndo::Removed(name, st) => {
                client.map.insert(name, st);
            }
            ClientUndo::Unnamed => client.unnamed_valid = false,
        }
    }
}

/// Requests in flight on the attached server, oldest first (PgBouncer's outstanding requests).
#[derive(Debug, Default)]
pub struct Tracker {
    queue: VecDeque<Item>,
    /// The server reported an error and skips everything up to the next Sync not yet sent.
    skipping: bool,
    /// The server's unnamed statement is this client's (it sent Parse "" or destroyed it here).
    unnamed_here: bool,
    /// Reused buffer for the messages pgmux injects.
    scratch: BytesMut,
}

/// What to do with a response from the server.
#[derive(Debug, PartialEq, Eq)]
pub enum Response {
    /// It answers the client's own message.
    Forward,
    /// It answers a message pgmux injected.
    Swallow,
}

impl Tracker {
    /// Requests sent whose answers have not all come back.
    pub fn in_flight(&self) -> bool {
        !self.queue.is_empty()
    }

    fn push(&mut self, item: Item, server: &mut ServerStatements, client: &mut ClientStatements) {
        if self.skipping {
            if item.kind != Kind::Sync {
                // PostgreSQL ignores it: nothing it would have done happens, no answer comes.
                item.undo(server, client);
                return;
            }
            self.skipping = false;
        }
        self.queue.push_back(item);
    }

    /// A Sync was sent (not during COPY FROM STDIN, where PostgreSQL ignores it).
    pub fn on_sync(&mut self, server: &mut ServerStatements, client: &mut ClientStatements) {
        self.push(Item::plain(Kind::Sync), server, client);
    }

    /// An Execute was sent.
    pub fn on_execute(&mut self, server: &mut ServerStatements, client: &mut ClientStatements) {
        self.push(Item::plain(Kind::Execute), server, client);
    }

    /// A Query (`simple`) or FunctionCall was sent. A simple Query destroys the unnamed
    /// statement (PostgreSQL's exec_simple_query).
    pub fn on_query(&mut self, simple: bool, server: &mut ServerStatements, client: &mut ClientStatements) {
        if simple && !self.skipping {
            client.unnamed_valid = false;
            self.unnamed_here = true;
        }
        self.push(Item::plain(Kind::Query), server, client);
    }

    fn pop_if(&mut self, kinds: &[Kind]) -> Response {
        match self.queue.front() {
            Some(i) if kinds.contains(&i.kind) => {
                let i = self.queue.pop_front().expect("front exists");
                if i.swallow {
                    Response::Swallow
                } else {
                    Response::Forward
                }
            }
            _ => Response::Forward,
        }
    }

    /// A server message with type `tag` arrived (its header is enough).
    pub fn on_response(&mut self, tag: u8, server: &mut ServerStatements, client: &mut ClientStatements) -> Response {
        use tags::backend as b;
        match tag {
            b::PARSE_COMPLETE => self.pop_if(&[Kind::Parse]),
            b::BIND_COMPLETE => self.pop_if(&[Kind::Bind]),
            b::CLOSE_COMPLETE => self.pop_if(&[Kind::Close]),
            b::NO_DATA | b::ROW_DESCRIPTION => self.pop_if(&[Kind::Describe]),
            b::COMMAND_COMPLETE | b::EMPTY_QUERY | b::PORTAL_SUSPENDED => self.pop_if(&[Kind::Execute]),
            b::READY_FOR_QUERY => self.pop_if(&[Kind::Sync, Kind::Query]),
            b::ERROR_RESPONSE => {
                self.on_error(server, client);
                Response::Forward
            }
            b::COPY_IN_RESPONSE => {
                // Syncs sent behind the Execute that started COPY FROM STDIN are ignored by the
                // server; the Sync after CopyDone will be answered instead.
                if self.queue.front().is_some_and(|i| i.kind == Kind::Execute) {
                    while self.queue.get(1).is_some_and(|i| i.kind == Kind::Sync) {
                        self.queue.remove(1);
                    }
                }
                Response::Forward
            }
            _ => Response::Forward,
        }
    }

    /// An ErrorResponse to an extended-protocol message: the server skips to the next Sync, so
    /// nothing queued before it will happen. Undo it, newest first.
    fn on_error(&mut self, server: &mut ServerStatements, client: &mut ClientStatements) {
        match self.queue.front() {
            None | Some(Item { kind: Kind::Query | Kind::Sync, .. }) => return,
            Some(_) => {}
        }
        let end = self.queue.iter().position(|i| i.kind == Kind::Sync);
        let skipped: Vec<Item> = self.queue.drain(..end.unwrap_or(self.queue.len())).collect();
        for item in skipped.into_iter().rev() {
            item.undo(server, client);
        }
        self.skipping = end.is_none();
    }

    /// The response pgmux must send itself now, if the oldest request is one it answers.
    pub fn next_fake(&mut self) -> Option<u8> {
        let tag = match self.queue.front()?.kind {
            Kind::FakeParse => tags::backend::PARSE_COMPLETE,
            Kind::FakeClose => tags::backend::CLOSE_COMPLETE,
            _ => return None,
        };
        self.queue.pop_front();
        Some(tag)
    }

    /// DEALLOCATE ALL or DISCARD ALL completed: no statement exists on the server any more, and
    /// none of the client's names (as PgBouncer's free_server/client_prepared_statements).
    pub fn forget_all(&mut self, server: &mut ServerStatements, client: &mut ClientStatements) {
        server.clear();
        client.map.clear();
    }

    /// The server was lost with these requests in flight: none of them will happen. The
    /// client's side is undone as if the server had skipped them (a name a lost Parse added is
    /// gone, a name a lost Close removed is back); the server's list goes with the server.
    pub fn abandon(&mut self, client: &mut ClientStatements) {
        let mut gone = ServerStatements::default();
        for item in std::mem::take(&mut self.queue).into_iter().rev() {
            item.undo(&mut gone, client);
        }
        self.reset();
    }

    /// Forgets everything (a new server is attached).
    pub fn reset(&mut self) {
        self.queue.clear();
        self.skipping = false;
        self.unnamed_here = false;
    }

    /// Requests still expecting an answer.
    #[cfg(test)]
    fn queued(&self) -> usize {
        self.queue.len()
    }
}

/// Why a client message cannot be relayed; the client is closed, as PgBouncer does.
#[derive(Debug)]
pub enum RewriteError {
    /// Malformed message.
    Protocol(ProtocolError),
    /// Parse of a name the client already uses (`was already prepared`).
    NameInUse(Bytes),
    /// Bind or Describe of a name the client never prepared (or deallocated).
    Unknown(Bytes),
}

impl From<ProtocolError> for RewriteError {
    fn from(e: ProtocolError) -> Self {
        RewriteError::Protocol(e)
    }
}

/// What the relay does after a rewrite.
#[derive(Debug, PartialEq, Eq)]
pub enum Rewritten {
    /// The message must be whole (or its names complete) first.
    NeedMore,
    /// `ready` bytes from the rewrite position may be sent, then `skip` bytes of the message
    /// (a Bind's parameters) pass through unread.
    Done {
        /// Bytes now sendable.
        ready: usize,
        /// Bytes of the message still to pass through.
        skip: usize,
    },
}

/// Everything a rewrite needs, borrowed from the relay.
pub struct Rewrite<'a> {
    /// The client's statements.
    pub client: &'a mut ClientStatements,
    /// The attached server's statements.
    pub server: &'a mut ServerStatements,
    /// Requests in flight on it.
    pub tracker: &'a mut Tracker,
    /// max_prepared_statements.
    pub max: usize,
    /// Named Parses from the client (SHOW STATS total_client_parse_count).
    pub client_parses: u64,
    /// Parses sent to the server for named statements (total_server_parse_count).
    pub server_parses: u64,
    /// Binds of named statements (total_bind_count).
    pub binds: u64,
}

/// Writes the message length of the message at `at` (tag at `at`), `total` bytes with the tag.
fn set_len(buf: &mut BytesMut, at: usize, total: usize) {
    buf[at + 1..at + 5].copy_from_slice(&((total - 1) as i32).to_be_bytes());
}

impl Rewrite<'_> {
    fn push(&mut self, item: Item) {
        self.tracker.push(item, self.server, self.client);
    }

    /// Inserts the messages in `tracker.scratch` at `at`; returns their length.
    fn insert_scratch(&mut self, buf: &mut BytesMut, at: usize) -> usize {
        splice::replace(buf, at, 0, &self.tracker.scratch);
        self.tracker.scratch.len()
    }

    /// Closes least recently used statements over the limit, inserting the Closes at `at`.
    fn evict(&mut self, buf: &mut BytesMut, at: usize) -> usize {
        let mut n = 0;
        while let Some(victim) = self.server.evict_over(self.max) {
            self.tracker.scratch.clear();
            extended::target_message(&mut self.tracker.scratch, tags::frontend::CLOSE, STATEMENT, &server_name(victim));
            n += self.insert_scratch(buf, at + n);
            self.push(Item {
                kind: Kind::Close,
                swallow: true,
                server: Some((victim, false)),
                client: ClientUndo::None,
            });
        }
        n
    }

    /// Makes sure the server has `st`, injecting its Parse at `at`; returns bytes inserted.
    fn ensure_prepared(&mut self, buf: &mut BytesMut, at: usize, st: &Statement) -> usize {
        if self.server.touch(st.hash) {
            return 0;
        }
        self.tracker.scratch.clear();
        extended::parse_raw(&mut self.tracker.scratch, &server_name(st.hash), &st.parse_rest);
        let n = self.insert_scratch(buf, at);
        self.server.insert(st.hash);
        self.server_parses += 1;
        self.push(Item { kind: Kind::Parse, swallow: true, server: Some((st.hash, true)), client: ClientUndo::None });
        n + self.evict(buf, at + n)
    }

    /// Before a Bind or Describe of the unnamed statement: makes the server's unnamed statement
    /// the client's. Returns bytes inserted at `at`.
    fn ensure_unnamed(&mut self, buf: &mut BytesMut, at: usize) -> usize {
        if self.tracker.unnamed_here {
            return 0;
        }
        self.tracker.unnamed_here = true;
        self.tracker.scratch.clear();
        let kind = if self.client.unnamed_valid {
            extended::parse_raw(&mut self.tracker.scratch, b"", &self.client.unnamed);
            Kind::Parse
        } else {
            // The client has none: drop the server's, so that PostgreSQL reports it missing.
            extended::target_message(&mut self.tracker.scratch, tags::frontend::CLOSE, STATEMENT, b"");
            Kind::Close
        };
        let n = self.insert_scratch(buf, at);
        self.push(Item { kind, swallow: true, server: None, client: ClientUndo::None });
        n
    }

    /// Replaces the statement name at `name_at` (`old` bytes) of the message at `at` with the
    /// server-side name; returns the new total length of the message.
    fn rename(buf: &mut BytesMut, at: usize, total: usize, name_at: usize, old: usize, hash: u64) -> usize {
        splice::replace(buf, name_at, old, &server_name(hash));
        let total = total - old + NAME_LEN;
        set_len(buf, at, total);
        total
    }

    /// Rewrites the client message with type `tag` (Parse, Bind, Describe or Close), `total`
    /// bytes long, starting at `buf[at]`. Bytes before `at` are already scanned.
    ///
    /// # Errors
    /// A malformed message, a reused name, or an unknown name.
    pub fn message(&mut self, buf: &mut BytesMut, at: usize, tag: u8, total: usize) -> Result<Rewritten, RewriteError> {
        let whole = buf.len() - at >= total;
        let done = |ready, skip| Ok(Rewritten::Done { ready, skip });
        match tag {
            tags::frontend::PARSE => {
                if !whole {
                    return Ok(Rewritten::NeedMore);
                }
                let p = extended::parse(&buf[at + 5..at + total])?;
                if p.name.is_empty() {
                    self.client.unnamed.clear();
                    self.client.unnamed.extend_from_slice(p.rest);
                    self.client.unnamed_valid = true;
                    self.tracker.unnamed_here = true;
                    self.push(Item { kind: Kind::Parse, swallow: false, server: None, client: ClientUndo::Unnamed });
                    return done(total, 0);
                }
                if self.client.map.contains_key(p.name) {
                    return Err(RewriteError::NameInUse(Bytes::copy_from_slice(p.name)));
                }
                self.client_parses += 1;
                let mut h = DefaultHasher::new();
                p.rest.hash(&mut h);
                let hash = h.finish();
                let name = Bytes::copy_from_slice(p.name);
                let name_len = name.len();
                let st = Arc::new(Statement { hash, parse_rest: Bytes::copy_from_slice(p.rest) });
                self.client.map.insert(name.clone(), st);
                if self.server.touch(hash) {
                    // Already prepared there (by any client): send nothing, answer it ourselves.
                    splice::replace(buf, at, total, b"");
                    self.push(Item {
                        kind: Kind::FakeParse,
                        swallow: false,
                        server: None,
                        client: ClientUndo::Added(name),
                    });
                    return done(0, 0);
                }
                let total = Self::rename(buf, at, total, at + 5, name_len, hash);
                self.server.insert(hash);
                self.server_parses += 1;
                self.push(Item {
                    kind: Kind::Parse,
                    swallow: false,
                    server: Some((hash, true)),
                    client: ClientUndo::Added(name),
                });
                let evicted = self.evict(buf, at + total);
                done(total + evicted, 0)
            }
            tags::frontend::BIND => {
                let end = buf.len().min(at + total);
                let head = match extended::bind_head(&buf[at + 5..end]) {
                    Ok(h) => h,
                    Err(_) if !whole => return Ok(Rewritten::NeedMore),
                    Err(e) => return Err(e.into()),
                };
                if head.statement.is_empty() {
                    let pre = self.ensure_unnamed(buf, at);
                    self.push(Item::plain(Kind::Bind));
                    return done(pre, total);
                }
                let Some(st) = self.client.map.get(head.statement).cloned() else {
                    if self.tracker.skipping {
                        // The server skips to the next Sync after an error, ignoring this Bind;
                        // its statement may be one that error undid (a pipelined Parse that
                        // failed before its Bind arrived here).
                        return done(0, total);
                    }
                    return Err(RewriteError::Unknown(Bytes::copy_from_slice(head.statement)));
                };
                self.binds += 1;
                let (name_off, old) = (5 + head.statement_at(), head.statement.len());
                let pre = self.ensure_prepared(buf, at, &st);
                let at = at + pre;
                let total = Self::rename(buf, at, total, at + name_off, old, st.hash);
                self.push(Item::plain(Kind::Bind));
                let head_len = name_off + NAME_LEN + 1;
                done(pre + head_len, total - head_len)
            }
            tags::frontend::DESCRIBE | tags::frontend::CLOSE => {
                if !whole {
                    return Ok(Rewritten::NeedMore);
                }
                let t = extended::target(&buf[at + 5..at + total])?;
                let describe = tag == tags::frontend::DESCRIBE;
                if !t.is_named_statement() {
                    let mut pre = 0;
                    if t.kind == STATEMENT {
                        if describe {
                            pre = self.ensure_unnamed(buf, at);
                        } else if !self.tracker.skipping {
                            self.client.unnamed_valid = false;
                            self.tracker.unnamed_here = true;
                        }
                    }
                    self.push(Item::plain(if describe { Kind::Describe } else { Kind::Close }));
                    return done(pre + total, 0);
                }
                if !describe {
                    // The server keeps the statement (other clients may use it; eviction closes
                    // it): forget the name and answer CloseComplete in order, as PgBouncer.
                    let client = match self.client.map.remove_entry(t.name) {
                        Some((name, st)) => ClientUndo::Removed(name, st),
                        None => ClientUndo::None,
                    };
                    splice::replace(buf, at, total, b"");
                    self.push(Item { kind: Kind::FakeClose, swallow: false, server: None, client });
                    return done(0, 0);
                }
                let Some(st) = self.client.map.get(t.name).cloned() else {
                    if self.tracker.skipping {
                        // Ignored by the server until the next Sync, as a Bind above.
                        return done(total, 0);
                    }
                    return Err(RewriteError::Unknown(Bytes::copy_from_slice(t.name)));
                };
                let old = t.name.len();
                let pre = self.ensure_prepared(buf, at, &st);
                let total = Self::rename(buf, at + pre, total, at + pre + 6, old, st.hash);
                self.push(Item::plain(Kind::Describe));
                done(pre + total, 0)
            }
            _ => done(total, 0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgmux_protocol::split_frame;
    use tags::backend as b;

    struct Fixture {
        client: ClientStatements,
        server: ServerStatements,
        tracker: Tracker,
        max: usize,
    }

    impl Fixture {
        fn new(max: usize) -> Self {
            Fixture {
                client: ClientStatements::default(),
                server: ServerStatements::default(),
                tracker: Tracker::default(),
                max,
            }
        }

        /// Rewrites whole messages as the relay does; returns what goes to the server.
        fn send(&mut self, msgs: &[(u8, &[u8])]) -> Result<Vec<(u8, Vec<u8>)>, RewriteError> {
            let mut buf = BytesMut::new();
            for (tag, body) in msgs {
                buf.extend_from_slice(&[*tag]);
                buf.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
                buf.extend_from_slice(body);
            }
            let mut at = 0;
            while at < buf.len() {
                let tag = buf[at];
                let total = i32::from_be_bytes(buf[at + 1..at + 5].try_into().unwrap()) as usize + 1;
                match tag {
                    b'S' => {
                        self.tracker.on_sync(&mut self.server, &mut self.client);
                        at += total;
                        continue;
                    }
                    b'E' => {
                        self.tracker.on_execute(&mut self.server, &mut self.client);
                        at += total;
                        continue;
                    }
                    _ => {}
                }
                let mut rw = Rewrite {
                    client: &mut self.client,
                    server: &mut self.server,
                    tracker: &mut self.tracker,
                    max: self.max,
                    client_parses: 0,
                    server_parses: 0,
                    binds: 0,
                };
                match rw.message(&mut buf, at, tag, total)? {
                    Rewritten::Done { ready, skip } => at += ready + skip,
                    Rewritten::NeedMore => panic!("whole messages were given"),
                }
            }
            let mut v = Vec::new();
            while let Some(f) = split_frame(&mut buf, 1 << 20).unwrap() {
                v.push((f.tag, f.body().to_vec()));
            }
            Ok(v)
        }

        fn respond(&mut self, tag: u8) -> Response {
            self.tracker.on_response(tag, &mut self.server, &mut self.client)
        }
    }

    /// Types of the statement-level messages sent (Execute and Sync pass unchanged).
    fn tags_of(v: &[(u8, Vec<u8>)]) -> Vec<u8> {
        v.iter().map(|m| m.0).filter(|t| *t != b'E' && *t != b'S').collect()
    }

    const PARSE_S1: &[u8] = b"s1\0SELECT $1\0\0\x01\0\0\0\x17";
    const BIND_S1: &[u8] = b"\0s1\0\0\0\0\x01\0\0\0\x011\0\0";

    #[test]
    fn bind_on_a_new_server_injects_parse_and_swallows_its_completion() {
        let mut f = Fixture::new(10);
        let out = f.send(&[(b'P', PARSE_S1), (b'S', b"")]).unwrap();
        assert_eq!(tags_of(&out), b"P");
        assert!(out[0].1.starts_with(b"pgmux_"));
        assert_eq!(f.respond(b::PARSE_COMPLETE), Response::Forward);
        assert_eq!(f.respond(b::READY_FOR_QUERY), Response::Forward);
        assert_eq!(f.server.len(), 1);

        // Same client, another server: Bind brings its Parse along.
        let mut f2 = Fixture { client: std::mem::take(&mut f.client), ..Fixture::new(10) };
        let out = f2.send(&[(b'B', BIND_S1), (b'E', b"\0\0\0\0\0"), (b'S', b"")]).unwrap();
        assert_eq!(tags_of(&out), b"PB");
        assert_eq!(&out[1].1[1..1 + NAME_LEN], &out[0].1[..NAME_LEN]);
        assert_eq!(f2.respond(b::PARSE_COMPLETE), Response::Swallow);
        assert_eq!(f2.respond(b::BIND_COMPLETE), Response::Forward);
        assert_eq!(f2.respond(b::COMMAND_COMPLETE), Response::Forward);
        assert_eq!(f2.respond(b::READY_FOR_QUERY), Response::Forward);
        assert_eq!(f2.tracker.queued(), 0);
    }

    #[test]
    fn parse_of_a_statement_the_server_has_is_answered_by_pgmux_in_order() {
        let mut f = Fixture::new(10);
        f.send(&[(b'P', PARSE_S1), (b'S', b"")]).unwrap();
        f.respond(b::PARSE_COMPLETE);
        f.respond(b::READY_FOR_QUERY);
        // Another client (new map) prepares the same query behind a Bind of the unnamed one.
        f.client = ClientStatements::default();
        let out =
            f.send(&[(b'P', b"\0SELECT 2\0\0\0"), (b'P', b"other\0SELECT $1\0\0\x01\0\0\0\x17"), (b'S', b"")]).unwrap();
        assert_eq!(tags_of(&out), b"P", "only the unnamed Parse is sent");
        assert_eq!(f.tracker.next_fake(), None, "the fake waits for the unnamed ParseComplete");
        assert_eq!(f.respond(b::PARSE_COMPLETE), Response::Forward);
        assert_eq!(f.tracker.next_fake(), Some(b::PARSE_COMPLETE));
        assert_eq!(f.respond(b::READY_FOR_QUERY), Response::Forward);
    }

    #[test]
    fn an_error_undoes_server_and_client_state_up_to_sync() {
        let mut f = Fixture::new(10);
        f.send(&[(b'P', b"bad\0SELEC oops\0\0\0"), (b'P', PARSE_S1), (b'S', b"")]).unwrap();
        assert_eq!((f.server.len(), f.client.len()), (2, 2));
        f.respond(b::ERROR_RESPONSE);
        assert_eq!((f.server.len(), f.client.len()), (0, 0), "PostgreSQL skipped both Parses");
        assert_eq!(f.respond(b::READY_FOR_QUERY), Response::Forward);
        // Both names can be prepared again.
        f.send(&[(b'P', PARSE_S1)]).unwrap();
    }

    #[test]
    fn a_bind_of_a_statement_whose_parse_failed_before_it_arrived_is_passed_on() {
        let mut f = Fixture::new(10);
        // The failing Parse is answered before the client's Bind and Describe of it are read.
        f.send(&[(b'P', PARSE_S1)]).unwrap();
        f.respond(b::ERROR_RESPONSE);
        assert_eq!(f.client.len(), 0, "the error undid it");
        let out = f.send(&[(b'B', BIND_S1), (b'D', b"Ss1\0"), (b'E', b"\0\0\0\0\0"), (b'S', b"")]).unwrap();
        assert_eq!(tags_of(&out), b"BD", "relayed for the server to ignore, not refused");
        assert_eq!(f.respond(b::READY_FOR_QUERY), Response::Forward);
        assert_eq!(f.tracker.queued(), 0);
        // Outside that window an unknown name is still refused.
        assert!(matches!(f.send(&[(b'B', BIND_S1)]), Err(RewriteError::Unknown(_))));
    }

    #[test]
    fn messages_after_an_error_and_before_sync_are_skipped() {
        let mut f = Fixture::new(10);
        f.send(&[(b'P', b"\0SELECT aaaa\0\0\0"), (b'B', b"\0\0\0\0\0\0\0\0"), (b'E', b"\0\0\0\0\0")]).unwrap();
        f.respond(b::ERROR_RESPONSE);
        // Sent later, still before the Sync: the server ignores it.
        f.send(&[(b'P', PARSE_S1)]).unwrap();
        assert_eq!((f.server.len(), f.client.len(), f.tracker.queued()), (0, 0, 0));
        f.send(&[(b'S', b"")]).unwrap();
        assert_eq!(f.respond(b::READY_FOR_QUERY), Response::Forward);
        assert_eq!(f.tracker.queued(), 0);
    }

    #[test]
    fn eviction_closes_the_least_recently_used() {
        let mut f = Fixture::new(2);
        f.send(&[(b'P', b"a\0SELECT 1\0\0\0"), (b'P', b"b\0SELECT 2\0\0\0")]).unwrap();
        // Using `a` makes `b` the oldest.
        f.send(&[(b'B', b"\0a\0\0\0\0\0\0\0")]).unwrap();
        let out = f.send(&[(b'P', b"c\0SELECT 3\0\0\0")]).unwrap();
        assert_eq!(tags_of(&out), b"PC");
        assert_eq!(out[1].1[1..1 + NAME_LEN], server_name(f.client.map[&b"b"[..]].hash));
        assert_eq!(f.server.len(), 2);
        for r in [b::PARSE_COMPLETE, b::PARSE_COMPLETE, b::BIND_COMPLETE, b::PARSE_COMPLETE] {
            assert_eq!(f.respond(r), Response::Forward);
        }
        assert_eq!(f.respond(b::CLOSE_COMPLETE), Response::Swallow);
    }

    #[test]
    fn close_forgets_the_name_and_is_answered_by_pgmux() {
        let mut f = Fixture::new(10);
        let out = f.send(&[(b'C', b"Snever-prepared\0")]).unwrap();
        assert!(out.is_empty());
        assert_eq!(f.tracker.next_fake(), Some(b::CLOSE_COMPLETE));
        f.send(&[(b'P', PARSE_S1)]).unwrap();
        f.send(&[(b'C', b"Ss1\0")]).unwrap();
        assert_eq!(f.client.len(), 0);
        assert_eq!(f.server.len(), 1, "the server keeps it for other clients");
        assert!(matches!(f.send(&[(b'B', BIND_S1)]), Err(RewriteError::Unknown(_))));
    }

    #[test]
    fn reused_and_unknown_names_are_refused() {
        let mut f = Fixture::new(10);
        f.send(&[(b'P', PARSE_S1)]).unwrap();
        assert!(matches!(f.send(&[(b'P', PARSE_S1)]), Err(RewriteError::NameInUse(n)) if &n[..] == b"s1"));
        assert!(matches!(f.send(&[(b'D', b"Snope\0")]), Err(RewriteError::Unknown(n)) if &n[..] == b"nope"));
    }

    #[test]
    fn the_unnamed_statement_follows_the_client_across_servers() {
        let mut f = Fixture::new(10);
        // Parse and Bind together: nothing added.
        let out = f.send(&[(b'P', b"\0SELECT 7\0\0\0"), (b'B', b"\0\0\0\0\0\0\0\0"), (b'S', b"")]).unwrap();
        assert_eq!(tags_of(&out), b"PB");
        // On another server, a lone Bind of the unnamed statement brings the Parse with it.
        f.server = ServerStatements::default();
        f.tracker.reset();
        let out = f.send(&[(b'B', b"\0\0\0\0\0\0\0\0"), (b'S', b"")]).unwrap();
        assert_eq!(tags_of(&out), b"PB");
        assert_eq!(out[0].1, b"\0SELECT 7\0\0\0");
        assert_eq!(f.respond(b::PARSE_COMPLETE), Response::Swallow);
        // A simple Query destroyed it: the next server is told to drop its own.
        f.tracker.reset();
        f.send(&[(b'Q', b"SELECT 1\0")]).ok();
        f.tracker.on_query(true, &mut f.server, &mut f.client);
        f.tracker.reset();
        let out = f.send(&[(b'D', b"S\0")]).unwrap();
        assert_eq!(tags_of(&out), b"CD");
    }

    #[test]
    fn copy_in_drops_the_syncs_the_server_ignores() {
        let mut f = Fixture::new(10);
        f.send(&[(b'E', b"\0\0\0\0\0"), (b'S', b"")]).unwrap();
        f.respond(b::COPY_IN_RESPONSE);
        assert_eq!(f.tracker.queued(), 1);
        f.send(&[(b'S', b"")]).unwrap(); // after CopyDone
        assert_eq!(f.respond(b::COMMAND_COMPLETE), Response::Forward);
        assert_eq!(f.respond(b::READY_FOR_QUERY), Response::Forward);
        assert_eq!(f.tracker.queued(), 0);
    }
}
