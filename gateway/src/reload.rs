//! Reload on SIGHUP: the users file (`[login] users_file`) and the login template
//! (`[login] template`) are read again from the paths the gateway started with, checked exactly
//! as at start-up ([`crate::config::files`]), and put in force without dropping a connection.
//!
//! - All or nothing: if either file is broken (or unreadable), neither is replaced; each problem
//!   is logged at error level with its file and line, and the files in force stay as they were.
//! - Users removed or disabled by a reload lose their live sessions at their next user refresh
//!   (`[login] refresh_interval`), which reads the reloaded table.
//! - Every reload is audited (`config_reloaded`, its reason saying what was reloaded or where
//!   it failed, never a line of the users file) and counted
//!   (`gateway_config_reloads_total{result}`).
//! - Nothing else is reloaded: the config file itself is not read again, so every other setting
//!   needs a restart or a zero-downtime `--upgrade` (the README lists them).

use std::sync::Arc;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::signal::unix::{signal, SignalKind};

use crate::app::App;
use crate::audit::AuditEvent;
use crate::config::files::{read_login_template, read_users_file, LoginFileError};
use crate::env::{Environment, SystemEnvironment};
use crate::web::request::Origin;

/// Reads the users file and the login template again and, if both are good, puts them in
/// force; logs, audits and counts the outcome. Returns whether the reload succeeded.
pub fn reload(app: &App, env: &dyn Environment) -> bool {
    let login = &app.config.login;
    let users = login
        .users_file
        .as_deref()
        .map(|path| (path, read_users_file(path, env)));
    let template = login
        .template_file
        .as_deref()
        .map(|path| (path, read_login_template(path, env)));

    let problems: Vec<&LoginFileError> = users
        .iter()
        .filter_map(|(_, read)| read.as_ref().err())
        .chain(template.iter().filter_map(|(_, read)| read.as_ref().err()))
        .collect();
    if !problems.is_empty() {
        for line in problems.iter().flat_map(|p| p.lines()) {
            log::error!("SIGHUP: reload failed: {line}");
        }
        log::error!(
            "SIGHUP: nothing reloaded; the users file and login template in force stay as they were"
        );
        let places: Vec<String> = problems.iter().flat_map(|p| p.places()).collect();
        audit(
            app,
            format!("failed: {}; nothing reloaded", places.join(", ")),
        );
        app.metrics.config_reload(false);
        return false;
    }

    let mut reloaded = Vec::new();
    if let Some((path, Ok(table))) = users {
        reloaded.push(format!(
            "users_file {} ({} users, {})",
            path.display(),
            table.len(),
            changed(!app.auth.has_users(&table))
        ));
        app.auth.replace_users(table);
    }
    if let Some((path, Ok(text))) = template {
        reloaded.push(format!(
            "template {} ({})",
            path.display(),
            changed(*app.login_template() != text)
        ));
        app.replace_login_template(text);
    }
    let summary = if reloaded.is_empty() {
        "nothing to reload: no [login] users_file or template".to_string()
    } else {
        format!("reloaded {}", reloaded.join(", "))
    };
    log::info!("SIGHUP: {summary} (other settings need a restart or --upgrade)");
    audit(app, format!("ok: {summary}"));
    app.metrics.config_reload(true);
    true
}

fn changed(yes: bool) -> &'static str {
    if yes {
        "changed"
    } else {
        "unchanged"
    }
}

/// The operator sent the signal; there is no request, so no client address or request id.
fn audit(app: &App, reason: String) {
    app.audit
        .record(AuditEvent::new("config_reloaded", "admin", &Origin::default()).reason(reason));
}

/// Makes SIGHUP harmless from now on, before any service runs: its default action ends the
/// process, and [`ReloadOnHangup`] only starts listening once pingora has started it. Tokio
/// installs its process-wide handler on the first registration and never removes it, so a
/// registration on a short-lived runtime is enough. A SIGHUP in between is ignored.
pub fn ignore_hangups_until_served() -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let _entered = runtime.enter();
    signal(SignalKind::hangup()).map(drop)
}

/// The background service that reloads on every SIGHUP, for as long as the server runs.
pub struct ReloadOnHangup {
    pub app: Arc<App>,
}

