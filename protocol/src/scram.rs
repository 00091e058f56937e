//! SCRAM-SHA-256 (RFC 5802/7677) as PostgreSQL uses it: stored secrets, the server side that
//! checks a client, and the client side that logs in to PostgreSQL either with a password or with
//! the ClientKey recovered from a client's proof (pass-through, as PgBouncer 1.14+ does).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::md5::constant_time_eq;
use crate::ProtocolError;

/// The SASL mechanism name.
pub const MECHANISM: &str = "SCRAM-SHA-256";
/// Longest SCRAM message accepted from a peer; real ones are under 200 bytes.
pub const MAX_MESSAGE_LEN: usize = 1024;

type HmacSha256 = Hmac<Sha256>;

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length");
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

fn xor(a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
    let mut out = [0u8; 32];
    for i in 0..32 {
        out[i] = a[i] ^ b[i];
    }
    out
}

/// PBKDF2-HMAC-SHA256 with one output block, the `Hi` of RFC 5802.
fn hi(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut u = hmac(password, &[salt, &1u32.to_be_bytes()]);
    let mut out = u;
    for _ in 1..iterations {
        u = hmac(password, &[&u]);
        for i in 0..32 {
            out[i] ^= u[i];
        }
    }
    out
}

/// SASLprep as PostgreSQL applies it: a password that does not normalise is used as raw bytes.
fn prepare_password(password: &[u8]) -> Vec<u8> {
    match std::str::from_utf8(password).ok().and_then(|s| stringprep::saslprep(s).ok()) {
        Some(p) => p.as_bytes().to_vec(),
        None => password.to_vec(),
    }
}

/// A stored SCRAM-SHA-256 secret, as in pg_authid or userlist.txt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Secret {
    /// PBKDF2 iteration count.
    pub iterations: u32,
    /// Salt (raw bytes).
    pub salt: Vec<u8>,
    /// H(ClientKey).
    pub stored_key: [u8; 32],
    /// HMAC(SaltedPassword, "Server Key").
    pub server_key: [u8; 32],
}

impl Secret {
    /// Parses `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`.
    pub fn parse(s: &str) -> Option<Self> {
        let rest = s.strip_prefix("SCRAM-SHA-256$")?;
        let (iter_salt, keys) = rest.split_once('$')?;
        let (iter, salt) = iter_salt.split_once(':')?;
        let (stored, server) = keys.split_once(':')?;
        let iterations: u32 = iter.parse().ok().filter(|&i| i > 0)?;
        let salt = B64.decode(salt).ok()?;
        let stored_key = B64.decode(stored).ok()?.try_into().ok()?;
        let server_key = B64.decode(server).ok()?.try_into().ok()?;
        Some(Self { iterations, salt, stored_key, server_key })
    }

    /// Derives a secret from a clear-text password.
    pub fn from_password(password: &[u8], salt: &[u8], iterations: u32) -> Self {
        let salted = hi(&prepare_password(password), salt, iterations);
        let client_key = hmac(&salted, &[b"Client Key"]);
        Self {
            iterations,
            salt: salt.to_vec(),
            stored_key: sha256(&client_key),
            server_key: hmac(&salted, &[b"Server Key"]),
        }
    }

    /// The textual form PostgreSQL stores.
    pub fn to_text(&self) -> String {
        format!(
            "SCRAM-SHA-256${}:{}${}:{}",
            self.iterations,
            B64.encode(&self.salt),
            B64.encode(self.stored_key),
            B64.encode(self.server_key)
        )
    }
}

/// Keys recovered from a successful client exchange: enough to log in to a server holding the
/// same secret without knowing the password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassThroughKeys {
    /// The client's ClientKey.
    pub client_key: [u8; 32],
    /// ServerKey of the secret the client was checked against.
    pub server_key: [u8; 32],
    /// Salt of that secret.
    pub salt: Vec<u8>,
    /// Iterations of that secret.
    pub iterations: u32,
}

/// A fresh random nonce of printable characters, base64 of 18 random bytes.
pub fn new_nonce() -> String {
    let bytes: [u8; 18] = rand::random();
    B64.encode(bytes)
}

fn attr(part: &str, key: char) -> Result<&str, ProtocolError> {
    part.strip_prefix(key).and_then(|p| p.strip_prefix('=')).ok_or(ProtocolError::Invalid("malformed SCRAM message"))
}

