//! The relay's scanners: which client bytes may be sent (counting requests, rewriting prepared
//! statements) and what the server's bytes say (ReadyForQuery, ParameterStatus, COPY).

use bytes::Buf;
use pgmux_protocol::backend::{self, TxStatus};
use pgmux_protocol::frame::peek_header;
use pgmux_protocol::{sqlstate, tags, ProtocolError};
use tokio::time::Instant;

use super::{pass_through, protocol_text, Relay};
use crate::client::prepared::{Response, Rewrite};
use crate::config::PoolMode;
use crate::pool::PoolStats;

impl Relay {
    /// Marks whole or partial client messages as sendable, counting requests. Without a server
    /// it only notes that one is needed: what is sent depends on the server (prepared statements).
    pub(super) fn scan_client(&mut self) -> Result<(), String> {
        loop {
            if self.c_skip > 0 {
                if pass_through(self.cin.len(), &mut self.c_ready, &mut self.c_skip) {
                    return Ok(());
                }
                continue;
            }
            let avail = &self.cin[self.c_ready..];
            let Some((tag, total)) = peek_header(avail, self.max_packet).map_err(|e| protocol_text(&e))? else {
                return Ok(());
            };
            if tag == tags::frontend::TERMINATE {
                self.terminate = true;
                self.cin.truncate(self.c_ready);
                return Ok(());
            }
            let Some(server) = self.server.as_mut() else {
                self.need_server = true;
                return Ok(());
            };
            self.c_whole = 0;
            match tag {
                tags::frontend::SYNC if self.copy_in => {
                    // PostgreSQL ignores Sync during COPY FROM STDIN: no ReadyForQuery will answer it.
                }
                tags::frontend::QUERY if self.disable_pqexec => {
                    // As PgBouncer's disable_pqexec: only the extended protocol is allowed.
                    return Err("PQexec disallowed".into());
                }
                tags::frontend::QUERY | tags::frontend::FUNCTION_CALL | tags::frontend::SYNC => {
                    self.last_request_sync = tag == tags::frontend::SYNC;
                    if self.track_prepared {
                        if tag == tags::frontend::SYNC {
                            self.tracker.on_sync();
                        } else {
                            self.tracker.on_query();
                        }
                    }
                    self.begin_request();
                    self.unsynced = false;
                }
                tags::frontend::PARSE | tags::frontend::BIND | tags::frontend::DESCRIBE | tags::frontend::CLOSE => {
                    self.unsynced = true;
                    match tag {
                        tags::frontend::PARSE => PoolStats::add(&self.session.pool.stats.client_parse_count, 1),
                        tags::frontend::BIND => PoolStats::add(&self.session.pool.stats.bind_count, 1),
                        _ => {}
                    }
                    if self.track_prepared {
                        if avail.len() < total {
                            self.c_whole = total;
                            return Ok(());
                        }
                        let mut rw = Rewrite {
                            client: &mut self.statements,
                            server: &mut server.statements,
                            tracker: &mut self.tracker,
                            max: self.max_prepared,
                            server_parses: 0,
                        };
                        let out = rw.message(tag, &avail[5..total]).map_err(|e| protocol_text(&e))?;
                        PoolStats::add(&self.session.pool.stats.server_parse_count, rw.server_parses);
                        if let Some(new) = out {
                            let mut tail = self.cin.split_off(self.c_ready);
                            tail.advance(total);
                            self.cin.extend_from_slice(&new);
                            self.cin.extend_from_slice(&tail);
                            self.c_ready += new.len();
                            continue;
                        }
                    } else if tag == tags::frontend::PARSE {
                        PoolStats::add(&self.session.pool.stats.server_parse_count, 1);
                    }
                }
                tags::frontend::EXECUTE => self.unsynced = true,
                tags::frontend::COPY_DONE | tags::frontend::COPY_FAIL => self.copy_in = false,
                tags::frontend::FLUSH | tags::frontend::COPY_DATA | tags::frontend::PASSWORD => {}
                _ => return Err(format!("invalid client message type {:?}", tag as char)),
            }
            self.c_skip = total;
        }
    }

    pub(super) fn begin_request(&mut self) {
        let now = Instant::now();
        if self.pending == 0 {
            self.query_start = Some(now);
        }
        if self.xact_start.is_none() {
            self.xact_start = Some(now);
        }
        self.pending += 1;
    }

