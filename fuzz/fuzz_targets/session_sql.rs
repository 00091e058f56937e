//! The statement lexer that reads SET/RESET/PREPARE/... out of every client query text, with
//! either reading of `'...'` strings, and what a Parse of the same text would prepare.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgmux::session_sql::{self, Effect, Strings};

fuzz_target!(|data: &[u8]| {
    for e in session_sql::effects(data) {
        if let Effect::Set { name, value } = e {
            assert!(!name.is_empty() && !value.is_empty());
        }
    }
    for strings in [Strings::Standard, Strings::Backslash] {
        let all = session_sql::statements_in(data, true, || strings);
        // Numbered in text order.
        assert!(all.windows(2).all(|w| w[0].at <= w[1].at));
        let parsed = session_sql::parsed(data, true, || strings);
        assert!(parsed.len() <= all.len());
        assert!(parsed.iter().all(|s| s.at == 0));
    }
});
