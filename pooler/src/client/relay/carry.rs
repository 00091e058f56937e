//! The relay's side of session state in transaction mode ([`crate::session_state`]): what the
//! client's Query and Parse texts do to its session is noted as they are scanned, counted once
//! the server's answers say it took place, and replayed on the next server that differs. State
//! that cannot move (LISTEN, temporary tables, ...) pins the client to its server when
//! `pin_session_state` is on, and is logged once per kind when it is off.

use pgmux_protocol::backend::TxStatus;

use super::Relay;
use crate::client::prepared;
use crate::server::{self, ServerConn, ServerError};
use crate::session_sql::Effect;
use crate::session_state::{InFlight, Portals, SessionState};

/// What the relay keeps of its client's session state. Small until the client makes some (the
/// client task's size is what an idle client costs).
#[derive(Debug, Default)]
pub(super) struct Carry {
    /// track_session_state, in transaction or statement mode.
    pub on: bool,
    /// pin_session_state.
    pin: bool,
    /// The client keeps its server until it leaves.
    pub pinned: bool,
    /// Executes since the client's last Sync or Query: which CommandComplete of its batch
    /// answers the statement a Parse names (the one the next Execute runs). Both counts stop at
    /// 65,535 (the statements beyond count at the batch's ReadyForQuery, if nothing in it failed): two bytes each keep
    /// the client task within its size class.
    pub executes: u16,
    /// The server's CommandCompletes (and other answers to an Execute) since its last
    /// ReadyForQuery: counted always, so that tracking that starts in the middle of a batch
    /// numbers the answers as the client's Executes are numbered.
    completed: u16,
    /// An ErrorResponse came since the server's last ReadyForQuery.
    failed: bool,
    pub made: Option<Box<Made>>,
}

/// The part of [`Carry`] that exists once the client sent a statement that matters.
#[derive(Debug, Default)]
pub(super) struct Made {
    /// The client's settings and SQL prepared statements.
    pub state: SessionState,
    pub in_flight: InFlight,
    /// What its extended-protocol statements and portals do when executed.
    pub portals: Portals,
    /// The name context counts settings not yet settled (`refresh_name_context`): computed
    /// again at the next ReadyForQuery, whatever the answers before it did to them.
    foreseen: bool,
    /// Sticky kinds already logged.
    logged: Vec<&'static str>,
    /// The open transaction made state that outlives its ROLLBACK (a session advisory lock): a
    /// client that leaves in it does not leave its server to the pool.
    sticky_in_tx: bool,
}

impl Carry {
    pub fn new(on: bool, pin: bool, state: Option<Box<SessionState>>) -> Self {
        let made = state.filter(|s| !s.is_empty()).map(|state| Box::new(Made { state: *state, ..Default::default() }));
        Carry { on, pin, pinned: false, executes: 0, completed: 0, failed: false, made }
    }

    /// True while effects wait for the server's answers (CommandComplete tags matter then).
    #[inline]
    pub fn busy(&self) -> bool {
        self.made.as_ref().is_some_and(|m| !m.in_flight.is_idle())
    }

    /// True when the client's open transaction made (or may be making: its statement still
    /// runs) state a ROLLBACK would not take away: a session advisory lock.
    pub fn sticky_in_transaction(&self) -> bool {
        self.made.as_ref().is_some_and(|m| m.sticky_in_tx || m.in_flight.pending().any(Effect::survives_rollback))
    }

    /// True when a Bind or Execute may run something that matters (a statement the client
    /// prepared does something to its session).
    #[inline]
    pub fn watches_portals(&self) -> bool {
        self.made.as_ref().is_some_and(|m| !m.portals.is_empty())
    }

    /// The number, among the answers to the client's batch, of the next statement it sends.
    /// Past the count's end the answer is not known: u32::MAX, and the statement counts at the
    /// batch's ReadyForQuery, if nothing in it failed.
    #[inline]
    pub fn next_answer(&self) -> u32 {
        match self.executes {
            u16::MAX => u32::MAX,
            n => u32::from(n),
        }
    }

