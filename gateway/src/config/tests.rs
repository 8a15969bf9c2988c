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
    let secret = "k3y-0f-t3st5-ENV-9182736450-qwerty-zxcv";
    env.vars.insert("GW_SECRET".into(), secret.into());
    let text = MINIMAL.replace(
        "secret = \"0123456789abcdef0123456789abcdef\"",
        "secret_env = \"GW_SECRET\"",
    );
    let c = Config::parse("gw.toml", &text, &tempdir_with_users(), &env).expect("valid");
    assert_eq!(c.session.secret.expose(), secret.as_bytes());
    assert!(!format!("{c:?}").contains("9182736450"));
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

/// The problems of `text`, as (line, key) pairs.
fn problems_of(text: &str) -> Vec<(Option<usize>, String, String)> {
    parse(text)
        .unwrap_err()
        .problems
        .into_iter()
        .map(|p| (p.line, p.key, p.message))
        .collect()
}

#[test]
fn drop_in_defaults_keep_the_apps_cookies_apart() {
    let c = parse(MINIMAL).expect("valid");
    assert_eq!(c.session.cookie_name, "__Host-gateway_session");
    assert_eq!(c.upstream.strip_cookies, ["remember_token"]);
    assert_eq!(c.upstream.app_session_cookie, None);
    assert_eq!(c.login.api_path, None);
    assert!(c.login.app_logout_paths.is_empty());
    assert_eq!(c.login.language, LanguageChoice::Auto);
}

#[test]
fn the_gateway_cookie_may_not_take_the_apps_name() {
    let text = r#"
[upstream]
servers = ["127.0.0.1:5001"]
app_session_cookie = "whalefall_session"

[session]
cookie_name = "whalefall_session"
secret = "0123456789abcdef0123456789abcdef"

[login]
users_file = "users.toml"
"#;
    let problems = problems_of(text);
    assert_eq!(problems.len(), 1, "{problems:?}");
    let (line, key, message) = &problems[0];
    assert_eq!((*line, key.as_str()), (Some(7), "[session] cookie_name"));
    assert!(message.contains("app's own session cookie"), "{message}");

    // Flask's default name is refused even when the operator declared nothing.
    let flask = MINIMAL.replace("[session]", "[session]\ncookie_name = \"session\"");
    let problems = problems_of(&flask);
    assert!(problems[0].2.contains("Flask's default"), "{problems:?}");
    // So is a name the gateway would strip from every request.
    let stripped = MINIMAL.replace("[session]", "[session]\ncookie_name = \"remember_token\"");
    assert!(problems_of(&stripped)[0].2.contains("strip_cookies"));
    // The app's session cookie itself must reach the app.
    let text = MINIMAL.replace(
        "servers = [\"127.0.0.1:5001\"]",
        "servers = [\"127.0.0.1:5001\"]\napp_session_cookie = \"s\"\nstrip_cookies = [\"s\", \"bad name\"]",
    );
    let problems = problems_of(&text);
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems.iter().all(|p| p.1 == "[upstream] strip_cookies"));
}

#[test]
fn whalefall_login_paths_are_accepted_and_checked() {
    let text = MINIMAL.replace(
        "[login]",
        "[login]\npath = \"/auth/login\"\napi_path = \"/api/v1/auth/login\"\n\
         app_logout_paths = [\"/auth/logout\", \"/api/v1/auth/logout\"]\nlanguage = \"zh-CN\"",
    );
    let c = parse(&text).expect("valid");
    assert_eq!(c.login.path, "/auth/login");
    assert_eq!(c.login.api_path.as_deref(), Some("/api/v1/auth/login"));
    assert!(c.is_app_logout("/auth/logout") && !c.is_app_logout("/auth/logout/x"));
    assert_eq!(
        c.login.language,
        LanguageChoice::Fixed(crate::i18n::Language::ZhCn)
    );

    let text = MINIMAL.replace(
        "[login]",
        "[login]\napi_path = \"/login\"\napp_logout_paths = [\"/logout\", \"auth/logout\"]\nlanguage = \"chinese\"",
    );
    let problems = problems_of(&text);
    let keys: Vec<&str> = problems.iter().map(|p| p.1.as_str()).collect();
    assert_eq!(
        keys,
        [
            "[login] app_logout_paths",
            "[login] api_path",
            "[login] app_logout_paths",
            "[login] language"
        ],
        "{problems:?}"
    );
    assert!(problems[1].2.contains("already used by `path`"));
    assert!(problems[2].2.contains("gateway's own `logout_path`"));
}

