//! `pgmux haproxy-config CONFIG.ini`: the primary (5433) and replica (5434) services of the
//! cluster in Pigsty's layout, for every member Patroni lists, with the HTTP check on pgmux's
//! metrics port (pool-aware `/primary`, `/read-only`) and the agent check on
//! health_agent_port, so that a draining node keeps the sessions it has.

use std::fmt::Write;
use std::path::Path;

use super::ToolError;
use crate::config;
use crate::leader::watch::read_cluster;

pub(super) async fn run(path: &Path, bind: &str) -> Result<(), ToolError> {
    let config = config::load(path)?;
    let g = &config.general;
    if g.patroni.url.is_empty() {
        return Err(ToolError::Setting("patroni_url is not set: the members come from Patroni".into()));
    }
    if g.exporter_port == 0 {
        return Err(ToolError::Setting("exporter_port is not set: HAProxy's checks go to pgmux's metrics port".into()));
    }
    let cluster = read_cluster(&g.patroni.url).await?;
    let scope = scope(&g.patroni.url).await.unwrap_or_else(|| "pg".into());
    print!("{}", render(&scope, bind, &cluster, g.listen_port, g.exporter_port, g.health_agent_port));
    Ok(())
}

async fn scope(url: &str) -> Option<String> {
    let (_, body) =
        crate::patroni::http::request("GET", &format!("{url}/patroni"), None, std::time::Duration::from_secs(2))
            .await
            .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
    v["patroni"]["scope"].as_str().map(str::to_owned)
}

/// The two `listen` sections.
pub(super) fn render(
    scope: &str,
    bind: &str,
    cluster: &crate::patroni::Cluster,
    pool_port: u16,
    metrics_port: u16,
    agent_port: u16,
) -> String {
    let mut out = String::new();
    for (service, port, check, role) in
        [("primary", 5433, "/primary", "primary"), ("replica", 5434, "/read-only", "read-only")]
    {
        let _ = writeln!(out, "listen {scope}-{service}");
        let _ = writeln!(out, "    bind {bind}:{port}");
        let _ = writeln!(out, "    mode tcp");
        let _ = writeln!(out, "    maxconn 5000");
        let _ = writeln!(out, "    balance roundrobin");
        let _ = writeln!(out, "    option httpchk");
        let _ = writeln!(out, "    option http-keep-alive");
        let _ = writeln!(out, "    http-check send meth OPTIONS uri {check}");
        let _ = writeln!(out, "    http-check expect status 200");
        let _ = writeln!(
            out,
            "    default-server inter 2s fastinter 1s downinter 2s rise 3 fall 3 on-marked-down shutdown-sessions slowstart 30s maxconn 3000 maxqueue 128 weight 100"
        );
        for m in &cluster.members {
            let mut line = format!("    server {} {}:{pool_port} check port {metrics_port} weight 100", m.name, m.host);
            if agent_port != 0 {
                let _ = write!(line, " agent-check agent-port {agent_port} agent-send \"{role}\\n\" agent-inter 1s");
            }
            let _ = writeln!(out, "{line}");
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_server_line_per_member_with_both_checks() {
        let c = crate::patroni::Cluster::parse(
            br#"{"members": [{"name": "pg-test-1", "role": "leader", "state": "running", "host": "10.10.10.11", "port": 5432},
            {"name": "pg-test-2", "role": "replica", "state": "running", "host": "10.10.10.12", "port": 5432}]}"#,
        )
        .unwrap();
        let text = render("pg-test", "*", &c, 6432, 9631, 9632);
        assert!(text.contains("listen pg-test-primary\n    bind *:5433\n"));
        assert!(text.contains("listen pg-test-replica\n    bind *:5434\n"));
        assert!(text.contains("http-check send meth OPTIONS uri /read-only"));
        assert!(text.contains(
            "server pg-test-2 10.10.10.12:6432 check port 9631 weight 100 agent-check agent-port 9632 agent-send \"primary\\n\""
        ));
        assert_eq!(text.matches("    server ").count(), 4);
        let without_agent = render("pg-test", "*", &c, 6432, 9631, 0);
        assert!(!without_agent.contains("agent-check"));
    }
}
