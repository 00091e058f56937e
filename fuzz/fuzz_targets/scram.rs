//! SCRAM-SHA-256 as pgmux's server side sees it: a client-first-message, then a
//! client-final-message, both attacker-controlled (the input is split at the first 0xff).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgmux_protocol::scram::{ChannelBinding, Secret, ServerExchange};

fuzz_target!(|data: &[u8]| {
    let (first, last) = match data.iter().position(|b| *b == 0xff) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &b""[..]),
    };
    // Few iterations: the fuzzer is after the parsing, not the hashing.
    let secret = Secret::from_password(b"secret", b"0123456789abcdef", 2);
    for binding in [ChannelBinding::NotOffered, ChannelBinding::Declined, ChannelBinding::Required(b"cert-hash")] {
        if let Ok((exchange, _server_first)) = ServerExchange::start(first, secret.clone(), binding) {
            let _ = exchange.finish(last);
        }
    }
});