#[test]
fn integers_outside_their_range_say_what_is_allowed() {
    let text = MINIMAL
        .replace("[upstream]", "[server]\nthreads = 0\n[upstream]")
        .replace("[session]", "[session]\nmax_per_user = 0")
        .replace(
            "[login]",
            "[login]\nmax_failures_per_user = -1\nmax_failures_per_ip = 5000000000",
        )
        + "[audit]\nstream_max_len = 0\n";
    let problems = problems_of(&text);
    let message = |key: &str| {
        problems
            .iter()
            .find(|p| p.1 == key)
            .map(|p| p.2.clone())
            .unwrap_or_else(|| panic!("{key} not reported: {problems:?}"))
    };
    assert_eq!(
        message("[server] threads"),
        "is 0; must be between 1 and 1024"
    );
    assert_eq!(message("[session] max_per_user"), "is 0; must be 1 or more");
    assert_eq!(
        message("[login] max_failures_per_user"),
        "is -1; must be 0 (off) or more"
    );
    assert_eq!(
        message("[login] max_failures_per_ip"),
        "is 5000000000; must be at most 4294967295"
    );
    assert_eq!(message("[audit] stream_max_len"), "is 0; must be 1 or more");
    assert_eq!(problems.len(), 5, "{problems:?}");
}

#[test]
fn integers_in_range_and_zero_for_off() {
    let text = MINIMAL
        .replace("[upstream]", "[server]\nthreads = 1024\n[upstream]")
        .replace("[session]", "[session]\nmax_per_user = 3")
        .replace("[login]", "[login]\nmax_failures_per_user = 0")
        + "[login.database]\nurl = \"postgres://u@h/db\"\npool_size = 256\n";
    let c = parse(&text).expect("valid");
    assert_eq!(c.server.threads, 1024);
    assert_eq!(c.session.max_per_user, Some(3));
    assert_eq!(c.login.throttle.max_failures_per_user, None);
    assert_eq!(c.login.throttle.max_failures_per_ip, Some(50));
    assert_eq!(c.login.database.unwrap().pool_size, 256);
    assert_eq!(parse(MINIMAL).unwrap().session.max_per_user, None);
}

/// A directory of its own holding `users.toml` with `users`.
fn dir_with_users(name: &str, users: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gw-config-test-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("users.toml"), users).unwrap();
    dir
}

#[test]
fn the_users_file_is_read_with_the_config() {
    let dir = dir_with_users(
        "users-ok",
        "[[users]]\nusername = \"alice\"\nid = 1\npassword_hash = \"pbkdf2:sha256:1000$salt$00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff\"\n",
    );
    let env = StaticEnvironment::default();
    let c = Config::parse("gw.toml", MINIMAL, &dir, &env).expect("valid");
    assert_eq!(c.login.users.find("alice").unwrap().identity.id, "1");
    // The config's Debug output never shows a password hash.
    assert!(!format!("{c:?}").contains("00ff"), "{c:?}");
}

#[test]
fn users_file_mistakes_are_config_problems_at_their_own_lines() {
    let dir = dir_with_users(
        "users-bad",
        "[[users]]\nusername = \"a\"\nid = 1\npassword_hash = \"plaintext\"\n",
    );
    let env = StaticEnvironment::default();
    let text = MINIMAL.replace("[upstream]", "[server]\nthreads = 0\n[upstream]");
    let err = Config::parse("gw.toml", &text, &dir, &env).unwrap_err();
    assert_eq!(err.problems.len(), 2, "{err}");
    let users = err
        .problems
        .iter()
        .find(|p| p.file.ends_with("users.toml"))
        .unwrap_or_else(|| panic!("users file not reported: {err}"));
    assert_eq!((users.line, users.key.as_str()), (Some(4), "password_hash"));

    let missing = MINIMAL.replace("users.toml", "nobody.toml");
    let err = Config::parse("gw.toml", &missing, &dir, &env).unwrap_err();
    assert_eq!(err.problems.len(), 1, "{err}");
    assert_eq!(err.problems[0].key, "[login] users_file");
    assert!(err.to_string().contains("cannot read"), "{err}");
}

