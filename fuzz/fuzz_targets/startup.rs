//! The first packet of a connection (StartupMessage, SSLRequest, GSSENCRequest, CancelRequest).
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    while let Ok(Some(_)) = pgmux_protocol::startup::split_startup(&mut buf) {}
});
