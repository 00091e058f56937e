//! What passes from the running process to the new one in an online restart (takeover/): the
//! frames on the console socket, the listeners and client sockets they carry ([`fds`]), the
//! record of each client, and the running process's [`Giving`] state, which the relay asks at
//! every turn whether to hand its client over. Types and state only: the procedures that use
//! them (with the process's shared state) are in takeover/.

pub mod fds;
mod giving;

pub use giving::{Giving, Parcel};

use serde::{Deserialize, Serialize};

/// The console command that starts a takeover.
pub const COMMAND: &str = "TAKEOVER";

/// One frame between the two processes.
#[derive(Debug, Serialize, Deserialize)]
pub enum Frame {
    /// The listeners, in the order of the descriptors that come with the frame.
    Listeners(Vec<ListenerKind>),
    /// A client, whose socket is the frame's one descriptor.
    Client(Box<ClientRecord>),
    /// Every client has moved or left; the old process exits.
    Done,
    /// From the new process: it serves on the passed listeners; the old one stops accepting.
    Serving,
    /// From the new process: a cancel request with a key it did not give out.
    Cancel(i32, i32),
}

impl Frame {
    /// The frame's body on the wire.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("takeover frames serialize")
    }
}

/// What a passed listening socket is.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ListenerKind {
    /// A client TCP listener.
    Tcp,
    /// The unix socket, at this path.
    Unix(String),
    /// The metrics endpoint.
    Exporter,
}

/// A logged-in client's state, enough for the new process to go on serving it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientRecord {
    /// Database name as the client gave it.
    pub db: String,
    /// Login user.
    pub user: String,
    /// Server-side user of its pool.
    pub pool_user: String,
    /// Tracked parameters and their values.
    pub params: Vec<(String, String)>,
    /// The cancel key it was given.
    pub cancel_key: (i32, i32),
    /// application_name at login.
    pub application_name: String,
    /// A unix-socket client (else TCP).
    pub unix: bool,
    /// How it was labelled (`unix(1234)` for unix-socket clients).
    pub addr: String,
    /// Its pool's SCRAM pass-through keys (for server logins without a stored password).
    pub scram: Option<ScramKeys>,
    /// Its pool's secret found by auth_query, as auth_file text.
    pub looked_up_secret: Option<String>,
    /// Its named prepared statements: name and the Parse body after the name.
    pub statements: Vec<(Vec<u8>, Vec<u8>)>,
    /// Its unnamed statement's Parse body after the name, when it has one.
    pub unnamed: Option<Vec<u8>>,
    /// Settings it made with SET (transaction mode): name and value SQL.
    #[serde(default)]
    pub settings: Vec<(String, String)>,
    /// Statements it made with SQL PREPARE: name and statement.
    #[serde(default)]
    pub sql_prepared: Vec<(String, String)>,
}

/// SCRAM pass-through keys (`pgmux_protocol::scram::PassThroughKeys`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScramKeys {
    /// ClientKey.
    pub client_key: Vec<u8>,
    /// ServerKey.
    pub server_key: Vec<u8>,
    /// Salt.
    pub salt: Vec<u8>,
    /// Iterations.
    pub iterations: u32,
}

impl ScramKeys {
    /// From the pool's keys.
    pub fn from_keys(k: &pgmux_protocol::scram::PassThroughKeys) -> Self {
        ScramKeys {
            client_key: k.client_key.to_vec(),
            server_key: k.server_key.to_vec(),
            salt: k.salt.clone(),
            iterations: k.iterations,
        }
    }

    /// Back to the pool's keys; `None` when a key has the wrong length.
    pub fn to_keys(&self) -> Option<pgmux_protocol::scram::PassThroughKeys> {
        Some(pgmux_protocol::scram::PassThroughKeys {
            client_key: self.client_key.as_slice().try_into().ok()?,
            server_key: self.server_key.as_slice().try_into().ok()?,
            salt: self.salt.clone(),
            iterations: self.iterations,
        })
    }
}