#[async_trait]
impl BackgroundService for ReloadOnHangup {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(hangups) => hangups,
            Err(e) => {
                log::error!("cannot listen for SIGHUP ({e}): restart the gateway to reload");
                return;
            }
        };
        loop {
            tokio::select! {
                received = hangups.recv() => {
                    if received.is_none() {
                        break;
                    }
                    // The files are small and this runtime serves nothing else, so reading
                    // them here holds up no request.
                    reload(&self.app, &SystemEnvironment);
                }
                _ = shutdown.changed() => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::PathBuf;

    use super::*;
    use crate::env::StaticEnvironment;
    use crate::session::Presented;
    use crate::testing::{cheap_hash, users_toml, Req, TestApp};

    const TEMPLATE: &str = "<html><h1>Old page</h1>{{error}}<form action=\"{{action}}\">\
        <input name=\"csrf_token\" value=\"{{csrf_token}}\"></form></html>";

    fn dir() -> PathBuf {
        PathBuf::from("/unit-test")
    }

    /// The files as they are on disk after the operator's edit.
    fn files(users: &str, template: &str) -> StaticEnvironment {
        StaticEnvironment {
            vars: HashMap::new(),
            files: HashMap::from([
                (dir().join("users.toml"), users.to_string()),
                (dir().join("login.html"), template.to_string()),
            ]),
        }
    }

    fn gateway() -> TestApp {
        let config = crate::config::Config::parse(
            "gateway.toml",
            &format!(
                "[upstream]\nservers = [\"127.0.0.1:5001\"]\n\
                 [redis]\nurl = \"redis://127.0.0.1:1/0\"\n\
                 [session]\nsecret = \"{}\"\ncookie_secure = false\n\
                 [login]\nusers_file = \"users.toml\"\ntemplate = \"login.html\"\n\
                 refresh_interval = \"0s\"\n\
                 [audit]\nsink = \"off\"\n",
                crate::testing::SECRET
            ),
            &dir(),
            &files(&users_toml(), TEMPLATE),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        TestApp::from_config(config)
    }

    /// alice with a new password, dave added, bob gone, carol as before.
    fn edited_users() -> String {
        let user = |name: &str, id: &str, password: &str, disabled: bool| {
            format!(
                "[[users]]\nusername = \"{name}\"\nid = \"{id}\"\npassword_hash = \"{}\"\n\
                 roles = [\"user\"]\ndisabled = {disabled}\n\n",
                cheap_hash(password)
            )
        };
        user("alice", "1", "alice-new", false)
            + &user("carol", "3", "carol-pw", true)
            + &user("dave", "4", "dave-pw", false)
    }

    fn metric(t: &TestApp, result: &str) -> String {
        let text = String::from_utf8(t.app.metrics.render()).unwrap_or_default();
        let prefix = format!("gateway_config_reloads_total{{result=\"{result}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or("absent")
            .to_string()
    }

    fn reasons(t: &TestApp) -> Vec<String> {
        t.events_named("config_reloaded")
            .iter()
            .map(|e| e["reason"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    async fn login_page(t: &TestApp) -> String {
        t.serve(Req::page("/login")).await.text()
    }

    #[tokio::test]
    async fn good_files_are_put_in_force_together() {
        let t = gateway();
        let bob = t.login("bob").await;
        let new_template = TEMPLATE.replace("Old page", "New page");
        assert!(reload(&t.app, &files(&edited_users(), &new_template)));

        assert_eq!(t.post_login("dave", "dave-pw").await.status, 200);
        assert_eq!(t.post_login("alice", "alice-new").await.status, 200);
        assert_eq!(t.post_login("alice", "alice-pw").await.status, 401);
        assert_eq!(t.post_login("bob", "bob-pw").await.status, 401);
        assert!(login_page(&t).await.contains("New page"));
        assert!(
            matches!(t.presented(&bob).await, Presented::Ended),
            "bob's live session ends at the next refresh"
        );
        assert_eq!(t.events_named("session_ended")[0]["reason"], "user_removed");
        let reasons = reasons(&t);
        assert_eq!(reasons.len(), 1);
        assert!(
            reasons[0].starts_with("ok: reloaded users_file /unit-test/users.toml (3 users, changed), template /unit-test/login.html (changed)"),
            "{reasons:?}"
        );
        assert_eq!(
            (metric(&t, "ok"), metric(&t, "failed")),
            ("1".into(), "0".into())
        );
    }

    #[tokio::test]
    async fn a_broken_users_file_keeps_both_old_files() {
        let t = gateway();
        let broken = users_toml().replacen(&cheap_hash("alice-pw"), "plaintext", 1);
        let new_template = TEMPLATE.replace("Old page", "New page");
        assert!(!reload(&t.app, &files(&broken, &new_template)));

        assert_eq!(t.post_login("alice", "alice-pw").await.status, 200);
        assert!(login_page(&t).await.contains("Old page"), "all or nothing");
        let reasons = reasons(&t);
        assert_eq!(
            reasons,
            ["failed: /unit-test/users.toml:4; nothing reloaded"],
            "the place, never the line's text"
        );
        assert_eq!(
            (metric(&t, "ok"), metric(&t, "failed")),
            ("0".into(), "1".into())
        );
    }

    #[tokio::test]
    async fn a_broken_template_keeps_both_old_files() {
        let t = gateway();
        assert!(!reload(
            &t.app,
            &files(&edited_users(), "<h1>{% if %}</h1>")
        ));

        assert_eq!(t.post_login("alice", "alice-pw").await.status, 200);
        assert_eq!(t.post_login("dave", "dave-pw").await.status, 401);
        assert!(login_page(&t).await.contains("Old page"));
        assert_eq!(reasons(&t), ["failed: [login] template; nothing reloaded"]);
    }

    #[tokio::test]
    async fn unchanged_files_are_reported_unchanged() {
        let t = gateway();
        assert!(reload(&t.app, &files(&users_toml(), TEMPLATE)));
        assert!(
            reasons(&t)[0]
                .ends_with("(3 users, unchanged), template /unit-test/login.html (unchanged)"),
            "{:?}",
            reasons(&t)
        );
    }

    #[tokio::test]
    async fn without_a_users_file_the_template_is_still_reloaded() {
        let mut config = gateway().app.config.clone();
        config.login.users_file = None;
        let t = TestApp::from_config(config);
        let new_template = TEMPLATE.replace("Old page", "New page");
        assert!(reload(&t.app, &files("not even toml", &new_template)));
        assert!(login_page(&t).await.contains("New page"));
        assert_eq!(
            reasons(&t),
            ["ok: reloaded template /unit-test/login.html (changed)"]
        );
    }

    #[tokio::test]
    async fn without_either_file_there_is_nothing_to_reload() {
        let mut config = gateway().app.config.clone();
        config.login.users_file = None;
        config.login.template_file = None;
        let t = TestApp::from_config(config);
        assert!(reload(&t.app, &files("", "")));
        assert_eq!(
            reasons(&t),
            ["ok: nothing to reload: no [login] users_file or template"]
        );
        assert_eq!(metric(&t, "ok"), "1");
    }
}
