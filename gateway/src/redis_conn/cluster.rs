//! What Redis Cluster needs beyond one server: the cluster client (it keeps a connection per
//! node, routes each command to the node owning its key's slot and follows `MOVED`/`ASK`), and
//! the cluster's primaries as `CLUSTER NODES` lists them, for the validation cache, which must
//! hear every primary's invalidations.

use std::time::Duration;

use redis::cluster::{ClusterClient, ClusterClientBuilder};

/// Retries inside the cluster client (redirects and reconnects); our own deadline bounds the
/// whole call anyway, so a short ladder is enough.
const RETRIES: u32 = 3;
const MIN_RETRY_WAIT_MS: u64 = 10;
const MAX_RETRY_WAIT_MS: u64 = 100;

/// How the cluster client reaches and authenticates to every node.
pub(super) struct ClusterOptions<'a> {
    pub nodes: &'a [String],
    pub scheme: &'static str,
    pub username: Option<&'a str>,
    pub password: Option<&'a str>,
    pub certificates: Option<redis::TlsCertificates>,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
}

/// The client for the seed nodes; it does not connect.
pub(super) fn client(options: ClusterOptions<'_>) -> redis::RedisResult<ClusterClient> {
    let urls: Vec<String> = options
        .nodes
        .iter()
        .map(|node| format!("{}://{node}", options.scheme))
        .collect();
    let mut builder = ClusterClientBuilder::new(urls)
        .connection_timeout(options.connect_timeout)
        .response_timeout(options.response_timeout)
        .retries(RETRIES)
        .min_retry_wait(MIN_RETRY_WAIT_MS)
        .max_retry_wait(MAX_RETRY_WAIT_MS);
    if let Some(user) = options.username {
        builder = builder.username(user);
    }
    if let Some(password) = options.password {
        builder = builder.password(password);
    }
    if let Some(certificates) = options.certificates {
        builder = builder.certs(certificates);
    }
    builder.build()
}

/// One primary as `CLUSTER NODES` names it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ClusterPrimary {
    pub id: String,
    /// `host:port` for clients.
    pub address: String,
}

/// The primaries in a `CLUSTER NODES` reply, sorted: every node flagged `master` that is not
/// known to have failed (those with no slots included: a resharding can move slots to them).
/// Two replies list the same primaries exactly when the set of nodes taking writes is the same.
pub fn primaries(cluster_nodes: &str) -> Vec<ClusterPrimary> {
    let mut found: Vec<ClusterPrimary> = cluster_nodes
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let id = fields.next()?;
            let address = fields.next()?;
            let flags: Vec<&str> = fields.next()?.split(',').collect();
            let serving = flags.contains(&"master")
                && !flags
                    .iter()
                    .any(|f| matches!(*f, "fail" | "handshake" | "noaddr"));
            // `ip:port@cport[,hostname]`: clients use ip:port.
            let address = address.split('@').next()?;
            (serving && !address.starts_with(':')).then(|| ClusterPrimary {
                id: id.to_string(),
                address: address.to_string(),
            })
        })
        .collect();
    found.sort();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODES: &str = "\
07c37dfeb235213a872192d90877d0cd55635b91 127.0.0.1:30004@31004,host-4 slave e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 1426238317239 4 connected
67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 127.0.0.1:30002@31002 master - 0 1426238316232 2 connected 5461-10922
292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f 127.0.0.1:30003@31003 master - 0 1426238318243 3 connected 10923-16383
6ec23923021cf3ffec47632106199cb7f496ce01 127.0.0.1:30005@31005 master,fail - 0 1426238316232 5 connected
824fe116063bc5fcf9f4ffd895bc17aee7731ac3 127.0.0.1:30006@31006 master - 0 1426238317741 6 connected
e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 127.0.0.1:30001@31001 myself,master - 0 0 1 connected 0-5460
";

    #[test]
    fn primaries_are_the_masters_that_have_not_failed() {
        let found = primaries(NODES);
        let addresses: Vec<&str> = found.iter().map(|p| p.address.as_str()).collect();
        assert_eq!(
            addresses,
            [
                "127.0.0.1:30003",
                "127.0.0.1:30002",
                "127.0.0.1:30006",
                "127.0.0.1:30001"
            ]
        );
        // The same nodes in another order (another node's view) compare equal.
        let reversed: String = NODES.lines().rev().map(|l| format!("{l}\n")).collect();
        assert_eq!(primaries(&reversed), found);
        // A failover changes the set.
        let promoted = NODES
            .replace("slave e7d1", "master e7d1")
            .replace("myself,master - 0 0 1", "myself,master,fail - 0 0 1");
        assert_ne!(primaries(&promoted), found);
    }
}
