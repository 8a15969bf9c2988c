//! WebSocket upgrades through the gateway: allowed only with a live session, carrying the
//! gateway's identity headers (never the client's), and then relaying frames both ways.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::support::*;

/// Hang guard for any single WebSocket step.
const STEP: Duration = Duration::from_secs(15);

/// Headers of one upgrade request the upstream accepted.
type SeenHeaders = Vec<(String, String)>;

/// A real WebSocket echo server. On connect it sends `hello <X-Auth-User>`, then echoes every
/// text and binary message back. Plain HTTP requests (e.g. a non-upgrade GET) are answered by
/// the handshake failing, which the tests never expect to happen.
struct WsUpstream {
    addr: SocketAddr,
    upgrades: Arc<Mutex<Vec<SeenHeaders>>>,
    task: tokio::task::JoinHandle<()>,
}

impl WsUpstream {
    async fn start() -> WsUpstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let upgrades: Arc<Mutex<Vec<SeenHeaders>>> = Arc::new(Mutex::new(Vec::new()));
        let seen = upgrades.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let seen = seen.clone();
                tokio::spawn(async move {
                    let user = Arc::new(Mutex::new(String::new()));
                    let user2 = user.clone();
                    // The callback's signature is tungstenite's; its large error type is not ours.
                    #[allow(clippy::result_large_err)]
                    let callback = move |req: &Request, resp: Response| {
                        let headers: SeenHeaders = req
                            .headers()
                            .iter()
                            .map(|(k, v)| {
                                (
                                    k.as_str().to_string(),
                                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                                )
                            })
                            .collect();
                        *user2.lock().unwrap() = req
                            .headers()
                            .get("x-auth-user")
                            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                            .unwrap_or_default();
                        seen.lock().unwrap().push(headers);
                        Ok(resp)
                    };
                    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await
                    else {
                        return;
                    };
                    let greeting = format!("hello {}", user.lock().unwrap());
                    if ws.send(Message::text(greeting)).await.is_err() {
                        return;
                    }
                    while let Some(Ok(msg)) = ws.next().await {
                        if let Message::Close(_) = msg {
                            let _ = ws.close(None).await;
                            return;
                        }
                        let is_data = matches!(msg, Message::Text(_) | Message::Binary(_));
                        if is_data && ws.send(msg).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        WsUpstream {
            addr,
            upgrades,
            task,
        }
    }

    fn upgrades(&self) -> Vec<SeenHeaders> {
        self.upgrades.lock().unwrap().clone()
    }
}

impl Drop for WsUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn header_values(headers: &SeenHeaders, name: &str) -> Vec<String> {
    headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.clone())
        .collect()
}

struct WsStack {
    _redis: RedisServer,
    upstream: WsUpstream,
    gw: Gateway,
}

async fn ws_stack() -> WsStack {
    let redis = RedisServer::start();
    // Started before the gateway, so the first health check already sees it.
    let upstream = WsUpstream::start().await;
    let gw = Gateway::start(&TestConfig::new(&redis.url(), upstream.addr)).await;
    WsStack {
        _redis: redis,
        upstream,
        gw,
    }
}

fn ws_request(
    gw: &Gateway,
    path: &str,
    headers: &[(&str, &str)],
) -> tungstenite::handshake::client::Request {
    let mut req = format!("ws://{}{}", gw.host(), path)
        .into_client_request()
        .unwrap();
    for (k, v) in headers {
        req.headers_mut().append(
            tungstenite::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    req
}

async fn next_message<S>(ws: &mut S) -> Message
where
    S: StreamExt<Item = Result<Message, tungstenite::Error>> + Unpin,
{
    loop {
        let msg = tokio::time::timeout(STEP, ws.next())
            .await
            .expect("no WebSocket message within the hang guard")
            .expect("WebSocket stream ended")
            .expect("WebSocket error");
        match msg {
            Message::Ping(_) | Message::Pong(_) => continue,
            other => return other,
        }
    }
}

type Tunnel =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens a tunnel through the gateway and proves it works both ways: the upstream's greeting
/// arrives and a probe is echoed back.
///
/// pingora 0.9.1 has a race (cloudflare/pingora#946, fix not yet released): when the upstream's
/// `101` is read before the upgrade request's own empty body, the tunnel is closed right after
/// the handshake. A fast upstream on loopback under load loses that race now and then; a client
/// sees a clean close and reconnects. So does this helper, at most twice, saying so. A wrong
/// greeting or any other error fails the test at once.
async fn open_tunnel(gw: &Gateway, path: &str, headers: &[(&str, &str)], greeting: &str) -> Tunnel {
    const ATTEMPTS: usize = 3;
    for attempt in 1..=ATTEMPTS {
        let req = ws_request(gw, path, headers);
        let (mut ws, resp) = tokio::time::timeout(STEP, tokio_tungstenite::connect_async(req))
            .await
            .expect("upgrade hung")
            .unwrap_or_else(|e| panic!("upgrade failed: {e:?}\nlogs:\n{}", gw.logs()));
        assert_eq!(resp.status(), 101);
        match probe(&mut ws, greeting).await {
            Ok(()) => return ws,
            Err(closed) if attempt < ATTEMPTS => {
                eprintln!(
                    "tunnel closed right after the upgrade ({closed}); pingora#946; reconnecting"
                )
            }
            Err(closed) => panic!("the tunnel closed after every upgrade: {closed}"),
        }
    }
    unreachable!()
}

/// `Err` only when the connection closed under us; anything unexpected panics.
async fn probe(ws: &mut Tunnel, greeting: &str) -> Result<(), String> {
    expect_message(ws, Message::text(greeting)).await?;
    if let Err(e) = ws.send(Message::text("probe")).await {
        return if is_closed(&e) {
            Err(e.to_string())
        } else {
            panic!("send failed: {e:?}")
        };
    }
    expect_message(ws, Message::text("probe")).await
}

async fn expect_message(ws: &mut Tunnel, want: Message) -> Result<(), String> {
    loop {
        let next = tokio::time::timeout(STEP, ws.next())
            .await
            .expect("no WebSocket message within the hang guard");
        match next {
            None => return Err("stream ended".to_string()),
            Some(Err(e)) if is_closed(&e) => return Err(e.to_string()),
            Some(Err(e)) => panic!("WebSocket error: {e:?}"),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(got)) => {
                assert_eq!(got, want);
                return Ok(());
            }
        }
    }
}

fn is_closed(e: &tungstenite::Error) -> bool {
    matches!(
        e,
        tungstenite::Error::ConnectionClosed
            | tungstenite::Error::AlreadyClosed
            | tungstenite::Error::Io(_)
            | tungstenite::Error::Protocol(
                tungstenite::error::ProtocolError::ResetWithoutClosingHandshake
            )
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn upgrade_with_a_session_relays_messages_both_ways() {
    let s = ws_stack().await;
    let cookie = login_alice(&s.gw).await;
    // The upstream speaks first ("hello alice"), then echoes.
    let mut ws = open_tunnel(
        &s.gw,
        "/ws/chat?room=1",
        &[("cookie", &session_cookie_header(&cookie))],
        "hello alice",
    )
    .await;

    // Client-initiated frames are echoed back.
    for i in 0..20 {
        let text = format!("message {i} {}", "x".repeat(i * 100));
        ws.send(Message::text(text.clone())).await.unwrap();
        assert_eq!(next_message(&mut ws).await, Message::text(text));
    }
    let blob: Vec<u8> = (0..200_000u32).map(|i| pattern_byte(i as u64)).collect();
    ws.send(Message::binary(blob.clone())).await.unwrap();
    match next_message(&mut ws).await {
        Message::Binary(b) => assert!(b.as_ref() == blob.as_slice(), "binary echo differs"),
        other => panic!("expected binary echo, got {other:?}"),
    }

    ws.close(None).await.unwrap();
    // The close handshake completes (the upstream answers the close frame).
    let end = tokio::time::timeout(STEP, async {
        while let Some(m) = ws.next().await {
            if m.is_err() {
                break;
            }
        }
    })
    .await;
    assert!(end.is_ok(), "close handshake hung");

    let upgrades = s.upstream.upgrades();
    let h = upgrades.last().expect("the upstream saw the upgrade");
    assert_eq!(header_values(h, "x-auth-user"), vec!["alice".to_string()]);
    assert_eq!(header_values(h, "x-auth-user-id"), vec!["1".to_string()]);
    assert_eq!(
        header_values(h, "x-auth-roles"),
        vec!["admin,user".to_string()]
    );
    let cookies = header_values(h, "cookie").join("; ");
    assert!(
        !cookies.contains(COOKIE_NAME),
        "the gateway session cookie reached the upstream: {cookies}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn upgrade_without_a_session_is_refused() {
    let s = ws_stack().await;
    let req = ws_request(&s.gw, "/ws/chat", &[]);
    let result = tokio::time::timeout(STEP, tokio_tungstenite::connect_async(req))
        .await
        .expect("refused upgrade hung");
    match result {
        Err(tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 401, "response: {resp:?}");
        }
        Err(e) => panic!("expected an HTTP 401 refusal, got error {e:?}"),
        Ok((_, resp)) => panic!("upgrade without session succeeded: {resp:?}"),
    }

    // A forged / unknown cookie is refused the same way.
    let forged = format!("{COOKIE_NAME}={}", "A".repeat(86));
    let req = ws_request(&s.gw, "/ws/chat", &[("cookie", &forged)]);
    match tokio::time::timeout(STEP, tokio_tungstenite::connect_async(req))
        .await
        .expect("refused upgrade hung")
    {
        Err(tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 401),
        Err(e) => panic!("expected an HTTP 401 refusal, got error {e:?}"),
        Ok((_, resp)) => panic!("upgrade with a forged cookie succeeded: {resp:?}"),
    }

    assert!(
        s.upstream.upgrades().is_empty(),
        "unauthenticated upgrade reached the upstream: {:?}",
        s.upstream.upgrades()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn upgrade_after_logout_is_refused() {
    let s = ws_stack().await;
    let cookie = login_alice(&s.gw).await;
    let resp = logout_json(&s.gw, "/logout", &cookie).await;
    assert_eq!(resp.status(), 200);
    let req = ws_request(
        &s.gw,
        "/ws/chat",
        &[("cookie", &session_cookie_header(&cookie))],
    );
    match tokio::time::timeout(STEP, tokio_tungstenite::connect_async(req))
        .await
        .expect("refused upgrade hung")
    {
        Err(tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 401),
        Err(e) => panic!("expected an HTTP 401 refusal, got error {e:?}"),
        Ok((_, resp)) => panic!("upgrade with an ended session succeeded: {resp:?}"),
    }
    assert!(s.upstream.upgrades().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_identity_headers_on_the_upgrade_are_replaced() {
    let s = ws_stack().await;
    let cookie = login_alice(&s.gw).await;
    let cookie_header = session_cookie_header(&cookie);
    let headers = [
        ("cookie", cookie_header.as_str()),
        ("x-auth-user", "mallory"),
        ("x-auth-roles", "superadmin"),
        ("x_auth_user_id", "999"),
    ];
    let mut ws = open_tunnel(&s.gw, "/ws/chat", &headers, "hello alice").await;
    ws.send(Message::text("ping?")).await.unwrap();
    assert_eq!(next_message(&mut ws).await, Message::text("ping?"));
    let _ = ws.close(None).await;

    let upgrades = s.upstream.upgrades();
    let h = upgrades.last().expect("the upstream saw the upgrade");
    assert_eq!(header_values(h, "x-auth-user"), vec!["alice".to_string()]);
    assert_eq!(
        header_values(h, "x-auth-roles"),
        vec!["admin,user".to_string()]
    );
    assert_eq!(header_values(h, "x-auth-user-id"), vec!["1".to_string()]);
    assert!(
        header_values(h, "x_auth_user_id").is_empty(),
        "underscore spelling reached the upstream: {h:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_concurrent_websockets_for_different_users() {
    let s = ws_stack().await;
    let alice = login_alice(&s.gw).await;
    let bob = login_json(&s.gw, "bob", "bob-password")
        .await
        .expect("bob logs in");
    let alice_cookie = session_cookie_header(&alice);
    let bob_cookie = session_cookie_header(&bob);
    let mut a = open_tunnel(&s.gw, "/ws/a", &[("cookie", &alice_cookie)], "hello alice").await;
    let mut b = open_tunnel(&s.gw, "/ws/b", &[("cookie", &bob_cookie)], "hello bob").await;
    for i in 0..10 {
        a.send(Message::text(format!("a{i}"))).await.unwrap();
        b.send(Message::text(format!("b{i}"))).await.unwrap();
        assert_eq!(next_message(&mut b).await, Message::text(format!("b{i}")));
        assert_eq!(next_message(&mut a).await, Message::text(format!("a{i}")));
    }
}
