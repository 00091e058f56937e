//! Pool-aware role checks for HAProxy: Patroni's endpoints (`/primary`, `/replica`,
//! `/read-write`, `/read-only`, with `?lag=`) answered for what pgmux can serve now, and the
//! agent-check words (`up`, `drain`, `down`) that let HAProxy stop sending new sessions to a
//! node without cutting the ones it has.

use std::sync::atomic::Ordering::Relaxed;

use crate::shared::{RunState, Shared};

/// A role HAProxy asks about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Read-write traffic (`/primary`, `/master`, `/leader`, `/read-write`).
    Primary,
    /// Read-only traffic from a standby (`/replica`).
    Replica,
    /// Read-only traffic from any member (`/read-only`).
    ReadOnly,
}

impl Check {
    /// The check an HTTP path names.
    pub fn from_path(path: &str) -> Option<Self> {
        match path {
            "/primary" | "/master" | "/leader" | "/read-write" => Some(Check::Primary),
            "/replica" => Some(Check::Replica),
            "/read-only" => Some(Check::ReadOnly),
            _ => None,
        }
    }

    /// The check an agent-send word names (`primary` when none).
    pub fn from_word(word: &str) -> Option<Self> {
        match word.trim().to_ascii_lowercase().as_str() {
            "" => Some(Check::Primary),
            w => Self::from_path(&format!("/{w}")),
        }
    }
}

/// The answer for one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Serve: new sessions welcome.
    Up,
    /// Serving the sessions it has, but new ones should go elsewhere: paused, shutting down,
    /// exhausted, or serving the primary role only by forwarding to the leader on another node.
    Drain,
    /// Cannot serve this role.
    Down,
}

impl Verdict {
    /// HTTP status for the role endpoints: only `Down` fails, so that HAProxy does not cut the
    /// sessions of a draining node.
    pub fn http_ok(self) -> bool {
        self != Verdict::Down
    }

    /// The agent-check answer line.
    pub fn agent_line(self) -> &'static str {
        match self {
            Verdict::Up => "ready up 100%\n",
            Verdict::Drain => "drain\n",
            Verdict::Down => "down\n",
        }
    }
}

/// Patroni's `lag` query value: bytes, or a number with B, kB, MB, GB, TB (1024-based).
pub fn parse_lag(v: &str) -> Option<u64> {
    let v = v.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let n: u64 = v[..split].parse().ok()?;
    let scale: u64 = match v[split..].trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1 << 10,
        "mb" => 1 << 20,
        "gb" => 1 << 30,
        "tb" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(scale)
}

/// The `lag` parameter of a query string.
pub fn lag_of_query(query: &str) -> Option<u64> {
    query.split('&').find_map(|kv| kv.strip_prefix("lag=")).and_then(parse_lag)
}

/// How `check` stands now; `max_lag` bounds a standby's replication lag.
pub fn evaluate(shared: &Shared, check: Check, max_lag: Option<u64>) -> Verdict {
    let config = shared.config();
    let g = &config.general;
    let patroni_on = !g.patroni.url.is_empty();
    let view = shared.patroni.view();
    // What pgmux knows is too old to answer for a role (no member's API answered lately): a
    // node cut off from its cluster must not keep taking writes.
    let fresh_for = (g.patroni.poll_interval * 3).max(std::time::Duration::from_secs(5));
    let stale = view.polled_at.and_then(|t| t.elapsed().ok()).is_none_or(|age| age > fresh_for);
    if patroni_on && stale {
        return Verdict::Down;
    }
    let standby_ok = view.me().is_some_and(|m| {
        m.role.is_standby() && m.is_running() && max_lag.is_none_or(|l| m.lag.is_some_and(|lag| lag <= l))
    });
    let following = g.patroni.databases.iter().any(|d| !d.is_empty());
    // Serving the primary role: locally as the leader, or by forwarding to it.
    let (primary_ok, primary_local) = if !patroni_on {
        (true, true)
    } else if following {
        let leader = view.cluster.leader().filter(|l| l.is_running());
        let routed = leader.is_some_and(|l| view.routed_to.as_deref() == Some(l.name.as_str()));
        (routed || shared.patroni.is_holding(), view.is_leader())
    } else {
        (view.is_leader(), true)
    };
    let role = match check {
        Check::Primary if primary_ok && primary_local => Verdict::Up,
        Check::Primary if primary_ok => Verdict::Drain,
        Check::Replica if patroni_on && standby_ok => Verdict::Up,
        Check::ReadOnly if (patroni_on && standby_ok) || (primary_ok && primary_local) => Verdict::Up,
        Check::ReadOnly if primary_ok => Verdict::Drain,
        _ => Verdict::Down,
    };
    if role == Verdict::Down {
        return role;
    }
    let exhausted = !g.health_max_wait.is_zero()
        && shared
            .pools
            .all()
            .iter()
            .any(|p| p.counts().max_wait >= g.health_max_wait && p.clients_waiting.load(Relaxed) > 0);
    let serving = shared.state() == RunState::Running && !shared.is_suspended() && !shared.pools.all_paused();
    if !serving || exhausted {
        return Verdict::Drain;
    }
    role
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_values_as_patroni_reads_them() {
        assert_eq!(parse_lag("1048576"), Some(1 << 20));
        assert_eq!(parse_lag("16kB"), Some(16 << 10));
        assert_eq!(parse_lag("64MB"), Some(64 << 20));
        assert_eq!(parse_lag("1 GB"), Some(1 << 30));
        assert_eq!(parse_lag("x"), None);
        assert_eq!(parse_lag("99999999999TB"), None);
        assert_eq!(lag_of_query("a=1&lag=10MB"), Some(10 << 20));
        assert_eq!(lag_of_query("lag="), None);
    }

    #[test]
    fn paths_and_agent_words() {
        assert_eq!(Check::from_path("/read-write"), Some(Check::Primary));
        assert_eq!(Check::from_path("/replica"), Some(Check::Replica));
        assert_eq!(Check::from_path("/metrics"), None);
        assert_eq!(Check::from_word("primary\n"), Some(Check::Primary));
        assert_eq!(Check::from_word(""), Some(Check::Primary));
        assert_eq!(Check::from_word("REPLICA"), Some(Check::Replica));
        assert_eq!(Check::from_word("bogus"), None);
        assert!(Verdict::Drain.http_ok() && !Verdict::Down.http_ok());
    }
}

