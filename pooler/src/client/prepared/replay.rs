//! The batch sent again when a cached unnamed statement is refused. A client's unnamed Parse
//! served from the cache skips PostgreSQL's parse; after DDL made straight on PostgreSQL (pgmux
//! cannot see it) the server then refuses the old statement with `cached plan must not change
//! result type` (0A000), or its analysis again fails (class 42: a column's type changed under a
//! parameter typed at the first Parse, `operator does not exist: text = integer`), where
//! PostgreSQL, given the Parse, would have analysed the text afresh. pgmux keeps such a batch,
//! as sent after its Parse (Bind, Describe, Execute, Flush, Sync), until it is answered. If the
//! refusal is the batch's first answer, with nothing sent behind it, pgmux swallows the error
//! (and the ReadyForQuery that ends it), prepares the text under the new epoch's name and sends
//! the kept messages again: the client sees the answers PostgreSQL would have given it.
//!
//! - Outside a transaction block, or in one that holds only the client's lone BEGIN ([`Block`]):
//!   there a ROLLBACK and that BEGIN go first ([`Rewrite::replay_refused`]).
//! - A batch with no Sync yet (asyncpg's Parse, Describe, Flush) goes again behind a Sync of
//!   pgmux's own ([`SentAgain::open`]).
//! - A ParameterDescription in front of the refusal (a Describe of the statement in the batch)
//!   is held by the relay and dropped when the batch goes again ([`can_send_again`]).
//!
//! What was sent of the batch after its Parse is copied as it leaves the client buffer: at
//! its Sync (drivers write a batch in one piece, so it is read and kept whole before any of it
//! is sent), or piece by piece as it is written to the server. The copy lives in the server's
//! `kept_batch` buffer, which keeps its capacity from one transaction to the next.

use bytes::BytesMut;
use pgmux_protocol::build;
use pgmux_protocol::extended::{self, STATEMENT};
use pgmux_protocol::frame::peek_header;
use pgmux_protocol::tags::frontend as f;

use super::rewrite::Rewrite;
use super::tracker::{Item, Kind, Tracker};
use super::{server_name, statement_hash, ClientStatements, NAME_LEN};
use crate::client::splice;

/// A Sync message, sent ahead of an open batch sent again.
const SYNC: [u8; 5] = [f::SYNC, 0, 0, 0, 4];

/// What [`Rewrite::replay_refused`] inserted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SentAgain {
    /// Bytes inserted into the client buffer, all ready to send.
    pub bytes: usize,
    /// The batch had no Sync yet (a Sync of pgmux's went ahead of it): it is open still.
    pub open: bool,
}

/// The most a kept batch may hold (bytes after its Parse); a larger one is not sent again.
const MAX_KEPT: usize = 8 * 1024;

/// Where the tracker is in keeping a batch.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stage {
    /// Nothing kept.
    #[default]
    Off,
    /// The Parse that opens a batch was served from the cache, at the front of the client
    /// buffer's unsent bytes: nothing of the batch is kept yet.
    Armed,
    /// Part of the batch is kept (sent before its Sync was read).
    Keeping,
    /// The batch is kept up to its Sync, until its first answer.
    Kept,
}

/// What the open transaction block holds, as far as sending a batch again goes: a block whose
/// only statement is the client's BEGIN can be rolled back and begun again unseen.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Block {
    /// Anything else (no block, or a block where more ran).
    #[default]
    Other,
    /// A lone BEGIN went to the server with nothing else open: its ReadyForQuery decides.
    BeginSent,
    /// The block holds only that BEGIN (kept in the server's `kept_begin`).
    Begun,
}

/// The longest BEGIN text kept to begin a block again.
pub const MAX_BEGIN: usize = 200;

/// True when a simple Query's text (without its zero) is one BEGIN or START TRANSACTION
/// statement alone, plain enough to send again as it is: ASCII, no quotes, no comments, no
/// statement after it.
pub fn is_lone_begin(text: &[u8]) -> bool {
    // Every simple Query sent outside a block comes here: most are out at the first word.
    let lead = text.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(text.len());
    let head = text.get(lead..lead + 5).unwrap_or_default();
    if !(head.eq_ignore_ascii_case(b"begin") || head.eq_ignore_ascii_case(b"start")) {
        return false;
    }
    if text.len() > MAX_BEGIN || !text.is_ascii() {
        return false;
    }
    let end = text.iter().rposition(|b| !b.is_ascii_whitespace() && *b != b';').map_or(0, |i| i + 1);
    let text = &text[..end];
    let plain = !text.iter().any(|b| matches!(b, b';' | b'\'' | b'"' | b'$' | b'-' | b'/'));
    let mut words = text.split(u8::is_ascii_whitespace).filter(|w| !w.is_empty());
    let first = words.next().unwrap_or_default();
    plain
        && (first.eq_ignore_ascii_case(b"begin")
            || first.eq_ignore_ascii_case(b"start")
                && words.next().is_some_and(|w| w.eq_ignore_ascii_case(b"transaction")))
}

