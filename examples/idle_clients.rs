//! Opens N client connections to a pooler, logs each in (trust, clear-text or md5), runs one
//! query on each so its buffers were used, then holds them all idle for a while: the benchmark
//! reads the pooler's resident memory meanwhile.
//!
//!     cargo run --release --example idle_clients -- 127.0.0.1 6432 10000 user password db 20

use bytes::BytesMut;
use pgmux_protocol::backend::{self, AuthRequest};
use pgmux_protocol::{build, md5, split_frame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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

async fn one(host: String, port: u16, user: String, password: String, db: String) -> std::io::Result<TcpStream> {
    let mut s = TcpStream::connect((host.as_str(), port)).await?;
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
        eprintln!("usage: idle_clients HOST PORT N USER PASSWORD DB HOLD_SECONDS");
        std::process::exit(2);
    }
    let (host, port, n) = (a[1].clone(), a[2].parse().expect("port"), a[3].parse::<usize>().expect("n"));
    let (user, password, db) = (a[4].clone(), a[5].clone(), a[6].clone());
    let hold: u64 = a[7].parse().expect("seconds");
    let mut held = Vec::with_capacity(n);
    // Open in batches so that the pooler's listen backlog is not overrun.
    for chunk in (0..n).collect::<Vec<_>>().chunks(200) {
        let tasks: Vec<_> = chunk
            .iter()
            .map(|_| {
                let login = one(host.clone(), port, user.clone(), password.clone(), db.clone());
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
}
