//! The batch sent again when a cached unnamed statement is refused (replay.rs): what is kept,
//! what goes to the server again, and the batches that are not sent again.

use bytes::BytesMut;
use pgmux_protocol::{split_frame, tags};
use tags::backend as b;

use super::super::tracker::Response;
use super::super::NAME_LEN;
use super::{bind_statement, tags_of, Fixture, BIND_UNNAMED, PARSE_UNNAMED};
use crate::server::ServerStatements;

/// Split of whole messages as they would go to the server.
fn frames(buf: &mut BytesMut) -> Vec<(u8, Vec<u8>)> {
    let mut v = Vec::new();
    while let Some(f) = split_frame(buf, 1 << 20).unwrap() {
        v.push((f.tag, f.body().to_vec()));
    }
    v
}

/// A client whose unnamed statement is prepared on the server and served from the cache in a
/// second batch, now in flight with pgmux's own ParseComplete taken: what the server was sent.
fn cached_batch_in_flight(f: &mut Fixture, batch: &[(u8, &[u8])]) -> Vec<(u8, Vec<u8>)> {
    f.send(batch).unwrap();
    for (tag, _) in batch {
        let answer = match tag {
            b'P' => b::PARSE_COMPLETE,
            b'B' => b::BIND_COMPLETE,
            b'D' => b::ROW_DESCRIPTION,
            b'E' => b::COMMAND_COMPLETE,
            _ => b::READY_FOR_QUERY,
        };
        assert_eq!(f.respond(answer), Response::Forward);
    }
    assert!(f.tracker.replay == super::super::replay::Stage::Off, "an answered batch is not kept");
    let out = f.send(batch).unwrap();
    assert_eq!(f.tracker.next_fake(), Some(b::PARSE_COMPLETE));
    out
}

const CACHED_BATCH: &[(u8, &[u8])] =
    &[(b'P', PARSE_UNNAMED), (b'B', BIND_UNNAMED), (b'D', b"P\0"), (b'E', b"\0\0\0\0\0"), (b'S', b"")];

#[test]
fn a_refused_batch_from_the_cache_goes_again_behind_a_fresh_parse() {
    let mut f = Fixture::cached(10);
    let sent = cached_batch_in_flight(&mut f, CACHED_BATCH);
    assert_eq!(tags_of(&sent), b"BD");
    let old_name = bind_statement(&sent[0].1).to_vec();
    assert!(f.tracker.replay_applies(&f.kept), "the refusal would be the batch's first answer");
    // The server refuses the statement (0A000): the epoch rises, the batch goes again.
    assert_eq!(f.respond(b::ERROR_RESPONSE), Response::Forward);
    f.epoch += 1;
    let mut buf = BytesMut::from(&b"rest"[..]);
    let kept = f.kept.clone();
    let n = f.rewrite().replay_refused(&mut buf, 0, &kept, b"").expect("sent again").bytes;
    assert_eq!(&buf[n..], b"rest", "inserted before what follows");
    buf.truncate(n);
    let again = frames(&mut buf);
    assert_eq!(again.iter().map(|m| m.0).collect::<Vec<_>>(), b"PBDES");
    let new_name = &again[0].1[..NAME_LEN];
    assert_ne!(new_name, &old_name[..]);
    assert_eq!(&again[0].1[NAME_LEN + 1..], &PARSE_UNNAMED[1..], "the client's text");
    assert_eq!(bind_statement(&again[1].1), new_name);
    let mut bind = sent[0].1.clone();
    bind[1..1 + NAME_LEN].copy_from_slice(new_name);
    assert_eq!(again[1].1, bind, "the client's Bind, renamed");
    assert_eq!(again[2..], sent[1..], "Describe, Execute and Sync as the client sent them");
    // The refused batch's ReadyForQuery and the fresh ParseComplete are pgmux's; the rest is
    // the client's.
    assert_eq!(f.respond(b::READY_FOR_QUERY), Response::Swallow);
    assert_eq!(f.respond(b::PARSE_COMPLETE), Response::Swallow);
    for r in [b::BIND_COMPLETE, b::ROW_DESCRIPTION, b::COMMAND_COMPLETE, b::READY_FOR_QUERY] {
        assert_eq!(f.respond(r), Response::Forward);
    }
    assert!(!f.tracker.in_flight());
    // The client's unnamed statement is the fresh one from now on.
    let out = f.send(CACHED_BATCH).unwrap();
    assert_eq!(bind_statement(&out[0].1), new_name);
}

