//! `[login.database]`: users from the app's own PostgreSQL `users` table (WhaleFall-shaped,
//! Flask-Bcrypt hashes), alone or after the users file. A database that is down or hung makes
//! logins answer 503 (never 401, never 500), existing sessions keep working, and the gateway
//! recovers by itself when the database is back.
//!
//! Needs the real PostgreSQL on 127.0.0.1:5432 (trust auth, user `postgres`); each test creates
//! and drops its own database. Hashes are made by Python's `bcrypt`, exactly as Flask-Bcrypt
//! stores them.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::support::*;
use tokio_postgres::NoTls;

/// Hang guard for one request while the database misbehaves (the default lookup timeout is
/// 2s; a login also waits for a bcrypt check).
const GUARD: Duration = Duration::from_secs(20);
/// How long the gateway may take to notice the database is back.
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------
// PostgreSQL
// ---------------------------------------------------------------------------

const PG: &str = "host=127.0.0.1 port=5432 user=postgres";

async fn pg_connect(dbname: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(&format!("{PG} dbname={dbname}"), NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!("PostgreSQL on 127.0.0.1:5432 (user postgres, db {dbname}): {e}")
        });
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// A database of our own, dropped (forcibly) when the test ends.
struct TestDb {
    name: String,
}

static DB_COUNTER: AtomicUsize = AtomicUsize::new(0);

impl TestDb {
    /// A unique name; the database is not created yet.
    fn named() -> TestDb {
        let n = DB_COUNTER.fetch_add(1, Ordering::SeqCst);
        TestDb {
            name: format!("gw_test_{}_{n}", std::process::id()),
        }
    }

    async fn create(&self) {
        let admin = pg_connect("postgres").await;
        // Separate statements: CREATE DATABASE cannot run in a (multi-statement) transaction.
        for sql in [
            format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            format!("CREATE DATABASE {}", self.name),
        ] {
            admin
                .batch_execute(&sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
        }
    }

    async fn new() -> TestDb {
        let db = TestDb::named();
        db.create().await;
        db
    }

    fn url(&self) -> String {
        format!("postgresql://postgres@127.0.0.1:5432/{}", self.name)
    }

    async fn client(&self) -> tokio_postgres::Client {
        pg_connect(&self.name).await
    }

    /// The WhaleFall `users` table (docker/postgres/init.sql).
    async fn create_users_table(&self) {
        self.client()
            .await
            .batch_execute(
                "CREATE TABLE users (
                    id          SERIAL PRIMARY KEY,
                    username    VARCHAR(255) NOT NULL UNIQUE,
                    password    VARCHAR(255) NOT NULL,
                    role        TEXT NOT NULL DEFAULT 'user',
                    is_active   BOOLEAN NOT NULL DEFAULT TRUE,
                    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
                    last_login  TIMESTAMPTZ
                )",
            )
            .await
            .expect("create users table");
    }

    /// Inserts a user and returns its serial id.
    async fn add_user(&self, username: &str, hash: &str, role: &str, active: bool) -> i32 {
        self.client()
            .await
            .query_one(
                "INSERT INTO users (username, password, role, is_active) VALUES ($1, $2, $3, $4)
                 RETURNING id",
                &[&username, &hash, &role, &active],
            )
            .await
            .expect("insert user")
            .get(0)
    }

    /// Admin, inactive and plain user, as in a WhaleFall database. Returns their ids.
    async fn seed_whalefall(&self) -> Seeded {
        self.create_users_table().await;
        let h = hashes();
        // Something first, so ids are not simply 1, 2, 3.
        self.add_user("placeholder", &h.other, "user", true).await;
        Seeded {
            admin: self.add_user("admin", &h.admin, "admin", true).await,
            inactive: self.add_user("olduser", &h.inactive, "user", false).await,
            user: self.add_user("reader", &h.user, "user", true).await,
        }
    }

