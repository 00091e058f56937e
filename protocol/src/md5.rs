//! PostgreSQL's md5 password scheme: the stored secret is `md5` + hex(md5(password + user)),
//! the wire response is `md5` + hex(md5(hex_secret + salt)).

use md5::{Digest, Md5};

/// `prefix` and then `bytes` in lower-case hex, in one allocation (this runs at every md5 login).
fn hex(prefix: &str, bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(prefix.len() + bytes.len() * 2);
    s.push_str(prefix);
    for b in bytes {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
}

fn prefixed_md5_hex(prefix: &str, parts: &[&[u8]]) -> String {
    let mut h = Md5::new();
    for p in parts {
        h.update(p);
    }
    hex(prefix, &h.finalize())
}

/// The stored form `md5<32 hex>` of a clear-text password.
pub fn secret(user: &str, password: &[u8]) -> String {
    prefixed_md5_hex("md5", &[password, user.as_bytes()])
}

/// True when `s` looks like a stored md5 secret.
pub fn is_secret(s: &str) -> bool {
    s.len() == 35 && s.starts_with("md5") && s[3..].bytes().all(|c| c.is_ascii_hexdigit())
}

/// The response to an md5 challenge, from a stored secret (`md5...`).
pub fn response_from_secret(secret: &str, salt: [u8; 4]) -> String {
    let hexpart = secret.strip_prefix("md5").unwrap_or(secret);
    prefixed_md5_hex("md5", &[hexpart.as_bytes(), &salt])
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_postgresql() {
        // SELECT 'md5' || md5('secret' || 'alice') in PostgreSQL.
        let s = secret("alice", b"secret");
        assert_eq!(s, prefixed_md5_hex("md5", &[b"secretalice"]));
        assert!(is_secret(&s));
        assert!(!is_secret("md5xyz"));
        let r = response_from_secret(&s, [1, 2, 3, 4]);
        assert_eq!(r.len(), 35);
        assert_eq!(prefixed_md5_hex("", &[b""]), "d41d8cd98f00b204e9800998ecf8427e");
    }
}
