//! Frame splitting and every message view pgmux applies to a frame's body (frontend and
//! backend): none may panic, whatever the bytes.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pgmux_protocol::{backend, extended, frontend, split_frame};

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    while let Ok(Some(f)) = split_frame(&mut buf, 1 << 20) {
        let body = f.body();
        let _ = frontend::query(body);
        let _ = frontend::password(body);
        let _ = frontend::sasl_initial_response(body);
        let _ = extended::parse(body);
        let _ = extended::bind_head(body);
        let _ = extended::target(body);
        let _ = extended::command_tag(body);
        let _ = backend::ready_for_query(body);
        let _ = backend::parameter_status(body);
        let _ = backend::backend_key_data(body);
        let _ = backend::data_row(body);
        let _ = backend::authentication(body);
        let e = backend::ErrorFields::new(body);
        let _ = (e.sqlstate(), e.message());
    }
});
