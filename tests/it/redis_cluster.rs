//! Redis Cluster: a real three-primary cluster (three `redis-server --cluster-enabled yes`
//! joined with `redis-cli --cluster create`) shared by two gateways, under an ACL user with the
//! README's minimal rule for a cluster. Sessions spread over the nodes and work on both
//! instances; listing, revoking (one, a user's, all; admin API and CLI), signing out everywhere
//! and the per-user limit (both policies, with concurrent logins) work across the shards; the
//! validation cache tracks every primary. The same over TLS (clients and the cluster bus), and
//! a gateway trusting another CA refusing the nodes' certificate.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::session_helpers::*;
use crate::support::*;
use crate::tls_certs::make_certificates;

const PREFIX: &str = "clgw:";
const ACL_USER: &str = "gateway";
const ACL_PASSWORD: &str = "cluster-acl-password-7d1e";
/// The test's own user, for `redis-cli --cluster create` and for looking at each node.
const ADMIN_USER: &str = "admin";
const ADMIN_PASSWORD: &str = "cluster-admin-password-29f4";

/// The README's minimal ACL rule for the gateway's user in a cluster.
fn minimal_cluster_acl() -> Vec<String> {
    format!(
        "{ACL_USER} on >{ACL_PASSWORD} ~{PREFIX}* resetchannels -@all +@read +@write \
         +@scripting +ping +hello +auth +client|setname +client|tracking +wait \
         +cluster|slots +cluster|nodes -@dangerous"
    )
    .split(' ')
    .map(str::to_string)
    .collect()
}

/// A three-primary Redis Cluster on loopback, nothing persisted, killed on drop.
struct Cluster {
    dir: tempfile::TempDir,
    ports: Vec<u16>,
    children: Vec<Child>,
    tls: Option<NodeTls>,
}