#[test]
fn secrets_with_too_little_variety_are_refused() {
    for weak in [
        " ".repeat(32),
        "a".repeat(40),
        "abababababababababababababababab".to_string(),
    ] {
        let text = MINIMAL.replace(
            "secret = \"0123456789abcdef0123456789abcdef\"",
            &format!("secret = \"{weak}\""),
        );
        let problems = problems_of(&text);
        assert_eq!(problems.len(), 1, "{weak:?}: {problems:?}");
        assert!(
            problems[0].2.contains("different characters"),
            "{problems:?}"
        );
        assert!(
            problems[0].2.contains("openssl rand -hex 32"),
            "{problems:?}"
        );
        assert!(
            !problems[0].2.contains(&weak),
            "the secret itself is never echoed"
        );
    }
}

#[test]
fn public_prefixes_stop_at_segment_boundaries() {
    let text = MINIMAL.to_string()
        + "[access]\npublic = [\"/static/\", \"/favicon.ico\", \"/api/v1/health\"]\n";
    let c = parse(&text).expect("valid");
    for public in [
        "/static/app.css",
        "/static/",
        "/favicon.ico",
        "/api/v1/health",
        "/api/v1/health/basic",
    ] {
        assert!(c.is_public(public), "{public}");
    }
    for protected in [
        "/favicon.icoadmin",
        "/favicon.ico/admin",
        "/staticx",
        "/static",
        "/api/v1/healthz",
        "/api/v1/health-admin",
        "/",
    ] {
        assert!(!c.is_public(protected), "{protected}");
    }
}

/// What `run` would refuse, check-config refuses too, each at its line.
#[test]
fn check_config_refuses_what_run_would() {
    for (section, key) in [
        (
            "[redis]\nurl = \"redis://127.0.0.1:99999/0\"",
            "[redis] url",
        ),
        ("[redis]\nurl = \"redis://[::1\"", "[redis] url"),
        (
            "[redis]\nurl = \"redis://127.0.0.1:6379/notanumber\"",
            "[redis] url",
        ),
        (
            "[audit]\nsink = \"file\"\nfile = \"/no/such/folder/audit.log\"",
            "[audit] file",
        ),
    ] {
        let text = format!("{MINIMAL}{section}\n");
        let problems = problems_of(&text);
        assert_eq!(problems.len(), 1, "{section}: {problems:?}");
        assert_eq!(problems[0].1, key, "{problems:?}");
        // On the line of the value at fault: the last line of `text`.
        assert_eq!(problems[0].0, Some(text.lines().count()), "{problems:?}");
    }
    for server in ["http://127.0.0.1:5001", "127.0.0.1:0"] {
        let text = MINIMAL.replace("127.0.0.1:5001", server);
        let problems = problems_of(&text);
        assert_eq!(
            problems[0].1, "[upstream] servers",
            "{server}: {problems:?}"
        );
    }
}

#[test]
fn secure_cookies_get_the_host_prefix_unless_switched_off() {
    let named = |lines: &str| {
        let text = MINIMAL.replace("[session]", &format!("[session]\n{lines}"));
        parse(&text).expect("valid").session.cookie_name
    };
    assert_eq!(named(""), "__Host-gateway_session");
    assert_eq!(named("cookie_name = \"gw\""), "__Host-gw");
    assert_eq!(named("cookie_name = \"__Host-gw\""), "__Host-gw");
    assert_eq!(named("cookie_secure = false"), "gateway_session");
    assert_eq!(named("host_prefix = false"), "gateway_session");
    let c = parse(MINIMAL).expect("valid");
    assert_eq!(c.session.nonce_cookie_name(), "__Host-gateway_session_csrf");
}

