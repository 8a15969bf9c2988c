//! `[login] template`: the operator's own login page, with the gateway's placeholders filled in
//! (escaped), working exactly like the built-in one.

use crate::support::*;

const TEMPLATE: &str = r#"<!doctype html><html><body><h1>ACME single sign-on</h1>{{error}}
<form method="post" action="{{action}}">
<input type="hidden" name="csrf_token" value="{{csrf_token}}">
<input type="hidden" name="next" value="{{next}}">
<input name="username" value="{{username}}"><input type="password" name="password">
</form></body></html>"#;

async fn stack_with_template() -> (Stack, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("login.html");
    std::fs::write(&path, TEMPLATE).unwrap();
    let line = format!(
        "users_file = \"users.toml\"\ntemplate = {}",
        toml_str(path.to_str().unwrap())
    );
    let stack = Stack::start_with(move |c| c.replace("users_file = \"users.toml\"", &line)).await;
    (stack, dir)
}

async fn post_form(s: &Stack, nonce: &str, fields: &[(&str, &str)]) -> reqwest::Response {
    client()
        .post(s.gw.url("/login"))
        .header("origin", s.gw.origin())
        .header("accept", "text/html")
        .header("cookie", format!("{COOKIE_NAME}_csrf={nonce}"))
        .form(fields)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_operators_page_is_served_with_escaped_placeholders_and_works() {
    let (s, _dir) = stack_with_template().await;
    let page = client()
        .get(s.gw.url("/login?next=%2Freports%3Fq%3D%22%3E%3Cscript%3E"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let nonce = cookie_from(&page, &format!("{COOKIE_NAME}_csrf")).expect("form nonce cookie");
    let html = page.text().await.unwrap();
    assert!(html.contains("ACME single sign-on"), "{html}");
    assert!(!html.contains("<script>"), "next must be escaped: {html}");
    assert!(
        html.contains("/reports?q=&quot;&gt;&lt;script&gt;"),
        "{html}"
    );
    let token = hidden_input_value(&html, "csrf_token").expect("token in the template");

    let wrong = post_form(
        &s,
        &nonce,
        &[
            ("csrf_token", &token),
            ("username", "alice"),
            ("password", "nope"),
            ("next", "/reports"),
        ],
    )
    .await;
    assert_eq!(wrong.status(), 401);
    let html = wrong.text().await.unwrap();
    assert!(html.contains("ACME single sign-on"));
    assert!(html.contains("Invalid username or password"));
    assert!(
        html.contains("value=\"alice\""),
        "the username is kept: {html}"
    );

    let ok = post_form(
        &s,
        &nonce,
        &[
            ("csrf_token", &token),
            ("username", "alice"),
            ("password", "alice-password"),
            ("next", "/reports"),
        ],
    )
    .await;
    assert_eq!(ok.status(), 303);
    assert_eq!(ok.headers()["location"], "/reports");
    assert!(cookie_from(&ok, COOKIE_NAME).is_some());
}

#[test]
fn a_missing_template_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = TestConfig::new("redis://127.0.0.1:1/0", "127.0.0.1:1".parse().unwrap()).replace(
        "users_file = \"users.toml\"",
        "users_file = \"users.toml\"\ntemplate = \"no-such-page.html\"",
    );
    let path = cfg.write_to(dir.path());
    let out = run_gateway_cli(&["check-config", "--config", path.to_str().unwrap()], None);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("[login] template"), "{stderr}");
    assert!(stderr.contains("no-such-page.html"), "{stderr}");
}
