//! Client authentication with PgBouncer's rules: trust, any, plain, md5 (upgraded to SCRAM when
//! the stored secret is SCRAM), scram-sha-256 (with SCRAM-SHA-256-PLUS offered over TLS), peer
//! (the OS user of a unix-socket client), cert (the client certificate's common name) and
//! reject. Unknown users go through the same exchange with a mock secret, so the reply does not
//! tell whether a user exists.

use hmac::{Hmac, Mac};
use pgmux_protocol::scram::{self, ChannelBinding, PassThroughKeys, ServerExchange, ServerFinalError};
use pgmux_protocol::{build, frontend, md5, sqlstate, tags};
use sha2::Sha256;

use super::ClientError;
use crate::config::{AuthType, StoredSecret};
use crate::net::client_io::ClientIo;

/// A successful login.
#[derive(Debug, Default)]
pub struct Authenticated {
    /// Keys from a SCRAM proof checked against a SCRAM secret (for pass-through).
    pub scram_keys: Option<PassThroughKeys>,
}

/// A wrong password (or an unknown user) with plain or md5: PgBouncer's words and SQLSTATE.
fn failed() -> ClientError {
    ClientError::Refused(sqlstate::PROTOCOL_VIOLATION, "password authentication failed".into())
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

/// What one login is checked against.
#[derive(Debug)]
pub struct AuthPlan<'a> {
    /// The method (auth_type, or the HBA line's).
    pub method: AuthType,
    /// The HBA line's `map=`, for peer and cert.
    pub map: Option<&'a str>,
    /// The user name the client gave.
    pub user: &'a str,
    /// Its secret (auth_file or auth_query); `None` for an unknown user, or for one auth_query
    /// knows without a usable secret.
    pub secret: Option<&'a StoredSecret>,
    /// The user exists (auth_file or auth_query): trust, peer and cert need only this.
    pub exists: bool,
    /// auth_ident_file.
    pub ident: &'a crate::auth::IdentMap,
    /// Key for mock salts.
    pub mock_key: &'a [u8; 32],
    /// scram_iterations, for secrets made here.
    pub scram_iterations: u32,
    /// The client's log prefix.
    pub tag: &'a crate::logging::ConnTag,
}

fn refused(message: &str) -> ClientError {
    ClientError::Refused(sqlstate::PROTOCOL_VIOLATION, message.into())
}

/// The OS user name behind a unix-socket client.
fn os_user(io: &ClientIo) -> Option<String> {
    let uid = io.stream.peer_uid()?;
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)).ok().flatten().map(|u| u.name)
}

/// Runs the exchange the plan calls for.
///
/// # Errors
/// `Refused` with PgBouncer's message and SQLSTATE, or socket errors.
pub async fn authenticate(io: &mut ClientIo, plan: &AuthPlan<'_>) -> Result<Authenticated, ClientError> {
    let (user, secret) = (plan.user, plan.secret);
    let named = |name: &str| match plan.map {
        Some(map) => plan.ident.allows(map, name, user),
        None => name == user,
    };
    match plan.method {
        AuthType::Any => Ok(Authenticated::default()),
        AuthType::Reject | AuthType::Hba => Err(refused("login rejected")),
        AuthType::Trust if plan.exists => Ok(Authenticated::default()),
        AuthType::Trust => Err(refused("\"trust\" authentication failed")),
        AuthType::Peer => match os_user(io) {
            Some(os) if plan.exists && named(&os) => Ok(Authenticated::default()),
            Some(_) if plan.exists && plan.map.is_some() => {
                crate::conn_log!(error, plan.tag, "ident map {} cannot be matched", plan.map.unwrap_or(""));
                Err(refused("unix socket login rejected"))
            }
            _ => Err(refused("unix socket login rejected")),
        },
        // As PgBouncer: the user (or, with a map, a system name) is any name the certificate
        // is for, a subjectAltName DNS name or the common name.
        AuthType::Cert => match io.tls.as_ref().map(|t| t.peer_names.as_slice()) {
            None | Some([]) => {
                crate::conn_log!(error, plan.tag, "TLS client certificate required");
                Err(refused("certificate authentication failed"))
            }
            Some(names) if plan.exists && names.iter().any(|n| named(n)) => Ok(Authenticated::default()),
            Some(_) if plan.exists && plan.map.is_some() => {
                crate::conn_log!(error, plan.tag, "ident map: {} does not have a match", plan.map.unwrap_or(""));
                Err(refused("certificate authentication failed"))
            }
            Some(_) if plan.exists => {
                crate::conn_log!(error, plan.tag, "TLS certificate name mismatch");
                Err(refused("certificate authentication failed"))
            }
            _ => Err(refused("certificate authentication failed")),
        },
        AuthType::Plain => {
            build::auth_cleartext(&mut io.wbuf);
            io.flush().await?;
            let body = read_password_message(io).await?;
            let given = frontend::password(&body)?;
            let ok = match secret {
                Some(s) => plain_matches(s, user, given),
                None => {
                    // Spend what checking a SCRAM secret costs, so timing does not tell.
                    let mock = mock_secret(plan.mock_key, user, plan.scram_iterations);
                    let _ = scram::Secret::from_password(given, &mock.salt, mock.iterations);
                    false
                }
            };
            if ok {
                Ok(Authenticated::default())
            } else {
                Err(failed())
            }
        }
        AuthType::Md5 => match secret {
            Some(StoredSecret::Scram(s)) => scram_exchange(io, plan, s.clone(), true).await,
            Some(s) => md5_exchange(io, user, Some(s)).await,
            None => md5_exchange(io, user, None).await,
        },
        AuthType::ScramSha256 => {
            let (s, real) = match secret {
                Some(StoredSecret::Scram(s)) => (s.clone(), true),
                Some(StoredSecret::Plain(p)) => (super::plain_scram::secret(user, p, plan.scram_iterations), true),
                // An md5 secret cannot answer SCRAM; fail the same way as a wrong password.
                Some(StoredSecret::Md5(_)) => {
                    crate::conn_log!(error, plan.tag, "SCRAM authentication failed: user has MD5 secret");
                    (mock_secret(plan.mock_key, user, plan.scram_iterations), false)
                }
                None => (mock_secret(plan.mock_key, user, plan.scram_iterations), false),
            };
            scram_exchange(io, plan, s, real).await
        }
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
        _ => Err(failed()),
    }
}

