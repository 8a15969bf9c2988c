//! Password hashes made by other software log in through the gateway: one user per format
//! family, from tests/vectors/password_hashes.json (generated with the real Python libraries),
//! in one users file. Every vector, and what the parser refuses, is checked by the unit tests
//! in gateway/src/password.rs; this is the end-to-end path (users file, login, verification on
//! a blocking thread). Also: `gateway hash-password` produces hashes the gateway accepts.

use std::time::Duration;

use crate::support::*;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
struct Vector {
    scheme: String,
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

/// Hang guard only: a debug build verifies slowly.
fn slow_client() -> reqwest::Client {
    client_with_timeout(Duration::from_secs(120))
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

/// Per family, the first vector with a non-ASCII password (these have cheap cost parameters,
/// and the password crosses the JSON body as UTF-8).
#[tokio::test(flavor = "multi_thread")]
async fn one_user_of_each_hash_family_logs_in_through_the_gateway() {
    let all = vectors();
    let picked: Vec<&Vector> = FAMILIES
        .iter()
        .map(|family| {
            all.iter()
                .find(|v| v.scheme.starts_with(family) && !v.password.is_ascii())
                .unwrap_or_else(|| panic!("no non-ASCII vector for {family}"))
        })
        .collect();
    let users: String = picked
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
    for (i, v) in picked.iter().enumerate() {
        let user = format!("v{i}");
        let right = login_status(&s.gw, &user, &v.password).await;
        if right != 200 {
            failures.push(format!(
                "right password -> {right}: {} {}",
                v.scheme, v.hash
            ));
        }
        let wrong = login_status(&s.gw, &user, &format!("{}x", v.password)).await;
        if wrong != 401 {
            failures.push(format!(
                "wrong password -> {wrong}: {} {}",
                v.scheme, v.hash
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} checks failed:\n{}\nlogs:\n{}",
        failures.len(),
        picked.len() * 2,
        failures.join("\n"),
        s.gw.logs()
    );
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