impl Tracker {
    /// The client's unnamed Parse was served from the cache with nothing of the client's open
    /// on the server (`in_block` false), or nothing but its BEGIN (`in_block`), and nothing
    /// unsent before it: keep the batch it opens.
    pub(super) fn replay_arm(&mut self, in_block: bool) {
        self.replay = Stage::Armed;
        self.replay_in_block = in_block;
    }

    /// The last ReadyForQuery answered the client's lone BEGIN. The block holds only it if,
    /// too, nothing was sent since ([`pgmux_protocol::flow::Flow::fresh_block`]): anything
    /// sent since is unanswered, or else a ReadyForQuery answered it (`block_ready`).
    #[inline]
    pub fn block_begun(&self) -> bool {
        self.block == Block::Begun
    }

    /// A lone BEGIN (`is_lone_begin`) was sent with nothing of the client's open on the server.
    pub fn block_begin_sent(&mut self) {
        self.block = Block::BeginSent;
    }

    /// A ReadyForQuery reached the client: after a lone BEGIN with nothing sent behind it, the
    /// block (`in_block`) holds only that BEGIN.
    #[inline]
    pub fn block_ready(&mut self, in_block: bool) {
        if self.block != Block::Other {
            self.block = if self.block == Block::BeginSent && in_block { Block::Begun } else { Block::Other };
        }
    }

    /// Drops a kept batch (it was answered, or can no longer be sent again).
    #[inline]
    pub fn replay_off(&mut self) {
        self.replay = Stage::Off;
    }

    /// The client sent more (a message of type `tag`, scanned now): a kept batch cannot be
    /// sent again, it would go behind what follows it. A Flush asks for nothing (psycopg's
    /// pipeline sends one behind its Sync).
    #[inline]
    pub fn replay_sent_behind(&mut self, tag: u8) {
        if self.replay == Stage::Kept {
            self.kept_sent_behind(tag);
        }
    }

    #[cold]
    fn kept_sent_behind(&mut self, tag: u8) {
        if tag != f::FLUSH {
            self.replay = Stage::Off;
        }
    }

    /// True between the Parse served from the cache and its batch's Sync.
    #[inline]
    pub fn replay_keeping(&self) -> bool {
        matches!(self.replay, Stage::Armed | Stage::Keeping)
    }

    /// `sent`, the front of the client buffer, went to the server before the batch's Sync was
    /// read (a batch written in pieces): kept in `kept` as it leaves.
    #[inline]
    pub fn replay_sent(&mut self, kept: &mut BytesMut, sent: &[u8]) {
        if self.replay_keeping() {
            self.keep(kept, sent);
        }
    }

    /// The batch's Sync was scanned: `rest` is the client buffer's unsent bytes up to it, the
    /// rest of the batch as it goes to the server after its Parse (which pgmux answered itself).
    pub fn replay_keep(&mut self, kept: &mut BytesMut, rest: &[u8]) {
        self.keep(kept, rest);
        if self.replay == Stage::Keeping {
            self.replay = Stage::Kept;
        }
    }

    fn keep(&mut self, kept: &mut BytesMut, bytes: &[u8]) {
        if self.replay == Stage::Armed {
            kept.clear();
        }
        if kept.len() + bytes.len() > MAX_KEPT {
            self.replay = Stage::Off;
        } else {
            kept.extend_from_slice(bytes);
            self.replay = Stage::Keeping;
        }
    }

