//! md5 login as pgmux's server side sees it: the client's PasswordMessage body, checked against
//! a stored md5 secret, and the same bytes as a secret in auth_file and as a user name.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgmux::config::StoredSecret;
use pgmux_protocol::{frontend, md5};

fuzz_target!(|data: &[u8]| {
    let stored = md5::secret("app", b"secret");
    if let Ok(given) = frontend::password(data) {
        let expected = md5::response_from_secret(&stored, [1, 2, 3, 4]);
        let _ = md5::constant_time_eq(expected.as_bytes(), given);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let StoredSecret::Md5(s) = StoredSecret::parse(text) {
            let _ = md5::response_from_secret(&s, [0; 4]);
        }
        let _ = md5::secret(text, data);
    }
});
