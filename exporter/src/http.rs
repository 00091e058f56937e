//! A minimal HTTP/1.1 responder for scrapes: GET /metrics, GET /health (200 while serving,
//! 503 while paused or shutting down), the role checks the source answers (`/primary`,
//! `/replica`, ... for HAProxy), GET /. One request per connection, bounded in size and
//! time, at most [`MAX_CONNECTIONS`] at once and [`MAX_PER_ADDRESS`] from one address, so a
//! misbehaving scraper cannot hold resources or starve another host's health checks.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::request::{head_complete, Request};
use crate::scrapes::Scrapes;
use crate::{render, Source};

const MAX_REQUEST: usize = 8 * 1024;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more are closed at once. Scrapers and health checks need a few;
/// a flood of idle connections (slow-loris) cannot take more descriptors and memory than this.
pub const MAX_CONNECTIONS: usize = 256;
/// Connections one address may hold at once, so that a flood from one host cannot take the
/// slots HAProxy's role checks from another host need.
pub const MAX_PER_ADDRESS: usize = 32;

/// Connections held per peer address; a [`Held`] gives its place back when dropped.
#[derive(Default)]
struct PerAddress(std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>);

struct Held(Arc<PerAddress>, std::net::IpAddr);

impl PerAddress {
    fn take(self: &Arc<Self>, ip: std::net::IpAddr) -> Option<Held> {
        let mut m = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = m.entry(ip).or_default();
        if *n >= MAX_PER_ADDRESS {
            return None;
        }
        *n += 1;
        Some(Held(self.clone(), ip))
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut m = self.0 .0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = m.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.1);
            }
        }
    }
}

/// Serves scrapes on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, source: Arc<dyn Source>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let per_address = Arc::new(PerAddress::default());
    let scrapes = Arc::new(Scrapes::default());
    loop {
        match listener.accept().await {
            Ok((s, peer)) => {
                let Some(held) = per_address.take(peer.ip()) else {
                    drop(s);
                    continue;
                };
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    drop(s);
                    continue;
                };
                let src = source.clone();
                let scrapes = scrapes.clone();
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(REQUEST_TIMEOUT, handle(s, src, &scrapes)).await;
                    drop(slot);
                    drop(held);
                });
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

async fn handle(mut s: TcpStream, source: Arc<dyn Source>, scrapes: &Scrapes) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !head_complete(&buf) {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_REQUEST {
            return respond(&mut s, "431 Request Header Fields Too Large", "text/plain", "request too large\n", false)
                .await;
        }
    }
    let request = Request::parse(&buf);
    let head = request.head_only();
    if !request.method_allowed() {
        return respond(&mut s, "405 Method Not Allowed", "text/plain", "only GET\n", head).await;
    }
    let (path, query) = (request.path, request.query);
    match path {
        "/metrics" => {
            let started = std::time::Instant::now();
            let snapshot = source.snapshot();
            let mut body = render(&snapshot);
            scrapes.render(&mut body, &snapshot);
            scrapes.record(started.elapsed());
            respond(&mut s, "200 OK", "text/plain; version=0.0.4; charset=utf-8", &body, head).await
        }
        "/health" | "/up" | "/liveness" | "/readiness" => {
            if source.healthy() {
                respond(&mut s, "200 OK", "text/plain", "ok\n", head).await
            } else {
                respond(&mut s, "503 Service Unavailable", "text/plain", "unavailable\n", head).await
            }
        }
        "/" => {
            let body = "<html><body><a href=\"/metrics\">metrics</a> <a href=\"/health\">health</a></body></html>\n";
            respond(&mut s, "200 OK", "text/html", body, head).await
        }
        _ => match source.role_check(path, query) {
            Some(true) => respond(&mut s, "200 OK", "text/plain", "ok\n", head).await,
            Some(false) => respond(&mut s, "503 Service Unavailable", "text/plain", "unavailable\n", head).await,
            None => respond(&mut s, "404 Not Found", "text/plain", "not found\n", head).await,
        },
    }
}

async fn respond(s: &mut TcpStream, status: &str, ctype: &str, body: &str, head: bool) -> std::io::Result<()> {
    let header = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(header.as_bytes()).await?;
    if !head {
        s.write_all(body.as_bytes()).await?;
    }
    s.shutdown().await
}
