//! Named prepared statements across transaction pooling, as PgBouncer 1.21+ with
//! `max_prepared_statements` (its src/prepare.c): a client's statement names are mapped to
//! server-side names derived from a hash of query text and parameter types, so clients that
//! prepare the same query share it on a server. No I/O here: the relay hands in its buffers.
//!
//! - Parse of a new name is renamed; if the server already has the statement nothing is sent
//!   and pgmux answers ParseComplete itself, in order. Reusing a name closes the client.
//! - Bind / Describe of a statement the server lacks get a Parse injected in front; its
//!   ParseComplete is swallowed. An unknown name closes the client (`prepared statement did not
//!   exist`), as PgBouncer does.
//! - Close of a named statement only forgets the client's name and is answered by pgmux.
//! - Every request in flight is queued ([`Tracker`]): responses are matched in order, an
//!   ErrorResponse (after which PostgreSQL skips to Sync) undoes, newest first, what was assumed
//!   about the server and the client.
//! - The unnamed statement is passed through; a Bind or Describe of it on a server this client
//!   did not Parse it on gets the client's last unnamed Parse injected (or a Close, so that the
//!   server answers "does not exist" as PostgreSQL would), never another client's statement.
//! - With `cache_unnamed_statements` (pgmux's own setting, on by default) the unnamed statement
//!   is served as a named one instead: Parse of "" is renamed to the statement's server-side name,
//!   or skipped when that server has it prepared already (by any client, named or not), and Bind
//!   and Describe of "" are renamed to match. PostgreSQL then neither parses nor plans the text
//!   again. The statement epoch ([`invalidation`]) keeps it correct across DDL: a text parsed
//!   after DDL that may change result columns gets a name of its own, prepared afresh, while a
//!   statement a client prepared before it stays the one the client described (PostgreSQL
//!   plans it again, or refuses it when its columns changed, as on a direct connection).

pub mod bench;
pub mod invalidation;
mod replay;
mod rewrite;
#[cfg(test)]
mod tests;
mod tracker;

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::params::ClientParams;

pub use replay::{can_send_again, is_lone_begin};
pub use rewrite::{Rewrite, RewriteError, Rewritten};
pub use tracker::{Response, Tracker};

/// A statement a client prepared, as pgmux can re-create it on any server.
#[derive(Debug)]
pub struct Statement {
    hash: u64,
    /// Everything in the Parse body after the name: query text and parameter types.
    parse_rest: Bytes,
}

/// The hash that names a statement on servers: of its query text and parameter types (the
/// Parse body after the name), of the client's [`name_context`] and of the statement epoch it
/// was parsed in, so that equal statements share a name whoever prepared them, as long as their
/// names mean the same tables and the same columns. A statement prepared before DDL is never
/// swapped for one of the new shape under the client that described it: drivers that cache a
/// statement's columns (asyncpg, tokio-postgres, JDBC) decode rows with them.
fn statement_hash(parse_rest: &[u8], context: u64, epoch: u64) -> u64 {
    let mut h = DefaultHasher::new();
    parse_rest.hash(&mut h);
    if context != 0 || epoch != 0 {
        (context, epoch).hash(&mut h);
    }
    h.finish()
}

/// The settings that decide which tables and functions a statement's names mean.
const NAME_SETTINGS: [&str; 3] = ["search_path", "role", "session_authorization"];

/// True for an effect that can change what names mean ([`NAME_SETTINGS`], or all settings).
pub fn changes_names(e: &crate::session_sql::Effect) -> bool {
    use crate::session_sql::Effect;
    match e {
        Effect::Set { name, .. } | Effect::Reset(name) | Effect::SetLocal { name, .. } => {
            NAME_SETTINGS.contains(&name.as_str())
        }
        Effect::ResetAll | Effect::DiscardAll => true,
        _ => false,
    }
}

/// The name context of a client: a hash of its [`NAME_SETTINGS`], each as set in its session
/// (`session`, SET carried across servers) or else as a tracked startup parameter. 0 when it
/// has none of its own, so that most clients share every statement.
pub fn name_context(session: Option<&BTreeMap<String, String>>, params: &ClientParams) -> u64 {
    let mut h = DefaultHasher::new();
    let mut any = false;
    for name in NAME_SETTINGS {
        let value = session.and_then(|s| s.get(name)).map(String::as_str).or_else(|| params.get(name));
        any |= value.is_some();
        value.hash(&mut h);
    }
    if any {
        h.finish().max(1)
    } else {
        0
    }
}

/// Length of a server-side name: `pgmux_` and 16 hex digits.
const NAME_LEN: usize = 22;

fn server_name(hash: u64) -> [u8; NAME_LEN] {
    let mut out = *b"pgmux_0000000000000000";
    let hex = b"0123456789abcdef";
    for i in 0..16 {
        out[6 + i] = hex[((hash >> (60 - 4 * i)) & 0xf) as usize];
    }
    out
}

/// One client's statements by the names it gave them, and its unnamed statement.
#[derive(Debug, Default)]
pub struct ClientStatements {
    map: Named,
    /// Query text and types of the client's last unnamed Parse (buffer reused).
    unnamed: UnnamedText,
    /// `unnamed` is the client's unnamed statement (no Query or Close destroyed it since).
    unnamed_valid: bool,
    /// Hash of `unnamed`, once computed (the cache of unnamed statements needs it); a hash of
    /// 0 is computed each time (a niche keeps this 8 bytes, in every client's task).
    unnamed_hash: Option<std::num::NonZeroU64>,
    /// `unnamed` went to the server as the unnamed statement, not from the cache: parsed behind
    /// DDL that may not have taken effect yet (`Rewrite::message`).
    unnamed_uncached: bool,
    /// What the client's names mean (its search_path and role, [`name_context`]); part of
    /// every statement hash it makes.
    context: u64,
}

