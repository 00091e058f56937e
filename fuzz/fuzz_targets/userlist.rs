//! auth_file (userlist.txt) text: quoted user and secret fields, then each secret classified
//! (clear text, `md5...`, `SCRAM-SHA-256$...`) and written back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgmux::config::{auth_file, StoredSecret};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(users) = auth_file::parse(text) {
        for secret in users.values() {
            // What to_text writes, parse must classify the same way.
            assert_eq!(&StoredSecret::parse(&secret.to_text()), secret);
        }
    }
});