    /// The server refused a statement: true when the batch kept in `kept` can be sent again.
    /// Nothing was sent behind its Sync (anything scanned behind it drops the batch) and the
    /// refusal is its first answer (every request is still queued: answers pop them, and those
    /// that do not, a ParameterDescription or a notice, drop the batch in
    /// `Tracker::on_response`), so the client has seen nothing of it but pgmux's own
    /// ParseComplete. The ReadyForQuery that ends a batch drops it too. Called before the
    /// refusal is matched.
    ///
    /// A batch still open (no Sync yet: asyncpg's Parse, Describe, Flush; a pipeline whose
    /// Sync comes later) applies too when what was sent of it is whole messages, every request
    /// scanned among them: sent again behind a Sync of pgmux's own, which ends the skipping
    /// the refusal started (nothing of the batch ran; outside a block it ends nothing else).
    pub fn replay_applies(&self, kept: &[u8]) -> bool {
        if self.leading_queries > 0 {
            return false;
        }
        // An answer pgmux gives itself (a Parse of a text the server holds) would count as a
        // request of the batch that was never sent: no counting then.
        if self.queue.iter().any(|i| matches!(i.kind, Kind::FakeParse | Kind::FakeClose)) {
            return false;
        }
        let requests = Messages(kept).filter(|(tag, _)| *tag != f::FLUSH).count();
        match self.replay {
            Stage::Kept => self.queue.len() == requests && self.queue.back().is_some_and(|i| i.kind == Kind::Sync),
            Stage::Keeping => {
                let whole: usize = Messages(kept).map(|(_, m)| m.len()).sum();
                whole == kept.len() && self.queue.len() == requests && self.queue.iter().all(|i| i.kind != Kind::Sync)
            }
            Stage::Off | Stage::Armed => false,
        }
    }

    /// A batch is kept (whole, or as sent so far) and not answered yet: what may be sent again.
    #[inline]
    pub(super) fn replay_pending(&self) -> bool {
        matches!(self.replay, Stage::Kept | Stage::Keeping)
    }

    /// The oldest request in flight is a Bind or Describe: an error now answers one, a statement
    /// prepared before (PostgreSQL analyses a prepared statement again there after DDL).
    pub fn error_answers_statement(&self) -> bool {
        self.leading_queries == 0 && self.queue.front().is_some_and(|i| matches!(i.kind, Kind::Bind | Kind::Describe))
    }

    /// The statement (low 32 bits of its hash) that an error answering a Bind or Describe of it
    /// refuses; None when the error answers something else, or a statement pgmux did not name
    /// (an unnamed statement passed through as it came).
    pub fn refused_statement(&self) -> Option<u32> {
        if self.leading_queries > 0 {
            return None;
        }
        self.queue.front().map(|i| i.statement).filter(|s| *s != super::tracker::NO_STATEMENT)
    }
}

/// Whether a refusal now can send the kept batch again: [`Tracker::replay_applies`] (before the
/// refusal is matched), and what [`Rewrite::replay_refused`] needs of the batch. The relay asks
/// this both at the refusal and when it holds a ParameterDescription in front of one, so that
/// it never drops one for a batch it then does not send again.
pub fn can_send_again(tracker: &Tracker, client: &ClientStatements, kept: &[u8], begin: &[u8]) -> bool {
    tracker.replay_applies(kept) && batch_replayable(client, tracker, kept, begin)
}

/// The kept batch uses the client's cached unnamed statement alone (Bind, Describe, Execute,
/// Flush and Sync of it and its portal: a named statement the client described before the
/// DDL must be refused to it; a Parse or Close in the batch, the client's or one pgmux
/// injected, changes what the server holds), and a block it is in has its BEGIN kept.
fn batch_replayable(client: &ClientStatements, tracker: &Tracker, kept: &[u8], begin: &[u8]) -> bool {
    if tracker.replay_in_block && begin.is_empty() || !client.unnamed_valid {
        return false;
    }
    let Some(old) = client.unnamed_hash else { return false };
    let old_name = server_name(old.get());
    Messages(kept).all(|(tag, msg)| match tag {
        f::BIND => extended::bind_head(&msg[5..]).is_ok_and(|h| h.statement == old_name),
        f::DESCRIBE => msg.get(5) != Some(&STATEMENT) || msg.get(6..msg.len() - 1) == Some(&old_name[..]),
        f::EXECUTE | f::FLUSH | f::SYNC => true,
        _ => false,
    })
}

/// The whole messages in a buffer: (type, message with its header).
struct Messages<'a>(&'a [u8]);

impl<'a> Iterator for Messages<'a> {
    type Item = (u8, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let (tag, total) = peek_header(self.0, usize::MAX).ok().flatten()?;
        let msg = self.0.get(..total)?;
        self.0 = &self.0[total..];
        Some((tag, msg))
    }
}

