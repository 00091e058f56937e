//! The statement lexer that reads SET/RESET/PREPARE/... out of every client query text.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for e in pgmux::session_sql::effects(data) {
        if let pgmux::session_sql::Effect::Set { name, value } = e {
            assert!(!name.is_empty() && !value.is_empty());
        }
    }
});