#[test]
fn redis_is_reached_one_way_and_tls_files_need_tls() {
    let with = |redis: &str| problems_of(&format!("{MINIMAL}[redis]\n{redis}\n"));
    let mixed = with("url = \"redis://127.0.0.1:6379/0\"\nsentinels = [\"127.0.0.1:26379\"]\nsentinel_master = \"m\"");
    assert!(
        mixed
            .iter()
            .any(|p| p.2.contains("exactly one way to reach Redis")),
        "{mixed:?}"
    );
    let cluster_and_url =
        with("url = \"redis://127.0.0.1:6379/0\"\ncluster_nodes = [\"127.0.0.1:7000\"]");
    assert!(
        cluster_and_url
            .iter()
            .any(|p| p.1 == "[redis] cluster_nodes" && p.2.contains("exactly one way")),
        "{cluster_and_url:?}"
    );
    let bad_node = with("cluster_nodes = [\"127.0.0.1\"]");
    assert!(
        bad_node
            .iter()
            .any(|p| p.1 == "[redis] cluster_nodes" && p.2.contains("HOST:PORT")),
        "{bad_node:?}"
    );
    let unusable = with("cluster_nodes = [\"bad host:7000\"]");
    assert!(
        unusable
            .iter()
            .any(|p| p.1 == "[redis] cluster_nodes" && p.2.contains("not a usable")),
        "{unusable:?}"
    );
    let no_nodes = with("cluster_nodes = []");
    assert!(
        no_nodes.iter().any(|p| p.1 == "[redis] cluster_nodes"),
        "{no_nodes:?}"
    );
    let cluster_database = with("cluster_nodes = [\"127.0.0.1:7000\"]\ndatabase = 1");
    assert!(
        cluster_database
            .iter()
            .any(|p| p.1 == "[redis] database" && p.2.contains("database 0 only")),
        "{cluster_database:?}"
    );
    let no_master = with("sentinels = [\"127.0.0.1:26379\"]");
    assert!(
        no_master.iter().any(|p| p.1 == "[redis] sentinel_master"),
        "{no_master:?}"
    );
    let stray = with("sentinel_master = \"m\"");
    assert!(
        stray.iter().any(|p| p.2.contains("only with `sentinels`")),
        "{stray:?}"
    );
    let ca_without_tls = with("url = \"redis://127.0.0.1:6379/0\"\nca_file = \"ca.pem\"");
    assert!(
        ca_without_tls
            .iter()
            .any(|p| p.1 == "[redis] ca_file" && p.2.contains("only with TLS")),
        "{ca_without_tls:?}"
    );
    let contradiction = with("url = \"rediss://127.0.0.1:6379/0\"\ntls = false");
    assert!(
        contradiction.iter().any(|p| p.1 == "[redis] tls"),
        "{contradiction:?}"
    );
    let missing_ca = with("url = \"rediss://127.0.0.1:6379/0\"\nca_file = \"/nonexistent/ca.pem\"");
    assert!(
        missing_ca.iter().any(|p| p.2.contains("cannot read")),
        "{missing_ca:?}"
    );

    let ok = parse(&format!(
        "{MINIMAL}[redis]\nsentinels = [\"10.0.0.1:26379\", \"10.0.0.2:26379\"]\n\
         sentinel_master = \"mymaster\"\nusername = \"gateway\"\nwait_replicas = 1\n"
    ))
    .expect("valid sentinel config");
    let sentinel = ok.redis.sentinel.expect("sentinel settings");
    assert_eq!(sentinel.sentinels.len(), 2);
    assert_eq!(sentinel.master, "mymaster");
    assert_eq!(ok.redis.username.as_deref(), Some("gateway"));
    assert_eq!(ok.redis.wait_replicas, 1);
    assert!(ok.redis.tls.is_none());
    assert!(ok.redis.cluster_nodes.is_empty());

    let cluster = parse(&format!(
        "{MINIMAL}[redis]\ncluster_nodes = [\"10.0.0.1:7000\", \"10.0.0.2:7000\"]\n\
         username = \"gateway\"\npassword = \"pw\"\ntls = true\n"
    ))
    .expect("valid cluster config");
    assert_eq!(
        cluster.redis.cluster_nodes,
        ["10.0.0.1:7000", "10.0.0.2:7000"]
    );
    assert!(cluster.redis.sentinel.is_none());
    assert!(cluster.redis.url.is_empty());
    assert!(cluster.redis.tls.is_some());
}

#[test]
fn previous_secrets_of_a_rotation_are_read_and_checked() {
    let with = |line: &str| {
        MINIMAL.replace(
            "secret = \"0123456789abcdef0123456789abcdef\"",
            &format!("secret = \"0123456789abcdef0123456789abcdef\"\n{line}"),
        )
    };
    let c = parse(&with(
        "previous_secrets = [\"fedcba9876543210fedcba9876543210\", \"a1b2c3d4e5f60718293a4b5c6d7e8f90\"]",
    ))
    .expect("valid");
    assert_eq!(c.session.previous_secrets.len(), 2);

    let env = StaticEnvironment {
        vars: [(
            "OLD_SECRETS".to_string(),
            "fedcba9876543210fedcba9876543210,\na1b2c3d4e5f60718293a4b5c6d7e8f90\n".to_string(),
        )]
        .into(),
        ..StaticEnvironment::default()
    };
    let dir = tempdir_with_users();
    let c = Config::parse(
        "gw.toml",
        &with("previous_secrets_env = \"OLD_SECRETS\""),
        &dir,
        &env,
    )
    .expect("valid");
    assert_eq!(c.session.previous_secrets.len(), 2);

    let problems = problems_of(&with("previous_secrets = [\"short\"]"));
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].2.contains("previous secret #1"), "{problems:?}");
    assert!(
        !problems[0].2.contains("short\""),
        "the secret is never echoed"
    );
}

