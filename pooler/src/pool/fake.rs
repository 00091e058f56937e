//! Servers without a PostgreSQL, for the pool's own tests and the hot-path microbenchmark
//! (benches/hot_path.rs): one end of a socket pair, parked in the idle list as if it had logged
//! in. Not for production use; hidden from the API docs. `Shared::fake` makes the pool.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use tokio::net::UnixStream;

use super::Pool;
use crate::logging::ConnTag;
use crate::net::{PeerAddr, Stream};
use crate::server::ServerConn;

impl Pool {
    /// Puts a logged-in looking server with id `id` in the idle list; the returned socket is its
    /// "backend" (dropping it makes the server dead). Needs a tokio runtime context.
    #[doc(hidden)]
    pub fn park_fake_server(&self, id: u64) -> UnixStream {
        let (ours, theirs) = UnixStream::pair().expect("socketpair");
        let peer = PeerAddr::Unix("/tmp/.s.PGSQL.5432".into());
        let now = crate::clock::Micros::now();
        let conn = ServerConn {
            stream: Stream::Unix(ours),
            id,
            tag: Box::new(crate::servers::ServerIdent {
                tag: ConnTag::server(id, &self.db, &self.user, &peer, 5432),
                entry: None,
                served: false,
                own_reads: 0,
            }),
            addr: Arc::new(peer),
            backend_key: (id as i32, 0),
            params: Default::default(),
            created: now,
            last_used: now,
            leftover: Default::default(),
            statements: Default::default(),
            kept_batch: bytes::BytesMut::new(),
            kept_begin: bytes::BytesMut::new(),
            synced_params: 0,
            session_state: Default::default(),
            generation: self.generation.load(Relaxed),
            home: crate::workers::here(),
        };
        let mut st = self.state.lock();
        st.total += 1;
        st.idle.push_back(Box::new(conn));
        theirs
    }
}
