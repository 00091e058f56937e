//! A network namespace joined to the host by a veth pair: a PostgreSQL started inside it
//! (`Cluster::start_in`) is reached by pgmux over a real link, and iptables inside the namespace
//! drops its traffic, all of it (a partition) or a share (packet loss). Needs root and
//! iproute2/iptables; a watchdog removes the namespace when the test process exits, however
//! it exits. (This kernel has no netem qdisc, so latency is not injected here.)

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// A namespace with one address on each side of its link.
pub struct Netns {
    /// `ip netns` name.
    pub name: String,
    /// The host's end of the link.
    pub host_addr: String,
    /// The namespace's end, where its PostgreSQL listens.
    pub addr: String,
    host_if: String,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("network fault tests need iproute2 (`ip`): apt-get install iproute2 ({e})"));
    assert!(
        out.status.success(),
        "ip {args:?} failed (network fault tests need root): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Netns {
    /// A fresh namespace with its link up.
    pub fn create() -> Netns {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let name = format!("pgmux-{pid}-{n}");
        let host_if = format!("pmx{}h{n}", pid % 100_000);
        let ns_if = format!("pmx{}n{n}", pid % 100_000);
        let net = format!("10.{}.{}", 200 + n % 50, pid % 250);
        let (host_addr, addr) = (format!("{net}.1"), format!("{net}.2"));
        ip(&["netns", "add", &name]);
        let ns = Netns { name, host_addr, addr, host_if };
        ns.watchdog();
        ip(&["link", "add", &ns.host_if, "type", "veth", "peer", "name", &ns_if]);
        ip(&["link", "set", &ns_if, "netns", &ns.name]);
        ip(&["addr", "add", &format!("{}/30", ns.host_addr), "dev", &ns.host_if]);
        ip(&["link", "set", &ns.host_if, "up"]);
        ip(&["-n", &ns.name, "addr", "add", &format!("{}/30", ns.addr), "dev", &ns_if]);
        ip(&["-n", &ns.name, "link", "set", &ns_if, "up"]);
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    /// A command run inside the namespace (`ip netns exec`).
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    fn iptables(&self, args: &[&str]) {
        let mut c = self.command("iptables");
        c.args(args);
        let out =
            c.output().unwrap_or_else(|e| panic!("network fault tests need iptables: apt-get install iptables ({e})"));
        assert!(out.status.success(), "iptables {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Drops every packet into and out of the namespace: a partition.
    pub fn partition(&self) {
        self.iptables(&["-I", "INPUT", "-i", "pmx+", "-j", "DROP"]);
        self.iptables(&["-I", "OUTPUT", "-o", "pmx+", "-j", "DROP"]);
    }

    /// Drops each packet into and out of the namespace with probability `p`.
    pub fn lose(&self, p: f64) {
        let p = p.to_string();
        for (chain, dir) in [("INPUT", "-i"), ("OUTPUT", "-o")] {
            self.iptables(&[
                "-I",
                chain,
                dir,
                "pmx+",
                "-m",
                "statistic",
                "--mode",
                "random",
                "--probability",
                &p,
                "-j",
                "DROP",
            ]);
        }
    }

    /// Ends a partition or loss.
    pub fn heal(&self) {
        self.iptables(&["-F", "INPUT"]);
        self.iptables(&["-F", "OUTPUT"]);
    }

    /// Removes the namespace once this test process has exited.
    fn watchdog(&self) {
        super::after_this_process(&format!(
            "ip link del {} 2>/dev/null; ip netns del {} 2>/dev/null",
            self.host_if, self.name
        ));
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.host_if]).output();
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}
