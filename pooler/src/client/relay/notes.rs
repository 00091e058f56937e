//! What the client's messages say about its session, read as they are scanned: the effects of
//! a Query's statements, of a Parse's statement (kept by name until an Execute runs it), of a
//! Bind (which statement a portal runs) and of an Execute. [`InFlight`](crate::session_state::InFlight)
//! is told what each request will do; the server's answers then say what took place.

use pgmux_protocol::tags;

use super::Relay;
use crate::client::params::ClientParams;
use crate::client::prepared;
use crate::session_sql::{self, Effect, Statement};

/// Query and Parse messages longer than this are relayed without a look at their text.
const MAX_MESSAGE: usize = session_sql::MAX_TEXT + 1024;
/// The longest statement or portal name looked for at the start of a Parse too long to read
/// whole (PostgreSQL's own are under 64 bytes).
const MAX_NAME: usize = 1024;

/// The zero-terminated string at the start of `bytes`, and what follows it.
fn cstr(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let at = memchr::memchr(0, bytes)?;
    Some((&bytes[..at], &bytes[at + 1..]))
}

/// The body of the message of `total` bytes at the start of `avail`, once it is whole. Else
/// `Err(false)` with `c_whole` set when it is to be waited for, or `Err(true)` when it is too
/// long to wait for (it is relayed without a look).
fn whole_body<'a>(avail: &'a [u8], total: usize, c_whole: &mut usize) -> Result<&'a [u8], bool> {
    if avail.len() >= total {
        return Ok(&avail[5..total]);
    }
    if total <= MAX_MESSAGE {
        *c_whole = total;
        return Err(false);
    }
    Err(true)
}

/// How the client's `'...'` strings read: standard_conforming_strings as the server last reported
/// it to the client.
fn strings(params: &ClientParams) -> session_sql::Strings {
    match params.get("standard_conforming_strings") {
        Some(v) if v.eq_ignore_ascii_case("off") => session_sql::Strings::Backslash,
        _ => session_sql::Strings::Standard,
    }
}

/// Keeps the statements whose effects are tracked here.
fn keep_tracked(params: &ClientParams, statements: &mut Vec<Statement>) {
    // Tracked settings the server reports (client_encoding, application_name, ...) follow its
    // ParameterStatus messages instead. One listed in track_extra_parameters that it does not
    // report (search_path, before PostgreSQL 18) is followed here like any other setting:
    // otherwise a SET of it would stay on the server for the next client.
    statements.retain(|s| match &s.effect {
        Effect::Set { name, .. } | Effect::Reset(name) => {
            !(super::super::params::is_reported(name) && params.tracked_name(name).is_some())
        }
        // Only what names mean is looked at (it is never carried).
        e @ Effect::SetLocal { .. } => prepared::changes_names(e),
        _ => true,
    });
}

impl Relay {
    /// Notes the session effects of the Query or Parse at `c_ready` (`total` bytes). False when
    /// the message must be whole in `cin` first (`c_whole` is then set).
    pub(super) fn note_session_sql(&mut self, tag: u8, total: usize) -> bool {
        if !self.carry.on {
            return true;
        }
        if total > MAX_MESSAGE {
            return tag != tags::frontend::PARSE || self.forget_parsed();
        }
        let avail = &self.cin[self.c_ready..];
        if avail.len() < total {
            self.c_whole = total;
            return false;
        }
        let body = &avail[5..total];
        // While settings wait on their transaction, every statement is looked at: a ROLLBACK
        // or ROLLBACK TO SAVEPOINT decides whether they count.
        let busy = self.carry.busy();
        if tag == tags::frontend::PARSE {
            let ahead = self.flow.client_pending() + 1;
            // Statement name, then the query text.
            let Some((name, rest)) = cstr(body) else { return true };
            let text = cstr(rest).map_or(rest, |(text, _)| text);
            // Kept for the Executes that run it, whenever they come: transaction control too.
            let every = busy || session_sql::starts_with_control(text);
            let mut statements = session_sql::parsed(text, every, || strings(&self.session.params));
            if !statements.is_empty() {
                keep_tracked(&self.session.params, &mut statements);
            }
            if statements.is_empty() {
                // The name may have done something before.
                if let Some(made) = self.carry.made.as_mut() {
                    made.portals.parsed(name, Vec::new(), ahead);
                }
                return true;
            }
            let effects = statements.into_iter().map(|s| s.effect).collect();
            self.carry.made.get_or_insert_with(Default::default).portals.parsed(name, effects, ahead);
            return true;
        }
        // The text and its terminating zero.
        let text = body.strip_suffix(&[0]).unwrap_or(body);
        if let Some(made) = self.carry.made.as_mut() {
            made.portals.query();
        }
        let mut statements = session_sql::statements_in(text, busy, || strings(&self.session.params));
        if !statements.is_empty() {
            keep_tracked(&self.session.params, &mut statements);
            // A Query inside an extended batch (before its Sync) is answered after the batch's
            // Executes: its statements are numbered after theirs.
            let first = self.carry.next_answer();
            for s in &mut statements {
                s.at = s.at.saturating_add(first);
            }
            self.send_statements(statements, busy);
        }
        true
    }

