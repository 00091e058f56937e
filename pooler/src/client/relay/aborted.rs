//! A transaction block whose server died (a failover): the client stays connected and is
//! answered without a server as PostgreSQL answers an aborted block, until it ends it. A
//! ROLLBACK, ABORT, COMMIT or END (in a Query, or a Parse / Bind / Describe / Execute batch)
//! gets `ROLLBACK` and leaves the block; anything else gets an error and ReadyForQuery 'E'. The
//! first error says why (08006, the server was lost); later ones are PostgreSQL's 25P02. No I/O.

use bytes::BytesMut;
use pgmux_protocol::build::{self, Severity};
use pgmux_protocol::{extended, frontend, tags};

use super::end::Fault;

const ABORTED: &str = "current transaction is aborted, commands ignored until end of transaction block";
const IN_FAILED_SQL_TRANSACTION: &str = "25P02";

/// The emulated aborted block.
#[derive(Debug)]
pub(super) struct AbortedBlock {
    /// The first error's text (why the block is aborted); None once sent.
    first: Option<String>,
    /// An error was sent in this extended-protocol batch: ignore until Sync.
    skipping: bool,
    /// This batch ends the block (its Parse was a ROLLBACK, COMMIT, ...).
    ending: bool,
}

/// What answering one client message did.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Answered {
    /// Still in the aborted block.
    Still,
    /// The block is over: the client may run transactions again.
    Ended,
}

/// True for a statement that ends a transaction block (`ROLLBACK TO SAVEPOINT` does not).
fn ends_block(sql: &[u8]) -> bool {
    let text = String::from_utf8_lossy(sql).to_ascii_lowercase();
    let mut words = text.split(|c: char| c.is_whitespace() || c == ';').filter(|w| !w.is_empty());
    match (words.next(), words.next()) {
        (Some("rollback" | "abort"), Some("to")) => false,
        (Some("rollback" | "abort" | "commit" | "end"), _) => true,
        _ => false,
    }
}

impl AbortedBlock {
    /// A block aborted because its server was lost; `why` names the loss.
    pub(super) fn new(why: String) -> Self {
        AbortedBlock { first: Some(why), skipping: false, ending: false }
    }

    /// The reason went out with the lost request's own error: later errors are 25P02.
    pub(super) fn reason_sent(&mut self) {
        self.first = None;
    }

    fn error(&mut self, out: &mut BytesMut) {
        match self.first.take() {
            Some(why) => {
                build::error_response(out, Severity::Error, pgmux_protocol::sqlstate::CONNECTION_FAILURE, &why)
            }
            None => build::error_response(out, Severity::Error, IN_FAILED_SQL_TRANSACTION, ABORTED),
        }
    }

