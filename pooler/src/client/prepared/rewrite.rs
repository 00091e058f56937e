//! Rewriting one client message (Parse, Bind, Describe, Close) for the attached server:
//! renaming, injecting the Parse a server lacks, answering what pgmux answers itself.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use pgmux_protocol::extended::{self, PORTAL, STATEMENT};
use pgmux_protocol::{tags, ProtocolError};

use super::tracker::{ClientUndo, Item, Kind, Tracker, NO_STATEMENT};
use super::{server_name, statement_hash, ClientStatements, Statement, NAME_LEN};
use crate::client::splice;
use crate::server::ServerStatements;

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
    /// cache_unnamed_statements: the unnamed statement is served as a named one.
    pub cache_unnamed: bool,
    /// The server is outside a transaction block, or in one that holds only its BEGIN: a batch
    /// that opens with the unnamed statement served from the cache can be sent again if the
    /// server refuses it (replay.rs).
    pub replayable: bool,
    /// `replayable` in a block that holds only its BEGIN: sent again behind a ROLLBACK and it.
    pub in_fresh_block: bool,
    /// The statement epoch now: what clients parse in it is named apart from what they parsed
    /// before it (`statement_hash`).
    pub epoch: u64,
    /// Named Parses from the client (SHOW STATS total_client_parse_count).
    pub client_parses: u64,
    /// Parses sent to the server for named statements (total_server_parse_count).
    pub server_parses: u64,
    /// Binds of named statements (total_bind_count).
    pub binds: u64,
}

/// The longest unnamed Parse (bytes, tag included) whose text a client's statements keep, to
/// prepare it on the next server and serve it from the cache of unnamed statements. Longer
/// ones go through as they come, so that a client's memory is not the size of its statement.
pub const MAX_KEPT_UNNAMED: usize = 1 << 20;

/// Writes the message length of the message at `at` (tag at `at`), `total` bytes with the tag.
fn set_len(buf: &mut BytesMut, at: usize, total: usize) {
    buf[at + 1..at + 5].copy_from_slice(&((total - 1) as i32).to_be_bytes());
}

impl<'a> Rewrite<'a> {
    /// A rewrite with the relay's books and settings, its counters at zero, for a batch that is
    /// not kept to be sent again (`replayable` false; the client scan sets it).
    pub fn new(
        client: &'a mut ClientStatements,
        server: &'a mut ServerStatements,
        tracker: &'a mut Tracker,
        max: usize,
        cache_unnamed: bool,
        epoch: u64,
    ) -> Self {
        Rewrite {
            client,
            server,
            tracker,
            max,
            cache_unnamed,
            replayable: false,
            in_fresh_block: false,
            epoch,
            client_parses: 0,
            server_parses: 0,
            binds: 0,
        }
    }

    fn push(&mut self, item: Item) {
        self.tracker.push(item, self.server, self.client);
    }

    /// Closes least recently used statements over the limit, inserting the Closes at `at`.
    fn evict(&mut self, buf: &mut BytesMut, at: usize) -> usize {
        let mut n = 0;
        while let Some(victim) = self.server.evict_over(self.max) {
            n += splice::insert_built(buf, at + n, |m| {
                extended::target_message(m, tags::frontend::CLOSE, STATEMENT, &server_name(victim));
            });
            self.push(Item {
                kind: Kind::Close,
                swallow: true,
                server: Some((victim, false)),
                client: ClientUndo::None,
                statement: NO_STATEMENT,
            });
        }
        n
    }

    /// Makes sure the server has the statement `hash` (`parse_rest` after its name), injecting
    /// its Parse at `at`; returns bytes inserted.
    pub(super) fn ensure_prepared(&mut self, buf: &mut BytesMut, at: usize, hash: u64, parse_rest: &[u8]) -> usize {
        if self.server.lookup(hash) {
            return 0;
        }
        let n = splice::insert_built(buf, at, |m| extended::parse_raw(m, &server_name(hash), parse_rest));
        self.server.insert(hash);
        self.server_parses += 1;
        self.push(Item {
            kind: Kind::Parse,
            swallow: true,
            server: Some((hash, true)),
            client: ClientUndo::None,
            statement: NO_STATEMENT,
        });
        n + self.evict(buf, at + n)
    }

    /// The client's unnamed statement as a cached named one, prepared on the server (a Parse
    /// injected at `at` if needed): its hash and the bytes inserted. None when the client has no
    /// unnamed statement or the cache is off.
    fn ensure_unnamed_cached(&mut self, buf: &mut BytesMut, at: usize) -> Option<(u64, usize)> {
        if !self.cache_unnamed || !self.client.unnamed_valid || self.client.unnamed_uncached {
            return None;
        }
        let hash = match self.client.unnamed_hash {
            Some(h) => h.get(),
            None => self.name_unnamed(),
        };
        let rest = std::mem::take(&mut self.client.unnamed);
        let n = self.ensure_prepared(buf, at, hash, &rest);
        self.client.unnamed = rest;
        Some((hash, n))
    }