impl Rewrite<'_> {
    /// The refusal aborted a block that held only the client's BEGIN (`begin`, its text):
    /// inserts at `at`, in the extended protocol (no Sync, so no ReadyForQuery to swallow), a
    /// ROLLBACK and that BEGIN again, whose answers pgmux swallows. Returns the bytes inserted.
    fn begin_again(&mut self, buf: &mut BytesMut, at: usize, begin: &[u8]) -> usize {
        let mut n = 0;
        for text in [&b"ROLLBACK"[..], begin] {
            n += splice::insert_built(buf, at + n, |m| {
                // ASCII (`is_lone_begin`), so the text as it came.
                build::parse(m, "", &String::from_utf8_lossy(text));
                build::bind(m, "", "", &[]);
                build::execute(m, "");
            });
            for kind in [Kind::Parse, Kind::Bind, Kind::Execute] {
                self.tracker.push(Item { swallow: true, ..Item::plain(kind) }, self.server, self.client);
            }
        }
        // The server's unnamed statement is pgmux's now.
        self.tracker.unnamed_here = false;
        n
    }

    /// The server holds the client's unnamed text as named in the current epoch already: it
    /// was prepared there before what the refusal reveals, perhaps, and a batch sent again
    /// needs a newer epoch.
    pub fn unnamed_prepared_in_epoch(&self) -> bool {
        self.server.contains(statement_hash(&self.client.unnamed, self.client.context, self.epoch))
    }

    /// After a refusal that [`Tracker::replay_applies`] to, and its ErrorResponse matched (the
    /// server now skips to the batch's Sync): prepares the client's unnamed statement under the
    /// epoch's name and inserts the `kept` batch, renamed to it, into `buf` at `at`. The Sync's
    /// ReadyForQuery is swallowed with the error; the batch's own answers reach the client.
    /// Returns the bytes inserted, or None (nothing changed) when the kept batch does not use
    /// the unnamed statement alone.
    pub fn replay_refused(&mut self, buf: &mut BytesMut, at: usize, kept: &[u8], begin: &[u8]) -> Option<SentAgain> {
        let open = self.tracker.replay == Stage::Keeping;
        let replayable = batch_replayable(self.client, self.tracker, kept, begin);
        self.tracker.replay = Stage::Off;
        let in_block = std::mem::take(&mut self.tracker.replay_in_block);
        if !replayable {
            return None;
        }
        let mut n = 0;
        if open {
            // The server skips to a Sync: pgmux's own, its ReadyForQuery swallowed.
            splice::replace(buf, at, 0, &SYNC);
            n += SYNC.len();
            self.tracker.push(Item { swallow: true, ..Item::plain(Kind::Sync) }, self.server, self.client);
        } else {
            let sync = self.tracker.queue.front_mut()?;
            sync.swallow = true;
        }
        if in_block {
            n += self.begin_again(buf, at + n, begin);
        }
        let new = self.name_unnamed();
        let text = std::mem::take(&mut self.client.unnamed);
        n += self.ensure_prepared(buf, at + n, new, &text);
        self.client.unnamed = text;
        let new_name = server_name(new);
        for (tag, msg) in Messages(kept) {
            let name_at = match tag {
                f::BIND => extended::bind_head(&msg[5..]).map(|h| 5 + h.statement_at()).ok(),
                f::DESCRIBE if msg.get(5) == Some(&STATEMENT) => Some(6),
                _ => None,
            };
            splice::replace(buf, at + n, 0, msg);
            if let Some(name_at) = name_at {
                buf[at + n + name_at..at + n + name_at + NAME_LEN].copy_from_slice(&new_name);
            }
            n += msg.len();
            let item = match tag {
                f::BIND => Item::of_statement(Kind::Bind, new),
                f::DESCRIBE if name_at.is_some() => Item::of_statement(Kind::Describe, new),
                f::DESCRIBE => Item::plain(Kind::Describe),
                f::EXECUTE => Item::plain(Kind::Execute),
                f::SYNC => Item::plain(Kind::Sync),
                _ => continue,
            };
            self.tracker.push(item, self.server, self.client);
        }
        Some(SentAgain { bytes: n, open })
    }
}

#[cfg(test)]
mod tests {
    use super::is_lone_begin;

    #[test]
    fn a_lone_begin_is_told_from_anything_more() {
        for yes in
            [&b"BEGIN"[..], b"begin;", b"  Begin ISOLATION LEVEL SERIALIZABLE ; ", b"START TRANSACTION READ ONLY"]
        {
            assert!(is_lone_begin(yes), "{}", String::from_utf8_lossy(yes));
        }
        for no in [
            &b"BEGIN; SELECT 1"[..],
            b"beginning",
            b"START",
            b"START x",
            b"SELECT 1",
            b"BEGIN -- a comment",
            b"BEGIN /* ; */",
            b"",
            b"BEG",
        ] {
            assert!(!is_lone_begin(no), "{}", String::from_utf8_lossy(no));
        }
    }
}
