//! The session cookie: its attributes, and what happens with forged ones.

use crate::support::*;
use base64::Engine;

fn has_attr(attrs: &[(String, String)], name: &str) -> bool {
    attrs.iter().any(|(k, _)| k == name)
}

fn attr<'a>(attrs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    attrs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[tokio::test(flavor = "multi_thread")]
async fn session_cookie_is_httponly_lax_root_path_without_domain_or_secure() {
    let s = Stack::start().await;
    let resp = login_json_response(&s.gw, "alice", "alice-password", None).await;
    assert_eq!(resp.status(), 200);
    let header = set_cookie_header(&resp, COOKIE_NAME).expect("session Set-Cookie");
    let attrs = cookie_attributes(&header);

    assert!(has_attr(&attrs, "httponly"), "{header}");
    assert!(
        attr(&attrs, "samesite").is_some_and(|v| v.eq_ignore_ascii_case("lax")),
        "{header}"
    );
    assert_eq!(attr(&attrs, "path"), Some("/"), "{header}");
    assert!(!has_attr(&attrs, "domain"), "{header}");
    assert!(
        !has_attr(&attrs, "secure"),
        "cookie_secure=false but: {header}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn session_cookie_is_secure_when_configured() {
    let s = Stack::start_with(|c| c.cookie_secure(true)).await;
    let resp = login_json_response(&s.gw, "alice", "alice-password", None).await;
    assert_eq!(resp.status(), 200);
    // Secure cookies carry the `__Host-` prefix, so a sibling subdomain cannot plant one.
    let name = format!("__Host-{COOKIE_NAME}");
    let header = set_cookie_header(&resp, &name).expect("session Set-Cookie");
    let attrs = cookie_attributes(&header);
    assert!(has_attr(&attrs, "secure"), "{header}");
    assert!(has_attr(&attrs, "httponly"), "{header}");
    assert_eq!(attr(&attrs, "path"), Some("/"), "{header}");
    assert!(!has_attr(&attrs, "domain"), "{header}");
    let value = cookie_from(&resp, &name).expect("cookie value");
    let seen = client()
        .get(s.gw.url("/reports"))
        .header("cookie", format!("{name}={value}"))
        .send()
        .await
        .unwrap();
    assert_eq!(seen.status(), 200);
    // The unprefixed name is not the session cookie any more.
    let unprefixed = get_with_cookie(&s.gw, "/reports", &value).await;
    assert_eq!(unprefixed.status(), 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_host_prefix_can_be_switched_off() {
    let s = Stack::start_with(|c| {
        c.cookie_secure(true).replace(
            "cookie_secure = true",
            "cookie_secure = true\nhost_prefix = false",
        )
    })
    .await;
    let resp = login_json_response(&s.gw, "alice", "alice-password", None).await;
    let header = set_cookie_header(&resp, COOKIE_NAME).expect("plain session Set-Cookie");
    assert!(has_attr(&cookie_attributes(&header), "secure"), "{header}");
}

#[tokio::test(flavor = "multi_thread")]
async fn form_login_cookie_has_the_same_attributes() {
    let s = Stack::start().await;
    let resp = login_form(&s.gw, "alice", "alice-password", "/").await;
    assert_eq!(resp.status(), 303);
    let header = set_cookie_header(&resp, COOKIE_NAME).expect("session Set-Cookie");
    let attrs = cookie_attributes(&header);
    assert!(has_attr(&attrs, "httponly"), "{header}");
    assert!(
        attr(&attrs, "samesite").is_some_and(|v| v.eq_ignore_ascii_case("lax")),
        "{header}"
    );
    assert_eq!(attr(&attrs, "path"), Some("/"), "{header}");
    assert!(!has_attr(&attrs, "domain"), "{header}");
}

#[tokio::test(flavor = "multi_thread")]
async fn session_cookie_value_is_86_chars_of_base64url() {
    let s = Stack::start().await;
    let cookie = login_alice(&s.gw).await;
    assert_eq!(cookie.len(), 86, "{cookie}");
    assert!(
        cookie
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "not base64url: {cookie}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn each_login_gets_a_distinct_cookie() {
    let s = Stack::start().await;
    let a = login_alice(&s.gw).await;
    let b = login_alice(&s.gw).await;
    assert_ne!(a, b);
    assert_eq!(s.session_keys().len(), 2);
}

/// A forged cookie header must behave exactly like no session: browsers are
/// sent to the login page, API clients get 401, nothing reaches the app and no
/// session is created.
async fn assert_treated_as_unauthenticated(s: &Stack, cookie_header: &str, what: &str) {
    let keys_before = s.session_keys();
    let app_before = s.upstream.request_count();

    let browser = client()
        .get(s.gw.url("/reports"))
        .header("accept", BROWSER_ACCEPT)
        .header("cookie", cookie_header)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{what}: browser request failed: {e}"));
    let status = browser.status().as_u16();
    assert_eq!(status, 302, "{what}: browser navigation got {status}");
    let loc = location(&browser).unwrap_or_default();
    assert!(loc.starts_with("/login"), "{what}: redirected to {loc}");

    let api = client()
        .get(s.gw.url("/api/reports"))
        .header("accept", "application/json")
        .header("cookie", cookie_header)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{what}: api request failed: {e}"));
    assert_eq!(api.status().as_u16(), 401, "{what}: api request");

    assert_eq!(
        s.upstream.request_count(),
        app_before,
        "{what}: request reached the app"
    );
    assert_eq!(
        s.session_keys(),
        keys_before,
        "{what}: Redis sessions changed"
    );
}

fn flip_char(s: &str, index: usize) -> String {
    let mut chars: Vec<char> = s.chars().collect();
    chars[index] = if chars[index] == 'A' { 'B' } else { 'A' };
    chars.into_iter().collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn cookie_with_one_flipped_character_is_rejected() {
    let s = Stack::start().await;
    let cookie = login_alice(&s.gw).await;
    for index in [0, 20, 43, 60] {
        let forged = flip_char(&cookie, index);
        assert_ne!(forged, cookie);
        assert_treated_as_unauthenticated(
            &s,
            &session_cookie_header(&forged),
            &format!("flip at {index}"),
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn truncated_cookie_is_rejected() {
    let s = Stack::start().await;
    let cookie = login_alice(&s.gw).await;
    for len in [85, 43, 1] {
        assert_treated_as_unauthenticated(
            &s,
            &session_cookie_header(&cookie[..len]),
            &format!("truncated to {len}"),
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn cookie_with_extra_characters_is_rejected() {
    let s = Stack::start().await;
    let cookie = login_alice(&s.gw).await;
    assert_treated_as_unauthenticated(
        &s,
        &session_cookie_header(&format!("{cookie}A")),
        "appended",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn empty_cookie_is_rejected() {
    let s = Stack::start().await;
    assert_treated_as_unauthenticated(&s, &format!("{COOKIE_NAME}="), "empty").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_kilobytes_of_junk_is_rejected() {
    let s = Stack::start().await;
    let junk: String = (0..10 * 1024)
        .map(|i| (b'a' + (i * 7 % 26) as u8) as char)
        .collect();
    assert_treated_as_unauthenticated(&s, &session_cookie_header(&junk), "10 KB junk").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn non_base64_cookie_is_rejected() {
    let s = Stack::start().await;
    let value = format!("{}!!", "*".repeat(84));
    assert_treated_as_unauthenticated(&s, &session_cookie_header(&value), "non-base64").await;
    assert_treated_as_unauthenticated(&s, &session_cookie_header("%00%ff\"quoted\""), "odd bytes")
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn valid_base64_of_the_wrong_length_is_rejected() {
    let s = Stack::start().await;
    for n in [32usize, 48, 63, 65, 96] {
        let value = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(vec![7u8; n]);
        assert_treated_as_unauthenticated(
            &s,
            &session_cookie_header(&value),
            &format!("{n} bytes"),
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn well_formed_but_unsigned_cookie_is_rejected() {
    let s = Stack::start().await;
    let value = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([0x5au8; 64]);
    assert_eq!(value.len(), 86);
    assert_treated_as_unauthenticated(&s, &session_cookie_header(&value), "64 random bytes").await;
}

/// A browser may hold a stale cookie of the gateway's name beside the real one (e.g. one set
/// with a Domain attribute or for another path, which our host-only cookie does not replace).
/// That stale copy must neither lock the user out nor be mistaken for a session.
#[tokio::test(flavor = "multi_thread")]
async fn a_stale_same_name_cookie_beside_the_real_one_is_ignored() {
    let s = Stack::start().await;
    let cookie = login_alice(&s.gw).await;
    let legacy_flask = "eyJfZnJlc2giOmZhbHNlfQ.ZzYxNg.b2xkLWZsYXNrLXNpZ25hdHVyZQ";
    let forged = flip_char(&cookie, 20);
    for header in [
        format!("{COOKIE_NAME}={legacy_flask}; {COOKIE_NAME}={cookie}"),
        format!("{COOKIE_NAME}={cookie}; {COOKIE_NAME}={legacy_flask}"),
        format!("{COOKIE_NAME}={forged}; {COOKIE_NAME}={cookie}"),
    ] {
        let resp = client()
            .get(s.gw.url("/reports"))
            .header("cookie", &header)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{header}");
        assert_eq!(
            echo(resp).await.header("x-auth-user").as_deref(),
            Some("alice")
        );
    }
    assert_treated_as_unauthenticated(
        &s,
        &format!("{COOKIE_NAME}={legacy_flask}; {COOKIE_NAME}={forged}"),
        "only stale and forged copies",
    )
    .await;
}
