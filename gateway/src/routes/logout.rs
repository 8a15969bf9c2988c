//! `GET /logout` (a confirmation page: link prefetchers must not sign anyone out) and
//! `POST /logout` (ends this session, or with `scope=all` every session of the user), and the
//! gateway's half of the app's own logout.

use super::{post_body, Handled, Refusal, RequestView, SESSIONS_PATH};
use crate::app::App;
use crate::audit::AuditEvent;
use crate::errors::StoreError;
use crate::metrics::EndReason;
use crate::pages;
use crate::session::{LiveSession, Presented};
use crate::web::reply::Reply;
use crate::web::request::{form_fields, is_form, query_param, wants_json, Origin};

pub async fn confirm(app: &App, view: &RequestView<'_>) -> Handled {
    let req = view.head;
    Ok(match app.sessions().presented(req, &view.origin).await? {
        Presented::Live(live) => Reply::html(
            200,
            pages::logout_confirm(
                app.texts(req),
                &app.config.login.logout_path,
                &app.keys.session_form_token(&live.handle),
                &live.record.username,
                SESSIONS_PATH,
            ),
        ),
        _ => Reply::redirect(303, &app.config.login.path),
    })
}

pub async fn submit(app: &App, view: &RequestView<'_>) -> Handled {
    let body = post_body(view)?;
    let req = view.head;
    let fields = is_form(req).then(|| form_fields(body));
    let everywhere = fields
        .as_ref()
        .and_then(|f| f.get("scope").cloned())
        .or_else(|| query_param(req, "scope"))
        .is_some_and(|s| s == "all");

    let mut ended = 0;
    if let Presented::Live(live) = app.sessions().presented(req, &view.origin).await? {
        // Forms must carry our token; JSON cannot be sent cross-site without a preflight.
        if let Some(fields) = &fields {
            let token = fields.get("csrf_token").map_or("", String::as_str);
            if !app.keys.session_form_valid(&live.handle, token) {
                return Err(Refusal::CrossSite);
            }
        }
        ended = if everywhere {
            end_all_of_user(app, &live, &view.origin).await?
        } else {
            app.store.delete(&live).await?;
            app.metrics.sessions_ended(EndReason::Logout, 1);
            app.audit
                .record(AuditEvent::new("logout", "user", &view.origin).session(&live));
            1
        };
    }
    let reply = if wants_json(req) {
        Reply::json(
            200,
            &serde_json::json!({"status": "logged_out", "ended": ended}),
        )
    } else {
        Reply::redirect(303, &app.config.login.path)
    };
    Ok(reply.header(
        "set-cookie",
        app.cookies.expired(&app.config.session.cookie_name),
    ))
}

/// The app's own logout (`[login] app_logout_paths`) ends this gateway session too; the
/// request then goes on to the app, so this answers nothing itself.
pub async fn end_for_app_logout(
    app: &App,
    live: &LiveSession,
    origin: &Origin,
) -> Result<(), StoreError> {
    app.store.delete(live).await?;
    app.metrics.sessions_ended(EndReason::Logout, 1);
    app.audit.record(
        AuditEvent::new("logout", "user", origin)
            .session(live)
            .reason("app_logout"),
    );
    Ok(())
}

/// "Sign out everywhere": every session of the user behind `live`.
async fn end_all_of_user(
    app: &App,
    live: &LiveSession,
    origin: &Origin,
) -> Result<usize, StoreError> {
    let mut sessions = app
        .live_sessions(Some(&live.record.user_id), origin)
        .await?;
    if !sessions.iter().any(|s| s.handle == live.handle) {
        sessions.push(live.clone());
    }
    let n = app.store.delete_all(&sessions).await?;
    app.metrics.sessions_ended(EndReason::Logout, n);
    app.audit.record(
        AuditEvent::new("logout_everywhere", "user", origin)
            .session(live)
            .reason(format!("{n} sessions ended")),
    );
    Ok(n)
}

#[cfg(test)]
mod tests {
    use crate::testing::*;
    use serde_json::json;

