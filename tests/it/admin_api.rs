//! The admin session API on the admin listener: switched off without a token,
//! bearer-token protected with one, and never exposing cookie material.

use crate::session_helpers::*;
use crate::support::*;
use reqwest::Method;

const FIELDS: &[&str] = &[
    "handle",
    "user_id",
    "username",
    "created_at",
    "last_seen",
    "ip",
    "user_agent",
];

#[tokio::test(flavor = "multi_thread")]
async fn without_a_token_the_session_api_is_off_but_health_works() {
    let s = Stack::start().await;
    let cookie = alice(&s.gw).await;
    let handle = handle_of(&s.gw, &cookie).await;

    for (method, path) in [
        (Method::GET, "/sessions".to_string()),
        (Method::GET, "/sessions?user=1".to_string()),
        (Method::DELETE, "/sessions".to_string()),
        (Method::DELETE, format!("/sessions/{handle}")),
        (Method::DELETE, "/users/1/sessions".to_string()),
    ] {
        for token in [None, Some(ADMIN_TOKEN), Some("")] {
            let (status, body) = admin_request(&s.gw, method.clone(), &path, token).await;
            assert_eq!(status, 404, "{method} {path} with {token:?}: {body}");
        }
    }
    let health = client()
        .get(s.gw.admin_url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert_live(&s.gw, &cookie, "alice", "nothing was revoked").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_or_wrong_token_is_401() {
    let s = Stack::start_with(with_admin_token).await;
    let cookie = alice(&s.gw).await;
    let handle = handle_of(&s.gw, &cookie).await;

    let wrong = [
        None,
        Some("wrong-token-wrong-token-wrong"),
        Some(""),
        // A prefix, and the token with something appended.
        Some(&ADMIN_TOKEN[..ADMIN_TOKEN.len() - 1]),
    ];
    let longer = format!("{ADMIN_TOKEN}x");
    let mut tokens: Vec<Option<&str>> = wrong.to_vec();
    tokens.push(Some(&longer));
    for (method, path) in [
        (Method::GET, "/sessions".to_string()),
        (Method::DELETE, "/sessions".to_string()),
        (Method::DELETE, format!("/sessions/{handle}")),
        (Method::DELETE, "/users/1/sessions".to_string()),
    ] {
        for token in &tokens {
            let (status, body) = admin_request(&s.gw, method.clone(), &path, *token).await;
            assert_eq!(status, 401, "{method} {path} with {token:?}: {body}");
            assert!(!body.contains("alice"), "a refused call leaks data: {body}");
        }
    }
    // Not a bearer credential at all.
    let resp = client()
        .get(s.gw.admin_url("/sessions"))
        .header("authorization", format!("Basic {ADMIN_TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    // The token on the public listener does not open anything there.
    let resp = client()
        .get(s.gw.url("/sessions"))
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    assert_live(&s.gw, &cookie, "alice", "nothing was revoked").await;
    assert_eq!(
        client()
            .get(s.gw.admin_url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn right_token_lists_sessions_without_cookie_material() {
    let s = Stack::start_with(with_admin_token).await;
    let a1 = alice(&s.gw).await;
    let a2 = login_as(&s.gw, "alice", "alice-password", "AlicePhone/7.2").await;
    let b1 = bob(&s.gw).await;
    let cookies = [a1.clone(), a2.clone(), b1.clone()];

    let (status, body) = admin_request(&s.gw, Method::GET, "/sessions", Some(ADMIN_TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    let all: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let all = all.as_array().expect("array").clone();
    assert_eq!(all.len(), 3, "{all:#?}");
    for item in &all {
        for field in FIELDS {
            assert!(
                item.get(*field).is_some_and(|v| !v.is_null()),
                "field {field} missing in {item}"
            );
        }
        let handle = item["handle"].as_str().unwrap();
        assert_eq!(handle.len(), 64, "{handle}");
        assert!(handle.bytes().all(|b| b.is_ascii_hexdigit()), "{handle}");
        assert_eq!(item["ip"], "127.0.0.1");
        // No field equals or contains any cookie value (or material derived from it).
        let obj = item.as_object().unwrap();
        for (name, value) in obj {
            let text = match value {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            for cookie in &cookies {
                for secret in cookie_derivatives(cookie) {
                    let overlaps =
                        text.contains(&secret) || (text.len() >= 8 && secret.contains(&text));
                    assert!(!overlaps, "field {name} = {text} overlaps cookie material");
                }
            }
        }
    }
    for cookie in &cookies {
        assert!(
            !body.contains(cookie.as_str()),
            "response contains a cookie"
        );
    }
    assert!(!body.contains(TEST_SECRET));

    let by_user: std::collections::BTreeMap<String, usize> =
        all.iter().fold(Default::default(), |mut m, i| {
            *m.entry(i["username"].as_str().unwrap().to_string())
                .or_default() += 1;
            m
        });
    assert_eq!(by_user.get("alice"), Some(&2));
    assert_eq!(by_user.get("bob"), Some(&1));
    let uas: Vec<&str> = all
        .iter()
        .map(|i| i["user_agent"].as_str().unwrap())
        .collect();
    for ua in ["AliceBrowser/1.0", "AlicePhone/7.2", "BobBrowser/2.0"] {
        assert!(uas.contains(&ua), "{uas:?}");
    }
    // Timestamps are RFC 3339.
    for item in &all {
        for f in ["created_at", "last_seen"] {
            let t = item[f].as_str().unwrap_or_default();
            assert!(
                t.len() >= 20 && t.contains('T') && t.ends_with('Z'),
                "{f} = {t}"
            );
        }
    }

    // Filter by user.
    let alice_only = admin_get_json(&s.gw, "/sessions?user=1").await;
    let alice_only = alice_only.as_array().unwrap();
    assert_eq!(alice_only.len(), 2, "{alice_only:#?}");
    assert!(alice_only.iter().all(|i| i["user_id"] == "1"));
    let nobody = admin_get_json(&s.gw, "/sessions?user=999").await;
    assert_eq!(nobody.as_array().unwrap().len(), 0);

    // The handles are exactly the ones the users see as theirs.
    let h_a1 = handle_of(&s.gw, &a1).await;
    assert!(alice_only.iter().any(|i| i["handle"] == h_a1.as_str()));
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_endpoints_answer_sensibly() {
    let s = Stack::start_with(with_admin_token).await;
    let a1 = alice(&s.gw).await;

    let (status, body) = admin_delete(&s.gw, "/sessions/not-a-handle").await;
    assert_eq!(status, 400, "{body}");
    let unknown = "0".repeat(64);
    let (status, body) = admin_delete(&s.gw, &format!("/sessions/{unknown}")).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = admin_delete(&s.gw, "/users/999/sessions").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["revoked"], 0);
    // Uppercase hex is not a handle.
    let h = handle_of(&s.gw, &a1).await;
    let (status, _) = admin_delete(&s.gw, &format!("/sessions/{}", h.to_uppercase())).await;
    assert_ne!(status, 200);
    assert_live(&s.gw, &a1, "alice", "still signed in").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn token_can_come_from_an_environment_variable() {
    let s = Stack::start_with(|c| {
        c.extra("[admin]\ntoken_env = \"GW_TEST_ADMIN_TOKEN\"")
            .env("GW_TEST_ADMIN_TOKEN", ADMIN_TOKEN)
    })
    .await;
    let _ = alice(&s.gw).await;
    let (status, body) = admin_request(&s.gw, Method::GET, "/sessions", Some(ADMIN_TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    let (status, _) =
        admin_request(&s.gw, Method::GET, "/sessions", Some("GW_TEST_ADMIN_TOKEN")).await;
    assert_eq!(status, 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn token_can_come_from_a_file() {
    let secrets = tempfile::tempdir().unwrap();
    let path = secrets.path().join("admin-token");
    std::fs::write(&path, format!("{ADMIN_TOKEN}\n")).unwrap();
    let path_text = path.display().to_string();
    let s =
        Stack::start_with(|c| c.extra(&format!("[admin]\ntoken_file = {}", toml_str(&path_text))))
            .await;
    let (status, body) = admin_request(&s.gw, Method::GET, "/sessions", Some(ADMIN_TOKEN)).await;
    assert_eq!(
        status, 200,
        "trailing newline is not part of the token: {body}"
    );
    let with_newline = format!("{ADMIN_TOKEN}\n");
    let resp = client()
        .get(s.gw.admin_url("/sessions"))
        .header(
            "authorization",
            format!("Bearer {}", with_newline.trim_end()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_api_answers_503_while_redis_is_down() {
    let mut s = Stack::start_with(with_admin_token).await;
    let _ = alice(&s.gw).await;
    s.redis.stop();
    let (status, body) = admin_request(&s.gw, Method::GET, "/sessions", Some(ADMIN_TOKEN)).await;
    assert_eq!(status, 503, "{body}");
    // Auth is still checked first.
    let (status, _) = admin_request(&s.gw, Method::GET, "/sessions", None).await;
    assert_eq!(status, 401);
    assert_eq!(
        client()
            .get(s.gw.admin_url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}