    /// An ErrorResponse from the server.
    #[inline]
    pub fn on_error(&mut self) {
        self.failed = true;
    }

    /// A CommandComplete, EmptyQueryResponse or PortalSuspended; its tag matters only while
    /// [`Carry::busy`] (empty otherwise).
    #[inline]
    pub fn on_command_complete(&mut self, tag: &[u8]) {
        let at = self.completed;
        self.completed = at.saturating_add(1);
        if let Some(m) = self.made.as_mut() {
            m.in_flight.on_command_complete(u32::from(at), tag);
        }
    }

    /// COPY FROM STDIN started by an Execute: the server ignores the Sync behind it, and the
    /// batch's next Execute (after CopyDone) comes after the answers so far and the COPY's own.
    pub fn copy_went_on(&mut self) {
        self.executes = self.completed.saturating_add(1);
        if let Some(m) = self.made.as_mut() {
            m.portals.copy_went_on();
        }
    }

    /// A ParseComplete or CloseComplete reached the client.
    #[inline]
    pub fn name_answered(&mut self) {
        if let Some(m) = self.made.as_mut() {
            m.portals.name_answered();
        }
    }

    /// The server was lost with nothing waiting on its answers: the next server's are
    /// numbered from the start.
    pub fn server_lost(&mut self) {
        self.completed = 0;
        self.failed = false;
        if let Some(m) = self.made.as_mut() {
            m.portals.server_lost();
        }
    }

    /// False when a server with `server` state surely matches the client (checked before the
    /// replay, whose future is boxed).
    #[inline]
    pub fn may_differ(&self, server: &SessionState) -> bool {
        self.on && (self.made.is_some() || !server.is_empty())
    }

    /// The client's settings carried across servers (None until it made any state).
    pub fn settings(&self) -> Option<&std::collections::BTreeMap<String, String>> {
        self.made.as_ref().map(|m| &m.state.settings)
    }

    /// The client's settings and SQL prepared statements, for an online restart.
    pub fn into_state(self) -> SessionState {
        self.made.map(|m| m.state).unwrap_or_default()
    }
}

impl Relay {
    /// A ReadyForQuery: records what took place.
    pub(super) fn session_sql_ready(&mut self, status: TxStatus) {
        self.carry.completed = 0;
        let failed = std::mem::take(&mut self.carry.failed);
        let Some(made) = self.carry.made.as_mut() else { return };
        made.portals.settle(failed);
        // A name setting in flight counted already (see `refresh_name_context`); settled,
        // failed or rolled back, the context is computed again.
        let mut settings_changed = made.foreseen || made.in_flight.pending().any(prepared::changes_names);
        let effects = made.in_flight.on_ready(status, failed);
        if status == TxStatus::Idle {
            made.sticky_in_tx = false;
        }
        for e in effects {
            match e {
                Effect::Sticky(what) => {
                    made.sticky_in_tx |= status != TxStatus::Idle && e.survives_rollback();
                    if self.carry.pin {
                        if !self.carry.pinned {
                            self.carry.pinned = true;
                            crate::conn_log!(
                                info,
                                self.session.tag(),
                                "{what} stays on the server: the client keeps its server until it leaves (pin_session_state)"
                            );
                        }
                    } else if !made.logged.contains(&what) {
                        made.logged.push(what);
                        crate::conn_log!(
                            info,
                            self.session.tag(),
                            "{what} stays on the server, which the next transaction may not get (transaction pooling; see pin_session_state)"
                        );
                    }
                }
                e => {
                    settings_changed |=
                        matches!(e, Effect::Set { .. } | Effect::Reset(_) | Effect::ResetAll | Effect::DiscardAll);
                    made.state.apply(&e);
                    if let Some(s) = self.server.as_mut() {
                        s.apply_effect(&e);
                    }
                }
            }
        }
        if settings_changed {
            self.refresh_name_context();
        }
    }

