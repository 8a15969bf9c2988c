//! The configs we ship (config/, docker/) must pass `gateway check-config`, so an operator who
//! copies one starts from something that works.

use std::path::Path;
use std::process::Command;

fn check(config: &Path, envs: &[(&str, &str)]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["check-config", "--config"])
        .arg(config)
        .envs(envs.iter().copied())
        .output()
        .expect("run gateway");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

const SECRETS: &[(&str, &str)] = &[
    (
        "GATEWAY_SESSION_SECRET",
        "0123456789abcdef0123456789abcdef-ci",
    ),
    (
        "GATEWAY_IDENTITY_SECRET",
        "fedcba9876543210fedcba9876543210-ci",
    ),
    ("GATEWAY_ADMIN_TOKEN", "admin-token-for-ci-only"),
    ("REDIS_PASSWORD", "redis-password"),
    (
        "DATABASE_URL",
        "postgres://whalefall:pw@postgres:5432/whalefall",
    ),
];

#[test]
fn the_documented_example_config_is_valid() {
    let (ok, out) = check(Path::new("config/gateway.toml"), SECRETS);
    assert!(ok, "{out}");
}

#[test]
fn the_documented_example_config_names_its_missing_secret() {
    let (ok, out) = check(Path::new("config/gateway.toml"), &[]);
    assert!(!ok);
    assert!(out.contains("GATEWAY_SESSION_SECRET"), "{out}");
}

#[test]
fn the_compose_config_is_valid() {
    let (ok, out) = check(Path::new("docker/gateway.toml"), SECRETS);
    assert!(ok, "{out}");
}

#[test]
fn the_demo_config_is_valid() {
    let (ok, out) = check(Path::new("config/demo.toml"), SECRETS);
    assert!(ok, "{out}");
}
