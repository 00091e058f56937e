//! The watcher: reads `/cluster` from this node's Patroni every patroni_poll_interval (and at
//! once on an etcd event), and keeps the following pools on the running leader. While the
//! leader changes (none running, or a switchover requested in the DCS) new transactions are
//! held; the hold ends when the new leader takes writes, or after patroni_switchover_timeout,
//! when the pools go on with the target they had (logged).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::route;
use super::route::Owner;
use crate::config::PatroniSettings;
use crate::patroni::http::HttpError;
use crate::patroni::{http, Cluster, PatroniError};
use crate::shared::Shared;

/// How often `/cluster` is read while a leader change is under way.
const FAST_POLL: Duration = Duration::from_millis(100);
const REQUEST_LIMIT: Duration = Duration::from_secs(2);

/// Reads `/cluster` once.
///
/// # Errors
/// The request failed or the answer is not Patroni's.
pub async fn read_cluster(url: &str) -> Result<Cluster, PatroniError> {
    let (status, body) = http::request("GET", &format!("{url}/cluster"), None, REQUEST_LIMIT).await?;
    if status != 200 {
        return Err(HttpError(format!("{url}/cluster: status {status}")).into());
    }
    Cluster::parse(&body)
}

/// Reads `/cluster` from this node's Patroni, else (it is down with its node) from the other
/// members' APIs pgmux knows of, so that a dead local node does not hide the new leader.
async fn read_from_any(shared: &Shared, url: &str) -> Result<Cluster, PatroniError> {
    let first = match read_cluster(url).await {
        Ok(c) => return Ok(c),
        Err(e) => e,
    };
    let others: Vec<String> = {
        let view = shared.patroni.view.read();
        view.cluster
            .members
            .iter()
            .filter(|m| Some(m.name.as_str()) != view.this_node.as_deref() && !m.api_url.is_empty())
            .map(|m| m.api_base().to_owned())
            .collect()
    };
    for other in others {
        if let Ok(c) = read_cluster(&other).await {
            return Ok(c);
        }
    }
    Err(first)
}

/// Patroni's scope (cluster name), from `GET /patroni`.
async fn read_scope(url: &str) -> Result<String, PatroniError> {
    let (_, body) = http::request("GET", &format!("{url}/patroni"), None, REQUEST_LIMIT).await?;
    let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| PatroniError::Body(e.to_string()))?;
    v["patroni"]["scope"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| PatroniError::Body("no scope in /patroni".to_owned()))
}

/// The watcher's memory between rounds.
#[derive(Default)]
struct Round {
    hold_since: Option<Instant>,
    /// A hold timed out: no new hold until a leader is followed again.
    gave_up: bool,
    /// The etcd watch and what it watches.
    etcd: Option<((String, String), tokio::task::JoinHandle<()>)>,
    /// patroni_url was set last round (to undo everything once when it is emptied).
    on: bool,
    /// "this node is not a member" was logged.
    warned_not_member: bool,
}

/// Runs until the task is dropped.
pub async fn run(shared: Arc<Shared>) {
    let mut round = Round::default();
    loop {
        let p = shared.config().general.patroni.clone();
        if p.url.is_empty() {
            if let Some((_, task)) = round.etcd.take() {
                task.abort();
            }
            if std::mem::take(&mut round.on) {
                round.hold_since = None;
                route::forget_all(&shared);
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        round.on = true;
        Box::pin(keep_etcd_watch(&shared, &p, &mut round)).await;
        match Box::pin(read_from_any(&shared, &p.url)).await {
            Ok(cluster) => {
                let me = cluster.this_node(p.member.as_deref(), &p.url).map(|m| m.name.clone());
                if me.is_none() && !std::mem::replace(&mut round.warned_not_member, true) {
                    tracing::warn!(
                        "patroni: this node is not among the members of {}/cluster (set patroni_member)",
                        p.url
                    );
                }
                shared.patroni.update(|v| {
                    v.cluster = cluster;
                    v.this_node = me;
                    v.polled_at = Some(SystemTime::now());
                    v.last_error = None;
                });
                if !shared.patroni.is_switching() {
                    Box::pin(decide(&shared, &p, &mut round)).await;
                }
            }
            Err(e) => {
                let first = shared.patroni.view.read().last_error.is_none();
                if first {
                    tracing::warn!("patroni: {e}");
                }
                shared.patroni.update(|v| v.last_error = Some(e.to_string()));
            }
        }
        let wait = if shared.patroni.is_holding() { FAST_POLL } else { p.poll_interval };
        let _ = tokio::time::timeout(wait, shared.patroni.wake.notified()).await;
    }
}

/// Starts (or restarts, after a RELOAD changed it) the etcd watch.
async fn keep_etcd_watch(shared: &Arc<Shared>, p: &PatroniSettings, round: &mut Round) {
    if p.etcd_url.is_empty() {
        if let Some((_, task)) = round.etcd.take() {
            task.abort();
        }
        return;
    }
    if round.etcd.as_ref().is_some_and(|((url, _), t)| *url == p.etcd_url && !t.is_finished()) {
        return;
    }
    let scope = match read_scope(&p.url).await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!("patroni: scope not known yet: {e}");
            return;
        }
    };
    if let Some((_, task)) = round.etcd.take() {
        task.abort();
    }
    let prefix = format!("{}/{scope}/", p.namespace);
    tracing::info!("patroni: watching {prefix} in etcd at {}", p.etcd_url);
    let task = tokio::spawn(super::etcd::watch(shared.clone(), p.etcd_url.clone(), prefix.clone()));
    round.etcd = Some(((p.etcd_url.clone(), prefix), task));
}