    /// Makes the database refuse every connection and cuts the open ones, like a database
    /// that went down. Undo with [`TestDb::bring_back`].
    async fn take_down(&self) {
        let admin = pg_connect("postgres").await;
        for sql in [
            format!("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false", self.name),
            format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = '{}' AND pid <> pg_backend_pid()",
                self.name
            ),
        ] {
            admin
                .batch_execute(&sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
        }
    }

    async fn bring_back(&self) {
        pg_connect("postgres")
            .await
            .batch_execute(&format!(
                "ALTER DATABASE {} WITH ALLOW_CONNECTIONS true",
                self.name
            ))
            .await
            .expect("bring database back");
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // No async drop: use a private runtime on a plain thread (we may be inside one).
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                if let Ok((client, conn)) =
                    tokio_postgres::connect(&format!("{PG} dbname=postgres"), NoTls).await
                {
                    tokio::spawn(async move {
                        let _ = conn.await;
                    });
                    let _ = client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                }
            });
        })
        .join();
    }
}

struct Seeded {
    admin: i32,
    #[allow(dead_code)] // seeded so the table looks like WhaleFall's; no test needs its id
    inactive: i32,
    user: i32,
}

// ---------------------------------------------------------------------------
// Flask-Bcrypt hashes, made by Python's bcrypt
// ---------------------------------------------------------------------------

const ADMIN_PW: &str = "admin-pass-Ünïcode-1";
const INACTIVE_PW: &str = "inactive-pass-2";
const USER_PW: &str = "reader-pass-3";

struct Hashes {
    admin: String,
    inactive: String,
    user: String,
    other: String,
}

/// The project's Python (`.venv`, made by tests/deps.sh with the `bcrypt` package), or a bare
/// `python3` when there is no venv.
fn python() -> std::path::PathBuf {
    let venv = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    if venv.exists() {
        venv
    } else {
        "python3".into()
    }
}

/// `bcrypt.hashpw(pw.encode(), bcrypt.gensalt(12)).decode()`, what Flask-Bcrypt stores.
/// Fails loudly when Python or its `bcrypt` package is missing: these tests are about
/// exactly those hashes.
fn python_bcrypt(password: &str) -> String {
    let out = Command::new(python())
        .env("PYTHONIOENCODING", "utf-8")
        .arg("-c")
        .arg(
            "import sys, bcrypt; pw = sys.stdin.read(); \
             print(bcrypt.hashpw(pw.encode(), bcrypt.gensalt(12)).decode())",
        )
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(password.as_bytes())?;
            child.wait_with_output()
        })
        .expect("run Python (needed to make Flask-Bcrypt hashes; bash tests/deps.sh makes .venv)");
    assert!(
        out.status.success(),
        "{} -c 'import bcrypt ...' failed (is the pip package `bcrypt` installed? bash tests/deps.sh): {}",
        python().display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let hash = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(
        hash.starts_with("$2b$12$") && hash.len() == 60,
        "unexpected Flask-Bcrypt hash {hash:?}"
    );
    hash
}

fn hashes() -> &'static Hashes {
    static HASHES: OnceLock<Hashes> = OnceLock::new();
    HASHES.get_or_init(|| Hashes {
        admin: python_bcrypt(ADMIN_PW),
        inactive: python_bcrypt(INACTIVE_PW),
        user: python_bcrypt(USER_PW),
        other: python_bcrypt("placeholder-pass"),
    })
}

// ---------------------------------------------------------------------------
// Gateway config and requests
// ---------------------------------------------------------------------------

/// `[login.database]` with `url` (plus any extra keys); without `users_file` unless `with_file`.
fn with_database(c: TestConfig, url: &str, with_file: bool, extra_keys: &str) -> TestConfig {
    let c = if with_file {
        c
    } else {
        c.replace("users_file = \"users.toml\"\n", "")
    };
    c.extra(&format!(
        "[login.database]\nurl = {}\n{extra_keys}",
        toml_str(url)
    ))
}

