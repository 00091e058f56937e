//! Opens N client connections to a pooler, logs each in (trust, clear-text or md5), runs one
//! query on each so its buffers were used, then holds them all idle for a while: the benchmark
//! reads the pooler's resident memory meanwhile. After the hold every connection runs one more
//! query, so a client the pooler lost while idle is an error. Connections are spread over the
//! source addresses given (default: the kernel's choice), each of which has its own range of
//! ephemeral ports, so more clients than one range holds can connect.
//!
//!     cargo run --release --example idle_clients -- 127.0.0.1 6432 10000 user password db 20
//!     cargo run --release --example idle_clients -- 127.0.0.1 6432 40000 user password db 20 127.0.0.2,127.0.0.3

use bytes::BytesMut;
use pgmux_protocol::backend::{self, AuthRequest};
use pgmux_protocol::{build, md5, split_frame};
use std::net::{IpAddr, SocketAddr};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

async fn read_until_ready(s: &mut TcpStream, buf: &mut BytesMut, user: &str, password: &str) -> std::io::Result<()> {
    loop {
        while let Some(f) = split_frame(buf, 1 << 20).map_err(std::io::Error::other)? {
            match f.tag {
                b'Z' => return Ok(()),
                b'E' => return Err(std::io::Error::other(backend::ErrorFields::new(f.body()).message())),
                b'R' => {
                    let mut out = BytesMut::new();
                    match backend::authentication(f.body()).map_err(std::io::Error::other)? {
                        AuthRequest::Ok => continue,
                        AuthRequest::Cleartext => build::password(&mut out, password.as_bytes()),
                        AuthRequest::Md5(salt) => {
                            let secret = md5::secret(user, password.as_bytes());
                            build::password(&mut out, md5::response_from_secret(&secret, salt).as_bytes());
                        }
                        other => return Err(std::io::Error::other(format!("unsupported auth {other:?}"))),
                    }
                    s.write_all(&out).await?;
                }
                _ => {}
            }
        }
        if s.read_buf(buf).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
}

async fn connect(host: &str, port: u16, source: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let Some(source) = source else {
        return TcpStream::connect((host, port)).await;
    };
    let to = tokio::net::lookup_host((host, port)).await?.next().ok_or(std::io::ErrorKind::NotFound)?;
    let socket = if to.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.bind(SocketAddr::new(source, 0))?;
    socket.connect(to).await
}

async fn one(
    (host, port, source): (String, u16, Option<IpAddr>),
    user: String,
    password: String,
    db: String,
) -> std::io::Result<TcpStream> {
    let mut s = connect(&host, port, source).await?;
    let mut out = BytesMut::new();
    build::startup_message(&mut out, &[("user", &user), ("database", &db)]);
    s.write_all(&out).await?;
    let mut buf = BytesMut::new();
    read_until_ready(&mut s, &mut buf, &user, &password).await?;
    out.clear();
    build::query(&mut out, "SELECT 1");
    s.write_all(&out).await?;
    read_until_ready(&mut s, &mut buf, &user, &password).await?;
    Ok(s)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() < 8 {
        eprintln!("usage: idle_clients HOST PORT N USER PASSWORD DB HOLD_SECONDS [SOURCE_IP,...]");
        std::process::exit(2);
    }
    let (host, port, n) = (a[1].clone(), a[2].parse().expect("port"), a[3].parse::<usize>().expect("n"));
    let (user, password, db) = (a[4].clone(), a[5].clone(), a[6].clone());
    let hold: u64 = a[7].parse().expect("seconds");
    let sources: Vec<IpAddr> =
        a.get(8).map(|s| s.split(',').map(|ip| ip.parse().expect("source address")).collect()).unwrap_or_default();
    let mut held = Vec::with_capacity(n);
    // Open in batches so that the pooler's listen backlog is not overrun.
    for chunk in (0..n).collect::<Vec<_>>().chunks(200) {
        let tasks: Vec<_> = chunk
            .iter()
            .map(|i| {
                let source = (!sources.is_empty()).then(|| sources[i % sources.len()]);
                let login = one((host.clone(), port, source), user.clone(), password.clone(), db.clone());
                tokio::spawn(async move {
                    tokio::time::timeout(std::time::Duration::from_secs(20), login)
                        .await
                        .unwrap_or_else(|_| Err(std::io::Error::other("timed out")))
                })
            })
            .collect();
        for t in tasks {
            match t.await.expect("task") {
                Ok(s) => held.push(s),
                Err(e) => {
                    eprintln!("connection {} failed: {e}", held.len());
                    std::process::exit(1);
                }
            }
        }
    }
    println!("{} idle clients connected", held.len());
    tokio::time::sleep(std::time::Duration::from_secs(hold)).await;
    // Every client is served again after the hold.
    let mut again = 0usize;
    for chunk in held.chunks_mut(200) {
        let queries = chunk.iter_mut().map(|s| async {
            let mut out = BytesMut::new();
            build::query(&mut out, "SELECT 1");
            s.write_all(&out).await?;
            read_until_ready(s, &mut BytesMut::new(), "", "").await
        });
        for r in futures_util::future::join_all(queries).await {
            match r {
                Ok(()) => again += 1,
                Err(e) => eprintln!("a held client failed its second query: {e}"),
            }
        }
    }
    println!("{again} clients served again after the hold");
    if again != held.len() {
        std::process::exit(1);
    }
}
