//! Client authentication against auth_file secrets with PgBouncer's rules: trust, any, plain,
//! md5 (upgraded to SCRAM when the stored secret is SCRAM) and scram-sha-256. Unknown users go
//! through the same exchange with a mock secret, so the reply does not tell whether a user exists.

use hmac::{Hmac, Mac};
use pgmux_protocol::scram::{self, PassThroughKeys, ServerExchange, ServerFinalError};
use pgmux_protocol::{build, frontend, md5, sqlstate, tags};
use sha2::Sha256;

use super::io::ClientIo;
use super::ClientError;
use crate::config::{AuthType, StoredSecret};

/// A successful login.
#[derive(Debug, Default)]
pub struct Authenticated {
    /// Keys from a SCRAM proof checked against a SCRAM secret (for pass-through).
    pub scram_keys: Option<PassThroughKeys>,
}

fn failed(user: &str) -> ClientError {
    ClientError::Refused(sqlstate::INVALID_PASSWORD, format!("password authentication failed for user \"{user}\""))
}

/// A stable per-user fake secret so that repeated attempts for an unknown user look the same.
fn mock_secret(mock_key: &[u8; 32], user: &str, iterations: u32) -> scram::Secret {
    let mut m = Hmac::<Sha256>::new_from_slice(mock_key).expect("HMAC accepts any key length");
    m.update(user.as_bytes());
    let salt = m.finalize().into_bytes();
    scram::Secret { iterations, salt: salt[..16].to_vec(), stored_key: rand::random(), server_key: rand::random() }
}

/// Reads the next PasswordMessage-family body.
async fn read_password_message(io: &mut ClientIo) -> Result<bytes::Bytes, ClientError> {
    let f = io.read_frame().await?;
    if f.tag != tags::frontend::PASSWORD {
        if f.tag == tags::frontend::TERMINATE {
            return Err(ClientError::Closed);
        }
        return Err(ClientError::Refused(sqlstate::PROTOCOL_VIOLATION, "expected password message".into()));
    }
    Ok(f.raw.slice(5..))
}

/// Runs the exchange `auth_type` calls for.
///
/// # Errors
/// `Refused` with PgBouncer's message and SQLSTATE, or socket errors.
pub async fn authenticate(
    io: &mut ClientIo,
    auth_type: AuthType,
    user: &str,
    secret: Option<&StoredSecret>,
    mock_key: &[u8; 32],
    scram_iterations: u32,
) -> Result<Authenticated, ClientError> {
    match auth_type {
        AuthType::Any => Ok(Authenticated::default()),
        AuthType::Trust => match secret {
            Some(_) => Ok(Authenticated::default()),
            None => Err(failed(user)),
        },
        AuthType::Plain => {
            build::auth_cleartext(&mut io.wbuf);
            io.flush().await?;
            let body = read_password_message(io).await?;
            let given = frontend::password(&body)?;
            if secret.is_some_and(|s| plain_matches(s, user, given)) {
                Ok(Authenticated::default())
            } else {
                Err(failed(user))
            }
        }
        AuthType::Md5 => match secret {
            Some(StoredSecret::Scram(s)) => scram_exchange(io, user, s.clone(), true).await,
            Some(s) => md5_exchange(io, user, Some(s)).await,
            None => md5_exchange(io, user, None).await,
        },
        AuthType::ScramSha256 => {
            let (s, real) = match secret {
                Some(StoredSecret::Scram(s)) => (s.clone(), true),
                Some(StoredSecret::Plain(p)) => {
                    let salt: [u8; 16] = rand::random();
                    (scram::Secret::from_password(p.as_bytes(), &salt, scram_iterations), true)
                }
                // An md5 secret cannot answer SCRAM; fail the same way as a wrong password.
                Some(StoredSecret::Md5(_)) | None => (mock_secret(mock_key, user, scram_iterations), false),
            };
            let r = scram_exchange(io, user, s, real).await?;
            Ok(r)
        }
        AuthType::Hba | AuthType::Cert => Err(ClientError::Refused(
            sqlstate::INVALID_AUTHORIZATION,
            "authentication method not supported by this build".into(),
        )),
    }
}

fn plain_matches(secret: &StoredSecret, user: &str, given: &[u8]) -> bool {
    match secret {
        StoredSecret::Plain(p) => md5::constant_time_eq(p.as_bytes(), given),
        StoredSecret::Md5(m) => md5::constant_time_eq(m.as_bytes(), md5::secret(user, given).as_bytes()),
        StoredSecret::Scram(s) => {
            let derived = scram::Secret::from_password(given, &s.salt, s.iterations);
            md5::constant_time_eq(&derived.stored_key, &s.stored_key)
        }
    }
}

async fn md5_exchange(
    io: &mut ClientIo,
    user: &str,
    secret: Option<&StoredSecret>,
) -> Result<Authenticated, ClientError> {
    let salt: [u8; 4] = rand::random();
    build::auth_md5(&mut io.wbuf, salt);
    io.flush().await?;
    let body = read_password_message(io).await?;
    let given = frontend::password(&body)?;
    let stored = match secret {
        Some(StoredSecret::Plain(p)) => Some(md5::secret(user, p.as_bytes())),
        Some(StoredSecret::Md5(m)) => Some(m.clone()),
        _ => None,
    };
    match stored {
        Some(s) if md5::constant_time_eq(md5::response_from_secret(&s, salt).as_bytes(), given) => {
            Ok(Authenticated::default())
        }
        _ => Err(failed(user)),
    }
}

async fn scram_exchange(
    io: &mut ClientIo,
    user: &str,
    secret: scram::Secret,
    real: bool,
) -> Result<Authenticated, ClientError> {
    build::auth_sasl(&mut io.wbuf, &[scram::MECHANISM]);
    io.flush().await?;
    let body = read_password_message(io).await?;
    let (mechanism, first) = frontend::sasl_initial_response(&body)?;
    if mechanism != scram::MECHANISM.as_bytes() {
        return Err(ClientError::Refused(
            sqlstate::PROTOCOL_VIOLATION,
            "client selected an invalid SASL authentication mechanism".into(),
        ));
    }
    let (exchange, server_first) = ServerExchange::start(first, secret)
        .map_err(|e| ClientError::Refused(sqlstate::PROTOCOL_VIOLATION, format!("malformed SCRAM message: {e}")))?;
    build::auth_sasl_continue(&mut io.wbuf, server_first.as_bytes());
    io.flush().await?;
    let body = read_password_message(io).await?;
    match exchange.finish(&body) {
        Ok((server_final, keys)) if real => {
            build::auth_sasl_final(&mut io.wbuf, server_final.as_bytes());
            Ok(Authenticated { scram_keys: Some(keys) })
        }
        Ok(_) | Err(ServerFinalError::BadProof) => Err(failed(user)),
        Err(ServerFinalError::Protocol(e)) => {
            Err(ClientError::Refused(sqlstate::PROTOCOL_VIOLATION, format!("malformed SCRAM message: {e}")))
        }
    }
}
