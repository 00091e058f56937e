//! auth_ident_file text, then a lookup in what it parsed to.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgmux::config::ident::IdentMap;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(map) = IdentMap::parse(text, "fuzz") {
        let _ = map.allows("map", "postgres", "app");
    }
});
