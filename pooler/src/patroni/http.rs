//! Plain HTTP/1.1 requests to Patroni's REST API and etcd's JSON gateway: one connection per
//! request, every step bounded by a deadline, bodies bounded in size. Streaming (etcd watch)
//! hands each body frame to the caller as it arrives.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Bodies larger than this are refused (a `/cluster` of many members is a few KiB).
const MAX_BODY: usize = 1 << 20;

/// Why a request failed (the URL or address, and what went wrong), for the log and SHOW
/// PATRONI.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct HttpError(pub String);

/// The parts of `http://[user:password@]host:port/path` a request needs.
#[derive(Debug, PartialEq, Eq)]
struct Url<'a> {
    authority: &'a str,
    path: &'a str,
    /// `user:password` for basic auth (Patroni's `restapi.authentication`).
    userinfo: Option<&'a str>,
}

fn split(url: &str) -> Result<Url<'_>, HttpError> {
    let rest =
        url.strip_prefix("http://").ok_or_else(|| HttpError(format!("{url}: only http:// URLs are supported")))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    Ok(match authority.rsplit_once('@') {
        Some((userinfo, authority)) => Url { authority, path, userinfo: Some(userinfo) },
        None => Url { authority, path, userinfo: None },
    })
}

async fn send(method: &str, url: &str, body: Option<String>) -> Result<hyper::Response<Incoming>, HttpError> {
    let Url { authority, path, userinfo } = split(url)?;
    let stream = TcpStream::connect(authority).await.map_err(|e| HttpError(format!("{authority}: {e}")))?;
    let _ = stream.set_nodelay(true);
    // A peer that vanishes without a reset (a partitioned etcd under a watch) is noticed.
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(10))
        .with_interval(Duration::from_secs(5))
        .with_retries(3);
    let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| HttpError(format!("{authority}: {e}")))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", authority)
        .header("user-agent", concat!("pgmux/", env!("CARGO_PKG_VERSION")));
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    if let Some(u) = userinfo {
        use base64::Engine;
        let token = base64::engine::general_purpose::STANDARD.encode(u);
        req = req.header("authorization", format!("Basic {token}"));
    }
    let req = req.body(Full::new(Bytes::from(body.unwrap_or_default()))).map_err(|e| HttpError(e.to_string()))?;
    sender.send_request(req).await.map_err(|e| HttpError(format!("{url}: {e}")))
}

/// One request; the status and the whole body.
///
/// # Errors
/// Connect, protocol or size failures, or the deadline.
pub async fn request(
    method: &str,
    url: &str,
    body: Option<String>,
    limit: Duration,
) -> Result<(u16, Bytes), HttpError> {
    let work = async {
        let resp = send(method, url, body).await?;
        let status = resp.status().as_u16();
        let limited = http_body_util::Limited::new(resp.into_body(), MAX_BODY);
        let body = limited.collect().await.map_err(|e| HttpError(format!("{url}: {e}")))?.to_bytes();
        Ok((status, body))
    };
    tokio::time::timeout(limit, work).await.map_err(|_| HttpError(format!("{url}: no answer within {limit:?}")))?
}

/// A request whose answer streams (etcd's `/v3/watch`): `on_frame` gets each body frame until
/// the stream ends, fails, or `on_frame` returns false.
///
/// # Errors
/// Connect or protocol failures, a status other than 200, or `connect_limit` passing before
/// the answer's head arrives.
pub async fn stream(
    url: &str,
    body: String,
    connect_limit: Duration,
    mut on_frame: impl FnMut(&[u8]) -> bool,
) -> Result<(), HttpError> {
    let resp = tokio::time::timeout(connect_limit, send("POST", url, Some(body)))
        .await
        .map_err(|_| HttpError(format!("{url}: no answer within {connect_limit:?}")))??;
    if resp.status().as_u16() != 200 {
        return Err(HttpError(format!("{url}: status {}", resp.status())));
    }
    let mut body = resp.into_body();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| HttpError(format!("{url}: {e}")))?;
        if let Some(data) = frame.data_ref() {
            if !on_frame(data) {
                return Ok(());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_urls() {
        let u = split("http://127.0.0.1:8008/cluster").unwrap();
        assert_eq!((u.authority, u.path, u.userinfo), ("127.0.0.1:8008", "/cluster", None));
        let u = split("http://h:1").unwrap();
        assert_eq!((u.authority, u.path), ("h:1", "/"));
        let u = split("http://postgres:Patroni.API@10.0.0.1:8008/switchover").unwrap();
        assert_eq!((u.authority, u.userinfo), ("10.0.0.1:8008", Some("postgres:Patroni.API")));
        assert!(split("https://h:1/x").is_err());
    }

    #[tokio::test]
    async fn reads_a_whole_answer_and_bounds_the_wait() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            s.write_all(b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 2\r\n\r\nno").await.unwrap();
            // A second connection that never answers.
            let (_s, _) = l.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        let url = format!("http://{addr}/primary");
        let (status, body) = request("GET", &url, None, Duration::from_secs(2)).await.unwrap();
        assert_eq!((status, &body[..]), (503, &b"no"[..]));
        let e = request("GET", &url, None, Duration::from_millis(200)).await.unwrap_err();
        assert!(e.0.contains("no answer"), "{e}");
    }
}
