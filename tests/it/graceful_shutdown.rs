//! SIGTERM drains: health turns 503 at once and responses close their connections while the
//! instance keeps serving for `drain_delay`; then it stops taking new work (connection refused),
//! requests already being proxied finish, and the process exits within
//! `drain_delay + grace_period + shutdown_timeout`. With two gateways sharing Redis behind a load balancer,
//! a rolling restart loses no request.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::*;

const DRAIN_DELAY_SECS: u64 = 1;
const GRACE_PERIOD_SECS: u64 = 2;
const SHUTDOWN_TIMEOUT_SECS: u64 = 1;
/// Slack for a loaded 2-core machine on top of grace_period + shutdown_timeout.
const EXIT_MARGIN: Duration = Duration::from_secs(10);

struct Pair {
    _redis: RedisServer,
    upstream: Upstream,
    a: Gateway,
    b: Gateway,
    cookie: String,
}

async fn pair() -> Pair {
    let redis = RedisServer::start();
    let upstream = Upstream::start().await;
    let cfg = TestConfig::new(&redis.url(), upstream.addr())
        .replace(
            "grace_period = \"1s\"",
            &format!(
                "drain_delay = \"{DRAIN_DELAY_SECS}s\"\ngrace_period = \"{GRACE_PERIOD_SECS}s\""
            ),
        )
        .replace(
            "shutdown_timeout = \"1s\"",
            &format!("shutdown_timeout = \"{SHUTDOWN_TIMEOUT_SECS}s\""),
        );
    let a = Gateway::start(&cfg).await;
    let mut cfg_b = cfg.clone();
    cfg_b.reassign_ports();
    let b = Gateway::start(&cfg_b).await;
    let cookie = login_alice(&a).await;
    // Shared Redis and secret: the session works on both instances.
    let resp = get_with_cookie(&b, "/warmup", &cookie).await;
    assert_eq!(resp.status(), 200, "session from A does not work on B");
    Pair {
        _redis: redis,
        upstream,
        a,
        b,
        cookie,
    }
}

/// A client that opens a new connection per request, as a load balancer health-checking and
/// spreading connections would; no keep-alive races in the measurements.
fn fresh_connection_client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(timeout)
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

fn exit_bound() -> Duration {
    Duration::from_secs(DRAIN_DELAY_SECS + GRACE_PERIOD_SECS + SHUTDOWN_TIMEOUT_SECS) + EXIT_MARGIN
}

