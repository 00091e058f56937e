//! Online restart (`pgmux -R`), as PgBouncer's `-R`: a new pgmux takes over the listening
//! sockets and the client connections of the running one, so a binary upgrade or a restart
//! loses no client.
//!
//! The new process logs into the old one's console over the unix socket as `pgbouncer` (the
//! same OS user, no password) and sends `TAKEOVER`. The old process answers with frames
//! ([`fds`]): first a copy of every listener. Both processes accept on them until the new one
//! answers `Serving` (its runtime is up); only then does the old one stop accepting, so a new
//! process that fails to start leaves the old one serving as before. Then the old process sends
//! each client as soon as it holds no server and has nothing in flight (its socket, and what it
//! logged in with: database, user, tracked parameters, cancel key, SCRAM keys, prepared
//! statements), and last `Done` when no client is left. Meanwhile the new process passes back
//! (`Cancel`) the cancel requests it gets for keys it does not know: those of clients still on
//! the old process. The old process then closes its servers and exits, leaving the unix socket
//! file and the pidfile to the new one.
//!
//! Unlike PgBouncer, the old process does not suspend: a client in a transaction (or a
//! session-mode client holding its server) finishes it on the old process and moves when it is
//! idle; a TLS client (whose session keys cannot move) stays on the old process until it leaves.

pub mod give;
pub mod take;

pub use crate::handoff::{fds, ClientRecord, Frame, ListenerKind, ScramKeys, COMMAND};
