//! Large request and response bodies pass through the gateway intact.

use std::time::Duration;

use crate::support::*;
use sha2::{Digest, Sha256};

const UPLOAD_BYTES: usize = 20 * 1024 * 1024;
const DOWNLOAD_BYTES: u64 = 50 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread")]
async fn upload_of_20_mb_arrives_upstream_intact() {
    let s = Stack::start().await;
    let cookie = login_alice(&s.gw).await;
    let body: Vec<u8> = (0..UPLOAD_BYTES).map(|i| (i * 31 % 256) as u8).collect();
    let expected = sha256_hex(&body);

    let resp = client_with_timeout(Duration::from_secs(300))
        .post(s.gw.url("/upload"))
        .header("cookie", session_cookie_header(&cookie))
        .header("content-type", "application/octet-stream")
        .body(body)
        .send()
        .await
        .expect("upload");
    assert_eq!(resp.status(), 200);
    let e = echo(resp).await;
    assert_eq!(e.body_len, UPLOAD_BYTES as u64);
    assert_eq!(e.body_sha256, expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn download_of_50_mb_arrives_complete() {
    let s = Stack::start().await;
    let cookie = login_alice(&s.gw).await;
    let mut resp = client_with_timeout(Duration::from_secs(300))
        .get(s.gw.url(&format!("/big?bytes={DOWNLOAD_BYTES}")))
        .header("cookie", session_cookie_header(&cookie))
        .send()
        .await
        .expect("download");
    assert_eq!(resp.status(), 200);

    let mut hasher = Sha256::new();
    let mut received: u64 = 0;
    while let Some(chunk) = resp.chunk().await.expect("body chunk") {
        hasher.update(&chunk);
        received += chunk.len() as u64;
    }
    assert_eq!(received, DOWNLOAD_BYTES);
    assert_eq!(
        hex::encode(hasher.finalize()),
        pattern_sha256(DOWNLOAD_BYTES)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn large_download_on_a_public_path_arrives_complete() {
    // Public paths have no session lookup; make sure they stream the same way.
    let s = Stack::start_with(|c| c.public(&["/static/", "/big"])).await;
    let n: u64 = 8 * 1024 * 1024;
    let resp = client_with_timeout(Duration::from_secs(300))
        .get(s.gw.url(&format!("/big?bytes={n}")))
        .send()
        .await
        .expect("download");
    assert_eq!(resp.status(), 200);
    let body = resp.bytes().await.expect("body");
    assert_eq!(body.len() as u64, n);
    assert_eq!(sha256_hex(&body), pattern_sha256(n));
}
