//! The audit trail: one JSON line per session event, to a log sink and to capped Redis streams.
//!
//! Events: `login_success`, `login_failure` (with a reason class, e.g. `too_many_failures`), `logout`,
//! `logout_everywhere`, `session_ended` (a user ended one of their other sessions),
//! `admin_revoke`, `session_evicted` (per-user limit), `session_expired` (once, by whoever
//! notices first: the returning cookie or a listing), `access_denied` (an
//! access rule refused a request), `cookie_rejected`, `config_reloaded` (SIGHUP reloaded the
//! users file and login template, or failed to: see [`crate::reload`]).
//! Each carries a timestamp, event id, user, session handle, client IP and user agent, and never
//! a session id, cookie value, password or secret: the types that hold those are not accepted.
//!
//! Which call to use: [`Audit::record`] for what only a credential holder, an admin or the
//! gateway can cause; [`Audit::record_attempt`] for what anyone can cause for free (failed or
//! throttled logins, forged cookies). Attempts are aggregated ([`attempts`]) and kept in a
//! stream of their own ([`stream::Trail`]), so no flood can push the security trail out.
//!
//! Recording never blocks a request: lines go through a bounded queue to a writer thread (and are
//! dropped, and counted in `gateway_log_lines_dropped_total{log="audit"}`, if the sink cannot
//! keep up: [`LineWriter`]), and the Redis copy is an `XADD`
//! with `MAXLEN ~` on a spawned task. Any instance's events can be read with
//! `gateway audit tail`.

pub mod attempts;
pub mod stream;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use prometheus::IntCounter;
use serde::Serialize;

use crate::clock::{Clock, SystemClock};
use crate::config::AuditSettings;
use crate::logs::lines::LineWriter;
use crate::session::{Handle, LiveSession};
use crate::web::request::Origin;
use attempts::AttemptTally;
pub use stream::{EventStream, MemoryStream, RedisStream, Trail, TrailReader};

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AuditEvent {
    pub event_id: String,
    pub ts: String,
    pub event: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handle: Option<String>,
    pub ip: String,
    pub user_agent: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Who acted: "user", "admin" or "gateway".
    pub actor: &'static str,
    /// The request's `X-Request-Id` (none for the command line).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// On an aggregated line: how many events of this kind it stands for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// On an aggregated line: when the first of them happened.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
}

impl AuditEvent {
    pub fn new(event: &'static str, actor: &'static str, origin: &Origin) -> AuditEvent {
        AuditEvent {
            event_id: event_id(),
            ts: now_text(),
            event,
            user_id: None,
            username: None,
            handle: None,
            ip: origin.ip_text(),
            user_agent: origin.user_agent_text(),
            reason: None,
            actor,
            request_id: origin.request_id_text(),
            count: None,
            since: None,
        }
    }

    /// The line that stands for `count` repeats, the first of which was `self`.
    fn summary(self, count: u64) -> AuditEvent {
        AuditEvent {
            event_id: event_id(),
            ts: now_text(),
            since: Some(self.ts.clone()),
            count: Some(count),
            ..self
        }
    }

    pub fn session(mut self, session: &LiveSession) -> AuditEvent {
        self.user_id = Some(session.record.user_id.clone());
        self.username = Some(session.record.username.clone());
        self.handle = Some(session.handle.to_string());
        self
    }

    pub fn handle(mut self, handle: &Handle) -> AuditEvent {
        self.handle = Some(handle.to_string());
        self
    }

    pub fn username(mut self, username: &str) -> AuditEvent {
        self.username = Some(truncate(username, 128));
        self
    }

    pub fn user_id(mut self, user_id: &str) -> AuditEvent {
        self.user_id = Some(user_id.to_string());
        self
    }

    pub fn reason(mut self, reason: impl Into<String>) -> AuditEvent {
        self.reason = Some(reason.into());
        self
    }
}

