//! The requests in flight on the attached server, oldest first (PgBouncer's outstanding
//! requests): what each assumed about the server's and the client's statements, undone when the
//! server skips it (an error) or is lost.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use pgmux_protocol::tags;

use super::{ClientStatements, Statement};
use crate::server::ServerStatements;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
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
pub(super) enum ClientUndo {
    None,
    /// The name was added by this Parse.
    Added(Bytes),
    /// The name was removed by this Close.
    Removed(Bytes, Arc<Statement>),
    /// This unnamed Parse replaced the client's unnamed statement.
    Unnamed,
}

/// [`Item::statement`] of an item that names no statement pgmux named.
pub(super) const NO_STATEMENT: u32 = 0;

#[derive(Debug)]
pub(super) struct Item {
    pub(super) kind: Kind,
    /// The response answers a message pgmux injected: the client must not see it.
    pub(super) swallow: bool,
    /// Statement hash this request added to (true) or removed from (false) the server's set.
    pub(super) server: Option<(u64, bool)>,
    pub(super) client: ClientUndo,
    /// For a Bind or Describe of a statement pgmux named: the low 32 bits of its hash (never
    /// 0), which a refusal is matched to ([`super::invalidation::raise_for_refusal`]); else
    /// [`NO_STATEMENT`]. Four bytes, within the item's padding.
    pub(super) statement: u32,
}

impl Item {
    pub(super) fn plain(kind: Kind) -> Self {
        Item { kind, swallow: false, server: None, client: ClientUndo::None, statement: NO_STATEMENT }
    }

    /// A Bind or Describe of the statement pgmux named from `hash`.
    pub(super) fn of_statement(kind: Kind, hash: u64) -> Self {
        Item { statement: (hash as u32).max(1), ..Item::plain(kind) }
    }

    pub(super) fn undo(self, server: &mut ServerStatements, client: &mut ClientStatements) {
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
            ClientUndo::Unnamed => {
                client.unnamed_valid = false;
                client.unnamed_hash = None;
            }
        }
    }
}

/// Requests a queue is first made room for.
const QUEUE_START: usize = 8;

/// Requests in flight on the attached server, oldest first (PgBouncer's outstanding requests).
#[derive(Debug, Default)]
pub struct Tracker {
    /// Queries (simple Query or FunctionCall) sent when nothing else was in flight, answered
    /// before anything in `queue`. They need no undo and no entry: most transactions are a
    /// Query alone, and this keeps them from allocating a queue.
    pub(super) leading_queries: u32,
    pub(super) queue: VecDeque<Item>,
    /// The server reported an error and skips everything up to the next Sync not yet sent.
    pub(super) skipping: bool,
    /// The server's unnamed statement is this client's (it sent Parse "" or destroyed it here).
    pub(super) unnamed_here: bool,
    /// Shape-changing DDL completed in the current transaction: the statement epoch is raised
    /// when it ends (invalidation.rs).
    pub ddl_seen: bool,
    /// Queries the server skipped (sent inside an extended batch after its error, before its
    /// Sync): no ReadyForQuery will answer them. One byte, within the struct's padding.
    skipped_queries: u8,
    /// A batch kept to be sent again if the server refuses its cached statement (replay.rs).
    pub(super) replay: super::replay::Stage,
    /// The kept batch is the first thing in a block that holds only its BEGIN (replay.rs).
    pub(super) replay_in_block: bool,
    /// Whether the open transaction block holds nothing but the client's lone BEGIN (replay.rs).
    pub(super) block: super::replay::Block,
}

/// What to do with a response from the server.
#[derive(Debug, PartialEq, Eq)]
pub enum Response {
    /// It answers the client's own message.
    Forward,
    /// It answers a message pgmux injected.
    Swallow,
    /// A ParameterDescription answering a kept batch (replay.rs): the relay looks at what
    /// follows it, and drops it if that is a refusal the batch is sent again for, or else
    /// forwards it and drops the batch (`replay_off`).
    Hold,
}

impl Tracker {
    /// Frees the queue's memory when nothing is in flight: called when the client goes idle, so
    /// that an idle client holds none (the next transaction allocates it again, one small
    /// allocation).
    pub fn shed(&mut self) {
        if self.queue.is_empty() && self.queue.capacity() > 0 {
            self.queue = VecDeque::new();
        }
    }

    /// Requests sent whose answers have not all come back.
    pub fn in_flight(&self) -> bool {
        self.leading_queries > 0 || !self.queue.is_empty()
    }

    /// Every request in flight is one pgmux answers itself (or none is in flight): no server
    /// answer is coming to carry them.
    pub fn only_own_answers(&self) -> bool {
        self.leading_queries == 0 && self.queue.iter().all(|i| matches!(i.kind, Kind::FakeParse | Kind::FakeClose))
    }

