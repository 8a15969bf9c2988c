//! `gateway_open_connections`: the established TCP connections this process holds on the
//! public listener's port, read from the kernel when `/metrics` is scraped.
//!
//! pingora has no per-connection hook to count with, and counting per request would put two
//! atomics on the hot path for a number only a scrape needs. The kernel knows exactly: the
//! process's socket inodes (`/proc/self/fd`) matched against the socket table
//! (`/proc/self/net/tcp`, `tcp6`), keeping those in state ESTABLISHED on the listener's port.
//! Connections still waiting in the accept queue are not the process's yet and do not count.

use std::collections::HashSet;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::IntGauge;

/// The kernel's code for an established TCP connection in `/proc/net/tcp`.
const ESTABLISHED: &str = "01";

pub struct OpenConnections {
    port: u16,
    gauge: IntGauge,
}

impl OpenConnections {
    pub fn new(port: u16) -> OpenConnections {
        let gauge = IntGauge::new(
            "gateway_open_connections",
            "Client connections open on the public listener",
        )
        .unwrap_or_else(|e| panic!("metric definition: {e}"));
        OpenConnections { port, gauge }
    }
}

impl Collector for OpenConnections {
    fn desc(&self) -> Vec<&Desc> {
        self.gauge.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let inodes = own_socket_inodes();
        let open: usize = ["/proc/self/net/tcp", "/proc/self/net/tcp6"]
            .iter()
            .filter_map(|table| std::fs::read_to_string(table).ok())
            .map(|table| established_on(&table, self.port, &inodes))
            .sum();
        self.gauge.set(open as i64);
        self.gauge.collect()
    }
}

/// The inodes of the sockets this process has open.
fn own_socket_inodes() -> HashSet<u64> {
    let Ok(fds) = std::fs::read_dir("/proc/self/fd") else {
        return HashSet::new();
    };
    fds.filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|target| {
            let target = target.to_str()?;
            target
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect()
}

/// How many rows of a `/proc/net/tcp`-format table are established connections on local
/// `port` whose socket is one of `inodes`.
fn established_on(table: &str, port: u16, inodes: &HashSet<u64>) -> usize {
    table
        .lines()
        .skip(1)
        .filter(|row| {
            let fields: Vec<&str> = row.split_whitespace().collect();
            let (Some(local), Some(state), Some(inode)) =
                (fields.get(1), fields.get(3), fields.get(9))
            else {
                return false;
            };
            let local_port = local
                .rsplit_once(':')
                .and_then(|(_, hex)| u16::from_str_radix(hex, 16).ok());
            local_port == Some(port)
                && *state == ESTABLISHED
                && inode.parse().is_ok_and(|i: u64| inodes.contains(&i))
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_only_our_established_sockets_on_the_port() {
        // Port 8080 is 1F90; state 0A is LISTEN, 06 TIME_WAIT.
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 100 1 0 100 0
   1: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 101 1 0 20 4 30 10 -1
   2: 0100007F:1F90 0100007F:C351 01 00000000:00000000 00:00000000 00000000     0        0 102 1 0 20 4 30 10 -1
   3: 0100007F:1F90 0100007F:C352 06 00000000:00000000 00:00000000 00000000     0        0 0 1 0 20 4 30 10 -1
   4: 0100007F:C350 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 103 1 0 20 4 30 10 -1
   5: 0100007F:1F90 0100007F:C353 01 00000000:00000000 00:00000000 00000000     0        0 999 1 0 20 4 30 10 -1
";
        let ours: HashSet<u64> = [100, 101, 102, 103].into_iter().collect();
        // Rows 1 and 2: established, on 8080, ours. Not the listener (0), not TIME_WAIT (3),
        // not our outgoing connection to 8080 (4), not another process's socket (5).
        assert_eq!(established_on(table, 8080, &ours), 2);
        assert_eq!(established_on("garbage\nmore garbage here", 8080, &ours), 0);
    }

    #[test]
    fn a_live_connection_of_this_process_is_seen() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let gauge = OpenConnections::new(port);
        let read = |g: &OpenConnections| g.collect()[0].get_metric()[0].get_gauge().value();
        let _client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (_server_side, _) = listener.accept().unwrap();
        // The client end's local port is not `port`; the accepted end's is.
        assert_eq!(read(&gauge), 1.0);
    }
}
