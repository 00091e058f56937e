//! SWITCHOVER [candidate] (console) and `pgmux switchover`: a planned switchover that loses no
//! transaction. New transactions of the following pools are held while those in flight finish
//! on the old primary; then Patroni is asked to switch (`POST /switchover`), pgmux waits until
//! the new leader takes writes, points the pools at it and lets the held transactions go.
//! Every step is bounded by patroni_switchover_timeout; a switchover that does not complete
//! resumes on the old target, logged.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::route::Owner;
use super::{route, watch};
use crate::config::PoolMode;
use crate::patroni::{http, Cluster, Member, PatroniError};
use crate::shared::Shared;

/// What a completed switchover did, for the console's answer.
#[derive(Debug, Clone)]
pub struct Done {
    /// The old leader.
    pub from: String,
    /// The new leader.
    pub to: String,
    /// How long new transactions were held.
    pub held: Duration,
    /// How long the whole command took.
    pub total: Duration,
}

/// Clears the running flag however the switchover ends, and lets the watcher look at once.
struct Running<'a>(&'a Shared);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.patroni.switching.store(false, Relaxed);
        self.0.patroni.wake.notify_one();
    }
}

/// Runs a switchover to `candidate` (None: the best running replica).
///
/// # Errors
/// Why it did not happen or did not complete; the pools then serve from the old target.
pub async fn run(shared: &Arc<Shared>, candidate: Option<&str>) -> Result<Done, PatroniError> {
    let p = shared.config().general.patroni.clone();
    if p.url.is_empty() {
        return Err(PatroniError::NotConfigured);
    }
    if shared.patroni.switching.swap(true, Relaxed) {
        return Err(PatroniError::AlreadyRunning);
    }
    let _running = Running(shared);
    let start = Instant::now();
    let deadline = start + p.switchover_timeout;
    let cluster = watch::read_cluster(&p.url).await?;
    let (leader, target) = choose(&cluster, candidate)?;
    tracing::info!("patroni: switchover from {} to {} requested", leader.name, target.name);

    // 1. Hold new transactions; those in flight finish on the old primary.
    route::hold(shared, Owner::Switchover, true);
    let held_at = Instant::now();
    if !drained(shared, p.drain_timeout).await {
        route::hold(shared, Owner::Switchover, false);
        return Err(PatroniError::NotDrained(p.drain_timeout));
    }

    // 2. Ask Patroni (it answers once the switchover is through), and 3. watch the candidate
    // meanwhile: the held transactions go as soon as it takes writes, which is before Patroni
    // answers (it has stopped the old primary by then).
    let body = serde_json::json!({"leader": leader.name, "candidate": target.name}).to_string();
    // Any member's API takes it; this node's is the one whose credentials pgmux has.
    let url = format!("{}/switchover", p.url);
    let post = http::request("POST", &url, Some(body), deadline.saturating_duration_since(Instant::now()));
    tokio::pin!(post);
    let mut answered = false;
    loop {
        if Instant::now() >= deadline {
            route::hold(shared, Owner::Switchover, false);
            shared.patroni.hold_timeouts.fetch_add(1, Relaxed);
            tracing::warn!(
                "patroni: switchover to {} not complete after {:?}, resuming on {}",
                target.name,
                p.switchover_timeout,
                leader.name
            );
            return Err(PatroniError::NotComplete { member: target.name, timeout: p.switchover_timeout });
        }
        tokio::select! {
            r = &mut post, if !answered => {
                answered = true;
                match r {
                    Ok((200, _)) => {}
                    Ok((status, text)) => {
                        route::hold(shared, Owner::Switchover, false);
                        let text = String::from_utf8_lossy(&text);
                        return Err(PatroniError::Refused { status, text: text.trim().to_owned() });
                    }
                    // Perhaps it is under way anyway: the candidate tells.
                    Err(e) => tracing::warn!("patroni: switchover request: {e}"),
                }
            }
            () = tokio::time::sleep(Duration::from_millis(50)) => {
                if Box::pin(took_over(shared, &p, &target)).await {
                    break;
                }
            }
        }
    }

    // 4. Point the pools at it and let the held transactions go.
    let new_leader = target;
    let local = shared.patroni.view().this_node.as_deref() == Some(new_leader.name.as_str());
    route::point_at(shared, &new_leader, local);
    route::hold(shared, Owner::Switchover, false);
    shared.patroni.switchovers.fetch_add(1, Relaxed);
    let done = Done { from: leader.name, to: new_leader.name, held: held_at.elapsed(), total: start.elapsed() };
    tracing::info!(
        "patroni: switched over from {} to {}, new transactions held {} ms",
        done.from,
        done.to,
        done.held.as_millis()
    );
    Ok(done)
}

