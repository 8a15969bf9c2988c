//! `[identity] signing_secret`: every proxied request of a signed-in user carries
//! `X-Auth-Assertion: v1;t=<unix seconds>;sig=<hex HMAC-SHA256>` over
//! "v1\n{t}\n{METHOD}\n{path?query}\n{id}\n{username}\n{roles}", so the app can tell the
//! identity headers came from the gateway. Client-sent assertions never reach the app.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::support::*;
use hmac::{Hmac, Mac};
use sha2::Sha256;

const SIGNING_SECRET: &str = "identity-signing-secret-0123456789-abcdefghij";

fn signed_stack_config(c: TestConfig) -> TestConfig {
    c.extra(&format!(
        "[identity]\nsigning_secret = {}\n",
        toml_str(SIGNING_SECRET)
    ))
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

struct Assertion {
    t: String,
    sig: String,
}

fn parse_assertion(value: &str) -> Assertion {
    let parts: Vec<&str> = value.split(';').collect();
    assert_eq!(parts.len(), 3, "assertion {value:?} is not v1;t=..;sig=..");
    assert_eq!(parts[0], "v1", "assertion {value:?}");
    let t = parts[1]
        .strip_prefix("t=")
        .unwrap_or_else(|| panic!("no t= in {value:?}"));
    let sig = parts[2]
        .strip_prefix("sig=")
        .unwrap_or_else(|| panic!("no sig= in {value:?}"));
    assert!(
        !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()),
        "t is not unix seconds: {value:?}"
    );
    assert!(
        sig.len() == 64 && sig.bytes().all(|b| b.is_ascii_hexdigit()),
        "sig is not 64 hex chars: {value:?}"
    );
    Assertion {
        t: t.to_string(),
        sig: sig.to_ascii_lowercase(),
    }
}