#[test]
fn a_batch_partly_answered_or_with_more_behind_it_is_not_sent_again() {
    // Described before the refusal: the client saw the old columns.
    let mut f = Fixture::cached(10);
    let batch: &[(u8, &[u8])] =
        &[(b'P', PARSE_UNNAMED), (b'D', b"S\0"), (b'B', BIND_UNNAMED), (b'E', b"\0\0\0\0\0"), (b'S', b"")];
    cached_batch_in_flight(&mut f, batch);
    assert!(f.tracker.replay_applies(&f.kept));
    f.respond(b::ROW_DESCRIPTION);
    assert!(!f.tracker.replay_applies(&f.kept));
    // Another batch sent behind it.
    let mut f = Fixture::cached(10);
    cached_batch_in_flight(&mut f, CACHED_BATCH);
    f.send(&[(b'B', BIND_UNNAMED), (b'E', b"\0\0\0\0\0"), (b'S', b"")]).unwrap();
    assert!(!f.tracker.replay_applies(&f.kept));
    // Its statement described (ParameterDescription comes first), then refused: the client saw
    // an answer of the batch already.
    let mut f = Fixture::cached(10);
    cached_batch_in_flight(&mut f, batch);
    assert_eq!(f.respond(b::PARAMETER_DESCRIPTION), Response::Hold, "held, to see what follows");
    assert!(!f.tracker.replay_applies(&f.kept));
    // A simple Query inside it: kept, but not sent again (it would run twice).
    let mut f = Fixture::cached(10);
    let with_query: &[(u8, &[u8])] = &[CACHED_BATCH[0], CACHED_BATCH[1], (b'Q', b"SELECT 1\0"), (b'S', b"")];
    cached_batch_in_flight(&mut f, with_query);
    assert!(f.tracker.replay_applies(&f.kept));
    f.respond(b::ERROR_RESPONSE);
    let kept = f.kept.clone();
    assert_eq!(f.rewrite().replay_refused(&mut BytesMut::new(), 0, &kept, b""), None);
    assert_eq!(f.respond(b::READY_FOR_QUERY), Response::Forward, "the refusal reaches the client");
}

#[test]
fn a_batch_written_in_pieces_is_kept_as_it_leaves() {
    let mut f = Fixture::cached(10);
    f.send(&CACHED_BATCH[..1]).unwrap();
    f.respond(b::PARSE_COMPLETE);
    let sent = f.send(&CACHED_BATCH[..2]).unwrap();
    assert!(f.tracker.replay_keeping(), "kept from the Parse served from the cache");
    // The Bind goes to the server before the rest is read.
    let mut bind = vec![b'B'];
    bind.extend_from_slice(&((sent[0].1.len() + 4) as i32).to_be_bytes());
    bind.extend_from_slice(&sent[0].1);
    f.tracker.replay_sent(&mut f.kept, &bind);
    f.send(&CACHED_BATCH[2..]).unwrap();
    assert_eq!(f.tracker.next_fake(), Some(b::PARSE_COMPLETE));
    assert!(f.tracker.replay_applies(&f.kept));
    f.respond(b::ERROR_RESPONSE);
    f.epoch += 1;
    let mut buf = BytesMut::new();
    let kept = f.kept.clone();
    f.rewrite().replay_refused(&mut buf, 0, &kept, b"").expect("sent again");
    assert_eq!(frames(&mut buf).iter().map(|m| m.0).collect::<Vec<_>>(), b"PBDES", "the whole batch");
}

#[test]
fn a_batch_with_an_injected_parse_is_not_sent_again() {
    let mut f = Fixture::cached(10);
    f.send(&[(b'P', b"s2\0SELECT 2\0\0\0"), (b'S', b"")]).unwrap();
    f.respond(b::PARSE_COMPLETE);
    f.respond(b::READY_FOR_QUERY);
    f.server = ServerStatements::default();
    f.tracker.reset();
    f.send(&CACHED_BATCH[..1]).unwrap();
    f.respond(b::PARSE_COMPLETE);
    f.respond(b::READY_FOR_QUERY);
    // Served from the cache, then a Bind of a named statement this server lacks.
    let out =
        f.send(&[(b'P', PARSE_UNNAMED), (b'B', b"\0s2\0\0\0\0\0\0\0"), (b'E', b"\0\0\0\0\0"), (b'S', b"")]).unwrap();
    assert_eq!(tags_of(&out), b"PB", "s2's Parse injected");
    assert_eq!(f.tracker.next_fake(), Some(b::PARSE_COMPLETE));
    assert!(f.tracker.replay_applies(&f.kept), "kept");
    f.respond(b::ERROR_RESPONSE);
    let kept = f.kept.clone();
    assert_eq!(
        f.rewrite().replay_refused(&mut BytesMut::new(), 0, &kept, b""),
        None,
        "it changed what the server holds"
    );
}