/// Polls A's `/_gateway/health` until it answers 503 or refuses connections.
async fn wait_until_not_healthy(gw: &Gateway) -> String {
    let probe = fresh_connection_client(Duration::from_secs(5));
    let deadline = Instant::now() + Duration::from_secs(GRACE_PERIOD_SECS) + EXIT_MARGIN;
    loop {
        match probe.get(gw.url("/_gateway/health")).send().await {
            Ok(r) if r.status() == 503 => return "503".into(),
            Ok(r) if r.status() == 200 => {}
            Ok(r) => panic!("health answered {} during shutdown", r.status()),
            Err(e) if e.is_connect() => return "connection refused".into(),
            // Connection accepted by the kernel while the listener was being closed.
            Err(_) => {}
        }
        assert!(
            Instant::now() < deadline,
            "health kept answering 200 after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn in_flight_requests_finish_and_the_process_exits_in_time() {
    let mut p = pair().await;
    let http = fresh_connection_client(Duration::from_secs(60));

    // Slow requests in flight on A: wait until the upstream has received every one of them,
    // so they are certainly being proxied when the signal arrives.
    let mut tasks = Vec::new();
    for i in 0..4 {
        let req = http
            .get(p.a.url(&format!("/slow?ms=800&i={i}")))
            .header("cookie", session_cookie_header(&p.cookie));
        tasks.push(tokio::spawn(async move { req.send().await }));
    }
    let deadline = Instant::now() + READY_TIMEOUT;
    while p
        .upstream
        .requests()
        .iter()
        .filter(|r| r.starts_with("GET /slow?ms=800"))
        .count()
        < 4
    {
        assert!(
            Instant::now() < deadline,
            "slow requests never reached the upstream"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    p.a.terminate();
    let sent_at = Instant::now();

    let how = wait_until_not_healthy(&p.a).await;
    assert_eq!(
        how, "503",
        "health must turn 503 as soon as draining starts"
    );

    for (i, t) in tasks.into_iter().enumerate() {
        let resp = t
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("in-flight request {i} was cut off by SIGTERM: {e:?}"));
        assert_eq!(resp.status(), 200, "in-flight request {i}");
        let e = echo(resp).await;
        assert_eq!(e.uri, format!("/slow?ms=800&i={i}"));
        assert_eq!(e.header("x-auth-user").as_deref(), Some("alice"));
    }

    // While draining, A still serves but closes every connection; after drain_delay it takes
    // no new requests at all.
    let deadline = sent_at + Duration::from_secs(DRAIN_DELAY_SECS) + EXIT_MARGIN;
    loop {
        match http
            .get(p.a.url("/after"))
            .header("cookie", session_cookie_header(&p.cookie))
            .send()
            .await
        {
            Err(_) => break,
            Ok(r) => {
                assert_eq!(
                    r.headers()
                        .get("connection")
                        .map(|v| v.to_str().unwrap_or("")),
                    Some("close"),
                    "a draining gateway must not offer keep-alive"
                );
            }
        }
        assert!(
            Instant::now() < deadline,
            "A still took new requests long after drain_delay"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let status = p.a.wait_exit(exit_bound()).unwrap_or_else(|| {
        panic!(
            "A still running {:?} after SIGTERM (drain_delay {DRAIN_DELAY_SECS}s + grace_period \
             {GRACE_PERIOD_SECS}s + shutdown_timeout {SHUTDOWN_TIMEOUT_SECS}s); logs:\n{}",
            sent_at.elapsed(),
            p.a.logs()
        )
    });
    assert!(
        status.success(),
        "A exited with {status}; logs:\n{}",
        p.a.logs()
    );

    // B, sharing Redis, carries on with the same session.
    let resp = get_with_cookie(&p.b, "/after-restart", &p.cookie).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        echo(resp).await.header("x-auth-user").as_deref(),
        Some("alice")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_request_longer_than_grace_is_not_left_hanging() {
    // A request still running when grace_period + shutdown_timeout are over may be cut off,
    // but the process must exit on time and the client must not hang.
    let mut p = pair().await;
    let http = fresh_connection_client(Duration::from_secs(60));
    let req = http
        .get(p.a.url("/slow?ms=30000"))
        .header("cookie", session_cookie_header(&p.cookie));
    let task = tokio::spawn(async move { req.send().await });
    let deadline = Instant::now() + READY_TIMEOUT;
    while !p
        .upstream
        .requests()
        .iter()
        .any(|r| r.starts_with("GET /slow?ms=30000"))
    {
        assert!(
            Instant::now() < deadline,
            "slow request never reached the upstream"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    p.a.terminate();
    let status =
        p.a.wait_exit(exit_bound())
            .unwrap_or_else(|| panic!("A did not exit in time; logs:\n{}", p.a.logs()));
    assert!(status.success(), "A exited with {status}");
    // The client learns about it (error or an error status), no hang.
    let outcome = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("client still hanging after the gateway exited")
        .unwrap();
    if let Ok(resp) = outcome {
        assert_ne!(resp.status(), 200, "a 30s request cannot have completed");
    }
}

/// What the load balancer saw for one request.
#[derive(Debug)]
#[allow(dead_code)] // fields are read through Debug in failure messages
enum Outcome {
    ServedByA,
    /// Sent to B: A had refused a connection or its health check had failed.
    FailedOverToB,
    /// A accepted the TCP connection but closed it without any response (it was shutting
    /// down); the request was retried on B.
    DroppedByAThenB(String),
    Failed(String),
}

#[tokio::test(flavor = "multi_thread")]
async fn rolling_restart_behind_a_load_balancer_loses_no_request() {
    let mut p = pair().await;
    let a_down = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let served_by_a = Arc::new(AtomicUsize::new(0));
    let outcomes: Arc<Mutex<Vec<(String, Outcome)>>> = Arc::default();

    let mut workers = Vec::new();
    for w in 0..4 {
        let (a_url, b_url) = (p.a.url(""), p.b.url(""));
        let cookie = session_cookie_header(&p.cookie);
        let (a_down, stop, outcomes, served_by_a) = (
            a_down.clone(),
            stop.clone(),
            outcomes.clone(),
            served_by_a.clone(),
        );
        workers.push(tokio::spawn(async move {
            let http = fresh_connection_client(Duration::from_secs(30));
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let path = format!("/slow?ms={}&w={w}&n={n}", n % 3 * 40);
                let send = |base: &str| {
                    http.get(format!("{base}{path}"))
                        .header("cookie", cookie.clone())
                        .send()
                };
                let check = |r: reqwest::Result<reqwest::Response>| async move {
                    match r {
                        Ok(resp) if resp.status() == 200 => {
                            let e = echo(resp).await;
                            if e.header("x-auth-user").as_deref() == Some("alice") {
                                Ok(())
                            } else {
                                Err(format!("no identity upstream: {:?}", e.headers))
                            }
                        }
                        Ok(resp) => {
                            let s = resp.status();
                            Err(format!("{s} {}", resp.text().await.unwrap_or_default()))
                        }
                        Err(e) => Err(format!("{e:?}")),
                    }
                };
                let outcome = if a_down.load(Ordering::SeqCst) {
                    match check(send(&b_url).await).await {
                        Ok(()) => Outcome::FailedOverToB,
                        Err(e) => Outcome::Failed(format!("B: {e}")),
                    }
                } else {
                    match send(&a_url).await {
                        Err(e) if e.is_connect() => {
                            a_down.store(true, Ordering::SeqCst);
                            match check(send(&b_url).await).await {
                                Ok(()) => Outcome::FailedOverToB,
                                Err(e) => Outcome::Failed(format!("B after refusal: {e}")),
                            }
                        }
                        Err(e) if !e.is_timeout() => {
                            // No response at all from A: an LB retries this on the next backend.
                            let why = format!("{e:?}");
                            match check(send(&b_url).await).await {
                                Ok(()) => Outcome::DroppedByAThenB(why),
                                Err(e) => Outcome::Failed(format!("B after A dropped: {e}")),
                            }
                        }
                        r => match check(r).await {
                            Ok(()) => {
                                served_by_a.fetch_add(1, Ordering::SeqCst);
                                Outcome::ServedByA
                            }
                            Err(e) => Outcome::Failed(format!("A: {e}")),
                        },
                    }
                };
                outcomes.lock().unwrap().push((path.clone(), outcome));
            }
        }));
    }

    // The load balancer's health check: A leaves the rotation as soon as its health endpoint
    // says 503 or refuses connections.
    let health = {
        let (a_down, stop, url) = (a_down.clone(), stop.clone(), p.a.url("/_gateway/health"));
        tokio::spawn(async move {
            let probe = fresh_connection_client(Duration::from_secs(5));
            while !stop.load(Ordering::SeqCst) && !a_down.load(Ordering::SeqCst) {
                match probe.get(&url).send().await {
                    Ok(r) if r.status() == 200 => {}
                    Ok(_) => a_down.store(true, Ordering::SeqCst),
                    Err(e) if e.is_connect() => a_down.store(true, Ordering::SeqCst),
                    Err(_) => {}
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        })
    };

    // Let A serve some load first.
    let deadline = Instant::now() + READY_TIMEOUT;
    while served_by_a.load(Ordering::SeqCst) < 20 {
        assert!(Instant::now() < deadline, "load loop made no progress on A");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    p.a.terminate();
    let status =
        p.a.wait_exit(exit_bound())
            .unwrap_or_else(|| panic!("A did not exit in time under load; logs:\n{}", p.a.logs()));
    assert!(status.success(), "A exited with {status}");
    // Keep the load going on B for a bit after A is gone.
    let after = outcomes.lock().unwrap().len();
    let deadline = Instant::now() + READY_TIMEOUT;
    while outcomes.lock().unwrap().len() < after + 20 {
        assert!(Instant::now() < deadline, "load loop made no progress on B");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.await.unwrap();
    }
    health.await.unwrap();

    let outcomes = std::mem::take(&mut *outcomes.lock().unwrap());
    let failed: Vec<&(String, Outcome)> = outcomes
        .iter()
        .filter(|(_, o)| matches!(o, Outcome::Failed(_)))
        .collect();
    let to_b = outcomes
        .iter()
        .filter(|(_, o)| matches!(o, Outcome::FailedOverToB))
        .count();
    let dropped: Vec<&(String, Outcome)> = outcomes
        .iter()
        .filter(|(_, o)| matches!(o, Outcome::DroppedByAThenB(_)))
        .collect();
    eprintln!(
        "{} requests: {} served by A, {to_b} sent to B, {} dropped by A and retried, {} failed",
        outcomes.len(),
        served_by_a.load(Ordering::SeqCst),
        dropped.len(),
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "requests failed across the restart: {failed:#?}\nA logs:\n{}",
        p.a.logs()
    );
    assert!(to_b > 0, "nothing was sent to B");

    // A request A dropped without answering must never have been forwarded by A: otherwise
    // the retry on B ran it twice (and a non-idempotent one would have been lost or doubled).
    let mut seen: HashMap<String, usize> = HashMap::new();
    for r in p.upstream.requests() {
        *seen.entry(r).or_default() += 1;
    }
    for (path, o) in &dropped {
        let n = seen.get(&format!("GET {path}")).copied().unwrap_or(0);
        assert_eq!(
            n, 1,
            "{path} was dropped by A ({o:?}) yet reached the upstream {n} times"
        );
    }
    // Strictly, a draining instance should not drop accepted connections at all: the load
    // balancer had no warning (health was still 200 or the connection was already open).
    assert!(
        dropped.is_empty(),
        "A accepted connections during shutdown and closed them without a response \
         (the client saw a reset, not a refusal): {dropped:#?}"
    );
}

/// A client that connected just before SIGTERM (connection established, request not yet
/// written) still gets its answer: the connection was accepted before the drain started, and
/// a load balancer cannot know it should retry it elsewhere.
#[tokio::test(flavor = "multi_thread")]
async fn connection_opened_before_sigterm_is_answered() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut p = pair().await;
    let mut stream = tokio::net::TcpStream::connect(p.a.host()).await.unwrap();
    p.a.terminate();
    // Wait until A has started shutting down (health no longer 200).
    let how = wait_until_not_healthy(&p.a).await;
    let request = format!(
        "GET /slow?ms=10&early=1 HTTP/1.1\r\nHost: {}\r\nCookie: {}\r\n\r\n",
        p.a.host(),
        session_cookie_header(&p.cookie)
    );
    let write = stream.write_all(request.as_bytes()).await;
    let mut response = Vec::new();
    let read = tokio::time::timeout(exit_bound(), stream.read_to_end(&mut response)).await;
    let text = String::from_utf8_lossy(&response).into_owned();
    assert!(
        write.is_ok() && text.starts_with("HTTP/1.1 200"),
        "a connection opened before SIGTERM got no answer (health after SIGTERM: {how}; \
         write: {write:?}; read: {read:?}); response: {text:?}"
    );
    let status =
        p.a.wait_exit(exit_bound())
            .unwrap_or_else(|| panic!("A did not exit in time; logs:\n{}", p.a.logs()));
    assert!(status.success());
}