    /// Names the client's unnamed statement (its text as it is now) in the current epoch, as
    /// the cache serves it; returns the hash.
    pub(super) fn name_unnamed(&mut self) -> u64 {
        let hash = statement_hash(&self.client.unnamed, self.client.context, self.epoch);
        self.client.unnamed_hash = std::num::NonZeroU64::new(hash);
        hash
    }

    /// A named Parse (client name or, with the cache, the unnamed statement) of `hash`, `total`
    /// bytes at `at` with a name of `name_len` bytes: skipped and answered by pgmux when the
    /// server holds the statement, renamed and sent otherwise. Returns the bytes now sendable.
    fn parse_named(
        &mut self,
        buf: &mut BytesMut,
        at: usize,
        total: usize,
        (name_len, hash): (usize, u64),
        client: ClientUndo,
    ) -> usize {
        self.client_parses += 1;
        if self.server.lookup(hash) {
            // Already prepared there (by any client): send nothing, answer it ourselves.
            splice::replace(buf, at, total, b"");
            self.push(Item { kind: Kind::FakeParse, swallow: false, server: None, client, statement: NO_STATEMENT });
            return 0;
        }
        let total = Self::rename(buf, at, total, at + 5, name_len, hash);
        self.server.insert(hash);
        self.server_parses += 1;
        self.push(Item {
            kind: Kind::Parse,
            swallow: false,
            server: Some((hash, true)),
            client,
            statement: NO_STATEMENT,
        });
        total + self.evict(buf, at + total)
    }

    /// Before a Bind or Describe of the unnamed statement: makes the server's unnamed statement
    /// the client's. Returns bytes inserted at `at`.
    fn ensure_unnamed(&mut self, buf: &mut BytesMut, at: usize) -> usize {
        if self.tracker.unnamed_here {
            return 0;
        }
        self.tracker.unnamed_here = true;
        let (kind, n) = if self.client.unnamed_valid {
            (Kind::Parse, splice::insert_built(buf, at, |m| extended::parse_raw(m, b"", &self.client.unnamed)))
        } else {
            // The client has none: drop the server's, so that PostgreSQL reports it missing.
            let n =
                splice::insert_built(buf, at, |m| extended::target_message(m, tags::frontend::CLOSE, STATEMENT, b""));
            (Kind::Close, n)
        };
        self.push(Item { kind, swallow: true, server: None, client: ClientUndo::None, statement: NO_STATEMENT });
        n
    }