#[cfg(test)]
mod verdicts {
    use super::*;
    use crate::patroni::Cluster;
    use std::time::SystemTime;

    fn shared(extra: &str) -> std::sync::Arc<Shared> {
        let text = format!("[databases]\napp = host=/tmp\n[pgbouncer]\n{extra}");
        let entries = crate::config::ini::parse_text(&text, std::path::Path::new("t.ini")).unwrap();
        let config = crate::config::build(std::path::Path::new("t.ini"), entries).unwrap();
        Shared::new(config)
    }

    const CLUSTER: &[u8] =
        br#"{"members": [{"name": "a", "role": "leader", "state": "running", "host": "h", "port": 1},
        {"name": "b", "role": "replica", "state": "running", "host": "h", "port": 2, "lag": 2048}]}"#;

    fn seen(s: &Shared, me: &str, routed: Option<&str>, at: Option<SystemTime>) {
        s.patroni.update(|v| {
            v.cluster = Cluster::parse(CLUSTER).unwrap();
            v.this_node = Some(me.into());
            v.routed_to = routed.map(str::to_owned);
            v.polled_at = at;
        });
    }

    #[test]
    fn without_patroni_pgmux_serves_the_primary_role() {
        let s = shared("");
        assert_eq!(evaluate(&s, Check::Primary, None), Verdict::Up);
        assert_eq!(evaluate(&s, Check::Replica, None), Verdict::Down);
        s.pools.set_paused(None, true);
        assert_eq!(evaluate(&s, Check::Primary, None), Verdict::Drain, "PAUSE drains, does not cut");
    }

    #[test]
    fn roles_follow_the_view() {
        let s = shared("patroni_url = http://127.0.0.1:1\npatroni_databases = app");
        seen(&s, "a", Some("a"), Some(SystemTime::now()));
        assert_eq!(evaluate(&s, Check::Primary, None), Verdict::Up);
        assert_eq!(evaluate(&s, Check::Replica, None), Verdict::Down);
        // The replica node forwards to the leader: drain, so new sessions go to the leader's node.
        seen(&s, "b", Some("a"), Some(SystemTime::now()));
        assert_eq!(evaluate(&s, Check::Primary, None), Verdict::Drain);
        assert_eq!(evaluate(&s, Check::Replica, None), Verdict::Up);
        assert_eq!(evaluate(&s, Check::Replica, Some(1024)), Verdict::Down, "lag 2048 > 1024");
        assert_eq!(evaluate(&s, Check::ReadOnly, None), Verdict::Up);
        // Not pointing at the leader yet: cannot serve the primary role.
        seen(&s, "b", None, Some(SystemTime::now()));
        assert_eq!(evaluate(&s, Check::Primary, None), Verdict::Down);
        // A view nobody refreshed: no role at all.
        seen(&s, "a", Some("a"), Some(SystemTime::now() - std::time::Duration::from_secs(60)));
        assert_eq!(evaluate(&s, Check::Primary, None), Verdict::Down);
        assert_eq!(evaluate(&s, Check::ReadOnly, None), Verdict::Down);
    }
}