    pub(super) fn push(&mut self, item: Item, server: &mut ServerStatements, client: &mut ClientStatements) {
        if self.skipping {
            if item.kind != Kind::Sync {
                // PostgreSQL ignores it: nothing it would have done happens, no answer comes.
                if item.kind == Kind::Query {
                    self.skipped_queries = self.skipped_queries.saturating_add(1);
                }
                item.undo(server, client);
                return;
            }
            self.skipping = false;
        }
        if self.queue.capacity() == 0 {
            // An extended-protocol transaction queues four or five requests: one allocation
            // for them all, not a first one for four and a reallocation for the fifth.
            self.queue.reserve(QUEUE_START);
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
        if self.queue.is_empty() && !self.skipping {
            self.leading_queries += 1;
            return;
        }
        self.push(Item::plain(Kind::Query), server, client);
    }

    #[inline(always)]
    pub(super) fn pop_if(&mut self, kinds: &[Kind]) -> Response {
        if self.leading_queries > 0 {
            // The oldest request is a leading Query.
            if kinds.contains(&Kind::Query) {
                self.leading_queries -= 1;
            }
            return Response::Forward;
        }
        match self.queue.front() {
            Some(i) if kinds.contains(&i.kind) => {
                let i = self.queue.pop_front().expect("front exists");
                // Answered in part: a kept batch can no longer be sent again (replay.rs).
                self.replay = super::replay::Stage::Off;
                if i.swallow {
                    Response::Swallow
                } else {
                    Response::Forward
                }
            }
            _ => Response::Forward,
        }
    }

    /// A server message with type `tag` arrived (its header is enough). Inlined, with what it
    /// calls, into the relay's server scan, which calls it for every message but rows: left to
    /// itself the compiler stops inlining it as that scan grows, at a cost of 1-3% of the
    /// instructions per transaction (benches/instructions.sh).
    #[inline(always)]
    pub fn on_response(&mut self, tag: u8, server: &mut ServerStatements, client: &mut ClientStatements) -> Response {
        use tags::backend as b;
        match tag {
            b::PARSE_COMPLETE => self.pop_if(&[Kind::Parse]),
            b::BIND_COMPLETE => self.pop_if(&[Kind::Bind]),
            b::CLOSE_COMPLETE => self.pop_if(&[Kind::Close]),
            b::NO_DATA | b::ROW_DESCRIPTION => self.pop_if(&[Kind::Describe]),
            b::COMMAND_COMPLETE | b::EMPTY_QUERY | b::PORTAL_SUSPENDED => self.pop_if(&[Kind::Execute]),
            b::READY_FOR_QUERY => self.pop_if(&[Kind::Sync, Kind::Query]),
            // PostgreSQL describes a statement's parameters before it analyses the statement
            // again: a refusal of a kept batch may follow (replay.rs).
            b::PARAMETER_DESCRIPTION if self.replay_pending() => Response::Hold,
            b::PARAMETER_DESCRIPTION | b::NOTICE_RESPONSE => {
                // Answers that pop nothing (the first to a Describe of a statement; a notice,
                // from planning perhaps): a kept batch that gets one cannot be sent again, the
                // client would see it twice (replay.rs).
                self.replay_off();
                Response::Forward
            }
            b::ERROR_RESPONSE => {
                self.on_error(server, client);
                Response::Forward
            }
            b::COPY_IN_RESPONSE => {
                // Syncs sent behind the Execute that started COPY FROM STDIN are ignored by the
                // server; the Sync after CopyDone will be answered instead.
                if self.leading_queries == 0 && self.queue.front().is_some_and(|i| i.kind == Kind::Execute) {
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
    pub(super) fn on_error(&mut self, server: &mut ServerStatements, client: &mut ClientStatements) {
        if self.leading_queries > 0 {
            return;
        }
        match self.queue.front() {
            None | Some(Item { kind: Kind::Query | Kind::Sync, .. }) => return,
            Some(_) => {}
        }
        let end = self.queue.iter().position(|i| i.kind == Kind::Sync);
        let skipped: Vec<Item> = self.queue.drain(..end.unwrap_or(self.queue.len())).collect();
        for item in skipped.into_iter().rev() {
            if item.kind == Kind::Query {
                self.skipped_queries = self.skipped_queries.saturating_add(1);
            }
            item.undo(server, client);
        }
        self.skipping = end.is_none();
    }

    /// True while the server skips everything up to a Sync not yet sent (after an error).
    #[inline]
    pub fn is_skipping(&self) -> bool {
        self.skipping
    }

    /// How many Queries the server skipped since the last call, each owed no ReadyForQuery.
    #[inline]
    pub fn take_skipped_queries(&mut self) -> u8 {
        std::mem::take(&mut self.skipped_queries)
    }

    /// Whether the oldest request is one pgmux answers itself (checked before every server
    /// message, so kept cheap).
    #[inline]
    pub fn fake_due(&self) -> bool {
        self.leading_queries == 0
            && self.queue.front().is_some_and(|i| matches!(i.kind, Kind::FakeParse | Kind::FakeClose))
    }

    /// The response pgmux must send itself now, if the oldest request is one it answers.
    pub fn next_fake(&mut self) -> Option<u8> {
        if self.leading_queries > 0 {
            return None;
        }
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
        self.leading_queries = 0;
        self.queue.clear();
        self.skipping = false;
        self.unnamed_here = false;
        self.ddl_seen = false;
        self.skipped_queries = 0;
        self.replay_off();
        self.block = super::replay::Block::Other;
    }

    /// Requests still expecting an answer.
    #[cfg(test)]
    pub(super) fn queued(&self) -> usize {
        self.leading_queries as usize + self.queue.len()
    }
}