#[test]
fn access_rules_are_read_checked_and_shadowing_is_reported() {
    let text = format!(
        "{MINIMAL}[access]\npublic = [\"/static/\"]\n\n\
         [[access.rules]]\npath = \"/admin\"\nroles = [\"admin\"]\n\n\
         [[access.rules]]\npath = \"/admin/status\"\npublic = true\n\n\
         [[access.rules]]\npath = \"/admin\"\nmethods = [\"DELETE\"]\ndeny = true\n"
    );
    let c = parse(&text).expect("valid");
    assert_eq!(c.access.rules.len(), 3);
    assert_eq!(
        c.access.rules[0].requirement,
        crate::access::Requirement::Roles(vec!["admin".into()])
    );

    let broken = format!(
        "{MINIMAL}[[access.rules]]\npath = \"/admin\"\nroles = [\"admin\"]\n\n\
         [[access.rules]]\npath = \"/admin\"\ndeny = true\n\n\
         [[access.rules]]\npath = \"//x/../y\"\npublic = true\n\n\
         [[access.rules]]\npath = \"/z\"\npublic = true\ndeny = true\n\n\
         [[access.rules]]\npath = \"/m\"\nmethods = [\"get\"]\nroles = [\"a\"]\n"
    );
    let problems = problems_of(&broken);
    let says = |needle: &str| problems.iter().any(|p| p.2.contains(needle));
    assert!(says("shadowed by the rule at line"), "{problems:?}");
    assert!(says("must be a plain path"), "{problems:?}");
    assert!(says("exactly one of"), "{problems:?}");
    assert!(says("is not a method"), "{problems:?}");
    // Each at its own line, under its rule's name.
    assert!(
        problems.iter().any(|p| p.1 == "[access.rules[3]] path"),
        "{problems:?}"
    );
    assert!(problems.iter().all(|p| p.0.is_some()), "{problems:?}");
}

#[test]
fn log_settings_default_to_text_info_and_no_access_log() {
    let c = parse(MINIMAL).expect("valid");
    assert_eq!(c.log.format, LogFormat::Text);
    assert_eq!(c.log.level, log::LevelFilter::Info);
    assert_eq!(c.log.access, LineSink::Off);
    assert!(!c.log.access_query);
    let c = parse(&format!(
        "{MINIMAL}[log]\nformat = \"json\"\nlevel = \"debug\"\naccess = \"./access.log\"\naccess_query = true\n"
    ))
    .expect("valid");
    assert_eq!(c.log.format, LogFormat::Json);
    assert_eq!(c.log.level, log::LevelFilter::Debug);
    assert!(matches!(&c.log.access, LineSink::File(p) if p.ends_with("access.log")));
    assert!(c.log.access_query);
}

#[test]
fn every_log_mistake_is_reported_with_its_line() {
    let text = format!(
        "{MINIMAL}[log]\nformat = \"xml\"\nlevel = \"loud\"\naccess = \"access.log\"\nacess_query = true\n"
    );
    let err = parse(&text).unwrap_err();
    let first = MINIMAL.lines().count() + 1;
    for (offset, key, words) in [
        (1, "[log] format", "use \"text\" or \"json\""),
        (2, "[log] level", "error, warn, info"),
        (3, "[log] access", "a file path"),
        (4, "[log] acess_query", "did you mean `access_query`"),
    ] {
        let problem = err
            .problems
            .iter()
            .find(|p| p.key == key)
            .unwrap_or_else(|| panic!("{key} not reported: {err}"));
        assert_eq!(problem.line, Some(first + offset), "{problem:?}");
        assert!(problem.message.contains(words), "{problem:?}");
    }
    let missing = parse(&format!(
        "{MINIMAL}[log]\naccess = \"/no/such/folder/access.log\"\n"
    ))
    .unwrap_err();
    assert!(
        missing.to_string().contains("its folder does not exist"),
        "{missing}"
    );
}