/// A TLS cluster's certificates (absolute paths): every node serves the same one.
struct NodeTls {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl Cluster {
    /// `redis-cli --cluster ARGS…` as the cluster's admin user; panics with its output on
    /// failure.
    fn cluster_command(&self, args: &[String]) {
        let mut cli = Command::new("redis-cli");
        cli.args([
            "--user",
            ADMIN_USER,
            "--pass",
            ADMIN_PASSWORD,
            "--no-auth-warning",
        ]);
        if let Some(tls) = &self.tls {
            cli.arg("--tls").arg("--cacert").arg(&tls.ca);
        }
        let out = cli
            .arg("--cluster")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli --cluster");
        assert!(
            out.status.success(),
            "redis-cli --cluster {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn start() -> Cluster {
        Cluster::launch(false)
    }

    /// A cluster that speaks only TLS, to clients and between nodes (`tls-cluster yes`, so
    /// the nodes also announce their TLS port to clients).
    fn start_tls() -> Cluster {
        Cluster::launch(true)
    }

    fn launch(tls: bool) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let tls = tls.then(|| {
            let (ca, cert, key) = make_certificates(dir.path(), "cluster");
            NodeTls { ca, cert, key }
        });
        let mut cluster = Cluster {
            dir,
            ports: Vec::new(),
            children: Vec::new(),
            tls,
        };
        for _ in 0..3 {
            cluster.spawn_node();
        }
        let mut create = vec!["create".to_string()];
        create.extend(cluster.ports.iter().map(|port| format!("127.0.0.1:{port}")));
        create.extend(["--cluster-replicas", "0", "--cluster-yes"].map(String::from));
        cluster.cluster_command(&create);
        // Ready when every node says the cluster is ok and knows all three primaries.
        let deadline = Instant::now() + Duration::from_secs(20);
        for i in 0..cluster.ports.len() {
            loop {
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query(&mut cluster.connection(i))
                    .unwrap_or_default();
                let nodes: String = redis::cmd("CLUSTER")
                    .arg("NODES")
                    .query(&mut cluster.connection(i))
                    .unwrap_or_default();
                let primaries = nodes
                    .lines()
                    .filter(|l| l.contains("master") && l.contains(" connected"))
                    .count();
                if info.contains("cluster_state:ok") && primaries == 3 {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "node {i} not ready:\n{info}\n{nodes}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        cluster
    }

    /// Starts one node on fresh ports (client and cluster bus), retrying if a port was taken.
    fn spawn_node(&mut self) {
        let dir = self.dir.path().to_path_buf();
        for _attempt in 0..5 {
            let (port, bus) = (free_port(), free_port());
            let log = dir.join(format!("redis-{port}.log"));
            let mut args: Vec<String> = [
                "--bind",
                "127.0.0.1",
                "--cluster-enabled",
                "yes",
                "--cluster-port",
                &bus.to_string(),
                "--cluster-config-file",
                &dir.join(format!("nodes-{port}.conf")).display().to_string(),
                "--dir",
                &dir.display().to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
                "--user",
                "default",
                "off",
                "--user",
                ADMIN_USER,
                "on",
                &format!(">{ADMIN_PASSWORD}"),
                "~*",
                "&*",
                "+@all",
                "--user",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            args.extend(minimal_cluster_acl());
            match &self.tls {
                None => args.extend(["--port".to_string(), port.to_string()]),
                // Port 0: TLS only, so nothing could work by falling back to plain TCP.
                Some(tls) => args.extend(
                    [
                        "--port",
                        "0",
                        "--tls-port",
                        &port.to_string(),
                        "--tls-cluster",
                        "yes",
                        "--tls-cert-file",
                        &tls.cert.display().to_string(),
                        "--tls-key-file",
                        &tls.key.display().to_string(),
                        "--tls-ca-cert-file",
                        &tls.ca.display().to_string(),
                        "--tls-auth-clients",
                        "no",
                    ]
                    .map(String::from),
                ),
            }
            let out = fs::File::create(&log).unwrap();
            let mut child = Command::new("redis-server")
                .args(&args)
                .stdin(Stdio::null())
                .stdout(out.try_clone().unwrap())
                .stderr(out)
                .spawn()
                .expect("spawn redis-server");
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if listening_ports(child.id()).contains(&port) {
                    self.ports.push(port);
                    self.children.push(child);
                    return;
                }
                if child.try_wait().unwrap().is_some() || Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("could not start a cluster node in {}", dir.display());
    }

    /// Starts a fourth node and joins it as a primary without slots (resharding could move
    /// slots to it at any moment, so it takes part as soon as it has joined).
    fn add_primary(&mut self) -> u16 {
        self.spawn_node();
        let new = *self.ports.last().unwrap();
        self.cluster_command(&[
            "add-node".to_string(),
            format!("127.0.0.1:{new}"),
            format!("127.0.0.1:{}", self.ports[0]),
        ]);
        new
    }

    /// Kills node `node` (SIGKILL: a crash).
    fn kill(&mut self, node: usize) {
        let _ = self.children[node].kill();
        let _ = self.children[node].wait();
    }

    fn connection(&self, node: usize) -> redis::Connection {
        let address = format!(
            "{ADMIN_USER}:{ADMIN_PASSWORD}@127.0.0.1:{}/",
            self.ports[node]
        );
        match &self.tls {
            None => redis::Client::open(format!("redis://{address}")),
            Some(tls) => redis::Client::build_with_tls(
                format!("rediss://{address}"),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(fs::read(&tls.ca).unwrap()),
                },
            ),
        }
        .unwrap()
        .get_connection_with_timeout(Duration::from_secs(2))
        .unwrap()
    }

    /// The keys matching `pattern` that node `node` holds.
    fn keys_on(&self, node: usize, pattern: &str) -> Vec<String> {
        redis::cmd("KEYS")
            .arg(pattern)
            .query(&mut self.connection(node))
            .unwrap()
    }

    /// Session records on each node.
    fn session_keys_per_node(&self) -> Vec<usize> {
        (0..self.ports.len())
            .map(|node| self.keys_on(node, &format!("{PREFIX}session:*")).len())
            .collect()
    }

    /// `cluster_nodes = [...]`, the gateway's ACL user and, on a TLS cluster, TLS trusting
    /// `ca`, for the `[redis]` section.
    fn redis_settings(&self, ca: Option<&Path>) -> String {
        let nodes: Vec<String> = self
            .ports
            .iter()
            .map(|p| toml_str(&format!("127.0.0.1:{p}")))
            .collect();
        let tls = ca
            .map(|ca| {
                format!(
                    "\ntls = true\nca_file = {}",
                    toml_str(&ca.display().to_string())
                )
            })
            .unwrap_or_default();
        format!(
            "cluster_nodes = [{}]\nusername = \"{ACL_USER}\"\npassword = \"{ACL_PASSWORD}\"{tls}",
            nodes.join(", ")
        )
    }

    /// A gateway config on this cluster (seeded with all three nodes), trusting the nodes'
    /// CA on a TLS cluster.
    fn config(&self, upstream: std::net::SocketAddr) -> TestConfig {
        self.config_trusting(upstream, self.tls.as_ref().map(|tls| tls.ca.as_path()))
    }

    /// A gateway config on this cluster whose TLS trusts `ca` (which may not be the nodes').
    fn config_trusting(&self, upstream: std::net::SocketAddr, ca: Option<&Path>) -> TestConfig {
        let placeholder = "redis://127.0.0.1:1/0";
        with_admin_token(TestConfig::new(placeholder, upstream).key_prefix(PREFIX)).replace(
            &format!("url = {}", toml_str(placeholder)),
            &self.redis_settings(ca),
        )
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Two gateways on one cluster.
struct ClusterPair {
    cluster: Cluster,
    upstream: Upstream,
    a: Gateway,
    b: Gateway,
}

impl ClusterPair {
    async fn start(f: impl Fn(TestConfig) -> TestConfig) -> ClusterPair {
        ClusterPair::start_on(Cluster::start, f).await
    }

    /// Two gateways on the cluster `launch` starts.
    async fn start_on(
        launch: fn() -> Cluster,
        f: impl Fn(TestConfig) -> TestConfig,
    ) -> ClusterPair {
        let cluster = tokio::task::spawn_blocking(launch).await.unwrap();
        let upstream = Upstream::start().await;
        let a = Gateway::start(&f(cluster.config(upstream.addr()))).await;
        let b = Gateway::start(&f(cluster.config(upstream.addr()))).await;
        ClusterPair {
            cluster,
            upstream,
            a,
            b,
        }
    }

    fn assert_clean_logs(&self) {
        for gw in [&self.a, &self.b] {
            let logs = gw.logs();
            for bad in ["NOPERM", "CROSSSLOT", "panicked", "non local key"] {
                assert!(!logs.contains(bad), "{bad} in the gateway's log:\n{logs}");
            }
        }
    }
}

fn limited(cfg: TestConfig, max: u32, policy: &str) -> TestConfig {
    session_settings(
        cfg,
        &format!("max_per_user = {max}\non_limit = {}", toml_str(policy)),
    )
}

fn handles_in(list: &Value) -> Vec<String> {
    list.as_array()
        .expect("a JSON array")
        .iter()
        .map(|s| s["handle"].as_str().expect("handle").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_spread_over_the_shards_and_work_on_both_instances() {
    let p = ClusterPair::start(|c| c).await;

    // Logins on both instances; every session works on both.
    let mut alice_cookies = Vec::new();
    for i in 0..4 {
        let gw = if i % 2 == 0 { &p.a } else { &p.b };
        alice_cookies.push(alice(gw).await);
    }
    let bob_cookies = vec![bob(&p.a).await, bob(&p.b).await];
    for cookie in &alice_cookies {
        assert_live(&p.a, cookie, "alice", "alice on a").await;
        assert_live(&p.b, cookie, "alice", "alice on b").await;
    }
    for cookie in &bob_cookies {
        assert_live(&p.a, cookie, "bob", "bob on a").await;
        assert_live(&p.b, cookie, "bob", "bob on b").await;
    }
    let per_node = p.cluster.session_keys_per_node();
    assert_eq!(per_node.iter().sum::<usize>(), 6, "{per_node:?}");
    assert!(
        per_node.iter().filter(|&&n| n > 0).count() >= 2,
        "the session records should sit on more than one node: {per_node:?}"
    );

    // Listing gathers them from every shard: admin API, the user's page, the CLI.
    let all = admin_get_json(&p.b, "/sessions").await;
    assert_eq!(handles_in(&all).len(), 6, "{all}");
    let alices = admin_get_json(&p.a, "/sessions?user=1").await;
    assert_eq!(handles_in(&alices).len(), 4, "{alices}");
    assert_eq!(own_sessions(&p.b, &alice_cookies[0]).await.len(), 4);
    let out = cli_for(&p.a, &["sessions", "list"], &["--json"]).await;
    assert!(out.status.success(), "{}", describe(&out));
    let listed: Value = serde_json::from_slice(&out.stdout).expect("CLI JSON");
    assert_eq!(handles_in(&listed).len(), 6, "{}", describe(&out));

    // A session cached on b, revoked through a's admin API, is refused by b: b's cache
    // heard the invalidation from whichever primary holds the record.
    until_cached(&p.b, &alice_cookies[0]).await;
    let revoked = handle_of(&p.a, &alice_cookies[0]).await;
    let (status, body) = admin_delete(&p.a, &format!("/sessions/{revoked}")).await;
    assert_eq!(status, 200, "{body}");
    assert_refused(&p.b, &alice_cookies[0], "revoked on a, cached on b").await;
    assert_refused(&p.a, &alice_cookies[0], "revoked on a").await;
    assert_live(&p.b, &alice_cookies[1], "alice", "another of alice's").await;

    // A user's sessions, through the CLI: bob's end on both instances.
    until_cached(&p.a, &bob_cookies[1]).await;
    let out = cli_for(&p.b, &["sessions", "revoke"], &["--user", "2"]).await;
    assert!(out.status.success(), "{}", describe(&out));
    for cookie in &bob_cookies {
        assert_refused(&p.a, cookie, "bob revoked by the CLI").await;
        assert_refused(&p.b, cookie, "bob revoked by the CLI").await;
    }

    // Sign out everywhere from b ends alice's remaining sessions on a.
    let resp = logout_json(&p.b, "/logout?scope=all", &alice_cookies[1]).await;
    assert_eq!(resp.status(), 200);
    for cookie in &alice_cookies {
        assert_refused(&p.a, cookie, "alice signed out everywhere").await;
    }
    assert_eq!(p.cluster.session_keys_per_node(), [0, 0, 0]);

    // Everyone's sessions, through the admin API, across the shards.
    let fresh = [alice(&p.a).await, bob(&p.b).await, alice(&p.b).await];
    let (status, body) = admin_delete(&p.b, "/sessions").await;
    assert_eq!(status, 200, "{body}");
    for cookie in &fresh {
        assert_refused(&p.a, cookie, "revoked with everyone's").await;
        assert_refused(&p.b, cookie, "revoked with everyone's").await;
    }
    assert_eq!(p.cluster.session_keys_per_node(), [0, 0, 0]);
    let all = admin_get_json(&p.a, "/sessions").await;
    assert!(handles_in(&all).is_empty(), "{all}");

    // The audit trail (two streams, on different nodes) reads back as one.
    let out = cli_for(&p.a, &["audit", "tail"], &["-n", "200"]).await;
    assert!(out.status.success(), "{}", describe(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    for event in ["login_success", "admin_revoke", "logout_everywhere"] {
        assert!(text.contains(event), "{event} missing: {}", describe(&out));
    }
    // A failed login is counted (username and IP counters, two slots) and refused.
    let resp = login_json_response(&p.a, "alice", "wrong", None).await;
    assert_eq!(resp.status(), 401);
    let out = cli_for(&p.b, &["audit", "tail"], &["-n", "200"]).await;
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("wrong_password"),
        "{}",
        describe(&out)
    );
    p.assert_clean_logs();
}

/// Logs in `user` `n` times at once, alternating the two instances; the cookies of the
/// logins that were let in and how many were refused with 409.
async fn concurrent_logins(p: &ClusterPair, n: usize) -> (Vec<String>, usize) {
    let mut tasks = Vec::new();
    for i in 0..n {
        let url = if i % 2 == 0 {
            p.a.url("/login")
        } else {
            p.b.url("/login")
        };
        tasks.push(tokio::spawn(async move {
            let resp = client()
                .post(url)
                .header("accept", "application/json")
                .header("user-agent", format!("Device/{i}"))
                .json(&serde_json::json!({"username": "alice", "password": "alice-password"}))
                .send()
                .await
                .expect("POST /login");
            (resp.status().as_u16(), cookie_from(&resp, COOKIE_NAME))
        }));
    }
    let mut cookies = Vec::new();
    let mut refused = 0;
    for task in tasks {
        match task.await.unwrap() {
            (200, Some(cookie)) => cookies.push(cookie),
            (409, _) => refused += 1,
            other => panic!("unexpected login answer {other:?}"),
        }
    }
    (cookies, refused)
}

fn alice_index(cluster: &Cluster) -> Vec<String> {
    let key = format!("{PREFIX}user:1:sessions");
    (0..cluster.ports.len())
        .find_map(|node| {
            redis::cmd("ZRANGE")
                .arg(&key)
                .arg(0)
                .arg(-1)
                .query::<Vec<String>>(&mut cluster.connection(node))
                .ok()
                .filter(|handles| !handles.is_empty())
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn evict_oldest_holds_the_limit_across_shards_and_instances() {
    let p = ClusterPair::start(|c| limited(c, 2, "evict_oldest")).await;
    let first = alice(&p.a).await;
    let second = alice(&p.b).await;
    let third = alice(&p.a).await;
    assert_refused(&p.b, &first, "the oldest, evicted").await;
    assert_live(&p.b, &second, "alice", "second").await;
    assert_live(&p.a, &third, "alice", "third").await;
    assert_eq!(alice_index(&p.cluster).len(), 2);

    // Concurrent logins on both instances: exactly the limit survives, the evicted records
    // are gone from every node.
    let (cookies, refused) = concurrent_logins(&p, 6).await;
    assert_eq!((cookies.len(), refused), (6, 0));
    let live = poll_until(
        "two records of alice",
        Duration::from_secs(5),
        || p.cluster.session_keys_per_node().iter().sum::<usize>(),
        |n| *n == 2,
    )
    .await;
    assert_eq!(live, 2);
    assert_eq!(alice_index(&p.cluster).len(), 2);
    let mut accepted = 0;
    for cookie in cookies.iter().chain([&first, &second, &third]) {
        if status_with(&p.a, cookie).await == 200 {
            accepted += 1;
        }
    }
    assert_eq!(accepted, 2, "exactly max_per_user sessions work");
    p.assert_clean_logs();
}

#[tokio::test(flavor = "multi_thread")]
async fn reject_refuses_logins_past_the_limit_even_when_they_race() {
    let p = ClusterPair::start(|c| limited(c, 2, "reject")).await;
    let (cookies, refused) = concurrent_logins(&p, 6).await;
    assert_eq!((cookies.len(), refused), (2, 4), "exactly the limit let in");
    for cookie in &cookies {
        assert_live(&p.a, cookie, "alice", "let in").await;
        assert_live(&p.b, cookie, "alice", "let in").await;
    }
    // A refused login leaves no record behind.
    assert_eq!(p.cluster.session_keys_per_node().iter().sum::<usize>(), 2);
    assert_eq!(alice_index(&p.cluster).len(), 2);

    // After one of them signs out, one login is let in again.
    let resp = logout_json(&p.b, "/logout", &cookies[0]).await;
    assert_eq!(resp.status(), 200);
    let again = alice(&p.a).await;
    assert_live(&p.b, &again, "alice", "after a logout").await;
    assert_eq!(
        login_as_response(&p.b, "alice", "alice-password", "OneTooMany/1.0")
            .await
            .status(),
        409
    );
    p.assert_clean_logs();
}

#[tokio::test(flavor = "multi_thread")]
async fn check_config_accepts_a_cluster_and_readiness_covers_every_primary() {
    let p = ClusterPair::start(|c| c).await;
    let path = config_path(&p.a);
    let out = run_gateway_cli(&["check-config", "--config", path.to_str().unwrap()], None);
    assert!(out.status.success(), "{}", describe(&out));
    let resp = client().get(p.a.admin_url("/readyz")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    // The tracker names the primaries it follows.
    let logs = poll_until(
        "the tracker's start in the log",
        Duration::from_secs(10),
        || p.a.logs(),
        |l| l.contains("on the cluster's primaries"),
    )
    .await;
    for port in &p.cluster.ports {
        assert!(logs.contains(&format!("127.0.0.1:{port}")), "{logs}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cache_starts_over_when_a_primary_joins_and_stops_when_one_is_lost() {
    let mut p = ClusterPair::start(|c| c).await;
    let cookie = alice(&p.a).await;
    until_cached(&p.b, &cookie).await;

    // A new primary could take writes for any slot once slots move to it: the tracker notices
    // it joined, empties the cache and tracks the four primaries from then on.
    let flushes = metric(&p.b, CACHE_FLUSHES).await;
    let joined = format!("127.0.0.1:{}", p.cluster.add_primary());
    let logs = poll_until(
        "tracking over the four primaries",
        Duration::from_secs(20),
        || p.b.logs(),
        |l| {
            l.contains("the cluster's primaries changed")
                && l.lines().any(|line| {
                    line.contains("on the cluster's primaries") && line.contains(&joined)
                })
        },
    )
    .await;
    until_metric_above(
        &p.b,
        CACHE_FLUSHES,
        flushes,
        "the cache flushed after the join",
    )
    .await;
    assert!(!logs.contains("panicked"), "{logs}");
    until_cached(&p.b, &cookie).await;
    let revoked = handle_of(&p.a, &cookie).await;
    let (status, body) = admin_delete(&p.a, &format!("/sessions/{revoked}")).await;
    assert_eq!(status, 200, "{body}");
    assert_refused(&p.b, &cookie, "revoked after the join").await;

    // A primary crashes: its tracking connection is gone, so the cache is emptied and not
    // used; sessions on the surviving primaries are still checked (against Redis).
    let survivor = alice(&p.a).await;
    until_cached(&p.b, &survivor).await;
    let holder = (0..3)
        .find(|&node| {
            !p.cluster
                .keys_on(node, &format!("{PREFIX}session:*"))
                .is_empty()
        })
        .expect("a node holds the session");
    let victim = (0..3).find(|&node| node != holder).unwrap();
    let flushes = metric(&p.b, CACHE_FLUSHES).await;
    p.cluster.kill(victim);
    until_metric_above(
        &p.b,
        CACHE_FLUSHES,
        flushes,
        "the cache flushed after the crash",
    )
    .await;
    for _ in 0..5 {
        let hits = metric(&p.b, CACHE_HITS).await;
        assert_eq!(status_with(&p.b, &survivor).await, 200, "{}", p.b.logs());
        assert_eq!(
            metric(&p.b, CACHE_HITS).await,
            hits,
            "no answer from the cache"
        );
    }
    assert!(!p.b.logs().contains("panicked"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cluster_over_tls_serves_sessions_on_both_instances() {
    let p = ClusterPair::start_on(Cluster::start_tls, |c| c).await;
    // Ready means every primary answered a PING over TLS.
    for gw in [&p.a, &p.b] {
        wait_for_status(&gw.admin_url("/readyz"), 200, READY_TIMEOUT).await;
    }

    // Logins on a work on b. Session keys are random, so they land on different shards:
    // keep logging in until two nodes hold some (almost always within a few logins).
    let mut cookies = Vec::new();
    loop {
        let cookie = alice(&p.a).await;
        assert_live(&p.b, &cookie, "alice", "logged in on a, used on b").await;
        cookies.push(cookie);
        let per_node = p.cluster.session_keys_per_node();
        assert_eq!(
            per_node.iter().sum::<usize>(),
            cookies.len(),
            "{per_node:?}"
        );
        if per_node.iter().filter(|&&n| n > 0).count() >= 2 {
            break;
        }
        assert!(
            cookies.len() < 20,
            "the session records should sit on more than one node: {per_node:?}"
        );
    }

    // A logout on a is refused on b, even once b cached the session: b's tracking
    // connections to every primary run over TLS too.
    let cookie = &cookies[0];
    until_cached(&p.b, cookie).await;
    let resp = logout_json(&p.a, "/logout", cookie).await;
    assert_eq!(resp.status(), 200);
    assert_refused(&p.b, cookie, "logged out on a, cached on b").await;
    assert_refused(&p.a, cookie, "logged out on a").await;
    assert_live(&p.b, &cookies[1], "alice", "another of alice's sessions").await;
    p.assert_clean_logs();

    // A gateway trusting another CA refuses the nodes' certificate: protected requests and
    // logins get 503 (never a 500 or a redirect to login), it is not ready, and its log names
    // the certificate problem.
    let dir = tempfile::tempdir().unwrap();
    let (wrong_ca, _, _) = make_certificates(dir.path(), "wrong");
    let wrong = Gateway::start(
        &p.cluster
            .config_trusting(p.upstream.addr(), Some(&wrong_ca)),
    )
    .await;
    assert_eq!(
        status_with(&wrong, &cookies[1]).await,
        503,
        "{}",
        wrong.logs()
    );
    let resp = login_json_response(&wrong, "alice", "alice-password", None).await;
    assert_eq!(resp.status(), 503);
    let resp = client()
        .get(wrong.admin_url("/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    // The gateway's own line (not only the redis crate's per-node warnings) says why.
    let logs = poll_until(
        "the certificate error in the gateway's log",
        Duration::from_secs(10),
        || wrong.logs(),
        |l| {
            l.lines().any(|line| {
                line.contains("session store unavailable: redis cluster")
                    && line.contains("invalid peer certificate: UnknownIssuer")
            })
        },
    )
    .await;
    assert!(!logs.contains("panicked"), "{logs}");
}