/// A SCRAM message that breaks the rules: PgBouncer's words to the client, the reason to the log.
fn sasl_failed(e: pgmux_protocol::ProtocolError) -> ClientError {
    tracing::info!("SCRAM exchange refused: {e}");
    ClientError::Refused(sqlstate::PROTOCOL_VIOLATION, "SASL authentication failed".into())
}

async fn scram_exchange(
    io: &mut ClientIo,
    plan: &AuthPlan<'_>,
    secret: scram::Secret,
    real: bool,
) -> Result<Authenticated, ClientError> {
    let end_point = io.tls.as_ref().and_then(|t| t.end_point.clone());
    match &end_point {
        Some(_) => build::auth_sasl(&mut io.wbuf, &[scram::MECHANISM_PLUS, scram::MECHANISM]),
        None => build::auth_sasl(&mut io.wbuf, &[scram::MECHANISM]),
    }
    io.flush().await?;
    let body = read_password_message(io).await?;
    let (mechanism, first) = frontend::sasl_initial_response(&body).map_err(sasl_failed)?;
    let binding = match (&end_point, mechanism) {
        (Some(data), m) if m == scram::MECHANISM_PLUS.as_bytes() => ChannelBinding::Required(data),
        (Some(_), m) if m == scram::MECHANISM.as_bytes() => ChannelBinding::Declined,
        (None, m) if m == scram::MECHANISM.as_bytes() => ChannelBinding::NotOffered,
        _ => {
            return Err(ClientError::Refused(
                sqlstate::PROTOCOL_VIOLATION,
                "client selected an invalid SASL authentication mechanism".into(),
            ))
        }
    };
    let (exchange, server_first) = ServerExchange::start(first, secret, binding).map_err(sasl_failed)?;
    build::auth_sasl_continue(&mut io.wbuf, server_first.as_bytes());
    io.flush().await?;
    let body = read_password_message(io).await?;
    match exchange.finish(&body) {
        Ok((server_final, keys)) if real => {
            build::auth_sasl_final(&mut io.wbuf, server_final.as_bytes());
            Ok(Authenticated { scram_keys: Some(keys) })
        }
        Ok(_) | Err(ServerFinalError::BadProof) => {
            // PgBouncer logs the password failure and tells the client the exchange failed.
            crate::conn_log!(error, plan.tag, "password authentication failed");
            Err(ClientError::Refused(sqlstate::PROTOCOL_VIOLATION, "SASL authentication failed".into()))
        }
        Err(ServerFinalError::Protocol(e)) => Err(sasl_failed(e)),
    }
}