fn text(msg: &[u8]) -> Result<&str, ProtocolError> {
    if msg.len() > MAX_MESSAGE_LEN {
        return Err(ProtocolError::Invalid("SCRAM message too long"));
    }
    std::str::from_utf8(msg).map_err(|_| ProtocolError::Invalid("SCRAM message is not UTF-8"))
}

/// Server side of one exchange, between server-first and client-final.
#[derive(Debug)]
pub struct ServerExchange {
    secret: Secret,
    /// gs2 header followed by the channel-binding data: what `c=` must decode to.
    gs2_header: Vec<u8>,
    client_first_bare: String,
    server_first: String,
    nonce: String,
}

/// Why a client's final message was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum ServerFinalError {
    /// The message was malformed.
    Protocol(ProtocolError),
    /// The proof did not match: wrong password.
    BadProof,
}

/// Longest SCRAM message accepted from a client. Real ones are under 200 bytes; the limit keeps
/// a hostile nonce from being echoed back at length.
pub const MAX_MESSAGE: usize = 1024;

/// Mechanism name with channel binding.
pub const MECHANISM_PLUS: &str = "SCRAM-SHA-256-PLUS";

/// Channel binding for one server-side exchange (RFC 5802 §6, tls-server-end-point).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelBinding<'a> {
    /// Not over TLS (or no usable certificate hash): only SCRAM-SHA-256 was offered.
    NotOffered,
    /// SCRAM-SHA-256-PLUS was offered and the client chose plain SCRAM-SHA-256.
    Declined,
    /// The client chose SCRAM-SHA-256-PLUS; this is the tls-server-end-point data.
    Required(&'a [u8]),
}

impl ServerExchange {
    /// Reads client-first and answers server-first. The gs2 flag must agree with what was
    /// offered: `p=tls-server-end-point` only with PLUS; `y` (the client thinks we offer no
    /// channel binding) is a downgrade when we did, and is refused.
    ///
    /// # Errors
    /// Malformed or over-long messages, a channel-binding flag that disagrees with the
    /// mechanism, or extensions (`m=`).
    pub fn start(
        client_first: &[u8],
        secret: Secret,
        binding: ChannelBinding<'_>,
    ) -> Result<(Self, String), ProtocolError> {
        if client_first.len() > MAX_MESSAGE {
            return Err(ProtocolError::Invalid("SCRAM message too long"));
        }
        let msg = text(client_first)?;
        let mut parts = msg.splitn(3, ',');
        let cb = parts.next().unwrap_or("");
        let authzid = parts.next().ok_or(ProtocolError::Invalid("malformed SCRAM message"))?;
        let bare = parts.next().ok_or(ProtocolError::Invalid("malformed SCRAM message"))?;
        let cb_data = match (cb, binding) {
            ("n", ChannelBinding::NotOffered | ChannelBinding::Declined) => Vec::new(),
            ("y", ChannelBinding::NotOffered) => Vec::new(),
            ("y", ChannelBinding::Declined) => {
                return Err(ProtocolError::Invalid(
                    "SCRAM channel binding negotiation error: the client supports channel binding but thinks the server does not",
                ))
            }
            ("p=tls-server-end-point", ChannelBinding::Required(data)) => data.to_vec(),
            (c, ChannelBinding::Required(_)) if !c.starts_with("p=") => {
                return Err(ProtocolError::Invalid("SCRAM-SHA-256-PLUS was selected without channel binding data"))
            }
            (c, ChannelBinding::Required(_)) if c.starts_with("p=") => {
                return Err(ProtocolError::Invalid("unsupported SCRAM channel-binding type"))
            }
            (c, _) if c.starts_with("p=") => {
                return Err(ProtocolError::Invalid("the client selected SCRAM-SHA-256 without channel binding, but sent channel binding data"))
            }
            _ => return Err(ProtocolError::Invalid("malformed SCRAM message")),
        };
        if !authzid.is_empty() {
            return Err(ProtocolError::Invalid("SCRAM authorization identity is not supported"));
        }
        let mut fields = bare.split(',');
        let user = fields.next().unwrap_or("");
        if user.starts_with("m=") {
            return Err(ProtocolError::Invalid("SCRAM extensions are not supported"));
        }
        attr(user, 'n')?;
        let client_nonce = attr(fields.next().unwrap_or(""), 'r')?;
        if client_nonce.is_empty() || !client_nonce.bytes().all(|c| c.is_ascii_graphic() && c != b',') {
            return Err(ProtocolError::Invalid("bad SCRAM nonce"));
        }
        // Built by hand, not with format!: this runs at every SCRAM login.
        let mut nonce = String::with_capacity(client_nonce.len() + 24);
        nonce.push_str(client_nonce);
        B64.encode_string(rand::random::<[u8; 18]>(), &mut nonce);
        let mut server_first = String::with_capacity(nonce.len() + 48);
        server_first.push_str("r=");
        server_first.push_str(&nonce);
        server_first.push_str(",s=");
        B64.encode_string(&secret.salt, &mut server_first);
        server_first.push_str(",i=");
        server_first.push_str(&secret.iterations.to_string());
        let ex = Self {
            secret,
            gs2_header: [cb.as_bytes(), b",", authzid.as_bytes(), b",", &cb_data[..]].concat(),
            client_first_bare: bare.to_owned(),
            server_first: server_first.clone(),
            nonce,
        };
        Ok((ex, server_first))
    }

