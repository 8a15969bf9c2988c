//! `X-Request-Id`: one id per request, made by the gateway unless a trusted proxy sent one; the
//! app gets it, the client gets it back, and the audit events carry it.

use std::time::Duration;

use crate::session_helpers::*;
use crate::support::*;

fn id_of(resp: &reqwest::Response) -> String {
    resp.headers()
        .get("x-request-id")
        .expect("x-request-id on the answer")
        .to_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_request_gets_an_id_the_app_and_the_client_both_see() {
    let s = Stack::start().await;
    let cookie = login_alice(&s.gw).await;
    let mut seen = std::collections::HashSet::new();
    for _ in 0..3 {
        let resp = client()
            .get(s.gw.url("/app/x"))
            .header("cookie", session_cookie_header(&cookie))
            // Not from a trusted proxy: this one is replaced.
            .header("x-request-id", "client-made-1")
            .send()
            .await
            .unwrap();
        let id = id_of(&resp);
        let echo = echo(resp).await;
        assert_eq!(echo.headers_named("x-request-id"), vec![id.clone()]);
        assert_ne!(id, "client-made-1");
        assert!(seen.insert(id), "ids are unique");
    }
    // The gateway's own answers carry one too, and the audit event of the login has it.
    let resp = login_json_response(&s.gw, "bob", "bob-password", None).await;
    let id = id_of(&resp);
    let events = poll_until(
        "bob's login_success",
        Duration::from_secs(10),
        || stream_events(&s.redis, "whalefall:"),
        |ev| {
            events_named(ev, "login_success")
                .iter()
                .any(|e| e["username"] == "bob")
        },
    )
    .await;
    let login = events_named(&events, "login_success")
        .into_iter()
        .find(|e| e["username"] == "bob")
        .unwrap();
    assert_eq!(login["request_id"], id.as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trusted_proxys_id_is_kept_and_a_bad_one_replaced() {
    let s = Stack::start_with(|c| c.trusted_proxies(&["127.0.0.1/32"]).public(&["/static/"])).await;
    let send = |id: &'static str| {
        client()
            .get(s.gw.url("/static/a.css"))
            .header("x-request-id", id)
            .send()
    };
    let resp = send("lb-7f3a.42").await.unwrap();
    assert_eq!(id_of(&resp), "lb-7f3a.42");
    assert_eq!(
        echo(resp).await.headers_named("x-request-id"),
        vec!["lb-7f3a.42"]
    );
    // Even from a trusted proxy, an id that could spoof a log line is not passed on.
    let resp = send("two words").await.unwrap();
    assert_ne!(id_of(&resp), "two words");
}
