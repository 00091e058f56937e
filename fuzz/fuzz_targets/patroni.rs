//! What Patroni, etcd and HAProxy send pgmux: a `/cluster` body, an etcd watch frame, a role
//! check's `lag=` query and an agent word.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgmux::leader::{etcd, health};
use pgmux::patroni::Cluster;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = Cluster::parse(data) {
        let _ = c.leader();
        let _ = c.best_candidate();
        let _ = c.this_node(None, "http://127.0.0.1:8008");
        for m in &c.members {
            let _ = m.api_base();
        }
    }
    let _ = etcd::changes("/service/c/", data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = health::lag_of_query(text);
        let _ = health::Check::from_word(text);
        let _ = health::Check::from_path(text);
    }
});
