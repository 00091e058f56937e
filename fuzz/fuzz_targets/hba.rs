//! auth_hba_file and auth_ident_file lines.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    for line in text.lines() {
        let _ = pgmux::config::hba::fields(line);
        let _ = pgmux::config::hba::tokens(line);
    }
});