fn expected_sig(t: &str, method: &str, target: &str, id: &str, user: &str, roles: &str) -> String {
    let message = format!("v1\n{t}\n{method}\n{target}\n{id}\n{user}\n{roles}");
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(SIGNING_SECRET.as_bytes()).unwrap();
    mac.update(message.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Checks the one assertion the upstream received against what it received otherwise.
fn verify_echo(e: &Echo, method: &str) {
    let values = e.headers_named("x-auth-assertion");
    assert_eq!(
        values.len(),
        1,
        "expected exactly one X-Auth-Assertion upstream: {:?}",
        e.headers
    );
    let a = parse_assertion(&values[0]);
    let t: i64 = a.t.parse().unwrap();
    let now = now_secs();
    assert!(
        (t - now).abs() <= 5,
        "assertion timestamp {t} is not now ({now})"
    );
    let id = e.header("x-auth-user-id").expect("X-Auth-User-Id upstream");
    let user = e.header("x-auth-user").expect("X-Auth-User upstream");
    let roles = e.header("x-auth-roles").expect("X-Auth-Roles upstream");
    assert_eq!(
        (id.as_str(), user.as_str(), roles.as_str()),
        ("1", "alice", "admin,user")
    );
    assert_eq!(e.method, method);
    // The target is the path and query exactly as the upstream received them.
    let want = expected_sig(&a.t, method, &e.uri, &id, &user, &roles);
    assert_eq!(
        a.sig, want,
        "signature does not verify over method {method}, target {:?}",
        e.uri
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn signed_assertion_reaches_the_upstream_and_verifies() {
    let s = Stack::start_with(signed_stack_config).await;
    let cookie = login_alice(&s.gw).await;

    for path in ["/dashboard", "/reports/a%20b?q=x%2Fy&z=1", "/"] {
        let resp = get_with_cookie(&s.gw, path, &cookie).await;
        assert_eq!(resp.status(), 200, "{path}");
        let e = echo(resp).await;
        assert_eq!(e.uri, path, "upstream target");
        verify_echo(&e, "GET");
    }

    // The method is part of what is signed.
    let resp = client()
        .post(s.gw.url("/api/items?draft=1"))
        .header("cookie", session_cookie_header(&cookie))
        .header("content-type", "application/json")
        .body(r#"{"name":"x"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let e = echo(resp).await;
    verify_echo(&e, "POST");
    let a = parse_assertion(&e.header("x-auth-assertion").unwrap());
    assert_ne!(
        a.sig,
        expected_sig(&a.t, "GET", &e.uri, "1", "alice", "admin,user"),
        "a POST assertion must not verify as a GET"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signature_with_a_different_key_does_not_verify() {
    // Sanity check of the verifier itself: a wrong key gives a different MAC.
    let s = Stack::start_with(signed_stack_config).await;
    let cookie = login_alice(&s.gw).await;
    let e = echo(get_with_cookie(&s.gw, "/x", &cookie).await).await;
    let a = parse_assertion(&e.header("x-auth-assertion").unwrap());
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(b"some-other-key-0123456789abcdef!").unwrap();
    mac.update(format!("v1\n{}\nGET\n/x\n1\nalice\nadmin,user", a.t).as_bytes());
    assert_ne!(a.sig, hex::encode(mac.finalize().into_bytes()));
}

#[tokio::test(flavor = "multi_thread")]
async fn client_sent_assertion_is_replaced_on_protected_paths() {
    let s = Stack::start_with(signed_stack_config).await;
    let cookie = login_alice(&s.gw).await;
    let forged = format!("v1;t={};sig={}", now_secs(), "0".repeat(64));
    let resp = client()
        .get(s.gw.url("/admin/panel"))
        .header("cookie", session_cookie_header(&cookie))
        .header("X-Auth-Assertion", forged.as_str())
        .header("X_Auth_Assertion", forged.as_str())
        .header("x-auth-user", "mallory")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let e = echo(resp).await;
    assert!(
        !e.headers.iter().any(|(_, v)| v == &forged),
        "the forged assertion reached the upstream: {:?}",
        e.headers
    );
    verify_echo(&e, "GET");
    let x_auth: Vec<String> = e.x_auth_headers().into_iter().map(|(k, _)| k).collect();
    let mut names = x_auth.clone();
    names.sort();
    assert_eq!(
        names,
        vec![
            "x-auth-assertion",
            "x-auth-roles",
            "x-auth-user",
            "x-auth-user-id"
        ],
        "upstream x-auth headers: {:?}",
        e.headers
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn client_sent_assertion_is_stripped_on_public_paths() {
    let s = Stack::start_with(signed_stack_config).await;
    let forged = format!("v1;t={};sig={}", now_secs(), "a".repeat(64));
    for path in ["/static/app.js", "/favicon.ico"] {
        let resp = client()
            .get(s.gw.url(path))
            .header("X-Auth-Assertion", forged.as_str())
            .header("x_auth_assertion", forged.as_str())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let e = echo(resp).await;
        assert!(
            e.x_auth_headers().is_empty(),
            "{path}: x-auth headers reached the upstream on a public path: {:?}",
            e.headers
        );
    }

    // With a session cookie too: public paths are not signed, and a forged assertion is
    // still removed.
    let cookie = login_alice(&s.gw).await;
    let resp = client()
        .get(s.gw.url("/static/app.js"))
        .header("cookie", session_cookie_header(&cookie))
        .header("X-Auth-Assertion", forged.as_str())
        .send()
        .await
        .unwrap();
    let e = echo(resp).await;
    assert!(
        e.headers_named("x-auth-assertion").is_empty(),
        "forged assertion on a public path reached the upstream: {:?}",
        e.headers
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_identity_section_no_assertion_is_sent() {
    let s = Stack::start().await;
    let cookie = login_alice(&s.gw).await;
    let e = echo(get_with_cookie(&s.gw, "/dashboard", &cookie).await).await;
    assert_eq!(e.header("x-auth-user").as_deref(), Some("alice"));
    assert!(
        e.headers_named("x-auth-assertion").is_empty(),
        "assertion sent without [identity]: {:?}",
        e.headers
    );

    // And a client-sent one is still removed.
    let resp = client()
        .get(s.gw.url("/dashboard"))
        .header("cookie", session_cookie_header(&cookie))
        .header("X-Auth-Assertion", "v1;t=1;sig=00")
        .send()
        .await
        .unwrap();
    let e = echo(resp).await;
    assert!(
        e.headers_named("x-auth-assertion").is_empty(),
        "client-sent assertion reached the upstream: {:?}",
        e.headers
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn short_signing_secret_is_a_config_error() {
    let redis_url = "redis://127.0.0.1:1/0";
    let cfg = TestConfig::new(redis_url, "127.0.0.1:1".parse().unwrap())
        .extra("[identity]\nsigning_secret = \"too-short\"\n");
    let dir = tempfile::tempdir().unwrap();
    let path = cfg.write_to(dir.path());
    let out = run_gateway_cli(&["check-config", "--config", path.to_str().unwrap()], None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(
        stderr.contains("[identity] signing_secret"),
        "stderr: {stderr}"
    );
}