async fn login(gw: &Gateway, user: &str, pass: &str) -> reqwest::Response {
    client_with_timeout(GUARD)
        .post(gw.url("/login"))
        .header("accept", "application/json")
        .json(&serde_json::json!({"username": user, "password": pass}))
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST /login as {user} got no answer: {e}"))
}

/// Logs in and returns (cookie, login JSON); panics with context otherwise.
async fn login_ok(gw: &Gateway, user: &str, pass: &str) -> (String, serde_json::Value) {
    let resp = login(gw, user, pass).await;
    let status = resp.status();
    let cookie = cookie_from(&resp, COOKIE_NAME);
    let body = resp.text().await.unwrap_or_default();
    match cookie {
        Some(c) if status == 200 => (c, serde_json::from_str(&body).expect("login JSON")),
        _ => panic!(
            "login as {user} failed: {status} {body}\nlogs:\n{}",
            gw.logs()
        ),
    }
}

/// Status and body of a login attempt.
async fn login_status(gw: &Gateway, user: &str, pass: &str) -> (u16, String) {
    let resp = login(gw, user, pass).await;
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

async fn whoami(gw: &Gateway, cookie: &str) -> Echo {
    let resp = client_with_timeout(GUARD)
        .get(gw.url("/whoami"))
        .header("cookie", session_cookie_header(cookie))
        .send()
        .await
        .expect("GET /whoami");
    assert_eq!(resp.status(), 200, "GET /whoami with a session");
    echo(resp).await
}

fn assert_login_unavailable(status: u16, body: &str, what: &str) {
    assert_eq!(
        status, 503,
        "{what}: expected 503 while the database is unavailable (not 401, not 500): {body}"
    );
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn database_users_log_in_with_roles_from_their_row() {
    let db = TestDb::new().await;
    let ids = db.seed_whalefall().await;
    let s = Stack::start_with(|c| with_database(c, &db.url(), false, "")).await;

    let (cookie, body) = login_ok(&s.gw, "admin", ADMIN_PW).await;
    assert_eq!(
        body,
        serde_json::json!({"user": {"id": ids.admin.to_string(), "username": "admin", "role": "admin", "roles": ["admin"]}})
    );
    let e = whoami(&s.gw, &cookie).await;
    assert_eq!(e.header("x-auth-user").as_deref(), Some("admin"));
    assert_eq!(e.header("x-auth-user-id"), Some(ids.admin.to_string()));
    assert_eq!(e.header("x-auth-roles").as_deref(), Some("admin"));

    let (cookie, body) = login_ok(&s.gw, "reader", USER_PW).await;
    assert_eq!(body["user"]["roles"], serde_json::json!(["user"]));
    let e = whoami(&s.gw, &cookie).await;
    assert_eq!(e.header("x-auth-user").as_deref(), Some("reader"));
    assert_eq!(e.header("x-auth-user-id"), Some(ids.user.to_string()));
    assert_eq!(e.header("x-auth-roles").as_deref(), Some("user"));

    // Browser form login works the same way.
    let resp = login_form(&s.gw, "admin", ADMIN_PW, "/reports").await;
    assert_eq!(resp.status(), 303);
    assert_eq!(location(&resp).as_deref(), Some("/reports"));
    assert!(cookie_from(&resp, COOKIE_NAME).is_some());

    // A role change in the table applies at the next login.
    db.client()
        .await
        .execute(
            "UPDATE users SET role = 'admin, auditor' WHERE username = 'reader'",
            &[],
        )
        .await
        .unwrap();
    let (cookie, body) = login_ok(&s.gw, "reader", USER_PW).await;
    assert_eq!(
        body["user"]["roles"],
        serde_json::json!(["admin", "auditor"])
    );
    let e = whoami(&s.gw, &cookie).await;
    assert_eq!(e.header("x-auth-roles").as_deref(), Some("admin,auditor"));
}

#[tokio::test(flavor = "multi_thread")]
async fn inactive_unknown_and_wrong_password_are_the_same_401() {
    let db = TestDb::new().await;
    db.seed_whalefall().await;
    // A row whose password is not a hash the gateway can check (e.g. never set).
    db.add_user("nohash", "not-a-hash", "admin", true).await;
    let s = Stack::start_with(|c| with_database(c, &db.url(), false, "")).await;

    let (status, wrong_pw) = login_status(&s.gw, "admin", "not-the-password").await;
    assert_eq!(status, 401, "{wrong_pw}");
    let v: serde_json::Value = serde_json::from_str(&wrong_pw).unwrap();
    assert_eq!(v["error"], "invalid_credentials");

    let (status, inactive) = login_status(&s.gw, "olduser", INACTIVE_PW).await;
    assert_eq!(
        status, 401,
        "inactive user with the right password: {inactive}"
    );
    assert_eq!(
        inactive, wrong_pw,
        "inactive user must look like a wrong password"
    );

    let (status, unknown) = login_status(&s.gw, "nobody", "whatever-pass").await;
    assert_eq!(status, 401);
    assert_eq!(unknown, wrong_pw);

    let (status, nohash) = login_status(&s.gw, "nohash", "not-a-hash").await;
    assert_eq!(status, 401);
    assert_eq!(nohash, wrong_pw);

    // Form logins: the same HTML message for all of them.
    for (user, pass) in [
        ("olduser", INACTIVE_PW),
        ("admin", "nope-nope"),
        ("nobody", "x"),
    ] {
        let resp = login_form(&s.gw, user, pass, "/").await;
        assert_eq!(resp.status(), 401, "{user}");
        assert!(cookie_from(&resp, COOKIE_NAME).is_none());
        let html = resp.text().await.unwrap();
        assert!(
            html.contains("Invalid username or password"),
            "{user}: {html}"
        );
    }
    assert!(
        s.session_keys().is_empty(),
        "a refused login created a session"
    );

    // Re-activating the user lets them in (the row is read at every login).
    db.client()
        .await
        .execute(
            "UPDATE users SET is_active = TRUE WHERE username = 'olduser'",
            &[],
        )
        .await
        .unwrap();
    login_ok(&s.gw, "olduser", INACTIVE_PW).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn custom_query_with_aliased_columns() {
    let db = TestDb::new().await;
    let h = hashes();
    let c = db.client().await;
    c.batch_execute(
        "CREATE TABLE accounts (
            account_id BIGINT PRIMARY KEY,
            login      TEXT NOT NULL UNIQUE,
            pw_hash    TEXT,
            perms      TEXT,
            state      TEXT NOT NULL
        )",
    )
    .await
    .unwrap();
    c.execute(
        "INSERT INTO accounts VALUES (9000000001, 'Carol.Admin', $1, 'admin,ops', 'active'),
                                     (9000000002, 'dave', $2, NULL, 'active'),
                                     (9000000003, 'erin', $3, 'user', 'locked')",
        &[&h.admin, &h.user, &h.inactive],
    )
    .await
    .unwrap();
    let query = "SELECT account_id AS id, login AS username, pw_hash AS password, \
                 perms AS role, (state = 'active') AS is_active \
                 FROM accounts WHERE lower(login) = lower($1)";
    let s = Stack::start_with(|cfg| {
        with_database(
            cfg,
            &db.url(),
            false,
            &format!(
                "query = {}\npool_size = 2\ntimeout = \"3s\"\n",
                toml_str(query)
            ),
        )
    })
    .await;

    // Case-insensitive username through the custom WHERE clause; bigint id.
    let (cookie, body) = login_ok(&s.gw, "carol.admin", ADMIN_PW).await;
    assert_eq!(body["user"]["id"], "9000000001");
    assert_eq!(body["user"]["username"], "Carol.Admin");
    assert_eq!(body["user"]["roles"], serde_json::json!(["admin", "ops"]));
    let e = whoami(&s.gw, &cookie).await;
    assert_eq!(e.header("x-auth-roles").as_deref(), Some("admin,ops"));
    assert_eq!(e.header("x-auth-user-id").as_deref(), Some("9000000001"));

    // NULL role: signed in, with no roles.
    let (_, body) = login_ok(&s.gw, "dave", USER_PW).await;
    assert_eq!(body["user"]["roles"], serde_json::json!([]));

    // is_active computed by the query.
    let (status, _) = login_status(&s.gw, "erin", INACTIVE_PW).await;
    assert_eq!(status, 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn users_file_and_database_together_file_first() {
    let db = TestDb::new().await;
    let ids = db.seed_whalefall().await;
    // "alice" also exists in the table, with another password and role: the file wins.
    let alice_row = db.add_user("alice", &hashes().user, "user", true).await;
    let s = Stack::start_with(|c| with_database(c, &db.url(), true, "")).await;

    // File user (argon2id from users.toml).
    let (cookie, body) = login_ok(&s.gw, "alice", "alice-password").await;
    assert_eq!(body["user"]["id"], "1");
    assert_eq!(body["user"]["roles"], serde_json::json!(["admin", "user"]));
    let e = whoami(&s.gw, &cookie).await;
    assert_eq!(e.header("x-auth-roles").as_deref(), Some("admin,user"));
    // The shadowed row's password does not work.
    let (status, _) = login_status(&s.gw, "alice", USER_PW).await;
    assert_eq!(
        status, 401,
        "database row {alice_row} must not shadow the file user"
    );

    // Database user.
    let (cookie, body) = login_ok(&s.gw, "admin", ADMIN_PW).await;
    assert_eq!(body["user"]["id"], ids.admin.to_string());
    let e = whoami(&s.gw, &cookie).await;
    assert_eq!(e.header("x-auth-user").as_deref(), Some("admin"));
    assert_eq!(e.header("x-auth-roles").as_deref(), Some("admin"));

    // A disabled file user is refused even though the database is consulted for others.
    let (status, _) = login_status(&s.gw, "carol", "carol-password").await;
    assert_eq!(status, 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn database_down_means_503_existing_sessions_work_and_it_recovers() {
    let db = TestDb::new().await;
    db.seed_whalefall().await;
    let s = Stack::start_with(|c| with_database(c, &db.url(), true, "timeout = \"1s\"\n")).await;

    let (db_cookie, _) = login_ok(&s.gw, "admin", ADMIN_PW).await;
    let (file_cookie, _) = login_ok(&s.gw, "alice", "alice-password").await;

    db.take_down().await;

    // API login of a database user: 503 with Retry-After.
    let resp = login(&s.gw, "reader", USER_PW).await;
    let status = resp.status().as_u16();
    let retry_after = resp.headers().get("retry-after").cloned();
    let body = resp.text().await.unwrap_or_default();
    assert_login_unavailable(status, &body, "JSON login of a database user");
    assert!(retry_after.is_some(), "503 without Retry-After");
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON 503 body");
    assert!(v["error"].is_string(), "{body}");

    // Wrong password and unknown users cannot be told apart from the file alone: 503 too,
    // never a 401 that would make a valid user think their password is wrong.
    let (status, body) = login_status(&s.gw, "reader", "wrong-password").await;
    assert_login_unavailable(status, &body, "wrong password");
    let (status, body) = login_status(&s.gw, "nobody", "whatever").await;
    assert_login_unavailable(status, &body, "unknown user");

    // Browser form login: an HTML 503 page, not the login form with "invalid password".
    let resp = login_form(&s.gw, "reader", USER_PW, "/").await;
    assert_eq!(resp.status(), 503);
    let html = resp.text().await.unwrap();
    assert!(!html.contains("Invalid username or password"), "{html}");

    // Sessions live in Redis: everyone already signed in carries on.
    let e = whoami(&s.gw, &db_cookie).await;
    assert_eq!(e.header("x-auth-user").as_deref(), Some("admin"));
    assert_eq!(e.header("x-auth-roles").as_deref(), Some("admin"));
    whoami(&s.gw, &file_cookie).await;
    // File users can still sign in (the file is consulted first).
    login_ok(&s.gw, "alice", "alice-password").await;
    // The gateway's own health is about Redis, which is fine.
    let resp = client()
        .get(s.gw.url("/_gateway/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    // Repeated attempts while down do not wedge the pool.
    for _ in 0..5 {
        let (status, body) = login_status(&s.gw, "reader", USER_PW).await;
        assert_login_unavailable(status, &body, "repeated login");
    }

    db.bring_back().await;
    let deadline = Instant::now() + RECOVERY_TIMEOUT;
    loop {
        let (status, body) = login_status(&s.gw, "reader", USER_PW).await;
        if status == 200 {
            break;
        }
        assert_login_unavailable(status, &body, "login while recovering");
        assert!(
            Instant::now() < deadline,
            "no recovery after the database came back\nlogs:\n{}",
            s.gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, _) = login_status(&s.gw, "olduser", INACTIVE_PW).await;
    assert_eq!(status, 401, "back to normal answers");
}

/// A TCP forwarder to the real PostgreSQL, listening on `port`: "the database is back".
struct Forwarder {
    task: tokio::task::JoinHandle<()>,
}

impl Forwarder {
    async fn start(port: u16, to: SocketAddr) -> Forwarder {
        let deadline = Instant::now() + READY_TIMEOUT;
        let listener = loop {
            match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
                Ok(l) => break l,
                Err(e) => {
                    assert!(Instant::now() < deadline, "bind {port}: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(to).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Forwarder { task }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn nothing_listening_means_503_until_the_database_appears() {
    let db = TestDb::new().await;
    db.seed_whalefall().await;
    let port = free_port();
    let url = format!("postgresql://postgres@127.0.0.1:{port}/{}", db.name);
    // Database only: the gateway starts even though the database is unreachable.
    let s = Stack::start_with(|c| with_database(c, &url, false, "")).await;

    for (user, pass) in [("admin", ADMIN_PW), ("nobody", "x"), ("admin", "wrong")] {
        let (status, body) = login_status(&s.gw, user, pass).await;
        assert_login_unavailable(status, &body, user);
    }
    assert!(s.session_keys().is_empty());

    let _pg = Forwarder::start(port, "127.0.0.1:5432".parse().unwrap()).await;
    wait_for_admin_login(&s, "login while recovering").await;
}

/// Polls the admin login until it succeeds; until then every answer must be "unavailable".
async fn wait_for_admin_login(s: &Stack, what: &str) {
    let deadline = Instant::now() + RECOVERY_TIMEOUT;
    loop {
        let (status, body) = login_status(&s.gw, "admin", ADMIN_PW).await;
        if status == 200 {
            return;
        }
        assert_login_unavailable(status, &body, what);
        assert!(
            Instant::now() < deadline,
            "no recovery\nlogs:\n{}",
            s.gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_database_means_503_until_it_is_created() {
    let db = TestDb::named(); // not created yet
    let s = Stack::start_with(|c| with_database(c, &db.url(), false, "")).await;
    let (status, body) = login_status(&s.gw, "admin", ADMIN_PW).await;
    assert_login_unavailable(status, &body, "database does not exist");

    db.create().await;
    db.seed_whalefall().await;
    wait_for_admin_login(&s, "login while recovering").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_table_means_503_not_401() {
    // Database up but the query cannot run (schema not migrated yet): a server-side problem.
    let db = TestDb::new().await;
    let s = Stack::start_with(|c| with_database(c, &db.url(), false, "")).await;
    let (status, body) = login_status(&s.gw, "admin", ADMIN_PW).await;
    assert_login_unavailable(status, &body, "users table missing");
    db.seed_whalefall().await;
    wait_for_admin_login(&s, "login after the table appeared").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hung_database_means_503_within_the_timeout() {
    // Accepts TCP connections and never says a word: a database that hangs.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let held: Arc<Mutex<Vec<tokio::net::TcpStream>>> = Arc::default();
    let held2 = held.clone();
    let black_hole = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            held2.lock().unwrap().push(stream);
        }
    });
    let url = format!("postgresql://postgres@127.0.0.1:{port}/whatever");
    let s =
        Stack::start_with(|c| with_database(c, &url, true, "timeout = \"500ms\"\npool_size = 2\n"))
            .await;

    // Several at once, more than the pool holds: every one gets its 503, none hangs.
    let mut attempts = Vec::new();
    for i in 0..4 {
        let gw_url = s.gw.url("/login");
        attempts.push(tokio::spawn(async move {
            let resp = client_with_timeout(GUARD)
                .post(gw_url)
                .header("accept", "application/json")
                .json(&serde_json::json!({"username": format!("user{i}"), "password": "pw"}))
                .send()
                .await;
            match resp {
                Ok(r) => r.status().as_u16(),
                Err(e) => panic!("login {i} against a hung database got no answer: {e}"),
            }
        }));
    }
    for a in attempts {
        assert_eq!(a.await.unwrap(), 503);
    }
    // File users are unaffected.
    login_ok(&s.gw, "alice", "alice-password").await;
    assert!(
        !held.lock().unwrap().is_empty(),
        "the gateway never tried the database"
    );
    black_hole.abort();
}

/// The roles the app received with a request of the session `cookie`.
async fn roles_seen_by_app(gw: &Gateway, cookie: &str) -> Option<String> {
    whoami(gw, cookie).await.header("x-auth-roles")
}

/// `[login] refresh_interval`: a user demoted or deactivated in the app's table while signed
/// in loses the role or the session at the next request past the interval (here every
/// request), audited; with the table down the last known state is kept.
#[tokio::test(flavor = "multi_thread")]
async fn a_user_demoted_or_deactivated_while_signed_in_is_refreshed() {
    let db = TestDb::new().await;
    db.seed_whalefall().await;
    let s = Stack::start_with(|c| {
        with_database(c, &db.url(), false, "timeout = \"1s\"\n").replace(
            "logout_path = \"/logout\"",
            "logout_path = \"/logout\"\nrefresh_interval = \"0s\"",
        )
    })
    .await;
    let (admin, _) = login_ok(&s.gw, "admin", ADMIN_PW).await;
    let (reader, _) = login_ok(&s.gw, "reader", USER_PW).await;
    assert_eq!(
        roles_seen_by_app(&s.gw, &admin).await.as_deref(),
        Some("admin")
    );

    let sql = db.client().await;
    sql.execute(
        "UPDATE users SET role = 'user' WHERE username = 'admin'",
        &[],
    )
    .await
    .unwrap();
    // Demoted: the next request already carries the new role, and so does the record.
    assert_eq!(
        roles_seen_by_app(&s.gw, &admin).await.as_deref(),
        Some("user")
    );
    let sessions = s.session_keys();
    let records: Vec<serde_json::Value> = sessions
        .iter()
        .map(|k| {
            let raw: String = redis::cmd("GET")
                .arg(k)
                .query(&mut s.redis.connection())
                .unwrap();
            serde_json::from_str(&raw).unwrap()
        })
        .collect();
    assert!(
        records
            .iter()
            .any(|r| r["username"] == "admin" && r["roles"] == serde_json::json!(["user"])),
        "{records:?}"
    );

    // Deactivated: the session ends at the next request, and the trail says why.
    sql.execute(
        "UPDATE users SET is_active = false WHERE username = 'reader'",
        &[],
    )
    .await
    .unwrap();
    let resp = client_with_timeout(GUARD)
        .get(s.gw.url("/whoami"))
        .header("accept", "application/json")
        .header("cookie", session_cookie_header(&reader))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !s.gw.logs().contains("\"user_disabled\"") {
        assert!(Instant::now() < deadline, "no audit line:\n{}", s.gw.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(s.gw.logs().contains("\"session_ended\""));

    // The table down: the admin keeps the last known state (now "user") instead of a 503.
    db.take_down().await;
    assert_eq!(
        roles_seen_by_app(&s.gw, &admin).await.as_deref(),
        Some("user")
    );
    db.bring_back().await;
}
