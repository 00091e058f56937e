//! The prepared-statement mapping message by message: renames, injected Parses, answers pgmux
//! gives itself, errors and what they undo.

use bytes::BytesMut;
use pgmux_protocol::{split_frame, tags};
use tags::backend as b;

use super::bench::Books;
use super::tracker::{Response, Tracker};
use super::{server_name, ClientStatements, RewriteError, NAME_LEN};
use crate::server::ServerStatements;

struct Fixture {
    client: ClientStatements,
    server: ServerStatements,
    tracker: Tracker,
    max: usize,
    cache_unnamed: bool,
    epoch: u64,
}

impl Fixture {
    fn new(max: usize) -> Self {
        Fixture {
            client: ClientStatements::default(),
            server: ServerStatements::default(),
            tracker: Tracker::default(),
            max,
            cache_unnamed: false,
            epoch: 0,
        }
    }

    /// With cache_unnamed_statements on.
    fn cached(max: usize) -> Self {
        Fixture { cache_unnamed: true, ..Fixture::new(max) }
    }

    /// Rewrites whole messages as the relay does; returns what goes to the server.
    fn send(&mut self, msgs: &[(u8, &[u8])]) -> Result<Vec<(u8, Vec<u8>)>, RewriteError> {
        let mut buf = BytesMut::new();
        for (tag, body) in msgs {
            buf.extend_from_slice(&[*tag]);
            buf.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
            buf.extend_from_slice(body);
        }
        let mut books = Books {
            client: std::mem::take(&mut self.client),
            server: std::mem::take(&mut self.server),
            tracker: std::mem::take(&mut self.tracker),
        };
        let result = books.rewrite(&mut buf, self.max, self.cache_unnamed, self.epoch);
        (self.client, self.server, self.tracker) = (books.client, books.server, books.tracker);
        result?;
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
    assert_eq!(out[1].1[1..1 + NAME_LEN], server_name(f.client.map.get(b"b").unwrap().hash));
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

const PARSE_UNNAMED: &[u8] = b"\0SELECT $1\0\0\x01\0\0\0\x17";
const BIND_UNNAMED: &[u8] = b"\0\0\0\0\0\x01\0\0\0\x011\0\0";

/// The statement name a Bind body names.
fn bind_statement(body: &[u8]) -> &[u8] {
    let portal_end = body.iter().position(|&c| c == 0).unwrap();
    let rest = &body[portal_end + 1..];
    &rest[..rest.iter().position(|&c| c == 0).unwrap()]
}

#[test]
fn a_cached_unnamed_statement_is_prepared_once_per_server() {
    let mut f = Fixture::cached(10);
    let batch: &[(u8, &[u8])] =
        &[(b'P', PARSE_UNNAMED), (b'B', BIND_UNNAMED), (b'D', b"S\0"), (b'E', b"\0\0\0\0\0"), (b'S', b"")];
    let out = f.send(batch).unwrap();
    assert_eq!(tags_of(&out), b"PBD");
    let name = out[0].1[..NAME_LEN].to_vec();
    assert!(name.starts_with(b"pgmux_"), "the unnamed Parse is renamed");
    assert_eq!(bind_statement(&out[1].1), &name[..]);
    assert_eq!(&out[2].1[1..1 + NAME_LEN], &name[..]);
    for r in [b::PARSE_COMPLETE, b::BIND_COMPLETE, b::ROW_DESCRIPTION, b::COMMAND_COMPLETE, b::READY_FOR_QUERY] {
        assert_eq!(f.respond(r), Response::Forward);
    }
    // The same text again: no Parse reaches the server, pgmux answers ParseComplete itself.
    let out = f.send(batch).unwrap();
    assert_eq!(tags_of(&out), b"BD");
    assert_eq!(bind_statement(&out[0].1), &name[..]);
    assert_eq!(f.tracker.next_fake(), Some(b::PARSE_COMPLETE));
    assert_eq!(f.server.len(), 1);
}

#[test]
fn a_cached_unnamed_statement_shares_the_named_one_of_the_same_text() {
    let mut f = Fixture::cached(10);
    f.send(&[(b'P', PARSE_S1), (b'S', b"")]).unwrap();
    f.respond(b::PARSE_COMPLETE);
    f.respond(b::READY_FOR_QUERY);
    // Another client sends the same text as its unnamed statement.
    f.client = ClientStatements::default();
    let out = f.send(&[(b'P', PARSE_UNNAMED), (b'B', BIND_UNNAMED), (b'S', b"")]).unwrap();
    assert_eq!(tags_of(&out), b"B");
    assert_eq!(f.tracker.next_fake(), Some(b::PARSE_COMPLETE));
}

#[test]
fn a_failed_unnamed_parse_leaves_nothing_cached() {
    let mut f = Fixture::cached(10);
    f.send(&[(b'P', b"\0SELEC oops\0\0\0"), (b'B', b"\0\0\0\0\0\0\0\0"), (b'S', b"")]).unwrap();
    assert_eq!(f.server.len(), 1);
    f.respond(b::ERROR_RESPONSE);
    assert_eq!(f.server.len(), 0, "PostgreSQL has no such statement");
    f.respond(b::READY_FOR_QUERY);
    // The client has no unnamed statement now: its Bind gets PostgreSQL's own error.
    let out = f.send(&[(b'B', b"\0\0\0\0\0\0\0\0"), (b'S', b"")]).unwrap();
    assert_eq!(tags_of(&out), b"CB");
    assert_eq!(out[0].1, b"S\0");
    assert_eq!(bind_statement(&out[1].1), b"");
}

#[test]
fn a_cached_unnamed_statement_follows_the_client_to_another_server() {
    let mut f = Fixture::cached(10);
    f.send(&[(b'P', PARSE_UNNAMED), (b'S', b"")]).unwrap();
    f.server = ServerStatements::default();
    f.tracker.reset();
    let out = f.send(&[(b'B', BIND_UNNAMED), (b'E', b"\0\0\0\0\0"), (b'S', b"")]).unwrap();
    assert_eq!(tags_of(&out), b"PB");
    assert_eq!(bind_statement(&out[1].1), &out[0].1[..NAME_LEN]);
    assert_eq!(f.respond(b::PARSE_COMPLETE), Response::Swallow);
    assert_eq!(f.respond(b::BIND_COMPLETE), Response::Forward);
    // A simple Query destroys the unnamed statement, as in PostgreSQL (and the server's own):
    // the Bind goes out unrenamed, for PostgreSQL to report it missing.
    f.tracker.on_query(true, &mut f.server, &mut f.client);
    f.respond(b::READY_FOR_QUERY);
    let out = f.send(&[(b'B', BIND_UNNAMED)]).unwrap();
    assert_eq!(tags_of(&out), b"B");
    assert_eq!(bind_statement(&out[0].1), b"");
}

#[test]
fn a_statement_from_an_older_epoch_is_closed_and_prepared_again() {
    let mut f = Fixture::cached(10);
    f.send(&[(b'P', PARSE_UNNAMED), (b'S', b"")]).unwrap();
    f.respond(b::PARSE_COMPLETE);
    f.respond(b::READY_FOR_QUERY);
    f.epoch = 1;
    let out = f.send(&[(b'P', PARSE_UNNAMED), (b'B', BIND_UNNAMED), (b'S', b"")]).unwrap();
    assert_eq!(tags_of(&out), b"CPB");
    assert_eq!(&out[0].1[1..1 + NAME_LEN], &out[1].1[..NAME_LEN], "the same name is closed first");
    assert_eq!(f.respond(b::CLOSE_COMPLETE), Response::Swallow);
    assert_eq!(f.respond(b::PARSE_COMPLETE), Response::Forward, "the client's own Parse");
    assert_eq!(f.respond(b::BIND_COMPLETE), Response::Forward);
    assert_eq!(f.respond(b::READY_FOR_QUERY), Response::Forward);
    // Fresh again in the new epoch.
    let out = f.send(&[(b'P', PARSE_UNNAMED), (b'S', b"")]).unwrap();
    assert!(tags_of(&out).is_empty());
    // A named statement's Bind after the epoch moved on brings the Close and Parse with it.
    f.send(&[(b'P', PARSE_S1), (b'S', b"")]).unwrap();
    f.epoch = 2;
    let out = f.send(&[(b'B', BIND_S1), (b'S', b"")]).unwrap();
    assert_eq!(tags_of(&out), b"CPB");
}

#[test]
fn with_the_cache_off_the_unnamed_statement_is_passed_through() {
    let mut f = Fixture::new(10);
    let out = f.send(&[(b'P', PARSE_UNNAMED), (b'B', BIND_UNNAMED), (b'S', b"")]).unwrap();
    assert_eq!(tags_of(&out), b"PB");
    assert_eq!(out[0].1, PARSE_UNNAMED);
    assert_eq!(f.server.len(), 0);
}

#[test]
fn messages_the_server_skips_after_an_error_change_no_statement() {
    let mut f = Fixture::cached(10);
    f.send(&[(b'P', PARSE_S1), (b'S', b"")]).unwrap();
    f.respond(b::PARSE_COMPLETE);
    f.respond(b::READY_FOR_QUERY);
    f.epoch = 1;
    // An error before the Sync is sent: the Bind of a stale statement behind it is ignored by
    // the server, so no Close or Parse is injected and the server's entry stays as it is.
    f.send(&[(b'P', b"bad\0SELEC\0\0\0"), (b'E', b"\0\0\0\0\0")]).unwrap();
    f.respond(b::ERROR_RESPONSE);
    let out = f.send(&[(b'B', BIND_S1), (b'E', b"\0\0\0\0\0"), (b'S', b"")]).unwrap();
    assert_eq!(tags_of(&out), b"B");
    assert_eq!(bind_statement(&out[0].1), b"s1", "passed on as sent, for the server to ignore");
    assert_eq!(f.server.len(), 1);
    f.respond(b::READY_FOR_QUERY);
    // After the Sync the stale statement is closed and prepared again at its next use.
    let out = f.send(&[(b'B', BIND_S1), (b'S', b"")]).unwrap();
    assert_eq!(tags_of(&out), b"CPB");
}

#[test]
fn an_unnamed_parse_behind_requests_in_flight_is_prepared_again() {
    let mut f = Fixture::cached(10);
    f.send(&[(b'P', PARSE_UNNAMED), (b'S', b"")]).unwrap();
    f.respond(b::PARSE_COMPLETE);
    f.respond(b::READY_FOR_QUERY);
    // Same text behind an Execute still running: closed and parsed again, not answered by pgmux.
    let out = f.send(&[(b'E', b"\0\0\0\0\0"), (b'P', PARSE_UNNAMED), (b'S', b"")]).unwrap();
    assert_eq!(tags_of(&out), b"CP");
    assert_eq!(f.tracker.next_fake(), None);
}

#[test]
fn the_name_context_keeps_statements_apart_and_is_zero_by_default() {
    use super::{name_context, statement_hash};
    use crate::client::ClientParams;
    use std::collections::BTreeMap;
    let params = ClientParams::new(&[]);
    assert_eq!(name_context(None, &params), 0, "no setting of its own: shares with everyone");
    assert_eq!(name_context(Some(&BTreeMap::new()), &params), 0);
    let session = |k: &str, v: &str| BTreeMap::from([(k.to_owned(), v.to_owned())]);
    let a = name_context(Some(&session("search_path", "a")), &params);
    let b = name_context(Some(&session("search_path", "b")), &params);
    let role = name_context(Some(&session("role", "a")), &params);
    assert!(a != 0 && b != 0 && role != 0);
    assert!(a != b && a != role, "other values, other contexts");
    // A tracked startup search_path counts when the session has not set one.
    let mut tracked = ClientParams::new(&["search_path".into()]);
    tracked.set("search_path", "a");
    assert_eq!(name_context(None, &tracked), a);
    assert_eq!(name_context(Some(&session("search_path", "b")), &tracked), b, "the session's SET wins");
    let text = b"SELECT * FROM t\0\0\0";
    assert_ne!(statement_hash(text, a), statement_hash(text, b));
    assert_ne!(statement_hash(text, a), statement_hash(text, 0));
    // On one server, the same text under another context is another statement: prepared again,
    // under its own name.
    let mut f = Fixture::cached(10);
    let batch: &[(u8, &[u8])] = &[(b'P', PARSE_UNNAMED), (b'B', BIND_UNNAMED), (b'S', b"")];
    let first = f.send(batch).unwrap();
    for r in [b::PARSE_COMPLETE, b::BIND_COMPLETE, b::READY_FOR_QUERY] {
        f.respond(r);
    }
    f.client.set_context(a);
    let again = f.send(batch).unwrap();
    assert_eq!(tags_of(&again), b"PB", "not taken from the server's cache");
    assert_ne!(first[0].1[..NAME_LEN], again[0].1[..NAME_LEN]);
    assert_eq!(f.server.len(), 2);
}
