//! SCRAM secrets made from plain-text passwords (an auth_file entry in clear text, with
//! auth_type scram-sha-256), kept per user. Making one runs PBKDF2 with scram_iterations
//! rounds, which costs more than the rest of a login many times over; PgBouncer keeps them too
//! (its cached SCRAM verifier per user).

use std::collections::HashMap;
use std::sync::LazyLock;

use parking_lot::Mutex;
use pgmux_protocol::scram::Secret;

/// Users whose secret is kept at most; past that the cache starts over.
const MAX_USERS: usize = 10_000;

/// The password and iteration count a secret was made for, and the secret.
type Made = (String, u32, Secret);

static SECRETS: LazyLock<Mutex<HashMap<String, Made>>> = LazyLock::new(Default::default);

/// The SCRAM secret of `user` whose password is `password`: made on the first login (with a
/// random salt) and reused while the password and `iterations` stay the same. A changed
/// password (RELOAD of the auth_file, an auth_query answer) makes a new one.
pub fn secret(user: &str, password: &str, iterations: u32) -> Secret {
    if let Some((p, i, s)) = SECRETS.lock().get(user) {
        if p == password && *i == iterations {
            return s.clone();
        }
    }
    // Made outside the lock: other logins go on meanwhile.
    let salt: [u8; 16] = rand::random();
    let made = Secret::from_password(password.as_bytes(), &salt, iterations);
    let mut secrets = SECRETS.lock();
    if secrets.len() >= MAX_USERS && !secrets.contains_key(user) {
        secrets.clear();
    }
    secrets.insert(user.to_owned(), (password.to_owned(), iterations, made.clone()));
    made
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_once_per_user_and_password() {
        let first = secret("plain_scram_a", "pw", 16);
        let again = secret("plain_scram_a", "pw", 16);
        assert_eq!((first.salt.clone(), first.stored_key), (again.salt, again.stored_key));
        // Another user with the same password gets a salt of its own.
        assert_ne!(secret("plain_scram_b", "pw", 16).salt, first.salt);
        // A new password or iteration count makes a new secret, which then stays.
        let changed = secret("plain_scram_a", "other", 16);
        assert_ne!(changed.stored_key, first.stored_key);
        assert_eq!(secret("plain_scram_a", "other", 16).salt, changed.salt);
        let more_rounds = secret("plain_scram_a", "other", 32);
        assert_eq!(more_rounds.iterations, 32);
        assert_ne!(more_rounds.salt, changed.salt);
        // It still proves the password: the stored key is the one PBKDF2 gives for its salt.
        let check = Secret::from_password(b"other", &more_rounds.salt, 32);
        assert_eq!(check.stored_key, more_rounds.stored_key);
    }
}