fn truncate(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

fn now_text() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

fn event_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut random = [0u8; 6];
    let _ = getrandom::fill(&mut random);
    format!(
        "{:x}-{:x}-{}",
        SystemClock.now_ms(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        hex::encode(random)
    )
}

pub struct Audit {
    lines: Option<LineWriter>,
    attempts: AttemptTally,
    stream: Arc<dyn EventStream>,
}

impl Audit {
    /// Starts the writer thread for the configured sink (start-up only); lines it has to drop
    /// are counted in `dropped`.
    pub fn start(
        settings: &AuditSettings,
        stream: Arc<dyn EventStream>,
        dropped: IntCounter,
    ) -> std::io::Result<Audit> {
        let lines = LineWriter::start("audit", &settings.sink, dropped)?;
        Ok(Audit {
            lines,
            attempts: AttemptTally::default(),
            stream,
        })
    }

    /// Records a security event (see the module doc for which call to use) without waiting.
    pub fn record(&self, event: AuditEvent) {
        self.emit(Trail::Security, &event);
    }

    /// Records an event anyone can cause at will: the first of its kind now, repeats as one
    /// counted line when its window closes ([`attempts`]), in the attempts stream.
    pub fn record_attempt(&self, event: AuditEvent) {
        if let Some(first) = self.attempts.admit(event, SystemClock.now_ms()) {
            self.emit(Trail::Attempts, &first);
        }
    }

    /// Writes the counted lines of the attempt windows that have ended (all of them with
    /// `everything`). [`AttemptWindows`] calls it every second and at shutdown.
    pub fn close_attempt_windows(&self, everything: bool) {
        for summary in self
            .attempts
            .close_windows(SystemClock.now_ms(), everything)
        {
            self.emit(Trail::Attempts, &summary);
        }
    }

    /// Records an event and waits for the shared copy (for one-shot CLI commands).
    pub async fn record_and_wait(&self, event: AuditEvent) {
        if let Some(line) = self.write_line(&event) {
            self.stream.append_and_wait(Trail::Security, line).await;
        }
    }

    fn emit(&self, trail: Trail, event: &AuditEvent) {
        if let Some(line) = self.write_line(event) {
            self.stream.append(trail, line);
        }
    }

    /// Queues the line for the log sink and returns it for the shared stream.
    fn write_line(&self, event: &AuditEvent) -> Option<String> {
        let line = serde_json::to_string(event).ok()?;
        if let Some(lines) = &self.lines {
            lines.write(line.clone());
        }
        Some(line)
    }
}

/// The background service that closes attempt windows on time, so a flood's count is written
/// a minute after it started even if nothing else happens, and at shutdown.
pub struct AttemptWindows {
    pub app: Arc<crate::app::App>,
}

#[async_trait]
impl BackgroundService for AttemptWindows {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = tick.tick() => self.app.audit.close_attempt_windows(false),
                _ = shutdown.changed() => break,
            }
        }
        self.app.audit.close_attempt_windows(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AuditSettings, AuditSink};

    fn audit(stream: Arc<MemoryStream>) -> Audit {
        let settings = AuditSettings {
            sink: AuditSink::Off,
            stream_max_len: 10,
        };
        Audit::start(&settings, stream, IntCounter::new("d", "d").unwrap()).unwrap()
    }

    #[test]
    fn attempts_go_to_their_own_stream_and_security_events_to_the_main_one() {
        let stream = Arc::new(MemoryStream::default());
        let audit = audit(stream.clone());
        let origin = Origin {
            ip: None,
            user_agent: None,
            request_id: None,
        };
        audit.record(AuditEvent::new("login_success", "user", &origin));
        for _ in 0..1000 {
            audit.record_attempt(
                AuditEvent::new("login_failure", "user", &origin).reason("wrong_password"),
            );
        }
        audit.close_attempt_windows(true);
        let security = stream.events_in(Trail::Security);
        assert_eq!(security.len(), 1);
        assert_eq!(security[0]["event"], "login_success");
        let attempts = stream.events_in(Trail::Attempts);
        assert_eq!(attempts.len(), 2, "{attempts:?}");
        assert_eq!(attempts[0].get("count"), None);
        assert_eq!(attempts[1]["count"], 999);
    }

    #[test]
    fn events_carry_no_more_than_a_short_user_agent() {
        let origin = Origin {
            ip: None,
            user_agent: http::HeaderValue::from_str(&"x".repeat(1000)).ok(),
            request_id: None,
        };
        let event = AuditEvent::new("logout", "user", &origin);
        assert_eq!(event.user_agent.len(), 256);
        assert_eq!(event.ip, "local");
    }
}