    /// Answers one whole client message (`tag`, `body`) into `out`.
    ///
    /// # Errors
    /// A message that has no answer in an aborted block (COPY data, a malformed message): the
    /// client is closed with this reason.
    pub(super) fn answer(&mut self, tag: u8, body: &[u8], out: &mut BytesMut) -> Result<Answered, Fault> {
        match tag {
            tags::frontend::QUERY => {
                let sql = frontend::query(body).map_err(|e| Fault::client(e.to_string()))?;
                if ends_block(sql) {
                    build::command_complete(out, "ROLLBACK");
                    build::ready_for_query(out, b'I');
                    return Ok(Answered::Ended);
                }
                self.error(out);
                build::ready_for_query(out, b'E');
            }
            tags::frontend::FUNCTION_CALL => {
                self.error(out);
                build::ready_for_query(out, b'E');
            }
            tags::frontend::SYNC => {
                let ended = self.ending && !self.skipping;
                self.skipping = false;
                self.ending = false;
                build::ready_for_query(out, if ended { b'I' } else { b'E' });
                if ended {
                    return Ok(Answered::Ended);
                }
            }
            tags::frontend::FLUSH => {}
            _ if self.skipping => {}
            tags::frontend::PARSE => {
                let p = extended::parse(body).map_err(|e| Fault::client(e.to_string()))?;
                let sql = p.rest.split(|&b| b == 0).next().unwrap_or(b"");
                if ends_block(sql) {
                    self.ending = true;
                    extended::complete(out, tags::backend::PARSE_COMPLETE);
                } else {
                    self.error(out);
                    self.skipping = true;
                }
            }
            tags::frontend::BIND if self.ending => extended::complete(out, tags::backend::BIND_COMPLETE),
            tags::frontend::DESCRIBE if self.ending => {
                if body.first() == Some(&b'S') {
                    // ParameterDescription with no parameters.
                    out.extend_from_slice(&[tags::backend::PARAMETER_DESCRIPTION, 0, 0, 0, 6, 0, 0]);
                }
                extended::complete(out, tags::backend::NO_DATA);
            }
            tags::frontend::EXECUTE if self.ending => build::command_complete(out, "ROLLBACK"),
            tags::frontend::BIND | tags::frontend::DESCRIBE | tags::frontend::EXECUTE | tags::frontend::CLOSE => {
                self.error(out);
                self.skipping = true;
            }
            other => {
                return Err(Fault::client(format!("unexpected message '{}' after the server was lost", other as char)))
            }
        }
        Ok(Answered::Still)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgmux_protocol::frame::split_frame;

    fn frames(mut b: BytesMut) -> Vec<(u8, String)> {
        let mut v = Vec::new();
        while let Ok(Some(f)) = split_frame(&mut b, usize::MAX) {
            let text = match f.tag {
                b'E' => pgmux_protocol::backend::ErrorFields::new(f.body()).sqlstate().escape_ascii().to_string(),
                b'Z' | b'C' => f.body().escape_ascii().to_string(),
                _ => String::new(),
            };
            v.push((f.tag, text));
        }
        v
    }

    fn query(sql: &str) -> Vec<u8> {
        let mut b = sql.as_bytes().to_vec();
        b.push(0);
        b
    }

    fn parse(sql: &str) -> Vec<u8> {
        let mut b = vec![0];
        b.extend_from_slice(sql.as_bytes());
        b.extend_from_slice(&[0, 0, 0]);
        b
    }

    #[test]
    fn simple_queries_fail_until_rollback() {
        let mut a = AbortedBlock::new("server connection lost".into());
        let mut out = BytesMut::new();
        assert_eq!(a.answer(b'Q', &query("SELECT 1"), &mut out).unwrap(), Answered::Still);
        assert_eq!(a.answer(b'Q', &query("INSERT INTO t VALUES (1)"), &mut out).unwrap(), Answered::Still);
        assert_eq!(a.answer(b'Q', &query("ROLLBACK TO SAVEPOINT s"), &mut out).unwrap(), Answered::Still);
        assert_eq!(a.answer(b'Q', &query("  commit;"), &mut out).unwrap(), Answered::Ended);
        assert_eq!(
            frames(out),
            vec![
                (b'E', "08006".into()),
                (b'Z', "E".into()),
                (b'E', "25P02".into()),
                (b'Z', "E".into()),
                (b'E', "25P02".into()),
                (b'Z', "E".into()),
                (b'C', "ROLLBACK\\x00".into()),
                (b'Z', "I".into()),
            ]
        );
    }

    #[test]
    fn an_extended_batch_is_skipped_to_sync_and_an_extended_rollback_ends_the_block() {
        let mut a = AbortedBlock::new("lost".into());
        let mut out = BytesMut::new();
        for (tag, body) in [(b'P', parse("UPDATE t SET x = 1")), (b'B', vec![0; 8]), (b'E', vec![0; 5])] {
            assert_eq!(a.answer(tag, &body, &mut out).unwrap(), Answered::Still);
        }
        assert_eq!(a.answer(b'S', &[], &mut out).unwrap(), Answered::Still);
        for (tag, body) in [(b'P', parse("ROLLBACK")), (b'B', vec![0; 8]), (b'D', b"P\0".to_vec()), (b'E', vec![0; 5])]
        {
            assert_eq!(a.answer(tag, &body, &mut out).unwrap(), Answered::Still);
        }
        assert_eq!(a.answer(b'S', &[], &mut out).unwrap(), Answered::Ended);
        let tags: Vec<u8> = frames(out).into_iter().map(|(t, _)| t).collect();
        assert_eq!(tags, b"EZ12nCZ".to_vec());
    }

    #[test]
    fn copy_data_closes_the_client() {
        let mut a = AbortedBlock::new("lost".into());
        assert!(a.answer(b'd', b"x", &mut BytesMut::new()).is_err());
        assert!(a.answer(b'Q', b"no terminator", &mut BytesMut::new()).is_err());
    }
}
