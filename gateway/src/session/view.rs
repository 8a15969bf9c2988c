//! How a session is shown to operators (admin API, CLI) and users (their sessions page as
//! JSON). Never includes anything usable as a cookie: the handle names a session, it does not
//! open one.

use std::time::{Duration, UNIX_EPOCH};

use super::LiveSession;

pub fn session_json(s: &LiveSession) -> serde_json::Value {
    serde_json::json!({
        "handle": s.handle.as_str(),
        "user_id": s.record.user_id,
        "username": s.record.username,
        "roles": s.record.roles,
        "created_at": timestamp(s.record.created_at_ms),
        "last_seen": timestamp(s.record.last_seen_ms),
        "ip": s.record.ip,
        "user_agent": s.record.user_agent,
    })
}

pub fn sessions_json(sessions: &[LiveSession]) -> serde_json::Value {
    serde_json::Value::Array(sessions.iter().map(session_json).collect())
}

/// RFC 3339, to the second, in UTC.
pub fn timestamp(ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}