#[test]
fn a_batch_with_a_request_sent_behind_it_is_not_sent_again_even_once_answered_in_part() {
    // Parse (from the cache), Bind, Execute, Sync; then a lone Sync behind it. Once the Bind is
    // answered the queue is as long as the batch was: only the Sync behind tells them apart.
    let batch: &[(u8, &[u8])] = &[CACHED_BATCH[0], CACHED_BATCH[1], CACHED_BATCH[3], CACHED_BATCH[4]];
    let mut f = Fixture::cached(10);
    cached_batch_in_flight(&mut f, batch);
    assert!(f.tracker.replay_applies(&f.kept));
    f.send(&[(b'S', b"")]).unwrap();
    f.respond(b::BIND_COMPLETE);
    assert!(!f.tracker.replay_applies(&f.kept));
    // A notice before the refusal: the client has seen it, it would see it twice.
    let mut f = Fixture::cached(10);
    cached_batch_in_flight(&mut f, batch);
    f.respond(b::NOTICE_RESPONSE);
    assert!(!f.tracker.replay_applies(&f.kept));
}

#[test]
fn a_batch_refused_in_a_block_holding_only_its_begin_goes_again_behind_a_rollback_and_it() {
    let mut f = Fixture::cached(10);
    let sent = cached_batch_in_flight(&mut f, CACHED_BATCH);
    // As the relay arms it after the client's lone BEGIN.
    f.tracker.replay_in_block = true;
    assert!(f.tracker.replay_applies(&f.kept));
    assert_eq!(f.respond(b::ERROR_RESPONSE), Response::Forward);
    f.epoch += 1;
    let kept = f.kept.clone();
    let mut buf = BytesMut::new();
    let n = f
        .rewrite()
        .replay_refused(&mut buf, 0, &kept, b"BEGIN ISOLATION LEVEL REPEATABLE READ")
        .expect("sent again")
        .bytes;
    assert_eq!(n, buf.len());
    let again = frames(&mut buf);
    assert_eq!(again.iter().map(|m| m.0).collect::<Vec<_>>(), b"PBEPBEPBDES");
    assert_eq!(again[0].1, b"\0ROLLBACK\0\0\0", "a ROLLBACK of the aborted block, as the unnamed statement");
    assert_eq!(again[3].1, b"\0BEGIN ISOLATION LEVEL REPEATABLE READ\0\0\0", "the client's own BEGIN");
    assert_eq!(again[8..], sent[1..], "then the batch as before");
    // Everything up to the batch's own answers is pgmux's.
    for r in [b::READY_FOR_QUERY, b::PARSE_COMPLETE, b::BIND_COMPLETE, b::COMMAND_COMPLETE] {
        assert_eq!(f.respond(r), Response::Swallow);
    }
    for r in [b::PARSE_COMPLETE, b::BIND_COMPLETE, b::COMMAND_COMPLETE, b::PARSE_COMPLETE] {
        assert_eq!(f.respond(r), Response::Swallow);
    }
    for r in [b::BIND_COMPLETE, b::ROW_DESCRIPTION, b::COMMAND_COMPLETE, b::READY_FOR_QUERY] {
        assert_eq!(f.respond(r), Response::Forward);
    }
    assert!(!f.tracker.in_flight());
    assert!(!f.tracker.unnamed_here, "the server's unnamed statement is no longer the client's");

    // Without the BEGIN's text kept, it is not sent again.
    let mut f = Fixture::cached(10);
    cached_batch_in_flight(&mut f, CACHED_BATCH);
    f.tracker.replay_in_block = true;
    f.respond(b::ERROR_RESPONSE);
    let kept = f.kept.clone();
    assert_eq!(f.rewrite().replay_refused(&mut BytesMut::new(), 0, &kept, b""), None);
}