    /// Marks server bytes as sendable; reads ReadyForQuery and ParameterStatus on the way.
    pub(super) fn scan_server(&mut self) -> Result<(), ProtocolError> {
        self.saw_ready = false;
        loop {
            if self.s_skip > 0 {
                if pass_through(self.sout.len(), &mut self.s_ready, &mut self.s_skip) {
                    return Ok(());
                }
                continue;
            }
            let avail = &self.sout[self.s_ready..];
            let Some((tag, total)) = peek_header(avail, usize::MAX)? else {
                return Ok(());
            };
            if self.track_prepared {
                match tag {
                    b'1' | b'3' => {
                        if avail.len() < total {
                            return Ok(());
                        }
                        let r = if tag == b'1' {
                            self.tracker.on_parse_complete()
                        } else {
                            self.tracker.on_close_complete()
                        };
                        if r == Response::Swallow {
                            let mut tail = self.sout.split_off(self.s_ready);
                            tail.advance(total);
                            self.sout.unsplit(tail);
                        } else {
                            self.s_ready += total;
                        }
                        continue;
                    }
                    tags::backend::ERROR_RESPONSE => {
                        if let Some(s) = self.server.as_mut() {
                            self.tracker.on_error(&mut s.statements);
                        }
                    }
                    tags::backend::READY_FOR_QUERY if avail.len() >= total => {
                        if let Some(s) = self.server.as_mut() {
                            self.tracker.on_ready(&mut s.statements);
                        }
                    }
                    _ => {}
                }
            }
            match tag {
                tags::backend::COPY_IN_RESPONSE => {
                    self.copy_in = true;
                    if self.last_request_sync && self.pending > 0 {
                        // The Sync sent after the Execute that started COPY is ignored by the
                        // server; the client's Sync after CopyDone will be answered instead.
                        self.pending -= 1;
                        self.unsynced = true;
                        if self.track_prepared {
                            self.tracker.reopen();
                        }
                    }
                    self.s_skip = total;
                }
                tags::backend::ERROR_RESPONSE => {
                    self.copy_in = false;
                    self.s_skip = total;
                }
                tags::backend::READY_FOR_QUERY | tags::backend::PARAMETER_STATUS => {
                    if avail.len() < total {
                        return Ok(());
                    }
                    let body = &avail[5..total];
                    if tag == tags::backend::PARAMETER_STATUS {
                        let (k, v) = backend::parameter_status(body)?;
                        let (k, v) = (String::from_utf8_lossy(k), String::from_utf8_lossy(v));
                        self.session.params.set(&k, &v);
                        if let Some(s) = self.server.as_mut() {
                            s.params.set(&k, &v);
                            s.synced_params = self.session.params.fingerprint();
                        }
                    } else {
                        let status = backend::ready_for_query(body)?;
                        self.on_ready(status);
                        if self.fatal.is_some() {
                            // The ReadyForQuery is replaced by the error; drop it and what follows.
                            self.sout.truncate(self.s_ready);
                            return Ok(());
                        }
                    }
                    self.s_ready += total;
                }
                _ => self.s_skip = total,
            }
        }
    }

    pub(super) fn on_ready(&mut self, status: TxStatus) {
        self.saw_ready = true;
        self.pending = self.pending.saturating_sub(1);
        self.tx = status;
        let now = Instant::now();
        let stats = &self.session.pool.stats;
        PoolStats::add(&stats.query_count, 1);
        let hist = &self.session.pool.histograms;
        if let Some(t) = self.query_start.take() {
            let us = now.duration_since(t).as_micros() as u64;
            PoolStats::add(&stats.query_time_us, us);
            hist.query.observe(us);
        }
        if self.pending > 0 {
            self.query_start = Some(now);
        }
        if status == TxStatus::Idle {
            PoolStats::add(&stats.xact_count, 1);
            if let Some(t) = self.xact_start.take() {
                let us = now.duration_since(t).as_micros() as u64;
                PoolStats::add(&stats.xact_time_us, us);
                hist.xact.observe(us);
            }
        } else if self.settings.mode == PoolMode::Statement {
            self.fatal =
                Some((sqlstate::PROTOCOL_VIOLATION, "transaction blocks not allowed in statement pooling mode".into()));
        }
    }
}
