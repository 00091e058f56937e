//! The cluster as Patroni reports it (`GET /cluster`): members with their role, state, address
//! and lag, which one is the leader and which one is this node. Parsing only, no I/O.

use serde::Deserialize;

use super::PatroniError;

/// A member's role, as `/cluster` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Holds the leader key: the primary.
    Leader,
    /// The leader of a standby cluster (read-only, replicates from elsewhere).
    StandbyLeader,
    /// A synchronous standby.
    SyncStandby,
    /// An asynchronous standby.
    Replica,
    /// Anything else Patroni may report (uninitialized, ...).
    Other,
}

impl Role {
    fn parse(s: &str) -> Self {
        match s {
            "leader" | "master" | "primary" => Role::Leader,
            "standby_leader" => Role::StandbyLeader,
            // Patroni 4's quorum commit members are synchronous standbys too.
            "sync_standby" | "quorum_standby" => Role::SyncStandby,
            "replica" => Role::Replica,
            _ => Role::Other,
        }
    }

    /// As SHOW PATRONI prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Leader => "leader",
            Role::StandbyLeader => "standby_leader",
            Role::SyncStandby => "sync_standby",
            Role::Replica => "replica",
            Role::Other => "other",
        }
    }

    /// A standby of the leader (either kind).
    pub fn is_standby(self) -> bool {
        matches!(self, Role::Replica | Role::SyncStandby)
    }
}

/// One member of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Patroni's member name.
    pub name: String,
    /// Its role now.
    pub role: Role,
    /// `running`, `streaming`, `stopping`, `stopped`, `starting`, ...
    pub state: String,
    /// Where its PostgreSQL listens.
    pub host: String,
    /// Its PostgreSQL port.
    pub port: u16,
    /// Its Patroni REST API (`http://host:port/patroni`).
    pub api_url: String,
    /// Timeline, when known.
    pub timeline: Option<u64>,
    /// Replication lag in bytes (standbys; None when unknown).
    pub lag: Option<u64>,
}

impl Member {
    /// Running PostgreSQL that takes connections (Patroni says `running`, or `streaming` for a
    /// standby in newer versions).
    pub fn is_running(&self) -> bool {
        matches!(self.state.as_str(), "running" | "streaming" | "in archive recovery")
    }

    /// The base URL of its REST API (`http://host:port`), without the `/patroni` path.
    pub fn api_base(&self) -> &str {
        let rest = self.api_url.split_once("://").map_or(self.api_url.as_str(), |(_, r)| r);
        let authority_len = rest.find('/').unwrap_or(rest.len());
        let end = self.api_url.len() - rest.len() + authority_len;
        &self.api_url[..end]
    }
}

/// The whole cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cluster {
    /// Every member, in Patroni's order.
    pub members: Vec<Member>,
}

#[derive(Deserialize)]
struct RawCluster {
    #[serde(default)]
    members: Vec<RawMember>,
}

#[derive(Deserialize)]
struct RawMember {
    name: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    host: String,
    #[serde(default)]
    port: u16,
    #[serde(default)]
    api_url: String,
    #[serde(default)]
    timeline: Option<u64>,
    /// A number, or `"unknown"`.
    #[serde(default)]
    lag: Option<serde_json::Value>,
}

impl Cluster {
    /// Reads the body of `GET /cluster`.
    ///
    /// # Errors
    /// The body is not Patroni's JSON.
    pub fn parse(body: &[u8]) -> Result<Self, PatroniError> {
        let raw: RawCluster =
            serde_json::from_slice(body).map_err(|e| PatroniError::Body(format!("bad /cluster answer: {e}")))?;
        let members = raw
            .members
            .into_iter()
            .map(|m| Member {
                role: Role::parse(&m.role),
                lag: m.lag.and_then(|v| v.as_u64()),
                name: m.name,
                state: m.state,
                host: m.host,
                port: m.port,
                api_url: m.api_url,
                timeline: m.timeline,
            })
            .collect();
        Ok(Cluster { members })
    }