    /// An unnamed Parse of `total` bytes, over [`MAX_KEPT_UNNAMED`], streamed to the server as
    /// PgBouncer streams every unnamed one: the client then has no unnamed statement pgmux can
    /// prepare elsewhere (a Bind of it on another server finds none, as with PgBouncer), and
    /// neither its text nor the buffer that held an earlier one is kept.
    fn pass_long_unnamed(&mut self, total: usize) -> Rewritten {
        self.client.unnamed.free();
        self.client.unnamed_valid = false;
        self.client.unnamed_hash = None;
        self.tracker.unnamed_here = true;
        self.push(Item { client: ClientUndo::Unnamed, ..Item::plain(Kind::Parse) });
        Rewritten::Done { ready: 0, skip: total }
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
        if self.tracker.skipping {
            // After an error the server ignores everything up to the next Sync: pass it on as it
            // is, and neither side's statements change.
            return done(0, total);
        }
        match tag {
            tags::frontend::PARSE => {
                // An unnamed statement too long to keep is passed on as it comes, untracked.
                if total > MAX_KEPT_UNNAMED && buf.get(at + 5) == Some(&0) {
                    return Ok(self.pass_long_unnamed(total));
                }
                if !whole {
                    return Ok(Rewritten::NeedMore);
                }
                let p = extended::parse(&buf[at + 5..at + total])?;
                if p.name.is_empty() {
                    self.client.unnamed.set(p.rest);
                    self.client.unnamed_valid = true;
                    // PostgreSQL analyses an unnamed Parse when it comes: behind requests still
                    // in flight (DDL in the same pipeline) or DDL earlier in the transaction
                    // (the epoch rises when it ends) it may see columns no cached statement
                    // has, and goes to the server as it came, as with the cache off.
                    let behind_ddl = !self.tracker.only_own_answers() || self.tracker.ddl_seen;
                    self.client.unnamed_uncached = behind_ddl;
                    if self.cache_unnamed && !behind_ddl {
                        let hash = self.name_unnamed();
                        let ready = self.parse_named(buf, at, total, (0, hash), ClientUndo::Unnamed);
                        if ready == 0 && at == 0 && self.replayable {
                            // Served from the cache, at the front of what is unsent: the
                            // batch is kept in case the server refuses the statement.
                            self.tracker.replay_arm(self.in_fresh_block);
                        }
                        return done(ready, 0);
                    }
                    self.client.unnamed_hash = None;
                    self.tracker.unnamed_here = true;
                    self.push(Item { client: ClientUndo::Unnamed, ..Item::plain(Kind::Parse) });
                    return done(total, 0);
                }
                if self.client.map.contains_key(p.name) {
                    return Err(RewriteError::NameInUse(Bytes::copy_from_slice(p.name)));
                }
                // After DDL in the open transaction a text may mean other columns than the same
                // text prepared before it: a name of its own (the epoch rises when it ends).
                let epoch = if self.tracker.ddl_seen { rand::random::<u64>() | 1 << 63 } else { self.epoch };
                let hash = statement_hash(p.rest, self.client.context, epoch);
                let name = Bytes::copy_from_slice(p.name);
                let name_len = name.len();
                let st = Arc::new(Statement { hash, parse_rest: Bytes::copy_from_slice(p.rest) });
                self.client.map.insert(name.clone(), st);
                done(self.parse_named(buf, at, total, (name_len, hash), ClientUndo::Added(name)), 0)
            }
            tags::frontend::BIND => {
                let end = buf.len().min(at + total);
                let head = match extended::bind_head(&buf[at + 5..end]) {
                    Ok(h) => h,
                    Err(_) if !whole => return Ok(Rewritten::NeedMore),
                    Err(e) => return Err(e.into()),
                };
                let (name_off, old) = (5 + head.statement_at(), head.statement.len());
                let (hash, pre) = if head.statement.is_empty() {
                    match self.ensure_unnamed_cached(buf, at) {
                        Some(cached) => cached,
                        None => {
                            let pre = self.ensure_unnamed(buf, at);
                            self.push(Item::plain(Kind::Bind));
                            return done(pre, total);
                        }
                    }
                } else {
                    let Some(st) = self.client.map.get(head.statement).cloned() else {
                        return Err(RewriteError::Unknown(Bytes::copy_from_slice(head.statement)));
                    };
                    (st.hash, self.ensure_prepared(buf, at, st.hash, &st.parse_rest))
                };
                self.binds += 1;
                let at = at + pre;
                let total = Self::rename(buf, at, total, at + name_off, old, hash);
                self.push(Item::of_statement(Kind::Bind, hash));
                let head_len = name_off + NAME_LEN + 1;
                done(pre + head_len, total - head_len)
            }
            tags::frontend::DESCRIBE | tags::frontend::CLOSE => {
                if !whole {
                    return Ok(Rewritten::NeedMore);
                }
                let describe = tag == tags::frontend::DESCRIBE;
                // A kind that is neither statement nor portal goes to the server as it is, as
                // PgBouncer sends it: PostgreSQL answers an ERROR and the session goes on.
                if total > 5 && !matches!(buf[at + 5], STATEMENT | PORTAL) {
                    self.push(Item::plain(if describe { Kind::Describe } else { Kind::Close }));
                    return done(total, 0);
                }
                if describe && extended::target(&buf[at + 5..at + total])?.is_unnamed_statement() {
                    if let Some((hash, pre)) = self.ensure_unnamed_cached(buf, at) {
                        let total = Self::rename(buf, at + pre, total, at + pre + 6, 0, hash);
                        self.push(Item::of_statement(Kind::Describe, hash));
                        return done(pre + total, 0);
                    }
                }
                let t = extended::target(&buf[at + 5..at + total])?;
                if !t.is_named_statement() {
                    let mut pre = 0;
                    if t.kind == STATEMENT {
                        if describe {
                            pre = self.ensure_unnamed(buf, at);
                        } else {
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
                    self.push(Item {
                        kind: Kind::FakeClose,
                        swallow: false,
                        server: None,
                        client,
                        statement: NO_STATEMENT,
                    });
                    return done(0, 0);
                }
                let Some(st) = self.client.map.get(t.name).cloned() else {
                    return Err(RewriteError::Unknown(Bytes::copy_from_slice(t.name)));
                };
                let old = t.name.len();
                let pre = self.ensure_prepared(buf, at, st.hash, &st.parse_rest);
                let total = Self::rename(buf, at + pre, total, at + pre + 6, old, st.hash);
                self.push(Item::of_statement(Kind::Describe, st.hash));
                done(pre + total, 0)
            }
            _ => done(total, 0),
        }
    }
}
