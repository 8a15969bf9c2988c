//! `gateway sessions list|revoke` and `gateway audit tail`, run against the
//! same config file as a running gateway.

use crate::session_helpers::*;
use crate::support::*;

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn lines(out: &std::process::Output) -> Vec<String> {
    stdout(out)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_list_prints_one_line_per_session() {
    let s = Stack::start().await;
    let a1 = alice(&s.gw).await;
    let a2 = login_as(&s.gw, "alice", "alice-password", "AlicePhone/7.2").await;
    let b1 = bob(&s.gw).await;
    let h_a1 = handle_of(&s.gw, &a1).await;
    let h_a2 = handle_of(&s.gw, &a2).await;
    let h_b1 = handle_of(&s.gw, &b1).await;

    let out = cli_for(&s.gw, &["sessions", "list"], &[]).await;
    assert!(out.status.success(), "{}", describe(&out));
    let all = lines(&out);
    assert_eq!(all.len(), 3, "{}", describe(&out));
    for (handle, user, ua) in [
        (&h_a1, "alice", "AliceBrowser/1.0"),
        (&h_a2, "alice", "AlicePhone/7.2"),
        (&h_b1, "bob", "BobBrowser/2.0"),
    ] {
        let line = all
            .iter()
            .find(|l| l.contains(handle.as_str()))
            .unwrap_or_else(|| panic!("no line for {handle}: {}", describe(&out)));
        assert!(line.contains(user), "{line}");
        assert!(line.contains(ua), "{line}");
        assert!(line.contains("127.0.0.1"), "{line}");
    }
    let text = stdout(&out);
    for c in [&a1, &a2, &b1] {
        for secret in cookie_derivatives(c) {
            assert!(
                !text.contains(&secret),
                "CLI output contains cookie material"
            );
        }
    }
    // Nothing of the audit trail or logging ends up on stdout.
    assert!(!text.contains("\"event\""), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_list_filters_by_user() {
    let s = Stack::start().await;
    let a1 = alice(&s.gw).await;
    let _a2 = alice(&s.gw).await;
    let b1 = bob(&s.gw).await;
    let h_b1 = handle_of(&s.gw, &b1).await;
    let h_a1 = handle_of(&s.gw, &a1).await;

    let out = cli_for(&s.gw, &["sessions", "list"], &["--user", "1"]).await;
    assert!(out.status.success(), "{}", describe(&out));
    let alice_lines = lines(&out);
    assert_eq!(alice_lines.len(), 2, "{}", describe(&out));
    assert!(alice_lines.iter().all(|l| l.contains("alice")));
    assert!(alice_lines.iter().any(|l| l.contains(&h_a1)));
    assert!(!stdout(&out).contains(&h_b1));
    assert!(!stdout(&out).contains("bob"));

    let out = cli_for(&s.gw, &["sessions", "list"], &["--user", "2"]).await;
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(lines(&out).len(), 1, "{}", describe(&out));
    assert!(stdout(&out).contains(&h_b1));

    let out = cli_for(&s.gw, &["sessions", "list"], &["--user", "999"]).await;
    assert!(out.status.success(), "{}", describe(&out));
    assert!(lines(&out).is_empty(), "{}", describe(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_list_json() {
    let s = Stack::start().await;
    let a1 = alice(&s.gw).await;
    let b1 = bob(&s.gw).await;

    let out = cli_for(&s.gw, &["sessions", "list"], &["--json"]).await;
    assert!(out.status.success(), "{}", describe(&out));
    let v: serde_json::Value = serde_json::from_str(stdout(&out).trim())
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", describe(&out)));
    let items = v.as_array().expect("JSON array");
    assert_eq!(items.len(), 2, "{v:#}");
    for item in items {
        for f in [
            "handle",
            "user_id",
            "username",
            "created_at",
            "last_seen",
            "ip",
            "user_agent",
        ] {
            assert!(item.get(f).is_some(), "{f} missing in {item}");
        }
    }
    let text = stdout(&out);
    for c in [&a1, &b1] {
        assert!(!text.contains(c.as_str()), "JSON contains a cookie");
    }

    let out = cli_for(&s.gw, &["sessions", "list"], &["--json", "--user", "2"]).await;
    assert!(out.status.success(), "{}", describe(&out));
    let v: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    let items = v.as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["username"], "bob");
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_revoke_reports_and_validates() {
    let s = Stack::start().await;
    let a1 = alice(&s.gw).await;
    let h_a1 = handle_of(&s.gw, &a1).await;

    // Not a handle: refused, nothing revoked.
    let out = cli_for(&s.gw, &["sessions", "revoke"], &["--handle", "zzz"]).await;
    assert!(!out.status.success(), "{}", describe(&out));
    assert_live(&s.gw, &a1, "alice", "after a bad handle").await;

    // No target at all: usage error.
    let out = cli_for(&s.gw, &["sessions", "revoke"], &[]).await;
    assert!(!out.status.success(), "{}", describe(&out));
    assert_live(&s.gw, &a1, "alice", "after a usage error").await;

    // Unknown handle: nothing to revoke.
    let unknown = "f".repeat(64);
    let out = cli_for(&s.gw, &["sessions", "revoke"], &["--handle", &unknown]).await;
    assert!(stdout(&out).contains("revoked 0"), "{}", describe(&out));

    let out = cli_for(&s.gw, &["sessions", "revoke"], &["--handle", &h_a1]).await;
    assert!(out.status.success(), "{}", describe(&out));
    assert!(stdout(&out).contains("revoked 1"), "{}", describe(&out));
    assert_refused(&s.gw, &a1, "revoked by the CLI").await;

    let out = cli_for(&s.gw, &["sessions", "list"], &[]).await;
    assert!(lines(&out).is_empty(), "{}", describe(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn audit_tail_prints_recent_events() {
    let s = Stack::start().await;
    let a1 = alice(&s.gw).await;
    let resp = login_as_response(&s.gw, "bob", "not-bobs-password", "Guesser/0.1").await;
    assert_eq!(resp.status(), 401);
    let resp = logout_json(&s.gw, "/logout", &a1).await;
    assert_eq!(resp.status(), 200);
    // The stream copy is written off the request path.
    poll_until(
        "three audit events in Redis",
        std::time::Duration::from_secs(10),
        || stream_events(&s.redis, "whalefall:").len(),
        |n| *n >= 3,
    )
    .await;

    let out = cli_for(&s.gw, &["audit", "tail"], &["-n", "20"]).await;
    assert!(out.status.success(), "{}", describe(&out));
    let events: Vec<serde_json::Value> = lines(&out)
        .iter()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("not a JSON event ({e}): {l}\n{}", describe(&out)))
        })
        .collect();
    let names: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    assert_eq!(
        names,
        ["login_success", "login_failure", "logout"],
        "{}",
        describe(&out)
    );
    assert_eq!(events[1]["username"], "bob");
    assert_eq!(events[2]["username"], "alice");
    let text = stdout(&out);
    assert!(!text.contains("not-bobs-password"));
    assert!(!text.contains(&a1));

    // -n limits to the latest N, still oldest first.
    let out = cli_for(&s.gw, &["audit", "tail"], &["-n", "2"]).await;
    assert!(out.status.success(), "{}", describe(&out));
    let names: Vec<String> = lines(&out)
        .iter()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["event"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(names, ["login_failure", "logout"], "{}", describe(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_revocations_are_in_the_audit_trail() {
    let s = Stack::start().await;
    let a1 = alice(&s.gw).await;
    let h_a1 = handle_of(&s.gw, &a1).await;
    let out = cli_for(&s.gw, &["sessions", "revoke"], &["--handle", &h_a1]).await;
    assert!(out.status.success(), "{}", describe(&out));
    // The CLI waits for its audit event to be written before exiting.
    let events = stream_events(&s.redis, "whalefall:");
    let revokes = events_named(&events, "admin_revoke");
    assert_eq!(revokes.len(), 1, "{events:#?}");
    assert_eq!(revokes[0]["handle"], h_a1.as_str());
    assert_eq!(revokes[0]["user_id"], "1");

    let out = cli_for(&s.gw, &["audit", "tail"], &["-n", "1"]).await;
    assert!(stdout(&out).contains("admin_revoke"), "{}", describe(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_with_redis_down_fails_clearly() {
    let mut s = Stack::start().await;
    s.redis.stop();
    for (pre, post) in [
        (vec!["sessions", "list"], vec![]),
        (vec!["sessions", "revoke"], vec!["--all"]),
        (vec!["audit", "tail"], vec!["-n", "5"]),
    ] {
        let out = cli_for(&s.gw, &pre, &post).await;
        assert!(!out.status.success(), "{pre:?}: {}", describe(&out));
        assert!(
            !String::from_utf8_lossy(&out.stderr).trim().is_empty(),
            "{pre:?} says why: {}",
            describe(&out)
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_rejects_a_bad_config() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("gateway.toml");
    std::fs::write(&cfg, "[session]\nidle_timeout = \"soon\"\n").unwrap();
    let out = cli(vec![
        "sessions".into(),
        "list".into(),
        "--config".into(),
        cfg.display().to_string(),
    ])
    .await;
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(stdout(&out).trim().is_empty(), "{}", describe(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn audit_tail_follow_prints_new_events_of_both_streams() {
    use std::io::{BufRead, BufReader};
    let s = Stack::start().await;
    // Started before any event exists: it must still pick up what comes later.
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = std::process::Command::new(gateway_bin())
        .args(["audit", "tail", "--follow", "--config"])
        .arg(config_path(&s.gw))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map(KillOnDrop)
        .unwrap();
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let next_event = || -> String {
        let line = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("a line from audit tail --follow");
        let event: serde_json::Value = serde_json::from_str(&line).unwrap();
        event["event"].as_str().unwrap_or("?").to_string()
    };
    // Once the login is printed the follower is running; the failure comes after it, in the
    // other stream, and must be printed as it arrives.
    let _alice = alice(&s.gw).await;
    assert_eq!(next_event(), "login_success");
    let resp = login_as_response(&s.gw, "bob", "not-bobs-password", "Guesser/0.1").await;
    assert_eq!(resp.status(), 401);
    assert_eq!(next_event(), "login_failure");
}