    /// Checks client-final. On success returns server-final and the keys for pass-through.
    ///
    /// # Errors
    /// `Protocol` for malformed messages, `BadProof` for a wrong password.
    pub fn finish(self, client_final: &[u8]) -> Result<(String, PassThroughKeys), ServerFinalError> {
        if client_final.len() > MAX_MESSAGE {
            return Err(ServerFinalError::Protocol(ProtocolError::Invalid("SCRAM message too long")));
        }
        let msg = text(client_final).map_err(ServerFinalError::Protocol)?;
        let (without_proof, proof) =
            msg.rsplit_once(",p=").ok_or(ServerFinalError::Protocol(ProtocolError::Invalid("missing SCRAM proof")))?;
        let mut fields = without_proof.split(',');
        let bad = |w| ServerFinalError::Protocol(ProtocolError::Invalid(w));
        let binding = attr(fields.next().unwrap_or(""), 'c').map_err(ServerFinalError::Protocol)?;
        let nonce = attr(fields.next().unwrap_or(""), 'r').map_err(ServerFinalError::Protocol)?;
        if B64.decode(binding).ok().as_deref() != Some(self.gs2_header.as_slice()) {
            return Err(bad("SCRAM channel binding check failed"));
        }
        if nonce != self.nonce {
            return Err(bad("SCRAM nonce mismatch"));
        }
        let proof: [u8; 32] =
            B64.decode(proof).ok().and_then(|p| p.try_into().ok()).ok_or_else(|| bad("malformed SCRAM proof"))?;
        let auth_message: [&[u8]; 5] =
            [self.client_first_bare.as_bytes(), b",", self.server_first.as_bytes(), b",", without_proof.as_bytes()];
        let client_signature = hmac(&self.secret.stored_key, &auth_message);
        let client_key = xor(&proof, &client_signature);
        if !constant_time_eq(&sha256(&client_key), &self.secret.stored_key) {
            return Err(ServerFinalError::BadProof);
        }
        let server_signature = hmac(&self.secret.server_key, &auth_message);
        let keys = PassThroughKeys {
            client_key,
            server_key: self.secret.server_key,
            salt: self.secret.salt,
            iterations: self.secret.iterations,
        };
        let mut server_final = String::from("v=");
        B64.encode_string(server_signature, &mut server_final);
        Ok((server_final, keys))
    }
}

/// What the client side logs in with.
#[derive(Debug, Clone)]
pub enum ClientCredentials {
    /// A clear-text password.
    Password(Vec<u8>),
    /// Keys recovered from a client's proof.
    Keys(PassThroughKeys),
}

/// Client side of one exchange against PostgreSQL.
#[derive(Debug)]
pub struct ClientExchange {
    credentials: ClientCredentials,
    client_first_bare: String,
    nonce: String,
    server_signature: Option<[u8; 32]>,
}

impl ClientExchange {
    /// Starts an exchange; returns it and client-first.
    pub fn start(credentials: ClientCredentials) -> (Self, String) {
        let nonce = new_nonce();
        let bare = format!("n=,r={nonce}");
        let first = format!("n,,{bare}");
        (Self { credentials, client_first_bare: bare, nonce, server_signature: None }, first)
    }

