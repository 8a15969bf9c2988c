//! `/_gateway/sessions`: the signed-in user's own active sessions (when, where, which browser),
//! each of which they can end. Users only ever see and end their own sessions.

use super::{post_body, Handled, Refusal, RequestView, SESSIONS_PATH};
use crate::app::App;
use crate::audit::AuditEvent;
use crate::metrics::EndReason;
use crate::pages::{self, SessionRow};
use crate::session::view::{session_json, timestamp};
use crate::session::{Handle, LiveSession, Presented};
use crate::web::reply::Reply;
use crate::web::request::{form_fields, wants_json};

async fn signed_in(app: &App, view: &RequestView<'_>) -> Result<LiveSession, Refusal> {
    match app.sessions().presented(view.head, &view.origin).await? {
        Presented::Live(live) => Ok(live),
        Presented::Nothing => Err(Refusal::Unauthenticated {
            clear_cookie: false,
        }),
        _ => Err(Refusal::Unauthenticated { clear_cookie: true }),
    }
}

pub async fn list(app: &App, view: &RequestView<'_>) -> Handled {
    let live = signed_in(app, view).await?;
    let req = view.head;
    let sessions = app
        .live_sessions(Some(&live.record.user_id), &view.origin)
        .await?;
    if wants_json(req) {
        let items: Vec<serde_json::Value> = sessions
            .iter()
            .map(|s| {
                let mut v = session_json(s);
                v["current"] = serde_json::Value::Bool(s.handle == live.handle);
                v
            })
            .collect();
        return Ok(Reply::json(200, &serde_json::Value::Array(items)));
    }
    let rows: Vec<SessionRow> = sessions
        .iter()
        .map(|s| SessionRow {
            handle: s.handle.to_string(),
            created: timestamp(s.record.created_at_ms),
            last_seen: timestamp(s.record.last_seen_ms),
            ip: s.record.ip.clone(),
            browser: s.record.user_agent.clone(),
            current: s.handle == live.handle,
        })
        .collect();
    Ok(Reply::html(
        200,
        pages::sessions(
            app.texts(req),
            SESSIONS_PATH,
            &app.config.login.logout_path,
            &app.keys.session_form_token(&live.handle),
            &rows,
        ),
    ))
}

/// Ends one of the user's own sessions (form field `handle`).
pub async fn end_one(app: &App, view: &RequestView<'_>) -> Handled {
    let body = post_body(view)?;
    let live = signed_in(app, view).await?;
    let req = view.head;
    let fields = form_fields(body);
    let token = fields.get("csrf_token").map_or("", String::as_str);
    if !app.keys.session_form_valid(&live.handle, token) {
        return Err(Refusal::CrossSite);
    }
    let Some(handle) = fields.get("handle").and_then(|h| Handle::parse(h)) else {
        return Ok(Reply::json_error(
            400,
            "bad_request",
            app.texts(req).which_session,
        ));
    };
    // Someone else's handle reads exactly like one that no longer exists.
    let target = app.store.get(&handle).await?;
    if let Some(target) = target.filter(|t| t.record.user_id == live.record.user_id) {
        app.store.delete(&target).await?;
        app.metrics.sessions_ended(EndReason::Logout, 1);
        app.audit
            .record(AuditEvent::new("session_ended", "user", &view.origin).session(&target));
    }
    Ok(if wants_json(req) {
        Reply::json(200, &serde_json::json!({"status": "ended"}))
    } else {
        Reply::redirect(303, SESSIONS_PATH)
    })
}

#[cfg(test)]
mod tests {
    use crate::session::Presented;
    use crate::testing::*;
    use crate::web::reply::Reply;
    use serde_json::json;

    fn list_json(t: &TestApp, cookie: &str) -> Req {
        Req::get("/_gateway/sessions")
            .header("accept", "application/json")
            .cookie(&t.cookie(cookie))
    }

    /// The token on the user's own sessions page.
    async fn page_token(t: &TestApp, cookie: &str) -> String {
        t.form_token("/_gateway/sessions", cookie).await
    }