    /// Books the Queries the server skipped (the prepared-statement tracker saw them skipped:
    /// sent after an error in an extended batch, before its Sync): each is owed no
    /// ReadyForQuery, and what it and its batch would have done did not happen.
    pub(super) fn queries_skipped(&mut self) {
        let skipped = self.tracker.take_skipped_queries();
        if skipped > 0 {
            // Counted when they began; the batch's Sync is the one query it makes.
            let stats = &self.session.pool.counters.here().stats;
            crate::pool::PoolStats::take_back(&stats.query_count, u64::from(skipped));
        }
        for _ in 0..skipped {
            self.flow.skipped();
            if let Some(made) = self.carry.made.as_mut() {
                made.in_flight.skipped();
                made.portals.settle(true);
            }
        }
        // A Query closes the batch it is sent in; skipped, it did not, and the server still
        // skips up to the client's Sync.
        if skipped > 0 && self.tracker.is_skipping() {
            self.flow.extended();
        }
    }

    /// Recomputes which statements this client may share ([`prepared::name_context`]): after
    /// its settings or its tracked parameters changed. Settings sent but not settled count as
    /// made: a statement the client prepares after `SET search_path` in a transaction, or right
    /// behind it in one batch, is analysed by PostgreSQL under the new search_path, and must not
    /// be shared with clients under the old one (PostgreSQL would refuse it to them: `cached
    /// plan must not change result type`). One that fails or rolls back is taken out again at
    /// its ReadyForQuery.
    pub(super) fn refresh_name_context(&mut self) {
        let foresee = self.carry.made.as_ref().is_some_and(|m| m.in_flight.pending().any(prepared::changes_names));
        if let Some(made) = self.carry.made.as_mut() {
            made.foreseen = foresee;
        }
        let context = match self.carry.made.as_ref() {
            Some(made) if foresee => {
                let mut foreseen = made.state.clone();
                for e in made.in_flight.pending() {
                    match e {
                        Effect::SetLocal { name, value } => {
                            foreseen.settings.insert(name.clone(), value.clone());
                        }
                        e => foreseen.apply(e),
                    }
                }
                prepared::name_context(Some(&foreseen.settings), &self.session.params)
            }
            _ => prepared::name_context(self.carry.settings(), &self.session.params),
        };
        self.statements.set_context(context);
    }

    /// Makes `server` carry this client's settings and SQL prepared statements. A statement
    /// that no longer prepares is dropped from the client's; any other error is the caller's.
    pub(super) async fn replay_session(&mut self, server: &mut ServerConn) -> Result<(), ServerError> {
        let made = self.carry.made.get_or_insert_with(Default::default);
        let params = &self.session.params;
        let Some(replay) = made.state.replay_on(&server.session_state, |name| params.sql_value(name)) else {
            return Ok(());
        };
        if !replay.batch.is_empty() {
            crate::conn_log!(debug, server.tag, "session state: {}", replay.batch);
            Box::pin(server::run_simple_query(server, &replay.batch)).await?;
            // Every SET, RESET and DEALLOCATE ran: the server has the client's settings and no
            // statement the client does not have.
            server.session_state.settings = made.state.settings.clone();
            server.session_state.prepared.retain(|name, sql| made.state.prepared.get(name) == Some(sql));
        }
        for (name, sql) in replay.prepares {
            match Box::pin(server::run_simple_query(server, &sql)).await {
                Ok(()) => {
                    server.session_state.prepared.insert(name, sql);
                }
                // It no longer prepares (a table dropped since): the client's EXECUTE will say so.
                Err(ServerError::Rejected { message, .. }) => {
                    crate::conn_log!(
                        info,
                        self.session.tag(),
                        "prepared statement {name} could not be made again: {message}"
                    );
                    made.state.prepared.remove(&name);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}
