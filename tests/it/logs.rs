//! `[log]`: JSON lines for a log collector, the level, the access log, and the metrics
//! operators watch beside them.

use std::io::{Read, Write};
use std::time::Duration;

use serde_json::Value;

use crate::session_helpers::*;
use crate::support::*;

fn stderr_text(gw: &Gateway) -> String {
    std::fs::read_to_string(gw.dir().join("stderr.log")).unwrap_or_default()
}

/// Every non-empty line of `text` as JSON; panics naming the first line that is not an object.
fn json_lines(what: &str, text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| match serde_json::from_str::<Value>(l) {
            Ok(v @ Value::Object(_)) => v,
            _ => panic!("{what} line is not a JSON object: {l:?}"),
        })
        .collect()
}

/// The access lines (they have a `status`; audit events have an `event`).
fn access_lines(lines: &[Value]) -> Vec<&Value> {
    lines.iter().filter(|l| l.get("status").is_some()).collect()
}

fn id_of(resp: &reqwest::Response) -> String {
    resp.headers()["x-request-id"].to_str().unwrap().to_string()
}

const JSON_EVERYWHERE: &str = "[log]\nformat = \"json\"\naccess = \"stdout\"\n";

#[tokio::test(flavor = "multi_thread")]
async fn with_json_every_line_on_stdout_and_stderr_is_one_object() {
    // No validation cache: the outage below must reach the session check at once.
    let mut s =
        Stack::start_with(|c| session_settings(c, "cache = false").extra(JSON_EVERYWHERE)).await;
    let cookie = login_alice(&s.gw).await;
    assert_eq!(status_with(&s.gw, &cookie).await, 200);
    // A forged cookie, a refused path, a public file, an unknown user: audit, warn and access
    // lines of every kind.
    assert_eq!(status_with(&s.gw, "forged.value").await, 401);
    // (A raw request: a URL parser would resolve the dot segment before sending it.)
    let mut raw = std::net::TcpStream::connect(s.gw.host()).unwrap();
    write!(
        raw,
        "GET /static/%2e%2e/x HTTP/1.1\r\nHost: {}\r\n\r\n",
        s.gw.host()
    )
    .unwrap();
    let mut head = [0u8; 12];
    raw.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 400");
    client()
        .get(s.gw.url("/static/a.css"))
        .send()
        .await
        .unwrap();
    assert!(login_json(&s.gw, "nobody", "x").await.is_none());
    // A store outage makes the gateway warn; then a graceful stop logs its shutdown.
    s.redis.stop();
    assert_eq!(status_with(&s.gw, &cookie).await, 503);
    s.gw.terminate();
    s.gw.wait_exit(Duration::from_secs(30));

    let stdout = json_lines("stdout", &stdout_text(&s.gw));
    let stderr = json_lines("stderr", &stderr_text(&s.gw));
    assert!(
        stdout.iter().any(|l| l["event"] == "login_success"),
        "the audit is on stdout: {stdout:?}"
    );
    assert!(access_lines(&stdout).len() >= 6, "{stdout:?}");
    // The operational log, pingora's own lines included, has the collector's fields.
    assert!(stderr.len() >= 2, "{stderr:?}");
    for line in &stderr {
        for field in ["time", "level", "target", "message"] {
            assert!(line[field].is_string(), "{field} missing in {line}");
        }
    }
    assert!(
        stderr.iter().any(|l| l["level"] == "warn"
            && l["message"]
                .as_str()
                .unwrap()
                .contains("session check failed")),
        "{stderr:?}"
    );
    assert!(
        stderr
            .iter()
            .any(|l| l["target"].as_str().unwrap().starts_with("pingora")),
        "pingora's own lines are JSON too: {stderr:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_access_line_says_who_got_what_and_nothing_secret() {
    let s = Stack::start_with(|c| c.extra(JSON_EVERYWHERE)).await;
    let cookie = login_alice(&s.gw).await;
    let handle = handle_of(&s.gw, &cookie).await;
    let resp = get_with_cookie(&s.gw, "/app/report?token=s3cr3t", &cookie).await;
    assert_eq!(resp.status(), 200);
    let id = id_of(&resp);
    let body_len = resp.bytes().await.unwrap().len();
    let refused = client()
        .get(s.gw.url("/app/report"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    let refused_id = id_of(&refused);

    let lines = poll_until(
        "both access lines",
        Duration::from_secs(10),
        || json_lines("stdout", &stdout_text(&s.gw)),
        |lines| {
            let ids: Vec<&Value> = access_lines(lines)
                .into_iter()
                .map(|l| &l["request_id"])
                .collect();
            ids.contains(&&Value::from(id.as_str()))
                && ids.contains(&&Value::from(refused_id.as_str()))
        },
    )
    .await;
    let line = access_lines(&lines)
        .into_iter()
        .find(|l| l["request_id"] == id.as_str())
        .unwrap()
        .clone();
    assert_eq!(line["client_ip"], "127.0.0.1");
    assert_eq!(line["method"], "GET");
    assert_eq!(line["path"], "/app/report", "no query string by default");
    assert_eq!(line["status"], 200);
    assert_eq!(line["bytes"], body_len);
    assert!(line["duration_ms"].as_f64().unwrap() > 0.0, "{line}");
    assert_eq!(line["upstream"], s.upstream.addr().to_string());
    assert_eq!(line["user_id"], "1");
    assert_eq!(line["session"], &handle[..8]);
    assert!(line["time"].as_str().unwrap().ends_with('Z'));

    let refused = access_lines(&lines)
        .into_iter()
        .find(|l| l["request_id"] == refused_id.as_str())
        .unwrap();
    assert_eq!(refused["status"], 401);
    assert_eq!(refused["user_id"], Value::Null);
    assert_eq!(refused["upstream"], Value::Null, "the app never saw it");

    let everything = format!("{}{}", stdout_text(&s.gw), stderr_text(&s.gw));
    assert!(!everything.contains("s3cr3t"));
    for secret in cookie_derivatives(&cookie) {
        assert!(!everything.contains(&secret), "the session id leaked");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_access_log_can_go_to_a_file_with_the_query_and_as_text() {
    let s =
        Stack::start_with(|c| c.extra("[log]\naccess = \"./access.log\"\naccess_query = true\n"))
            .await;
    let resp = client()
        .get(s.gw.url("/static/a.css?v=3"))
        .send()
        .await
        .unwrap();
    let id = id_of(&resp);
    let path = s.gw.dir().join("access.log");
    let text = poll_until(
        "the access line in the file",
        Duration::from_secs(10),
        || std::fs::read_to_string(&path).unwrap_or_default(),
        |t| t.contains(&id),
    )
    .await;
    let line = text.lines().find(|l| l.contains(&id)).unwrap();
    // Text: a combined-log-like line with the query, since it was asked for.
    assert!(
        line.contains(" 127.0.0.1 \"GET /static/a.css?v=3\" 200 "),
        "{line}"
    );
    assert!(
        line.contains(&format!("upstream={}", s.upstream.addr())),
        "{line}"
    );
    assert!(line.contains("user=- session=-"), "{line}");
    assert!(
        !stdout_text(&s.gw).contains(&id),
        "access lines go to the file only"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_level_is_set_in_the_file_and_rust_log_overrides_it() {
    // The start-up line about the listeners is info.
    let quiet = Stack::start_with(|c| c.extra("[log]\nlevel = \"warn\"\n")).await;
    let loud =
        Stack::start_with(|c| c.extra("[log]\nlevel = \"warn\"\n").env("RUST_LOG", "info")).await;
    let started = |gw: &Gateway| stderr_text(gw).contains(" INFO ");
    poll_until(
        "the info lines",
        Duration::from_secs(10),
        || started(&loud.gw),
        |s| *s,
    )
    .await;
    assert!(!started(&quiet.gw), "{}", stderr_text(&quiet.gw));
}

/// A raw keep-alive connection that has made one request and stays open.
fn open_keep_alive(gw: &Gateway) -> std::net::TcpStream {
    let mut conn = std::net::TcpStream::connect(gw.host()).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        conn,
        "GET /static/a.css HTTP/1.1\r\nHost: {}\r\n\r\n",
        gw.host()
    )
    .unwrap();
    let mut buf = [0u8; 512];
    let n = conn.read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    conn
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_show_durations_answers_connections_and_session_ends() {
    let s = Stack::start_with(|c| {
        with_admin_token(session_settings(
            c,
            "max_per_user = 1\non_limit = \"evict_oldest\"",
        ))
    })
    .await;
    let first = alice(&s.gw).await;
    let second = alice(&s.gw).await; // evicts `first`
    assert_eq!(status_with(&s.gw, &first).await, 401);
    assert_eq!(status_with(&s.gw, &second).await, 200);
    let b = bob(&s.gw).await;
    let (status, _) =
        admin_delete(&s.gw, &format!("/sessions/{}", handle_of(&s.gw, &b).await)).await;
    assert_eq!(status, 200);
    let logout = logout_json(&s.gw, "/logout", &second).await;
    assert_eq!(logout.status(), 200);
    let connections: Vec<_> = (0..3).map(|_| open_keep_alive(&s.gw)).collect();

    let text = metrics_text(&s.gw).await;
    let check = |series: &str, expected: f64| {
        assert_eq!(sample_in(&text, series), expected, "{series} in\n{text}");
    };
    check("gateway_sessions_created_total", 3.0);
    check("gateway_sessions_ended_total{reason=\"evicted\"}", 1.0);
    check("gateway_sessions_ended_total{reason=\"revoked\"}", 1.0);
    check("gateway_sessions_ended_total{reason=\"logout\"}", 1.0);
    check("gateway_login_duration_seconds_count", 3.0);
    check("gateway_upstream_responses_total{class=\"2xx\"}", 4.0);
    check(
        "gateway_request_duration_seconds_count{outcome=\"proxied\"}",
        1.0,
    );
    check(
        "gateway_request_duration_seconds_count{outcome=\"unauthenticated\"}",
        1.0,
    );
    check("gateway_log_lines_dropped_total{log=\"audit\"}", 0.0);
    assert!(
        sample_in(&text, "gateway_open_connections") >= 3.0,
        "three keep-alive connections are open:\n{text}"
    );
    drop(connections);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while metric(&s.gw, "gateway_open_connections").await >= 3.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "closed connections still counted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
