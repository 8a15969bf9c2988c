//! Requests whose framing the gateway and the app could read differently are refused before
//! anything reaches the app: a list-valued or repeated `Content-Length` (request smuggling
//! against the pooled upstream connection), an HTTP/1.1 request without `Host`; public
//! prefixes match on segment boundaries only; `Expect: 100-continue` is answered on the
//! gateway's own POSTs; pipelined requests are all answered, in order.

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
    // A dot segment spelled with an encoded `;` cannot climb out of a public prefix.
    let resp = client()
        .get(s.gw.url("/static/..%3b/admin"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(s.upstream.request_count(), 2);
}

/// Reads from `stream` until `done` holds for what arrived (or the peer closes / 10 s pass).
fn read_until(stream: &mut std::net::TcpStream, done: impl Fn(&str) -> bool) -> String {
    use std::io::Read;
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !done(&String::from_utf8_lossy(&buf)) {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_login_form_answers_expect_100_continue_before_the_body() {
    use std::io::Write;
    let s = Stack::start().await;
    let body = r#"{"username":"alice","password":"alice-password"}"#;
    let mut stream = std::net::TcpStream::connect(s.gw.host()).unwrap();
    write!(
        stream,
        "POST /login HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Accept: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        s.gw.host(),
        body.len()
    )
    .unwrap();
    // The client holds the body back until it is told to go on.
    let interim = read_until(&mut stream, |t| t.contains("\r\n\r\n"));
    assert!(
        interim.starts_with("HTTP/1.1 100 Continue\r\n"),
        "{interim:?}"
    );
    stream.write_all(body.as_bytes()).unwrap();
    let answer = read_until(&mut stream, |t| t.contains("\r\n\r\n"));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("set-cookie: gateway_session="),
        "{answer}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_oversized_login_body_is_refused_without_a_100_continue() {
    let s = Stack::start().await;
    let head = "POST /login HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\n\
                Content-Length: 99999999\r\nExpect: 100-continue";
    let (status, text) = raw_request(
        &s.gw.host(),
        &format!("{head}\r\nHost: {}", s.gw.host()),
        "",
    );
    assert_eq!(status, 413, "{text}");
    assert!(!text.contains("100 Continue"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn pipelined_requests_are_all_answered_in_order() {
    use std::io::Write;
    let s = Stack::start().await;
    let cookie = login_alice(&s.gw).await;
    let host = s.gw.host();
    let mut stream = std::net::TcpStream::connect(&host).unwrap();
    // A body in the middle: the next request starts right after its Content-Length.
    let login = r#"{"username":"bob","password":"bob-password"}"#;
    let batch = format!(
        "GET /static/one.css HTTP/1.1\r\nHost: {host}\r\n\r\n\
         POST /login HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
         Accept: application/json\r\nContent-Length: {}\r\n\r\n{login}\
         GET /app/two HTTP/1.1\r\nHost: {host}\r\nCookie: {COOKIE_NAME}={cookie}\r\n\r\n\
         GET /static/three.css HTTP/1.1\r\nHost: {host}\r\n\r\n",
        login.len()
    );
    // All four in one write, before any answer.
    stream.write_all(batch.as_bytes()).unwrap();
    let text = read_until(&mut stream, |t| t.matches("HTTP/1.1 200").count() >= 4);
    let order: Vec<usize> = [
        "/static/one.css",
        "\"username\":\"bob\"",
        "/app/two",
        "/static/three.css",
    ]
    .iter()
    .map(|p| {
        text.find(p)
            .unwrap_or_else(|| panic!("{p} not answered: {text}"))
    })
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{text}");
}
