//! Property tests: every message pgmux builds parses back to what it was built from, framed as
//! exactly one whole message (build -> split -> parse is the identity), for arbitrary names,
//! texts and values.

use bytes::BytesMut;
use pgmux_protocol::backend::{self, AuthRequest, ErrorFields, TxStatus};
use pgmux_protocol::build::{self, Severity};
use pgmux_protocol::startup::{split_startup, StartupPacket, PROTOCOL_3_0};
use pgmux_protocol::{extended, frontend, split_frame, tags};
use proptest::prelude::*;

/// Text without NUL (the protocol's string terminator), as names and values must be.
fn text() -> impl Strategy<Value = String> {
    "[^\u{0}]{0,40}"
}

fn bytes_no_nul() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(1u8..=255, 0..64)
}

/// The one whole frame in `buf`: its type and body.
fn only_frame(mut buf: BytesMut) -> (u8, Vec<u8>) {
    let f = split_frame(&mut buf, 1 << 24).unwrap().expect("one whole frame");
    assert!(buf.is_empty(), "bytes after the frame");
    (f.tag, f.body().to_vec())
}

proptest! {
    #[test]
    fn startup_and_cancel(params in proptest::collection::vec(("[a-z_]{1,20}", text()), 0..6), pid: i32, secret: i32) {
        let pairs: Vec<(&str, &str)> = params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let mut buf = BytesMut::new();
        build::startup_message(&mut buf, &pairs);
        let parsed = split_startup(&mut buf).unwrap().unwrap();
        prop_assert_eq!(parsed, StartupPacket::Startup { version: PROTOCOL_3_0, params: params.clone() });
        build::cancel_request(&mut buf, pid, secret);
        prop_assert_eq!(split_startup(&mut buf).unwrap().unwrap(), StartupPacket::Cancel { pid, secret });
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn frontend_messages(sql in text(), name in text(), data in bytes_no_nul(), pw in bytes_no_nul(), mech in "[A-Z0-9-]{1,20}") {
        let mut buf = BytesMut::new();
        build::query(&mut buf, &sql);
        let (tag, body) = only_frame(buf.split());
        prop_assert_eq!(tag, tags::frontend::QUERY);
        prop_assert_eq!(frontend::query(&body).unwrap(), sql.as_bytes());

        build::password(&mut buf, &pw);
        let (_, body) = only_frame(buf.split());
        prop_assert_eq!(frontend::password(&body).unwrap(), pw.as_slice());

        build::sasl_initial_response(&mut buf, &mech, &data);
        let (_, body) = only_frame(buf.split());
        let (m, d) = frontend::sasl_initial_response(&body).unwrap();
        prop_assert_eq!((m, d), (mech.as_bytes(), data.as_slice()));

        build::parse(&mut buf, &name, &sql);
        let (tag, body) = only_frame(buf.split());
        prop_assert_eq!(tag, tags::frontend::PARSE);
        let p = extended::parse(&body).unwrap();
        prop_assert_eq!(p.name, name.as_bytes());
        prop_assert!(p.rest.starts_with(sql.as_bytes()));
        // The view's parts rebuild the same message.
        let mut again = BytesMut::new();
        extended::parse_raw(&mut again, p.name, p.rest);
        prop_assert_eq!(only_frame(again), (tag, body.clone()));

        build::bind(&mut buf, &sql, &name, &[Some(&data[..]), None]);
        let (_, body) = only_frame(buf.split());
        let b = extended::bind_head(&body).unwrap();
        prop_assert_eq!((b.portal, b.statement), (sql.as_bytes(), name.as_bytes()));

        for (t, kind) in [(tags::frontend::DESCRIBE, b'S'), (tags::frontend::CLOSE, b'P')] {
            extended::target_message(&mut buf, t, kind, name.as_bytes());
            let (tag, body) = only_frame(buf.split());
            prop_assert_eq!(tag, t);
            let target = extended::target(&body).unwrap();
            prop_assert_eq!((target.kind, target.name), (kind, name.as_bytes()));
        }
    }

    #[test]
    fn backend_messages(name in bytes_no_nul(), value in bytes_no_nul(), pid: i32, secret: i32,
                        values in proptest::collection::vec(proptest::option::of(proptest::collection::vec(any::<u8>(), 0..32)), 0..8),
                        tag in "[A-Z ]{1,30}", salt: [u8; 4], mechs in proptest::collection::vec("[A-Z0-9-]{1,20}", 1..3),
                        data in bytes_no_nul(), msg in text(), code in "[0-9A-Z]{5}") {
        let mut buf = BytesMut::new();
        build::parameter_status(&mut buf, &name, &value);
        let (_, body) = only_frame(buf.split());
        prop_assert_eq!(backend::parameter_status(&body).unwrap(), (name.as_slice(), value.as_slice()));

        build::backend_key_data(&mut buf, pid, secret);
        let (_, body) = only_frame(buf.split());
        prop_assert_eq!(backend::backend_key_data(&body).unwrap(), (pid, secret));

        for (status, want) in [(b'I', TxStatus::Idle), (b'T', TxStatus::InTransaction), (b'E', TxStatus::Failed)] {
            build::ready_for_query(&mut buf, status);
            let (_, body) = only_frame(buf.split());
            prop_assert_eq!(backend::ready_for_query(&body).unwrap(), want);
        }

        let refs: Vec<Option<&[u8]>> = values.iter().map(|v| v.as_deref()).collect();
        build::data_row(&mut buf, &refs);
        let (_, body) = only_frame(buf.split());
        prop_assert_eq!(backend::data_row(&body).unwrap(), refs);

        build::command_complete(&mut buf, &tag);
        let (_, body) = only_frame(buf.split());
        prop_assert_eq!(extended::command_tag(&body).unwrap(), tag.as_bytes());

        build::auth_md5(&mut buf, salt);
        let (_, body) = only_frame(buf.split());
        prop_assert_eq!(backend::authentication(&body).unwrap(), AuthRequest::Md5(salt));
        let m: Vec<&str> = mechs.iter().map(String::as_str).collect();
        build::auth_sasl(&mut buf, &m);
        let (_, body) = only_frame(buf.split());
        let want: Vec<&[u8]> = mechs.iter().map(|s| s.as_bytes()).collect();
        prop_assert_eq!(backend::authentication(&body).unwrap(), AuthRequest::Sasl(want));
        build::auth_sasl_continue(&mut buf, &data);
        let (_, body) = only_frame(buf.split());
        prop_assert_eq!(backend::authentication(&body).unwrap(), AuthRequest::SaslContinue(&data));
        build::auth_sasl_final(&mut buf, &data);
        let (_, body) = only_frame(buf.split());
        prop_assert_eq!(backend::authentication(&body).unwrap(), AuthRequest::SaslFinal(&data));

        for severity in [Severity::Error, Severity::Fatal, Severity::Notice, Severity::Warning] {
            build::error_response(&mut buf, severity, &code, &msg);
            let (_, body) = only_frame(buf.split());
            let e = ErrorFields::new(&body);
            prop_assert_eq!(e.sqlstate(), code.as_bytes());
            prop_assert_eq!(e.message(), msg.clone());
        }
    }
}