    async fn end(t: &TestApp, cookie: &str, fields: &[(&str, &str)]) -> Reply {
        t.serve(Req::post_form("/_gateway/sessions", fields).cookie(&t.cookie(cookie)))
            .await
    }

    #[tokio::test]
    async fn the_json_list_has_only_the_users_own_sessions_and_marks_this_one() {
        let t = TestApp::new();
        let laptop = t.login("alice").await;
        t.advance(std::time::Duration::from_secs(5));
        let phone = t
            .serve(
                Req::post_json(
                    "/login",
                    json!({"username": "alice", "password": "alice-pw"}),
                )
                .header("user-agent", "PhoneBrowser/1.0")
                .sent_from("198.51.100.9"),
            )
            .await
            .cookie("gateway_session")
            .unwrap();
        let bob = t.login("bob").await;
        let reply = t.serve(list_json(&t, &phone)).await;
        assert_eq!(reply.status, 200);
        let list = reply.body_json();
        let items = list.as_array().unwrap();
        assert_eq!(items.len(), 2, "{list}");
        assert!(items.iter().all(|s| s["username"] == "alice"));
        assert!(!list.to_string().contains(t.handle_of(&bob).as_str()));
        // Oldest first; only the session asking is current.
        assert_eq!(items[0]["handle"], t.handle_of(&laptop).as_str());
        assert_eq!(items[0]["current"], false);
        assert_eq!(items[1]["current"], true);
        assert_eq!(items[1]["ip"], "198.51.100.9");
        assert_eq!(items[1]["user_agent"], "PhoneBrowser/1.0");
        assert!(
            !list.to_string().contains(&phone),
            "no cookie value in the list"
        );
    }

    #[tokio::test]
    async fn the_page_offers_to_end_other_sessions_but_not_this_one() {
        let t = TestApp::new();
        let laptop = t.login("alice").await;
        let phone = t.login("alice").await;
        let bob = t.login("bob").await;
        let page = t
            .serve(Req::page("/_gateway/sessions").cookie(&t.cookie(&laptop)))
            .await;
        assert_eq!(page.status, 200);
        let html = page.text();
        assert_eq!(html.matches("<tr><td>").count(), 2, "{html}");
        let phone_handle = t.handle_of(&phone);
        assert!(html.contains(&format!("name=\"handle\" value=\"{phone_handle}\"")));
        assert!(!html.contains(&format!("value=\"{}\"", t.handle_of(&laptop))));
        assert!(!html.contains(t.handle_of(&bob).as_str()));
        assert!(html.contains("<em>this browser</em>"), "{html}");
    }

    #[tokio::test]
    async fn without_a_session_the_list_asks_to_sign_in() {
        let t = TestApp::new();
        let page = t.serve(Req::page("/_gateway/sessions")).await;
        assert_eq!(page.status, 302);
        assert_eq!(
            page.header_value("location"),
            Some("/login?next=%2F_gateway%2Fsessions")
        );
        assert!(
            !page.expires_cookie("gateway_session"),
            "no cookie to clear"
        );
        let api = t
            .serve(Req::get("/_gateway/sessions").header("accept", "application/json"))
            .await;
        assert_eq!(api.status, 401);
        assert_eq!(api.body_json()["error"], "unauthenticated");
    }

    #[tokio::test]
    async fn a_forged_or_ended_cookie_is_cleared() {
        let t = TestApp::new();
        let ended = t.login("alice").await;
        t.serve(Req::post_json("/logout", json!({})).cookie(&t.cookie(&ended)))
            .await;
        let forged = tampered(&t.login("bob").await, 10);
        for cookie in [ended, forged] {
            let reply = t.serve(list_json(&t, &cookie)).await;
            assert_eq!(reply.status, 401, "{cookie}");
            assert!(reply.expires_cookie("gateway_session"), "{cookie}");
            assert!(reply.header_value("www-authenticate").is_some());
        }
    }

