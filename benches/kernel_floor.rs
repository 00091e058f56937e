//! What the kernel costs a pooler per transaction on this machine, without the pooler
//! (`cargo bench --bench kernel_floor`): the floor under any pooler's CPU per transaction, and
//! the most that fewer kernel crossings (io_uring, batched system calls) could take off it.
//!
//! - `null_syscall`: entering and leaving the kernel, nothing done there (getppid). A pooler
//!   makes four socket calls per transaction (a recv and a send on each side: `strace -c`,
//!   docs/BENCHMARKS.md); io_uring can save at most these entries and exits, not the socket work.
//! - `send_recv_*`: 100 bytes (about one pgbench -S query) sent on one end of a connected pair
//!   and read from the other, in one thread: the socket work itself, over loopback TCP (what
//!   pgbench uses to reach the pooler) and over a unix socket.
//!
//! CPU time, not latency: everything runs in one thread, no one sleeps or is woken (a wake-up
//! of the peer costs on top, and any pooler pays it the same).
//!
//! docs/BENCHMARKS.md records a run and what it says about item 1 of issue 12.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;

fn main() {
    divan::main();
}

const MESSAGE: [u8; 100] = [b'Q'; 100];

/// A connected loopback TCP pair, Nagle off as poolers set it.
fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (b, _) = listener.accept().unwrap();
    a.set_nodelay(true).unwrap();
    b.set_nodelay(true).unwrap();
    (a, b)
}

/// Sends the message on `a` and reads all of it from `b`.
fn pass(a: &mut impl Write, b: &mut impl Read, buf: &mut [u8; 100]) {
    a.write_all(&MESSAGE).unwrap();
    b.read_exact(buf).unwrap();
}

#[divan::bench]
fn null_syscall() -> nix::unistd::Pid {
    nix::unistd::getppid()
}

#[divan::bench]
fn send_recv_tcp(bencher: divan::Bencher) {
    let (mut a, mut b) = tcp_pair();
    let mut buf = [0u8; 100];
    bencher.bench_local(|| pass(&mut a, &mut b, &mut buf));
}

#[divan::bench]
fn send_recv_unix(bencher: divan::Bencher) {
    let (mut a, mut b) = UnixStream::pair().unwrap();
    let mut buf = [0u8; 100];
    bencher.bench_local(|| pass(&mut a, &mut b, &mut buf));
}