/// One routing decision from the view.
async fn decide(shared: &Arc<Shared>, p: &PatroniSettings, round: &mut Round) {
    let view = shared.patroni.view();
    let leader = view.cluster.leader().filter(|l| l.is_running()).cloned();
    // A switchover seen in the DCS is over once another member leads, or stale after the bound
    // (its deletion may have been missed while the watch reconnected).
    if let Some((old, _)) = &view.pending {
        let over = leader.as_ref().is_some_and(|l| l.name != *old)
            || view.pending_at.is_some_and(|at| at.elapsed() >= p.switchover_timeout);
        if over {
            shared.patroni.update(|v| {
                v.pending = None;
                v.pending_at = None;
            });
        }
    }
    let view = shared.patroni.view();
    let pending_on = |l: &str| view.pending.as_ref().is_some_and(|(old, _)| old == l);
    match leader {
        Some(l) if !pending_on(&l.name) => {
            if view.routed_to.as_deref() == Some(l.name.as_str()) {
                // Also picks up databases a RELOAD added to (or took from) patroni_databases.
                let local = view.this_node.as_deref() == Some(l.name.as_str());
                route::point_at(shared, &l, local);
                end_hold(shared, round);
                round.gave_up = false;
                return;
            }
            // A new leader: hold while making sure it takes writes.
            if view.routed_to.is_some() && !round.gave_up {
                start_hold(shared, round);
            }
            let writable = route::writable(shared, &l).await;
            if shared.patroni.is_switching() {
                // A SWITCHOVER began meanwhile: it decides.
                return;
            }
            match writable {
                Ok(()) => {
                    let local = view.this_node.as_deref() == Some(l.name.as_str());
                    route::point_at(shared, &l, local);
                    end_hold(shared, round);
                    round.gave_up = false;
                }
                Err(e) => tracing::debug!("patroni: leader {} does not take writes yet: {e}", l.name),
            }
        }
        _ => {
            // No running leader, or a switchover of the one followed was requested.
            if view.routed_to.is_some() && !round.gave_up && round.hold_since.is_none() {
                tracing::info!("patroni: leader changing, holding new transactions");
                start_hold(shared, round);
            }
        }
    }
    if let Some(since) = round.hold_since {
        if since.elapsed() >= p.switchover_timeout {
            tracing::warn!(
                "patroni: leader change not complete after {:?}, resuming on {}",
                p.switchover_timeout,
                view.routed_to.as_deref().unwrap_or("the configured target")
            );
            shared.patroni.hold_timeouts.fetch_add(1, Relaxed);
            round.gave_up = true;
            end_hold(shared, round);
        }
    }
}

fn start_hold(shared: &Shared, round: &mut Round) {
    round.hold_since.get_or_insert_with(Instant::now);
    route::hold(shared, Owner::Watcher, true);
}

fn end_hold(shared: &Shared, round: &mut Round) {
    if let Some(since) = round.hold_since.take() {
        tracing::info!("patroni: held new transactions for {} ms", since.elapsed().as_millis());
    }
    route::hold(shared, Owner::Watcher, false);
}
