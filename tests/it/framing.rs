//! Requests whose framing the gateway and the app could read differently are refused before
//! anything reaches the app: a list-valued or repeated `Content-Length` (request smuggling
//! against the pooled upstream connection), an HTTP/1.1 request without `Host`; and public
//! prefixes match on segment boundaries only.

use crate::support::*;

#[tokio::test(flavor = "multi_thread")]
async fn ambiguous_content_lengths_are_refused_and_never_forwarded() {
    let s = Stack::start().await;
    let cookie = login_alice(&s.gw).await;
    let addr = s.gw.host();
    let before = s.upstream.request_count();
    for lengths in [
        "Content-Length: 5, 5",
        "Content-Length: 5\r\nContent-Length: 5",
        "Content-Length: 5\r\nContent-Length: 6",
        "Content-Length: +5",
    ] {
        let head = format!(
            "POST /app/upload HTTP/1.1\r\nHost: {addr}\r\nCookie: {COOKIE_NAME}={cookie}\r\n{lengths}"
        );
        // pingora refuses some of these itself (an empty 400), the gateway the rest.
        let (status, text) = raw_request(&addr, &head, "hello");
        assert_eq!(status, 400, "{lengths:?}: {text}");
        if lengths.contains("5, 5") || lengths.ends_with("Content-Length: 5") {
            // The two the review found forwarded: now refused by the gateway.
            assert!(text.contains("bad_content_length"), "{text}");
        }
    }
    assert_eq!(
        s.upstream.request_count(),
        before,
        "nothing reached the app"
    );
    // One plain Content-Length is forwarded as it was.
    let head = format!(
        "POST /app/upload HTTP/1.1\r\nHost: {addr}\r\nCookie: {COOKIE_NAME}={cookie}\r\nContent-Length: 5"
    );
    assert_eq!(raw_request(&addr, &head, "hello").0, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_http11_request_without_host_is_refused() {
    let s = Stack::start().await;
    let (status, text) = raw_request(&s.gw.host(), "GET /static/app.css HTTP/1.1", "");
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("missing_host"), "{text}");
    assert_eq!(s.upstream.request_count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn public_prefixes_stop_at_segment_boundaries() {
    let s = Stack::start().await; // public: /static/ and /favicon.ico
    for public in ["/favicon.ico", "/static/app.css"] {
        let resp = client().get(s.gw.url(public)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{public}");
    }
    for protected in ["/favicon.icoadmin", "/favicon.ico/admin", "/staticadmin"] {
        let resp = client().get(s.gw.url(protected)).send().await.unwrap();
        assert_eq!(resp.status(), 401, "{protected}");
    }
    assert_eq!(s.upstream.request_count(), 2);
}
