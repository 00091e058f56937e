//! Watching Patroni's keys in etcd v3 (through etcd's JSON gateway, `POST /v3/watch`): a
//! `failover` key written by `patronictl switchover` is seen within milliseconds, before Patroni
//! stops the old primary, so new transactions are held instead of sent to a server about to
//! die. Polling `/cluster` alone would see it a poll interval later.

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::Deserialize;

use crate::patroni::http::HttpError;
use crate::patroni::PatroniError;
use crate::shared::Shared;

#[derive(Deserialize)]
struct Frame {
    result: Option<WatchResult>,
}

#[derive(Deserialize)]
struct WatchResult {
    #[serde(default)]
    events: Vec<Event>,
}

#[derive(Deserialize)]
struct Event {
    /// Absent for PUT (the gateway leaves out default enum values).
    #[serde(default, rename = "type")]
    kind: Option<String>,
    kv: Kv,
}

#[derive(Deserialize)]
struct Kv {
    key: String,
    #[serde(default)]
    value: Option<String>,
}

#[derive(Deserialize)]
struct FailoverValue {
    #[serde(default)]
    leader: Option<String>,
    #[serde(default, alias = "candidate")]
    member: Option<String>,
    /// A scheduled switchover: nothing to hold for until Patroni acts on it.
    #[serde(default)]
    scheduled_at: Option<serde_json::Value>,
}

/// What a `failover` key's value asks for.
fn failover_change(value: &[u8]) -> Change {
    // `patronictl switchover` without --candidate writes only the leader; Patroni writes `{}`
    // once the switchover is through. A scheduled one is watched through `/cluster` only.
    match serde_json::from_slice::<FailoverValue>(value) {
        Ok(FailoverValue { scheduled_at: Some(_), .. }) => Change::Leader,
        Ok(FailoverValue { leader: Some(l), member, .. }) => Change::Failover(l, member.unwrap_or_default()),
        Ok(FailoverValue { leader: None, .. }) => Change::FailoverCleared,
        Err(_) => Change::Leader,
    }
}

#[derive(Deserialize)]
struct RangeAnswer {
    #[serde(default)]
    header: Option<Header>,
    #[serde(default)]
    kvs: Vec<Kv>,
}

#[derive(Deserialize)]
struct Header {
    /// A decimal string in the gateway's JSON.
    #[serde(default)]
    revision: Option<String>,
}

/// Reads the `failover` key now (the watch starts after its revision), so that a deletion
/// missed while the watch was down does not leave a stale switchover behind.
async fn read_failover(shared: &Shared, etcd_url: &str, prefix: &str) -> Result<Option<i64>, PatroniError> {
    let body = format!(r#"{{"key":"{}"}}"#, B64.encode(format!("{prefix}failover")));
    let (status, answer) =
        crate::patroni::http::request("POST", &format!("{etcd_url}/v3/kv/range"), Some(body), Duration::from_secs(3))
            .await?;
    if status != 200 {
        return Err(HttpError(format!("{etcd_url}/v3/kv/range: status {status}")).into());
    }
    let r: RangeAnswer = serde_json::from_slice(&answer).map_err(|e| PatroniError::Body(e.to_string()))?;
    let value = r.kvs.into_iter().next().and_then(|kv| kv.value).and_then(|v| B64.decode(v).ok());
    let change = match value {
        Some(v) => failover_change(&v),
        None => Change::FailoverCleared,
    };
    // Only a request still there is applied; a cleared one always is.
    let known = shared.patroni.view.read().pending.is_some();
    match change {
        Change::Failover(..) if known => {}
        other => apply(shared, other),
    }
    Ok(r.header.and_then(|h| h.revision).and_then(|r| r.parse().ok()))
}

/// What one watch event means to the watcher.
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    /// A switchover was requested: (leader, candidate or "" for any).
    Failover(String, String),
    /// The failover key went: the switchover is done or was cancelled.
    FailoverCleared,
    /// The leader key changed: read `/cluster` now.
    Leader,
}

/// The changes in one watch frame (a JSON object of the gateway's stream).
pub fn changes(prefix: &str, frame: &[u8]) -> Vec<Change> {
    let Ok(f) = serde_json::from_slice::<Frame>(frame) else { return Vec::new() };
    let mut out = Vec::new();
    for e in f.result.map(|r| r.events).unwrap_or_default() {
        let Some(key) = B64.decode(&e.kv.key).ok().and_then(|k| String::from_utf8(k).ok()) else { continue };
        let Some(name) = key.strip_prefix(prefix) else { continue };
        let deleted = e.kind.as_deref() == Some("DELETE");
        match name {
            "failover" if deleted => out.push(Change::FailoverCleared),
            "failover" => {
                let value = e.kv.value.and_then(|v| B64.decode(v).ok()).unwrap_or_default();
                out.push(failover_change(&value));
            }
            "leader" => out.push(Change::Leader),
            _ => {}
        }
    }
    out
}