#[test]
fn an_open_batch_refused_goes_again_behind_a_sync_of_pgmux_own() {
    // asyncpg with its caches off: Parse, Describe of the statement, Flush; no Sync yet.
    let open: &[(u8, &[u8])] = &[(b'P', PARSE_UNNAMED), (b'D', b"S\0"), (b'H', b"")];
    let mut f = Fixture::cached(10);
    f.send(&CACHED_BATCH[..1]).unwrap();
    f.respond(b::PARSE_COMPLETE);
    f.send(&[(b'S', b"")]).unwrap();
    f.respond(b::READY_FOR_QUERY);
    let sent = f.send(open).unwrap();
    assert_eq!(f.tracker.next_fake(), Some(b::PARSE_COMPLETE));
    // As the relay keeps it when it is written.
    let mut wire = BytesMut::new();
    for (tag, body) in &sent {
        wire.extend_from_slice(&[*tag]);
        wire.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        wire.extend_from_slice(body);
    }
    f.tracker.replay_sent(&mut f.kept, &wire);
    assert!(f.tracker.replay_applies(&f.kept), "whole messages, every request among them");
    // Part of a message only: not sent again.
    assert!(!f.tracker.replay_applies(&f.kept[..f.kept.len() - 2]));
    // The relay looks behind it, finds the refusal, and drops it.
    let held = f.tracker.on_response(b::PARAMETER_DESCRIPTION, &mut f.server, &mut f.client);
    assert_eq!(held, Response::Hold, "held while the batch may go again");
    assert_eq!(f.tracker.on_response(b::ERROR_RESPONSE, &mut f.server, &mut f.client), Response::Forward);
    assert!(f.tracker.is_skipping(), "the server skips to a Sync not sent yet");
    f.epoch += 1;
    let kept = f.kept.clone();
    let mut buf = BytesMut::new();
    let again = f.rewrite().replay_refused(&mut buf, 0, &kept, b"").expect("sent again");
    assert!(again.open);
    assert_eq!(frames(&mut buf).iter().map(|m| m.0).collect::<Vec<_>>(), b"SPDH", "a Sync first, then the batch");
    for r in [b::READY_FOR_QUERY, b::PARSE_COMPLETE] {
        assert_eq!(f.respond(r), Response::Swallow);
    }
    assert_eq!(f.respond(b::PARAMETER_DESCRIPTION), Response::Forward, "the batch sent again is not held");
    assert_eq!(f.respond(b::ROW_DESCRIPTION), Response::Forward);
    // The client's Bind, Execute and Sync follow, on the fresh statement.
    let out = f.send(&[(b'B', BIND_UNNAMED), (b'E', b"\0\0\0\0\0"), (b'S', b"")]).unwrap();
    assert_eq!(bind_statement(&out[0].1), &again_name(&kept, &out)[..]);
    for r in [b::BIND_COMPLETE, b::COMMAND_COMPLETE, b::READY_FOR_QUERY] {
        assert_eq!(f.respond(r), Response::Forward);
    }
    assert!(!f.tracker.in_flight());
}

/// The statement name a Bind sent after a batch sent again uses: not the kept one's.
fn again_name(kept: &[u8], out: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let old = &kept[6..6 + NAME_LEN];
    let new = bind_statement(&out[0].1).to_vec();
    assert_ne!(&new[..], old, "renamed to the statement prepared afresh");
    new
}

/// Named Parses of the same text as [`PARSE_UNNAMED`].
const PARSE_A: &[u8] = b"a\0SELECT $1\0\0\x01\0\0\0\x17";
/// Another, of the same text.
const PARSE_B: &[u8] = b"b\0SELECT $1\0\0\x01\0\0\0\x17";

#[test]
fn a_batch_with_answers_pgmux_gives_itself_inside_is_not_counted_as_unanswered() {
    // The review's case: a Parse of a name whose text the server holds, inside the kept batch,
    // queues an answer of pgmux's that was never sent, which an answer popped could hide.
    let mut f = Fixture::cached(10);
    // The unnamed text prepared on the server first.
    cached_batch_in_flight(&mut f, CACHED_BATCH);
    for r in [b::BIND_COMPLETE, b::ROW_DESCRIPTION, b::COMMAND_COMPLETE, b::READY_FOR_QUERY] {
        f.respond(r);
    }
    // Bind, Execute, Bind, two Parses pgmux answers, Execute, Sync: five requests sent, seven
    // queued; once the first two are answered the counts would match.
    let batch: &[(u8, &[u8])] = &[
        (b'P', PARSE_UNNAMED),
        (b'B', BIND_UNNAMED),
        (b'E', b"\0\0\0\0\0"),
        (b'B', BIND_UNNAMED),
        (b'P', PARSE_A),
        (b'P', PARSE_B),
        (b'E', b"\0\0\0\0\0"),
        (b'S', b""),
    ];
    f.send(batch).unwrap();
    assert_eq!(f.tracker.next_fake(), Some(b::PARSE_COMPLETE), "the unnamed text, from the cache");
    assert!(f.tracker.replay_pending(), "kept");
    assert!(!f.tracker.replay_applies(&f.kept), "answers of pgmux's own queued inside it");
    f.respond(b::BIND_COMPLETE);
    f.respond(b::COMMAND_COMPLETE);
    assert!(!f.tracker.replay_applies(&f.kept), "answered in part: the Execute would run twice");
    // Nor, with none inside, once an answer came: the batch ran in part.
    let mut f = Fixture::cached(10);
    cached_batch_in_flight(&mut f, CACHED_BATCH);
    assert!(f.tracker.replay_applies(&f.kept));
    f.respond(b::BIND_COMPLETE);
    assert!(!f.tracker.replay_applies(&f.kept));
}
