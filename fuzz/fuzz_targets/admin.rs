//! Admin console commands (`SHOW ...`, `SET k = v`, `KILL_CLIENT id`, `SWITCHOVER m`, ...).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = pgmux::admin::parse(text);
    let _ = pgmux::admin::client_id(text);
});