/// The text and parameter types of a client's last unnamed Parse, in a buffer kept for its next
/// one. Boxed, so that a client that never sends one, and the task of every idle client, holds
/// 8 bytes for it, not a `BytesMut`'s 32.
#[derive(Debug, Default)]
pub struct UnnamedText(Option<Box<BytesMut>>);

impl UnnamedText {
    /// Holds `text` now, in the buffer the last one used.
    pub(super) fn set(&mut self, text: &[u8]) {
        let b = self.0.get_or_insert_with(Box::default);
        b.clear();
        b.extend_from_slice(text);
    }

    /// Holds nothing, and frees the buffer.
    pub(super) fn free(&mut self) {
        self.0 = None;
    }
}

impl From<&[u8]> for UnnamedText {
    fn from(text: &[u8]) -> Self {
        UnnamedText(Some(Box::new(BytesMut::from(text))))
    }
}

impl std::ops::Deref for UnnamedText {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.0.as_deref().map_or(&[], |b| &b[..])
    }
}

/// A client's named statements by name; nothing is allocated until it names one (most clients
/// never do, and every idle client holds this).
/// Boxed: an empty HashMap is 48 bytes inline in every client's task, a box 8.
#[derive(Debug, Default)]
#[allow(clippy::box_collection)]
pub struct Named(Option<Box<HashMap<Bytes, Arc<Statement>>>>);

impl Named {
    pub(super) fn get(&self, name: &[u8]) -> Option<&Arc<Statement>> {
        self.0.as_ref()?.get(name)
    }

    pub(super) fn contains_key(&self, name: &[u8]) -> bool {
        self.get(name).is_some()
    }

    pub(super) fn insert(&mut self, name: Bytes, st: Arc<Statement>) -> Option<Arc<Statement>> {
        self.0.get_or_insert_with(Default::default).insert(name, st)
    }

    pub(super) fn remove(&mut self, name: &[u8]) -> Option<Arc<Statement>> {
        self.0.as_mut()?.remove(name)
    }

    pub(super) fn remove_entry(&mut self, name: &[u8]) -> Option<(Bytes, Arc<Statement>)> {
        self.0.as_mut()?.remove_entry(name)
    }

    pub(super) fn clear(&mut self) {
        self.0 = None;
    }

    fn iter(&self) -> impl Iterator<Item = (&Bytes, &Arc<Statement>)> {
        self.0.iter().flat_map(|m| m.iter())
    }

    fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |m| m.len())
    }
}

impl FromIterator<(Bytes, Arc<Statement>)> for Named {
    fn from_iter<I: IntoIterator<Item = (Bytes, Arc<Statement>)>>(iter: I) -> Self {
        let map: HashMap<_, _> = iter.into_iter().collect();
        Named((!map.is_empty()).then(|| Box::new(map)))
    }
}

/// Named statements as (name, Parse body after the name), for an online restart.
pub type NamedStatements = Vec<(Vec<u8>, Vec<u8>)>;

impl ClientStatements {
    /// Sets the client's name context ([`name_context`]): statements it prepares from now on
    /// are shared only with clients whose names mean the same. PostgreSQL analyses a prepared
    /// statement again when search_path changes, and refuses one whose result columns change
    /// (`cached plan must not change result type`): without this, a client whose search_path
    /// finds other tables would get another client's statement and that error.
    pub fn set_context(&mut self, context: u64) {
        if context != self.context {
            self.context = context;
            self.unnamed_hash = None;
        }
    }

    /// How many named statements the client has.
    #[inline]
    pub fn named_count(&self) -> usize {
        self.map.len()
    }

    /// A Close of the client's named statement `name` between transactions: the name is
    /// forgotten (the servers keep the statement for other clients, as with any Close). False
    /// when the client has no such statement.
    pub fn forget(&mut self, name: &[u8]) -> bool {
        self.map.remove(name).is_some()
    }

    /// Named statements (name, Parse body after the name) and the unnamed one, for handing the
    /// client to a new process (online restart).
    pub fn export(&self) -> (NamedStatements, Option<Vec<u8>>) {
        let named = self.map.iter().map(|(name, st)| (name.to_vec(), st.parse_rest.to_vec())).collect();
        (named, self.unnamed_valid.then(|| self.unnamed.to_vec()))
    }

    /// The statements of a client handed over by the previous process.
    /// `context` is the client's [`name_context`].
    pub fn import(named: NamedStatements, unnamed: Option<Vec<u8>>, context: u64) -> Self {
        let map = named
            .into_iter()
            .map(|(name, rest)| {
                // Named as in this process's first epoch: a server that lacks one prepares it
                // from its text at its first use.
                let hash = statement_hash(&rest, context, 0);
                (Bytes::from(name), Arc::new(Statement { hash, parse_rest: Bytes::from(rest) }))
            })
            .collect();
        let unnamed_valid = unnamed.is_some();
        ClientStatements {
            map,
            unnamed: unnamed.map(|u| UnnamedText::from(&u[..])).unwrap_or_default(),
            unnamed_valid,
            unnamed_hash: None,
            unnamed_uncached: false,
            context,
        }
    }
}

#[cfg(test)]
impl ClientStatements {
    fn len(&self) -> usize {
        self.map.len()
    }
}