/// True once Patroni reports `target` the running leader and it takes writes (a real login
/// and query through a following pool, when there is one). Refreshes the view when it does.
async fn took_over(shared: &Arc<Shared>, p: &crate::config::PatroniSettings, target: &Member) -> bool {
    let Ok(c) = watch::read_cluster(&p.url).await else { return false };
    if !c.leader().is_some_and(|l| l.is_running() && l.name == target.name) {
        return false;
    }
    if route::writable(shared, target).await.is_err() {
        return false;
    }
    let me = c.this_node(p.member.as_deref(), &p.url).map(|m| m.name.clone());
    shared.patroni.update(|v| {
        v.cluster = c;
        v.this_node = me;
    });
    true
}

/// The running leader and the member to switch to.
fn choose(cluster: &Cluster, candidate: Option<&str>) -> Result<(Member, Member), PatroniError> {
    use PatroniError::NoCandidate;
    let leader =
        cluster.leader().filter(|l| l.is_running()).ok_or_else(|| NoCandidate("no running leader".into()))?.clone();
    let target = match candidate {
        Some(name) => {
            let m = cluster.member(name).ok_or_else(|| NoCandidate(format!("no member named {name}")))?;
            if !(m.role.is_standby() && m.is_running()) {
                return Err(NoCandidate(format!("{name} is not a running replica")));
            }
            m.clone()
        }
        None => {
            cluster.best_candidate().ok_or_else(|| NoCandidate("no running replica to switch over to".into()))?.clone()
        }
    };
    Ok((leader, target))
}

/// Waits until no client of a following pool holds a server in transaction or statement mode
/// (session-mode clients keep theirs: they cannot move, docs/HA.md). False after `limit`.
async fn drained(shared: &Shared, limit: Duration) -> bool {
    let dbs = route::following(shared);
    let until = Instant::now() + limit;
    loop {
        let busy = shared
            .pools
            .all()
            .iter()
            .any(|p| dbs.contains(&p.db) && p.settings().mode != PoolMode::Session && p.servers_in_use() > 0);
        if !busy {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chooses_a_running_replica() {
        let c = Cluster::parse(
            br#"{"members": [{"name": "a", "role": "leader", "state": "running", "host": "h", "port": 1},
            {"name": "b", "role": "replica", "state": "stopped", "host": "h", "port": 2},
            {"name": "c", "role": "replica", "state": "running", "host": "h", "port": 3, "lag": 0}]}"#,
        )
        .unwrap();
        let (l, t) = choose(&c, None).unwrap();
        assert_eq!((l.name.as_str(), t.name.as_str()), ("a", "c"));
        assert_eq!(choose(&c, Some("b")).unwrap_err().to_string(), "b is not a running replica");
        assert_eq!(choose(&c, Some("a")).unwrap_err().to_string(), "a is not a running replica");
        assert_eq!(choose(&c, Some("z")).unwrap_err().to_string(), "no member named z");
        let no_leader = Cluster::parse(br#"{"members": []}"#).unwrap();
        assert_eq!(choose(&no_leader, None).unwrap_err().to_string(), "no running leader");
    }
}
