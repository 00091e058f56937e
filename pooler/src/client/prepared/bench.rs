//! One extended-protocol transaction through the prepared-statement mapping, driven as the relay
//! drives it (rewrite each client message, then match each server answer), without sockets: the
//! unit tests' fixture and the hot-path microbenchmark (benches/hot_path.rs) share it.

use bytes::BytesMut;
use pgmux_protocol::tags;

use super::{ClientStatements, Response, Rewrite, RewriteError, Rewritten, Tracker};
use crate::server::ServerStatements;

/// Counters a drive adds to SHOW STATS.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// total_client_parse_count.
    pub client_parses: u64,
    /// total_server_parse_count.
    pub server_parses: u64,
    /// total_bind_count.
    pub binds: u64,
}

/// The client's and the server's statements and the requests in flight.
#[derive(Debug, Default)]
pub struct Books {
    /// The client's statements.
    pub client: ClientStatements,
    /// The server's statements.
    pub server: ServerStatements,
    /// Requests in flight.
    pub tracker: Tracker,
    /// The server's kept batch (`ServerConn::kept_batch`).
    pub kept: BytesMut,
}

impl Books {
    /// Rewrites the whole client messages in `buf` for the server in place, as the relay's
    /// client scan does (Sync and Execute are counted, the rest rewritten) for a server outside
    /// a transaction block.
    ///
    /// # Errors
    /// As [`Rewrite::message`].
    pub fn rewrite(
        &mut self,
        buf: &mut BytesMut,
        max: usize,
        cache_unnamed: bool,
        epoch: u64,
    ) -> Result<Counts, RewriteError> {
        let mut counts = Counts::default();
        let mut at = 0;
        while at < buf.len() {
            let tag = buf[at];
            let total = i32::from_be_bytes(buf[at + 1..at + 5].try_into().expect("4 bytes")) as usize + 1;
            self.tracker.replay_sent_behind(tag);
            match tag {
                tags::frontend::SYNC => self.tracker.on_sync(&mut self.server, &mut self.client),
                tags::frontend::EXECUTE => self.tracker.on_execute(&mut self.server, &mut self.client),
                tags::frontend::QUERY | tags::frontend::FUNCTION_CALL => {
                    self.tracker.on_query(tag == tags::frontend::QUERY, &mut self.server, &mut self.client)
                }
                _ => {
                    let mut rw =
                        Rewrite::new(&mut self.client, &mut self.server, &mut self.tracker, max, cache_unnamed, epoch);
                    rw.replayable = true;
                    let result = rw.message(buf, at, tag, total);
                    counts.client_parses += rw.client_parses;
                    counts.server_parses += rw.server_parses;
                    counts.binds += rw.binds;
                    match result? {
                        Rewritten::Done { ready, skip } => at += ready + skip,
                        Rewritten::NeedMore => unreachable!("whole messages were given"),
                    }
                    continue;
                }
            }
            if tag == tags::frontend::SYNC && self.tracker.replay_keeping() {
                // As the relay keeps a batch read in one piece.
                self.tracker.replay_keep(&mut self.kept, &buf[..at + total]);
            }
            at += total;
        }
        Ok(counts)
    }

    /// A server answer of type `tag`.
    pub fn respond(&mut self, tag: u8) -> Response {
        let r = self.tracker.on_response(tag, &mut self.server, &mut self.client);
        if tag == tags::backend::READY_FOR_QUERY && r == Response::Forward {
            // As the relay's on_ready: the batch is answered.
            self.tracker.replay_off();
        }
        r
    }
}

/// pgbench -M extended's transaction (`SELECT abalance FROM pgbench_accounts WHERE aid = $1`:
/// Parse of the unnamed statement, Bind, Describe portal, Execute, Sync) with the cache of
/// unnamed statements on or off: what pgmux does to it per transaction, minus the sockets.
#[doc(hidden)]
#[derive(Debug)]
pub struct ExtendedRound {
    books: Books,
    batch: BytesMut,
    buf: BytesMut,
    cache_unnamed: bool,
}

impl ExtendedRound {
    /// A client with no statement yet on a fresh server.
    pub fn new(cache_unnamed: bool) -> Self {
        use pgmux_protocol::build;
        let mut batch = BytesMut::new();
        build::parse(&mut batch, "", "SELECT abalance FROM pgbench_accounts WHERE aid = $1;");
        build::bind(&mut batch, "", "", &[Some(b"4711")]);
        pgmux_protocol::extended::target_message(&mut batch, tags::frontend::DESCRIBE, b'P', b"");
        build::execute(&mut batch, "");
        build::sync(&mut batch);
        ExtendedRound { books: Books::default(), batch, buf: BytesMut::new(), cache_unnamed }
    }

    /// One transaction: the batch rewritten as it is read, then the server's answers matched
    /// (and pgmux's own ParseComplete taken). Returns the bytes that would go to the server.
    pub fn run(&mut self) -> usize {
        use tags::backend as b;
        self.buf.clear();
        self.buf.extend_from_slice(&self.batch);
        self.books.rewrite(&mut self.buf, 200, self.cache_unnamed, 0).expect("a well-formed batch");
        let answers: &[u8] = if self.buf[0] == tags::frontend::PARSE {
            &[b::PARSE_COMPLETE, b::BIND_COMPLETE, b::ROW_DESCRIPTION, b::COMMAND_COMPLETE, b::READY_FOR_QUERY]
        } else {
            &[b::BIND_COMPLETE, b::ROW_DESCRIPTION, b::COMMAND_COMPLETE, b::READY_FOR_QUERY]
        };
        while self.books.tracker.next_fake().is_some() {}
        for &tag in answers {
            self.books.respond(tag);
            while self.books.tracker.next_fake().is_some() {}
        }
        self.buf.len()
    }
}