    /// Notes what the Parse, Bind or Close at `c_ready` (`total` bytes) does to the client's
    /// statements. False when more of it must be in `cin` first.
    #[inline]
    pub(super) fn note_extended(&mut self, tag: u8, total: usize) -> bool {
        match tag {
            tags::frontend::PARSE => self.note_session_sql(tag, total),
            tags::frontend::BIND if self.carry.watches_portals() => self.note_bind(total),
            tags::frontend::CLOSE if self.carry.made.is_some() => self.note_close(total),
            _ => true,
        }
    }

    /// A Parse too long to look at (its text does nothing tracked): whatever its statement's
    /// name did before, it no longer does. False when more of its start must be in `cin` first.
    fn forget_parsed(&mut self) -> bool {
        let ahead = self.flow.client_pending() + 1;
        let Some(made) = self.carry.made.as_mut() else { return true };
        if made.portals.is_empty() {
            made.portals.name_message();
            return true;
        }
        let avail = &self.cin[self.c_ready..];
        let head = 5 + MAX_NAME;
        match cstr(&avail[5.min(avail.len())..head.min(avail.len())]) {
            Some((name, _)) => made.portals.parsed(name, Vec::new(), ahead),
            None if avail.len() < head => {
                self.c_whole = head;
                return false;
            }
            // A name longer than any PostgreSQL takes: its error ends the batch, and nothing
            // known of the client's statements is trusted.
            None => {
                made.portals.name_message();
                made.portals.forget_statements();
            }
        }
        true
    }

    /// Notes the Close at `c_ready` (`total` bytes): the statement or portal it names does
    /// nothing any more. False when more of it must be in `cin` first.
    fn note_close(&mut self, total: usize) -> bool {
        let ahead = self.flow.client_pending() + 1;
        let Some(made) = self.carry.made.as_mut() else { return true };
        if made.portals.is_empty() {
            made.portals.name_message();
            return true;
        }
        let body = match whole_body(&self.cin[self.c_ready..], total, &mut self.c_whole) {
            Ok(body) => body,
            Err(false) => return false,
            Err(true) => {
                made.portals.name_message();
                return true;
            }
        };
        // 'S' or 'P', then the name.
        match body.split_first().and_then(|(&kind, rest)| Some((kind, cstr(rest)?.0))) {
            Some((kind, name)) => made.portals.closed(kind == b'P', name, ahead),
            None => {
                made.portals.name_message();
            }
        }
        true
    }

    /// Notes which statement the Bind at `c_ready` (`total` bytes) gives its portal, when any
    /// statement does something. False when more of it must be in `cin` first.
    fn note_bind(&mut self, total: usize) -> bool {
        let Some(made) = self.carry.made.as_mut().filter(|m| !m.portals.is_empty()) else { return true };
        let avail = &self.cin[self.c_ready..];
        // The portal's name, then the statement's.
        match cstr(&avail[5.min(avail.len())..total.min(avail.len())]).and_then(|(p, rest)| Some((p, cstr(rest)?.0))) {
            Some((portal, statement)) => made.portals.bound(portal, statement),
            None if avail.len() < total && total <= MAX_MESSAGE => {
                self.c_whole = total;
                return false;
            }
            // Names longer than anything PostgreSQL accepts: its error ends the batch.
            None => {}
        }
        true
    }

    /// Notes what the Execute at `c_ready` (`total` bytes) runs: the effects of its portal's
    /// statement, answered by the batch's CommandComplete of this Execute's number. False when
    /// the message must be whole in `cin` first.
    pub(super) fn note_execute(&mut self, total: usize) -> bool {
        let Some(made) = self.carry.made.as_ref().filter(|m| !m.portals.is_empty()) else { return true };
        let body = match whole_body(&self.cin[self.c_ready..], total, &mut self.c_whole) {
            Ok(body) => body,
            Err(go_on) => return go_on,
        };
        let Some((portal, _)) = cstr(body) else { return true };
        let Some(effects) = made.portals.executed(portal) else { return true };
        let at = self.carry.next_answer();
        let statements = effects.iter().map(|e| Statement { at, effect: e.clone() }).collect();
        let busy = self.carry.busy();
        self.send_statements(statements, busy);
        true
    }

    /// Tells [`InFlight`](crate::session_state::InFlight) what the request being scanned will
    /// do; `busy` says whether settings were waiting before it.
    fn send_statements(&mut self, statements: Vec<Statement>, busy: bool) {
        // Transaction control alone matters only to settings already waiting: a savepoint made
        // before them is one they all come after.
        if statements.is_empty() || (!busy && statements.iter().all(|s| matches!(s.effect, Effect::Control(_)))) {
            return;
        }
        let names = statements.iter().any(|s| prepared::changes_names(&s.effect));
        // Answered by the ReadyForQuery of this Query, or of the Sync after this Execute.
        let made = self.carry.made.get_or_insert_with(Default::default);
        made.in_flight.sent(statements, self.flow.client_pending() + 1);
        if names {
            // What the client prepares behind it (in the same batch) means its names under the
            // new setting.
            self.refresh_name_context();
        }
    }
}