    #[tokio::test]
    async fn ending_one_of_your_own_sessions() {
        let t = TestApp::new();
        let laptop = t.login("alice").await;
        let phone = t.login("alice").await;
        let token = page_token(&t, &laptop).await;
        let phone_handle = t.handle_of(&phone);
        let reply = end(
            &t,
            &laptop,
            &[("csrf_token", &token), ("handle", phone_handle.as_str())],
        )
        .await;
        assert_eq!(reply.status, 303);
        assert_eq!(reply.header_value("location"), Some("/_gateway/sessions"));
        assert!(!reply.expires_cookie("gateway_session"));
        assert!(matches!(t.presented(&phone).await, Presented::Ended));
        assert!(matches!(t.presented(&laptop).await, Presented::Live(_)));
        let events = t.events_named("session_ended");
        assert_eq!(events.len(), 1);
        assert_eq!(events[0]["handle"], phone_handle.as_str());
        assert_eq!(events[0]["actor"], "user");
    }

    #[tokio::test]
    async fn another_users_session_reads_as_missing_and_is_not_ended() {
        let t = TestApp::new();
        let alice = t.login("alice").await;
        let bob = t.login("bob").await;
        let gone = t.login("alice").await;
        let crate::session::Presented::Live(gone_live) = t.presented(&gone).await else {
            panic!("just signed in");
        };
        t.app.store.delete(&gone_live).await.unwrap();
        let token = page_token(&t, &alice).await;
        let mut answers = Vec::new();
        for target in [t.handle_of(&bob), t.handle_of(&gone)] {
            let reply = t
                .serve(
                    Req::post_form(
                        "/_gateway/sessions",
                        &[("csrf_token", &token), ("handle", target.as_str())],
                    )
                    .header("accept", "application/json")
                    .cookie(&t.cookie(&alice)),
                )
                .await;
            answers.push((reply.status, reply.text()));
        }
        assert_eq!(answers[0], answers[1]);
        assert!(t.is_stored(&bob).await);
        assert!(t.events_named("session_ended").is_empty());
    }

    #[tokio::test]
    async fn ending_a_session_needs_this_sessions_token() {
        let t = TestApp::new();
        let alice = t.login("alice").await;
        let phone = t.login("alice").await;
        let phones_token = page_token(&t, &phone).await;
        let target = t.handle_of(&phone);
        for token in ["", "nothex", phones_token.as_str()] {
            let reply = end(
                &t,
                &alice,
                &[("csrf_token", token), ("handle", target.as_str())],
            )
            .await;
            assert_eq!(reply.status, 403, "{token:?}");
        }
        let cross = t
            .serve(
                Req::post_form(
                    "/_gateway/sessions",
                    &[
                        ("csrf_token", &page_token(&t, &alice).await),
                        ("handle", target.as_str()),
                    ],
                )
                .set_header("origin", "https://evil.example")
                .cookie(&t.cookie(&alice)),
            )
            .await;
        assert_eq!(cross.status, 403);
        assert!(t.is_stored(&phone).await);
    }

    #[tokio::test]
    async fn a_missing_or_malformed_handle_is_400() {
        let t = TestApp::new();
        let alice = t.login("alice").await;
        let token = page_token(&t, &alice).await;
        for fields in [
            vec![("csrf_token", token.as_str())],
            vec![("csrf_token", token.as_str()), ("handle", "not-a-handle")],
            vec![("csrf_token", token.as_str()), ("handle", &"A".repeat(64))],
        ] {
            let reply = end(&t, &alice, &fields).await;
            assert_eq!(reply.status, 400, "{fields:?}");
            assert_eq!(reply.body_json()["error"], "bad_request");
        }
        assert!(t.is_stored(&alice).await);
    }

    #[tokio::test]
    async fn ending_a_session_by_json_answers_json() {
        let t = TestApp::new();
        let alice = t.login("alice").await;
        let phone = t.login("alice").await;
        let token = page_token(&t, &alice).await;
        let reply = t
            .serve(
                Req::post_form(
                    "/_gateway/sessions",
                    &[
                        ("csrf_token", &token),
                        ("handle", t.handle_of(&phone).as_str()),
                    ],
                )
                .header("accept", "application/json")
                .cookie(&t.cookie(&alice)),
            )
            .await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body_json(), json!({"status": "ended"}));
        assert!(!t.is_stored(&phone).await);
    }
}