    /// The token on the confirmation page the user sees for this session.
    async fn page_token(t: &TestApp, cookie: &str) -> String {
        t.form_token("/logout", cookie).await
    }

    async fn post_logout(
        t: &TestApp,
        cookie: &str,
        fields: &[(&str, &str)],
    ) -> crate::web::reply::Reply {
        t.serve(Req::post_form("/logout", fields).cookie(&t.cookie(cookie)))
            .await
    }

    #[tokio::test]
    async fn the_confirmation_page_names_the_user_and_ends_nothing() {
        let t = TestApp::new();
        let alice = t.login("alice").await;
        let page = t
            .serve(Req::page("/logout").cookie(&t.cookie(&alice)))
            .await;
        assert_eq!(page.status, 200);
        assert!(
            page.text().contains("<strong>alice</strong>"),
            "{}",
            page.text()
        );
        assert!(page.form_field("csrf_token").is_some_and(|t| !t.is_empty()));
        assert!(page.text().contains("name=\"scope\" value=\"all\""));
        assert!(
            t.is_stored(&alice).await,
            "a GET (a prefetcher) signs no one out"
        );
        assert!(t.events_named("logout").is_empty());
    }

    #[tokio::test]
    async fn the_confirmation_page_without_a_session_goes_to_login() {
        let t = TestApp::new();
        for req in [
            Req::page("/logout"),
            Req::page("/logout").cookie(&t.cookie("forged")),
        ] {
            let reply = t.serve(req).await;
            assert_eq!(reply.status, 303);
            assert_eq!(reply.header_value("location"), Some("/login"));
        }
    }

    #[tokio::test]
    async fn logging_out_ends_this_session_only() {
        let t = TestApp::new();
        let laptop = t.login("alice").await;
        let phone = t.login("alice").await;
        let token = page_token(&t, &laptop).await;
        let reply = post_logout(&t, &laptop, &[("csrf_token", &token)]).await;
        assert_eq!(reply.status, 303);
        assert_eq!(reply.header_value("location"), Some("/login"));
        assert!(reply.expires_cookie("gateway_session"));
        assert!(!t.is_stored(&laptop).await);
        assert!(matches!(
            t.presented(&laptop).await,
            crate::session::Presented::Ended
        ));
        assert!(matches!(
            t.presented(&phone).await,
            crate::session::Presented::Live(_)
        ));
        let events = t.events_named("logout");
        assert_eq!(events.len(), 1);
        assert_eq!(events[0]["handle"], t.handle_of(&laptop).as_str());
        assert_eq!(events[0]["username"], "alice");
    }

    #[tokio::test]
    async fn scope_all_ends_every_session_of_the_user_and_no_one_elses() {
        let t = TestApp::new();
        let laptop = t.login("alice").await;
        let phone = t.login("alice").await;
        let bob = t.login("bob").await;
        let token = page_token(&t, &laptop).await;
        let reply = post_logout(&t, &laptop, &[("csrf_token", &token), ("scope", "all")]).await;
        assert_eq!(reply.status, 303);
        assert!(reply.expires_cookie("gateway_session"));
        assert!(t.app.store.list(Some("1")).await.unwrap().live.is_empty());
        assert!(!t.is_stored(&phone).await);
        assert!(t.is_stored(&bob).await);
        let events = t.events_named("logout_everywhere");
        assert_eq!(events.len(), 1);
        assert_eq!(events[0]["reason"], "2 sessions ended");
        assert!(t.events_named("logout").is_empty());
    }

    #[tokio::test]
    async fn scope_all_in_the_query_counts_too() {
        let t = TestApp::new();
        let laptop = t.login("alice").await;
        let phone = t.login("alice").await;
        let reply = t
            .serve(Req::post_json("/logout?scope=all", json!({})).cookie(&t.cookie(&laptop)))
            .await;
        assert_eq!(reply.status, 200);
        assert_eq!(
            reply.body_json(),
            json!({"status": "logged_out", "ended": 2})
        );
        assert!(!t.is_stored(&phone).await);
    }

