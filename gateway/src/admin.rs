//! The admin listener (`[server] admin_listen`, loopback by default). Endpoints:
//!
//! | method | path | what |
//! |---|---|---|
//! | GET | `/healthz` | 200 while the process runs (liveness) |
//! | GET | `/readyz` | 200 when Redis answers and the gateway is not draining, else 503 |
//! | GET | `/metrics` | Prometheus text format (see [`crate::metrics`]) |
//! | GET | `/sessions[?user=ID]` | live sessions as a JSON array |
//! | DELETE | `/sessions/{handle}` | revoke one session |
//! | DELETE | `/users/{id}/sessions` | revoke all of a user's sessions |
//! | DELETE | `/sessions` | revoke every session |
//!
//! The session endpoints need `Authorization: Bearer <token>` (`[admin] token_env` or
//! `token_file`); with no token configured they answer 404, switched off.

use std::sync::Arc;

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use http::{Method, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use sha2::Sha256;

use crate::app::{App, Readiness};
use crate::errors::StoreError;
use crate::operator;
use crate::session::view::sessions_json;
use crate::session::Handle;
use crate::web::reply::error_body;
use crate::web::request::Origin;

pub struct AdminApi {
    pub app: Arc<App>,
}

fn reply(status: u16, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    let mut response = Response::new(body);
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = content_type.parse() {
        response.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    let len = response.body().len().to_string();
    if let Ok(v) = len.parse() {
        response
            .headers_mut()
            .insert(http::header::CONTENT_LENGTH, v);
    }
    response
}

fn json(status: u16, value: serde_json::Value) -> Response<Vec<u8>> {
    reply(status, "application/json", value.to_string().into_bytes())
}

fn error(status: u16, code: &str, message: &str) -> Response<Vec<u8>> {
    json(status, error_body(code, message))
}

#[async_trait]
impl ServeHttp for AdminApi {
    async fn response(&self, http: &mut ServerSession) -> Response<Vec<u8>> {
        let req = http.req_header();
        let method = req.method.clone();
        let path = req.uri.path().to_string();
        let query_user = crate::web::request::query_param(req, "user");
        let bearer = req
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim().to_string());
        let peer = http.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip());
        let by = Origin::of(peer, req);
        let app = &self.app;
        match (method, path.as_str()) {
            (Method::GET, "/healthz") => reply(200, "text/plain", b"ok\n".to_vec()),
            (Method::GET, "/readyz") => match app.readiness().await {
                Readiness::Ready => reply(200, "text/plain", b"ready\n".to_vec()),
                Readiness::Draining => reply(503, "text/plain", b"draining\n".to_vec()),
                Readiness::StoreUnavailable => {
                    reply(503, "text/plain", b"session store unavailable\n".to_vec())
                }
            },
            (Method::GET, "/metrics") => {
                reply(200, "text/plain; version=0.0.4", app.metrics.render())
            }
            (method, path) if is_session_api(path) => {
                if let Some(refused) = self.refuse_unauthorized(bearer.as_deref()) {
                    return refused;
                }
                match self
                    .sessions_api(&method, path, query_user.as_deref(), &by)
                    .await
                {
                    Ok(response) => response,
                    Err(e) => {
                        log::warn!("admin api: {e}");
                        error(503, "session_store_unavailable", "retry shortly")
                    }
                }
            }
            _ => error(404, "not_found", "no such admin endpoint"),
        }
    }
}

fn is_session_api(path: &str) -> bool {
    path == "/sessions" || path.starts_with("/sessions/") || path.starts_with("/users/")
}

impl AdminApi {
    /// The refusal for a request without the right bearer token, if it lacks it. Constant-time;
    /// the API is off entirely without a configured token.
    fn refuse_unauthorized(&self, bearer: Option<&str>) -> Option<Response<Vec<u8>>> {
        let Some(token) = &self.app.config.admin.token else {
            return Some(error(
                404,
                "admin_api_disabled",
                "set [admin] token_env or token_file to enable the session API",
            ));
        };
        let Some(given) = bearer else {
            return Some(error(401, "unauthorized", "bearer token required"));
        };
        // Comparing MACs of both sides hides the token's length and any early mismatch.
        let digest = |bytes: &[u8]| {
            let mut m = <Hmac<Sha256> as Mac>::new_from_slice(b"admin-token-compare")
                .unwrap_or_else(|_| unreachable!());
            m.update(bytes);
            m.finalize().into_bytes()
        };
        (digest(given.as_bytes()) != digest(token.expose()))
            .then(|| error(401, "unauthorized", "wrong bearer token"))
    }

    async fn sessions_api(
        &self,
        method: &Method,
        path: &str,
        user: Option<&str>,
        by: &Origin,
    ) -> Result<Response<Vec<u8>>, StoreError> {
        let app = &self.app;
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        Ok(match (method, segments.as_slice()) {
            (&Method::GET, ["sessions"]) => {
                let sessions = operator::list(app, user, by).await?;
                json(200, sessions_json(&sessions))
            }
            (&Method::DELETE, ["sessions"]) => {
                let n = operator::revoke_all(app, by).await?;
                json(200, serde_json::json!({"revoked": n}))
            }
            (&Method::DELETE, ["sessions", handle]) => match Handle::parse(handle) {
                None => error(400, "bad_handle", "a handle is 64 lowercase hex digits"),
                Some(handle) => {
                    if operator::revoke_handle(app, &handle, by).await? {
                        json(200, serde_json::json!({"revoked": 1}))
                    } else {
                        error(404, "not_found", "no live session with that handle")
                    }
                }
            },
            (&Method::DELETE, ["users", id, "sessions"]) if !id.is_empty() => {
                let n = operator::revoke_user(app, id, by).await?;
                json(200, serde_json::json!({"revoked": n}))
            }
            _ => error(405, "method_not_allowed", "see the admin API documentation"),
        })
    }
}
