//! Password hashes made by other software (tests/vectors/password_hashes.json,
//! generated with the real Python libraries) log in with the right password and
//! only with it; `gateway hash-password` produces hashes the gateway accepts.

mod support;

use std::time::Duration;

use serde::Deserialize;
use support::*;

#[derive(Debug, Clone, Deserialize)]
struct Vector {
    scheme: String,
    library: String,
    password: String,
    hash: String,
}

fn vectors() -> Vec<Vector> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/vectors/password_hashes.json"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

const FAMILIES: &[&str] = &["argon2", "bcrypt", "werkzeug-pbkdf2", "werkzeug-scrypt"];

/// Slow hashes (bcrypt cost 12, pbkdf2 with 10^6 rounds) in a debug build
/// take a while; this is a hang guard only.
fn slow_client() -> reqwest::Client {
    client_with_timeout(Duration::from_secs(600))
}

async fn login_status(gw: &Gateway, user: &str, pass: &str) -> u16 {
    slow_client()
        .post(gw.url("/login"))
        .json(&serde_json::json!({"username": user, "password": pass}))
        .send()
        .await
        .unwrap_or_else(|e| panic!("login {user}: {e}"))
        .status()
        .as_u16()
}

/// One gateway whose users are the vectors of one family (user `v0`, `v1`, ...);
/// each must accept its password and refuse a wrong one.
async fn check_family(family: &str) {
    let vs: Vec<Vector> = vectors()
        .into_iter()
        .filter(|v| v.scheme.starts_with(family))
        .collect();
    assert!(!vs.is_empty(), "no vectors for {family}");
    let users: String = vs
        .iter()
        .enumerate()
        .map(|(i, v)| {
            user_entry(
                &format!("v{i}"),
                &format!("{}", 100 + i),
                &v.hash,
                &["user"],
                false,
            )
        })
        .collect();
    let s = Stack::start_with(|c| c.users(&users)).await;

    let mut failures = Vec::new();
    for (i, v) in vs.iter().enumerate() {
        let user = format!("v{i}");
        let right = login_status(&s.gw, &user, &v.password).await;
        if right != 200 {
            failures.push(format!(
                "right password -> {right}: {} ({}) {}",
                v.scheme, v.library, v.hash
            ));
        }
        let wrong = login_status(&s.gw, &user, &format!("{}x", v.password)).await;
        if wrong != 401 {
            failures.push(format!(
                "wrong password -> {wrong}: {} ({}) {}",
                v.scheme, v.library, v.hash
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} checks failed:\n{}\nlogs:\n{}",
        failures.len(),
        vs.len() * 2,
        failures.join("\n"),
        s.gw.logs()
    );
}

#[test]
fn every_vector_scheme_is_covered_by_a_test() {
    for v in vectors() {
        assert!(
            FAMILIES.iter().any(|f| v.scheme.starts_with(f)),
            "scheme {} has no test here",
            v.scheme
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn argon2_hashes_from_argon2_cffi_verify() {
    check_family("argon2").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bcrypt_2a_2b_2y_hashes_verify() {
    check_family("bcrypt").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn werkzeug_pbkdf2_sha256_hashes_verify() {
    check_family("werkzeug-pbkdf2").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn werkzeug_scrypt_hashes_verify() {
    check_family("werkzeug-scrypt").await;
}

fn hash_password(input: &str) -> String {
    let out = run_gateway_cli(&["hash-password"], Some(input.as_bytes()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "hash-password failed: {stderr}");
    String::from_utf8(out.stdout)
        .expect("utf-8 output")
        .trim()
        .to_string()
}

#[test]
fn hash_password_prints_an_argon2id_hash() {
    let hash = hash_password("s3cret horse\n");
    assert!(hash.starts_with("$argon2id$"), "{hash:?}");
    assert_eq!(hash.lines().count(), 1, "{hash:?}");
    assert!(!hash.contains("s3cret"), "the password is in the output");
}

#[test]
fn hash_password_salts_every_hash() {
    assert_ne!(
        hash_password("same password\n"),
        hash_password("same password\n")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn hash_password_output_works_in_a_users_file() {
    let hash = tokio::task::spawn_blocking(|| hash_password("s3cret horse\n"))
        .await
        .unwrap();
    let users = user_entry("dora", "7", &hash, &["user"], false);
    let s = Stack::start_with(|c| c.users(&users)).await;

    // The trailing newline was not part of the password.
    assert_eq!(login_status(&s.gw, "dora", "s3cret horse").await, 200);
    assert_eq!(login_status(&s.gw, "dora", "s3cret horse\n").await, 401);
    assert_eq!(login_status(&s.gw, "dora", "s3cret").await, 401);
}