/// Watches `<namespace>/<scope>/` at `etcd_url` until the task is dropped, reconnecting after
/// a failure.
pub(super) async fn watch(shared: Arc<Shared>, etcd_url: String, prefix: String) {
    let mut end = prefix.clone().into_bytes();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    let url = format!("{etcd_url}/v3/watch");
    loop {
        let revision = match read_failover(&shared, &etcd_url, &prefix).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!("patroni: etcd: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let start = revision.map(|r| format!(r#","start_revision":"{}""#, r + 1)).unwrap_or_default();
        let body = format!(
            r#"{{"create_request":{{"key":"{}","range_end":"{}"{start}}}}}"#,
            B64.encode(prefix.as_bytes()),
            B64.encode(&end)
        );
        let mut buf: Vec<u8> = Vec::new();
        let result = crate::patroni::http::stream(&url, body, Duration::from_secs(3), |data| {
            buf.extend_from_slice(data);
            // The gateway writes one JSON object per line.
            while let Some(i) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=i).collect();
                for change in changes(&prefix, &line) {
                    apply(&shared, change);
                }
            }
            buf.len() < (1 << 20)
        })
        .await;
        if let Err(e) = result {
            tracing::debug!("patroni: etcd watch: {e}");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn apply(shared: &Shared, change: Change) {
    let p = &shared.patroni;
    match change {
        Change::Failover(leader, member) => {
            let to = if member.is_empty() { "any replica" } else { member.as_str() };
            tracing::info!("patroni: switchover from {leader} to {to} requested in the DCS");
            p.update(|v| {
                v.pending = Some((leader, member));
                v.pending_at = Some(std::time::Instant::now());
            });
        }
        Change::FailoverCleared => p.update(|v| {
            v.pending = None;
            v.pending_at = None;
        }),
        Change::Leader => {}
    }
    p.wake.notify_one();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: Option<&str>, key: &str, value: &str) -> Vec<u8> {
        let kind = kind.map(|k| format!(r#""type":"{k}","#)).unwrap_or_default();
        format!(
            r#"{{"result":{{"header":{{"revision":"9"}},"events":[{{{kind}"kv":{{"key":"{}","value":"{}"}}}}]}}}}"#,
            B64.encode(key),
            B64.encode(value)
        )
        .into_bytes()
    }

    #[test]
    fn reads_the_failover_and_leader_keys() {
        let p = "/service/c/";
        let put = frame(None, "/service/c/failover", r#"{"leader": "pg1", "member": "pg2"}"#);
        assert_eq!(changes(p, &put), vec![Change::Failover("pg1".into(), "pg2".into())]);
        assert_eq!(changes(p, &frame(Some("DELETE"), "/service/c/failover", "")), vec![Change::FailoverCleared]);
        // patronictl without --candidate, then Patroni's own clearing.
        let any = frame(None, "/service/c/failover", r#"{"leader":"pg2"}"#);
        assert_eq!(changes(p, &any), vec![Change::Failover("pg2".into(), String::new())]);
        assert_eq!(changes(p, &frame(None, "/service/c/failover", "{}")), vec![Change::FailoverCleared]);
        assert_eq!(changes(p, &frame(None, "/service/c/leader", "pg2")), vec![Change::Leader]);
        assert!(changes(p, &frame(None, "/service/c/status", "{}")).is_empty());
        assert!(changes(p, &frame(None, "/service/other/leader", "x")).is_empty());
    }

    #[test]
    fn ignores_what_it_cannot_read() {
        let p = "/service/c/";
        assert!(changes(p, b"{\"result\":{\"created\":true}}").is_empty());
        assert!(changes(p, b"garbage").is_empty());
        assert_eq!(changes(p, &frame(None, "/service/c/failover", "not json")), vec![Change::Leader]);
        // A scheduled switchover holds nothing yet.
        let later = frame(
            None,
            "/service/c/failover",
            r#"{"leader":"a","member":"b","scheduled_at":"2030-01-01T00:00:00+00:00"}"#,
        );
        assert_eq!(changes(p, &later), vec![Change::Leader]);
    }
}
