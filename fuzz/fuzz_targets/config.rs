//! pgbouncer.ini text: the line reader, then building the whole configuration from it.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let path = std::path::Path::new("fuzz.ini");
    if let Ok(entries) = pgmux::config::ini::parse_text(text, path) {
        let _ = pgmux::config::build(path, entries);
    }
});