    /// The member holding the leader key, if any.
    pub fn leader(&self) -> Option<&Member> {
        self.members.iter().find(|m| m.role == Role::Leader)
    }

    /// A member by name.
    pub fn member(&self, name: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.name == name)
    }

    /// This node: the member named `name` when given, else the one whose REST API is at
    /// `api_base` (the `patroni_url` pgmux polls).
    pub fn this_node(&self, name: Option<&str>, api_base: &str) -> Option<&Member> {
        match name {
            Some(n) => self.member(n),
            None => {
                let want = authority(api_base);
                self.members.iter().find(|m| authority(m.api_base()) == want)
            }
        }
    }

    /// The standby a switchover should go to when none is named: a running standby that may be
    /// promoted, synchronous ones first, then the least lag.
    pub fn best_candidate(&self) -> Option<&Member> {
        self.members
            .iter()
            .filter(|m| m.role.is_standby() && m.is_running())
            .min_by_key(|m| (m.role != Role::SyncStandby, m.lag.unwrap_or(u64::MAX)))
    }
}

/// `host:port` of a URL, `localhost` read as `127.0.0.1`.
fn authority(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let a = rest.split('/').next().unwrap_or("");
    let a = a.rsplit_once('@').map_or(a, |(_, host)| host);
    a.replacen("localhost", "127.0.0.1", 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO: &str = r#"{"members": [{"name": "pg1", "role": "leader", "state": "running", "api_url": "http://127.0.0.1:8008/patroni", "host": "127.0.0.1", "port": 5441, "timeline": 1}, {"name": "pg2", "role": "replica", "state": "running", "api_url": "http://127.0.0.1:8009/patroni", "host": "127.0.0.1", "port": 5442, "timeline": 1, "lag": 4976}]}"#;

    #[test]
    fn reads_patroni_3_cluster() {
        let c = Cluster::parse(TWO.as_bytes()).unwrap();
        assert_eq!(c.members.len(), 2);
        let l = c.leader().unwrap();
        assert_eq!((l.name.as_str(), l.port, l.lag), ("pg1", 5441, None));
        assert_eq!(c.member("pg2").unwrap().lag, Some(4976));
        assert_eq!(c.member("pg2").unwrap().api_base(), "http://127.0.0.1:8009");
    }

    #[test]
    fn finds_this_node_by_name_or_api_address() {
        let c = Cluster::parse(TWO.as_bytes()).unwrap();
        assert_eq!(c.this_node(None, "http://localhost:8009").unwrap().name, "pg2");
        assert_eq!(c.this_node(None, "http://u:p@127.0.0.1:8008").unwrap().name, "pg1");
        assert_eq!(c.this_node(Some("pg1"), "http://x:1").unwrap().name, "pg1");
        assert!(c.this_node(None, "http://127.0.0.1:9999").is_none());
    }

    #[test]
    fn unknown_lag_and_stopping_members() {
        let body = r#"{"members": [{"name": "a", "role": "replica", "state": "stopping", "host": "h", "port": 1, "lag": "unknown"},
            {"name": "b", "role": "sync_standby", "state": "running", "host": "h", "port": 2, "lag": 100},
            {"name": "c", "role": "replica", "state": "running", "host": "h", "port": 3, "lag": 0}]}"#;
        let c = Cluster::parse(body.as_bytes()).unwrap();
        assert!(c.leader().is_none());
        assert_eq!(c.member("a").unwrap().lag, None);
        // A synchronous standby wins over a less lagging asynchronous one.
        assert_eq!(c.best_candidate().unwrap().name, "b");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(Cluster::parse(b"<html>").is_err());
        assert!(Cluster::parse(br#"{"members": [{"role": "leader"}]}"#).is_err());
        assert_eq!(Cluster::parse(b"{}").unwrap(), Cluster::default());
    }
}