    /// Reads server-first and returns client-final.
    ///
    /// # Errors
    /// Malformed server-first, a nonce that does not extend ours, or pass-through keys whose salt
    /// or iteration count differ from the server's secret.
    pub fn respond(&mut self, server_first: &[u8]) -> Result<String, ProtocolError> {
        let msg = text(server_first)?;
        let mut fields = msg.split(',');
        let nonce = attr(fields.next().unwrap_or(""), 'r')?;
        let salt = attr(fields.next().unwrap_or(""), 's')?;
        let iterations = attr(fields.next().unwrap_or(""), 'i')?;
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err(ProtocolError::Invalid("SCRAM server nonce does not extend ours"));
        }
        let salt = B64.decode(salt).map_err(|_| ProtocolError::Invalid("bad SCRAM salt"))?;
        let iterations: u32 =
            iterations.parse().ok().filter(|&i| i > 0).ok_or(ProtocolError::Invalid("bad SCRAM iteration count"))?;
        let (client_key, server_key) = match &self.credentials {
            ClientCredentials::Password(p) => {
                let salted = hi(&prepare_password(p), &salt, iterations);
                (hmac(&salted, &[b"Client Key"]), hmac(&salted, &[b"Server Key"]))
            }
            ClientCredentials::Keys(k) => {
                if k.salt != salt || k.iterations != iterations {
                    return Err(ProtocolError::Invalid("SCRAM secret of the server differs from the pooler's"));
                }
                (k.client_key, k.server_key)
            }
        };
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{},{}", self.client_first_bare, msg, without_proof);
        let client_signature = hmac(&sha256(&client_key), &[auth_message.as_bytes()]);
        let proof = xor(&client_key, &client_signature);
        self.server_signature = Some(hmac(&server_key, &[auth_message.as_bytes()]));
        Ok(format!("{without_proof},p={}", B64.encode(proof)))
    }

    /// Checks server-final.
    ///
    /// # Errors
    /// A server error (`e=`), a malformed message, or a signature that does not match.
    pub fn verify(&self, server_final: &[u8]) -> Result<(), ProtocolError> {
        let msg = text(server_final)?;
        if msg.starts_with("e=") {
            return Err(ProtocolError::Invalid("server rejected SCRAM exchange"));
        }
        let sig = B64
            .decode(attr(msg.split(',').next().unwrap_or(""), 'v')?)
            .map_err(|_| ProtocolError::Invalid("bad SCRAM server signature"))?;
        match self.server_signature {
            Some(want) if constant_time_eq(&want, &sig) => Ok(()),
            _ => Err(ProtocolError::Invalid("SCRAM server signature mismatch")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exchange(secret: Secret, password: &[u8]) -> Result<PassThroughKeys, ServerFinalError> {
        let (mut client, first) = ClientExchange::start(ClientCredentials::Password(password.to_vec()));
        let (server, server_first) =
            ServerExchange::start(first.as_bytes(), secret, ChannelBinding::NotOffered).unwrap();
        let client_final = client.respond(server_first.as_bytes()).unwrap();
        let (server_final, keys) = server.finish(client_final.as_bytes())?;
        client.verify(server_final.as_bytes()).unwrap();
        Ok(keys)
    }

    #[test]
    fn parses_a_postgresql_secret() {
        // Generated by PostgreSQL 15: SET password_encryption='scram-sha-256'; CREATE ROLE ... 'secret'.
        let s = Secret::from_password(b"secret", b"0123456789abcdef", 4096);
        let parsed = Secret::parse(&s.to_text()).unwrap();
        assert_eq!(parsed, s);
        assert!(Secret::parse("SCRAM-SHA-256$x:abc$def:ghi").is_none());
        assert!(Secret::parse("md5abc").is_none());
    }

    #[test]
    fn right_password_passes_and_wrong_one_fails() {
        let secret = Secret::from_password(b"pencil", b"saltsalt", 4096);
        let keys = exchange(secret.clone(), b"pencil").unwrap();
        assert_eq!(sha256(&keys.client_key), secret.stored_key);
        assert_eq!(exchange(secret, b"pen").unwrap_err(), ServerFinalError::BadProof);
    }

    #[test]
    fn pass_through_keys_log_in_like_the_password() {
        let secret = Secret::from_password(b"pencil", b"saltsalt", 4096);
        let keys = exchange(secret.clone(), b"pencil").unwrap();
        let (mut client, first) = ClientExchange::start(ClientCredentials::Keys(keys));
        let (server, server_first) =
            ServerExchange::start(first.as_bytes(), secret, ChannelBinding::NotOffered).unwrap();
        let fin = client.respond(server_first.as_bytes()).unwrap();
        let (server_final, _) = server.finish(fin.as_bytes()).unwrap();
        client.verify(server_final.as_bytes()).unwrap();
    }

    #[test]
    fn rfc7677_vector() {
        // RFC 7677 section 3: user "user", password "pencil".
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let secret = Secret::from_password(b"pencil", &salt, 4096);
        let client_first_bare = "n=user,r=rOprNGfwEbeRWgbNEkqO";
        let server_first = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let without_proof = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let auth = format!("{client_first_bare},{server_first},{without_proof}");
        let server_sig = hmac(&secret.server_key, &[auth.as_bytes()]);
        assert_eq!(B64.encode(server_sig), "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
    }

    #[test]
    fn hostile_messages_are_errors() {
        let secret = Secret::from_password(b"x", b"salt", 4096);
        for m in [
            &b"p=tls-server-end-point,,n=,r=abc"[..],
            b"n,,m=ext,n=,r=abc",
            b"n,a=admin,n=,r=abc",
            b"n,,n=,r=",
            b"garbage",
            &[b'n'; 2000][..],
            b"n,,n=,r=\xff",
        ] {
            assert!(ServerExchange::start(m, secret.clone(), ChannelBinding::NotOffered).is_err(), "{m:?}");
        }
        let (server, _) = ServerExchange::start(b"n,,n=,r=abc", secret, ChannelBinding::NotOffered).unwrap();
        assert!(matches!(server.finish(b"c=biws,r=abc,p=!!"), Err(ServerFinalError::Protocol(_))));
    }

    #[test]
    fn channel_binding_must_match_what_was_offered() {
        let secret = Secret::from_password(b"pw", b"salt", 4096);
        let data = [7u8; 32];
        // The client picked PLUS: c= must carry our certificate hash.
        let first = "p=tls-server-end-point,,n=,r=abc";
        let (server, server_first) =
            ServerExchange::start(first.as_bytes(), secret.clone(), ChannelBinding::Required(&data)).unwrap();
        let good_c = B64.encode([&b"p=tls-server-end-point,,"[..], &data].concat());
        let wrong_c = B64.encode([&b"p=tls-server-end-point,,"[..], &[8u8; 32]].concat());
        let proof = |c: &str, server_first: &str| {
            let nonce = server_first.split(',').next().unwrap().trim_start_matches("r=").to_owned();
            let without_proof = format!("c={c},r={nonce}");
            let salted = hi(b"pw", b"salt", 4096);
            let client_key = hmac(&salted, &[b"Client Key"]);
            let auth = format!("n=,r=abc,{server_first},{without_proof}");
            let sig = hmac(&sha256(&client_key), &[auth.as_bytes()]);
            format!("{without_proof},p={}", B64.encode(xor(&client_key, &sig)))
        };
        assert!(matches!(server.finish(proof(&wrong_c, &server_first).as_bytes()), Err(ServerFinalError::Protocol(_))));
        let (server, server_first) =
            ServerExchange::start(first.as_bytes(), secret.clone(), ChannelBinding::Required(&data)).unwrap();
        assert!(server.finish(proof(&good_c, &server_first).as_bytes()).is_ok());
        // Downgrades and mismatches are refused at client-first.
        assert!(ServerExchange::start(b"y,,n=,r=abc", secret.clone(), ChannelBinding::Declined).is_err());
        assert!(ServerExchange::start(b"n,,n=,r=abc", secret.clone(), ChannelBinding::Required(&data)).is_err());
        assert!(
            ServerExchange::start(b"p=tls-unique,,n=,r=abc", secret.clone(), ChannelBinding::Required(&data)).is_err()
        );
        assert!(ServerExchange::start(b"y,,n=,r=abc", secret.clone(), ChannelBinding::NotOffered).is_ok());
        let long = format!("n,,n=,r={}", "x".repeat(MAX_MESSAGE));
        assert!(ServerExchange::start(long.as_bytes(), secret, ChannelBinding::NotOffered).is_err());
    }
}
