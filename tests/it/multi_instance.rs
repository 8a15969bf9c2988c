//! Several gateway instances sharing one Redis behave as one: sessions are
//! portable between them and survive an instance restart.

use crate::support::*;

struct Pair {
    redis: RedisServer,
    _upstream: Upstream,
    cfg_a: TestConfig,
    a: Gateway,
    b: Gateway,
}

async fn two_gateways() -> Pair {
    let redis = RedisServer::start();
    let upstream = Upstream::start().await;
    let cfg_a = TestConfig::new(&redis.url(), upstream.addr());
    let cfg_b = TestConfig::new(&redis.url(), upstream.addr());
    let a = Gateway::start(&cfg_a).await;
    let b = Gateway::start(&cfg_b).await;
    Pair {
        redis,
        _upstream: upstream,
        cfg_a,
        a,
        b,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn session_created_on_one_instance_works_on_the_other() {
    let p = two_gateways().await;
    let cookie = login_alice(&p.a).await;
    let resp = get_with_cookie(&p.b, "/on-b", &cookie).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        echo(resp).await.header("x-auth-user").as_deref(),
        Some("alice")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn logout_on_one_instance_is_honoured_by_the_other() {
    let p = two_gateways().await;
    let cookie = login_alice(&p.a).await;
    assert_eq!(get_with_cookie(&p.b, "/x", &cookie).await.status(), 200);

    let resp = client()
        .post(p.b.url("/logout"))
        .header("cookie", session_cookie_header(&cookie))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);

    assert_eq!(get_with_cookie(&p.a, "/x", &cookie).await.status(), 401);
    assert!(p.redis.keys("whalefall:session:*").is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn session_survives_a_gateway_restart() {
    let mut p = two_gateways().await;
    let cookie = login_alice(&p.a).await;

    p.a.kill();
    let restarted = Gateway::start(&p.cfg_a).await;

    let resp = get_with_cookie(&restarted, "/after-restart", &cookie).await;
    assert_eq!(resp.status(), 200, "logs:\n{}", restarted.logs());
    assert_eq!(
        echo(resp).await.header("x-auth-user").as_deref(),
        Some("alice")
    );
    // And the other instance was never affected.
    assert_eq!(get_with_cookie(&p.b, "/x", &cookie).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn instance_with_a_different_secret_rejects_the_cookie() {
    let p = two_gateways().await;
    let cookie = login_alice(&p.a).await;
    let mut other = p.cfg_a.clone();
    other.reassign_ports();
    other.secret = "a-completely-different-secret-of-40-bytes!".to_string();
    let c = Gateway::start(&other).await;
    assert_eq!(get_with_cookie(&c, "/x", &cookie).await.status(), 401);
}
