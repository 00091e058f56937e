//! What pgmux knows of the cluster, for people and scrapers: SHOW PATRONI's rows and the
//! `pgmux_patroni_*` metric families.

use pgmux_exporter::CounterFamily;

use crate::shared::Shared;

/// SHOW PATRONI's columns.
pub const COLUMNS: &[&str] =
    &["member", "role", "state", "host", "port", "timeline", "lag", "this_node", "followed", "holding", "api_url"];

/// One row per member (none while patroni_url is empty or `/cluster` was never read).
pub fn rows(shared: &Shared) -> Vec<Vec<Option<String>>> {
    let view = shared.patroni.view();
    let holding = shared.patroni.is_holding();
    view.cluster
        .members
        .iter()
        .map(|m| {
            vec![
                Some(m.name.clone()),
                Some(m.role.as_str().to_owned()),
                Some(m.state.clone()),
                Some(m.host.clone()),
                Some(m.port.to_string()),
                m.timeline.map(|t| t.to_string()),
                m.lag.map(|l| l.to_string()),
                Some(yes(view.this_node.as_deref() == Some(m.name.as_str()))),
                Some(yes(view.routed_to.as_deref() == Some(m.name.as_str()))),
                Some(yes(holding && view.routed_to.as_deref() == Some(m.name.as_str()))),
                Some(m.api_url.clone()),
            ]
        })
        .collect()
}

fn yes(b: bool) -> String {
    if b { "yes" } else { "no" }.to_owned()
}

fn family(name: &str, help: &str, gauge: bool, samples: Vec<(Vec<(String, String)>, u64)>) -> CounterFamily {
    CounterFamily { name: name.into(), help: help.into(), gauge, samples }
}

/// The `pgmux_patroni_*` families (none while patroni_url is empty).
pub fn metrics(shared: &Shared) -> Vec<CounterFamily> {
    if shared.config().general.patroni.url.is_empty() {
        return Vec::new();
    }
    let view = shared.patroni.view();
    let (changes, switchovers, timeouts) = shared.patroni.counts();
    let members = view
        .cluster
        .members
        .iter()
        .map(|m| {
            let labels = vec![
                ("member".into(), m.name.clone()),
                ("role".into(), m.role.as_str().into()),
                ("state".into(), m.state.clone()),
            ];
            (labels, 1)
        })
        .collect();
    let lag = view
        .cluster
        .members
        .iter()
        .filter_map(|m| m.lag.map(|l| (vec![("member".into(), m.name.clone())], l)))
        .collect();
    let followed = view.routed_to.iter().map(|n| (vec![("member".into(), n.clone())], 1)).collect();
    let up = u64::from(view.last_error.is_none() && view.polled_at.is_some());
    vec![
        family("pgmux_patroni_up", "1 when the last read of Patroni's /cluster succeeded", true, vec![(vec![], up)]),
        family("pgmux_patroni_member_info", "Cluster members with their role and state", true, members),
        family("pgmux_patroni_member_lag_bytes", "Replication lag of each standby as Patroni reports it", true, lag),
        family("pgmux_patroni_followed_info", "The member the leader-following pools point at", true, followed),
        family(
            "pgmux_patroni_holding",
            "1 while new transactions are held for a leader change",
            true,
            vec![(vec![], u64::from(shared.patroni.is_holding()))],
        ),
        family("pgmux_patroni_leader_changes_total", "Leader changes followed", false, vec![(vec![], changes)]),
        family("pgmux_patroni_switchovers_total", "SWITCHOVER commands completed", false, vec![(vec![], switchovers)]),
        family(
            "pgmux_patroni_hold_timeouts_total",
            "Holds that ended after patroni_switchover_timeout without a new leader",
            false,
            vec![(vec![], timeouts)],
        ),
    ]
}