    #[tokio::test]
    async fn a_json_logout_answers_how_many_sessions_ended() {
        let t = TestApp::new();
        let alice = t.login("alice").await;
        let other = t.login("alice").await;
        let reply = t
            .serve(Req::post_json("/logout", json!({})).cookie(&t.cookie(&alice)))
            .await;
        assert_eq!(reply.status, 200);
        assert_eq!(
            reply.body_json(),
            json!({"status": "logged_out", "ended": 1})
        );
        assert!(reply.expires_cookie("gateway_session"));
        assert!(t.is_stored(&other).await);
        // Already signed out: still a clean answer, nothing more ended.
        let again = t
            .serve(Req::post_json("/logout", json!({})).cookie(&t.cookie(&alice)))
            .await;
        assert_eq!(
            again.body_json(),
            json!({"status": "logged_out", "ended": 0})
        );
        assert!(again.expires_cookie("gateway_session"));
    }

    #[tokio::test]
    async fn a_form_without_the_pages_token_ends_nothing() {
        let t = TestApp::new();
        let alice = t.login("alice").await;
        let bob = t.login("bob").await;
        let bobs_token = page_token(&t, &bob).await;
        for fields in [
            vec![],
            vec![("csrf_token", "00112233445566778899aabbccddeeff")],
            vec![("csrf_token", bobs_token.as_str()), ("scope", "all")],
        ] {
            let reply = post_logout(&t, &alice, &fields).await;
            assert_eq!(reply.status, 403, "{fields:?}");
            assert!(!reply.expires_cookie("gateway_session"));
            assert!(t.is_stored(&alice).await, "{fields:?}");
        }
        assert!(t.events_named("logout").is_empty());
        assert!(t.events_named("logout_everywhere").is_empty());
    }

    #[tokio::test]
    async fn a_cross_site_logout_is_refused() {
        let t = TestApp::new();
        let alice = t.login("alice").await;
        let token = page_token(&t, &alice).await;
        let reply = t
            .serve(
                Req::post_form("/logout", &[("csrf_token", &token), ("scope", "all")])
                    .set_header("origin", "https://evil.example")
                    .header("accept", "text/html")
                    .cookie(&t.cookie(&alice)),
            )
            .await;
        assert_eq!(reply.status, 403);
        assert!(
            reply.text().contains("not submitted from this site"),
            "{}",
            reply.text()
        );
        assert!(t.is_stored(&alice).await);
        let json = t
            .serve(
                Req::post_json("/logout", json!({}))
                    .header("origin", "https://evil.example")
                    .cookie(&t.cookie(&alice)),
            )
            .await;
        assert_eq!(json.status, 403);
        assert_eq!(json.body_json()["error"], "cross_site_request");
        assert!(t.is_stored(&alice).await);
    }

    #[tokio::test]
    async fn a_store_outage_at_logout_is_503_not_a_silent_success() {
        let t = TestApp::new();
        let alice = t.login("alice").await;
        t.sessions.set_down(true);
        let reply = t
            .serve(Req::post_json("/logout", json!({})).cookie(&t.cookie(&alice)))
            .await;
        assert_eq!(reply.status, 503);
        assert_eq!(reply.header_value("retry-after"), Some("1"));
        assert_eq!(reply.body_json()["error"], "session_store_unavailable");
        assert!(!reply.expires_cookie("gateway_session"));
        let page = t
            .serve(Req::page("/logout").cookie(&t.cookie(&alice)))
            .await;
        assert_eq!(page.status, 503);
        t.sessions.set_down(false);
        assert!(t.is_stored(&alice).await);
    }

    #[tokio::test]
    async fn the_apps_own_logout_ends_the_gateway_session_too() {
        let t = TestApp::new();
        let alice = t.login("alice").await;
        let crate::session::Presented::Live(live) = t.presented(&alice).await else {
            panic!("alice is signed in");
        };
        let origin = Req::get("/auth/logout").origin();
        super::end_for_app_logout(&t.app, &live, &origin)
            .await
            .unwrap();
        assert!(!t.is_stored(&alice).await);
        let events = t.events_named("logout");
        assert_eq!(events.len(), 1);
        assert_eq!(events[0]["reason"], "app_logout");
    }
}
