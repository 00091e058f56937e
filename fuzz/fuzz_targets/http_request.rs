//! The metrics port's request head: request line split into method, path and query, as the
//! router and the role checks (`/replica?lag=...`) read it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgmux_exporter::request::{head_complete, Request};

fuzz_target!(|data: &[u8]| {
    let _ = head_complete(data);
    let r = Request::parse(data);
    let _ = (r.method_allowed(), r.head_only());
    if let Some(lag) = r.query.strip_prefix("lag=") {
        let _ = pgmux::leader::health::parse_lag(lag);
    }
});
