use super::*;
use crate::env::StaticEnvironment;

fn parse(text: &str) -> Result<Config, ConfigError> {
    let dir = tempdir_with_users();
    Config::parse("gw.toml", text, &dir, &StaticEnvironment::default())
}

fn tempdir_with_users() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gw-config-test-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join("users.toml"), "users = []\n");
    dir
}

const MINIMAL: &str = r#"
[upstream]
servers = ["127.0.0.1:5001"]
[session]
secret = "0123456789abcdef0123456789abcdef"
[login]
users_file = "users.toml"
"#;

#[test]
fn minimal_config_gets_documented_defaults() {
    let c = parse(MINIMAL).expect("valid");
    assert_eq!(c.server.listen, "0.0.0.0:8080".parse().unwrap());
    assert_eq!(c.server.admin_listen, "127.0.0.1:9090".parse().unwrap());
    assert_eq!(c.session.idle_timeout, Duration::from_secs(1800));
    assert_eq!(c.session.absolute_timeout, Duration::from_secs(8 * 3600));
    assert_eq!(c.session.touch_interval, Duration::from_secs(90));
    assert!(c.session.cookie_secure);
    assert_eq!(c.login.path, "/login");
    assert!(c.admin.token.is_none());
}

#[test]
fn every_problem_is_reported_with_its_line() {
    let text = r#"
[server]
listen = "not-an-address"
threads = "two"

[upstream]
servers = ["127.0.0.1:5001"]

[session]
secret = "short"
idle_timout = "30m"
absolute_timeout = "30 minutes"

[login]
users_file = "users.toml"

[extras]
x = 1
"#;
    let err = parse(text).unwrap_err();
    let lines: Vec<(Option<usize>, String)> = err
        .problems
        .iter()
        .map(|p| (p.line, p.key.clone()))
        .collect();
    for (line, key) in [
        (3, "[server] listen"),
        (4, "[server] threads"),
        (10, "[session] secret"),
        (11, "[session] idle_timout"),
        (12, "[session] absolute_timeout"),
        (17, "[extras]"),
    ] {
        assert!(
            lines.contains(&(Some(line), key.to_string())),
            "missing {key} at line {line} in {err}"
        );
    }
    assert!(err.to_string().contains("did you mean `idle_timeout`"));
}

#[test]
fn syntax_errors_report_a_line() {
    let err = parse("[server]\nlisten = \n").unwrap_err();
    assert_eq!(err.problems.len(), 1);
    assert_eq!(err.problems[0].line, Some(2));
}

#[test]
fn secrets_come_from_env_and_never_show_in_debug() {
    let mut env = StaticEnvironment::default();
    env.vars.insert("GW_SECRET".into(), "x".repeat(40));
    let text = MINIMAL.replace(
        "secret = \"0123456789abcdef0123456789abcdef\"",
        "secret_env = \"GW_SECRET\"",
    );
    let c = Config::parse("gw.toml", &text, &tempdir_with_users(), &env).expect("valid");
    assert_eq!(c.session.secret.expose(), "x".repeat(40).as_bytes());
    assert!(!format!("{c:?}").contains("xxxxxxxx"));
}

#[test]
fn a_missing_env_secret_is_named() {
    let text = MINIMAL.replace(
        "secret = \"0123456789abcdef0123456789abcdef\"",
        "secret_env = \"NOPE_NOT_SET\"",
    );
    let err = parse(&text).unwrap_err();
    assert!(err.to_string().contains("NOPE_NOT_SET"), "{err}");
}

#[test]
fn two_sources_for_one_secret_is_an_error() {
    let text = MINIMAL.replace(
        "secret = \"0123456789abcdef0123456789abcdef\"",
        "secret = \"0123456789abcdef0123456789abcdef\"\nsecret_env = \"X\"",
    );
    assert!(parse(&text).unwrap_err().to_string().contains("only one"));
}
