//! The audit trail: one JSON line per session event, to a log sink and to a capped Redis stream.
//!
//! Events: `login_success`, `login_failure` (with a reason class, e.g. `too_many_failures`), `logout`,
//! `logout_everywhere`, `session_ended` (a user ended one of their other sessions),
//! `admin_revoke`, `session_evicted` (per-user limit), `session_expired`, `cookie_rejected`.
//! Each carries a timestamp, event id, user, session handle, client IP and user agent, and never
//! a session id, cookie value, password or secret: the types that hold those are not accepted.
//!
//! Recording never blocks a request: lines go through a bounded queue to a writer thread (and are
//! dropped, and counted in the log, if the sink cannot keep up), and the Redis copy is an `XADD`
//! with `MAXLEN ~` on a spawned task. Any instance's events can be read with
//! `gateway audit tail`.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;

use serde::Serialize;

use crate::config::{AuditSettings, AuditSink};
use crate::redis_conn::SharedRedis;
use crate::session::{now_ms, Handle, LiveSession};

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
}

/// Where a request came from, for the record. Cheap to build on every request: the strings
/// are only made when an event or a session record needs them.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    /// `None` for the command line.
    pub ip: Option<std::net::IpAddr>,
    pub user_agent: Option<http::HeaderValue>,
}

impl Origin {
    pub fn ip_text(&self) -> String {
        self.ip
            .map_or_else(|| "local".to_string(), |ip| ip.to_string())
    }

    /// The user agent as text, cut to a length worth keeping.
    pub fn user_agent_text(&self) -> String {
        let raw = self.user_agent.as_ref().map_or(&[][..], |v| v.as_bytes());
        String::from_utf8_lossy(raw).chars().take(256).collect()
    }
}

impl AuditEvent {
    pub fn new(event: &'static str, actor: &'static str, origin: &Origin) -> AuditEvent {
        AuditEvent {
            event_id: event_id(),
            ts: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            event,
            user_id: None,
            username: None,
            handle: None,
            ip: origin.ip_text(),
            user_agent: origin.user_agent_text(),
            reason: None,
            actor,
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

fn event_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut random = [0u8; 6];
    let _ = getrandom::fill(&mut random);
    format!(
        "{:x}-{:x}-{}",
        now_ms(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        hex::encode(random)
    )
}

/// Cap for [`Audit::record_limited`].
pub const LIMITED_PER_SECOND: u64 = 20;

pub struct Audit {
    lines: Option<SyncSender<String>>,
    dropped: Arc<AtomicU64>,
    /// Second (unix) and count of rate-limited events recorded in it.
    limited_second: AtomicU64,
    limited_count: AtomicU64,
    redis: Arc<SharedRedis>,
    stream: String,
    max_len: u64,
}

impl Audit {
    /// Starts the writer thread for the configured sink (start-up only).
    pub fn start(
        settings: &AuditSettings,
        redis: Arc<SharedRedis>,
        key_prefix: &str,
    ) -> std::io::Result<Audit> {
        let mut writer: Option<Box<dyn Write + Send>> = match &settings.sink {
            AuditSink::Stdout => Some(Box::new(std::io::stdout())),
            AuditSink::File(path) => Some(Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            )),
            AuditSink::Off => None,
        };
        let lines = match writer.take() {
            Some(mut out) => {
                let (tx, rx) = sync_channel::<String>(8192);
                std::thread::Builder::new()
                    .name("audit-writer".into())
                    .spawn(move || {
                        for line in rx {
                            let _ = writeln!(out, "{line}");
                            let _ = out.flush();
                        }
                    })?;
                Some(tx)
            }
            None => None,
        };
        Ok(Audit {
            lines,
            dropped: Arc::new(AtomicU64::new(0)),
            limited_second: AtomicU64::new(0),
            limited_count: AtomicU64::new(0),
            redis,
            stream: format!("{key_prefix}audit"),
            max_len: settings.stream_max_len,
        })
    }

    pub fn stream_key(&self) -> &str {
        &self.stream
    }

    /// Records an event without waiting for either sink.
    pub fn record(&self, event: AuditEvent) {
        let Some(xadd) = self.write_line(&event) else {
            return;
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            let redis = self.redis.clone();
            tokio::spawn(async move {
                if let Err(e) = redis.query::<String>(xadd).await {
                    log::warn!("audit event not written to redis: {e}");
                }
            });
        }
    }

    /// Records an event anyone can trigger at will (a junk cookie costs an attacker nothing), at
    /// most [`LIMITED_PER_SECOND`] a second per instance, so a flood cannot push the real events
    /// out of the capped Redis stream. What is left out is counted in the log.
    pub fn record_limited(&self, event: AuditEvent) {
        if self.admit_limited() {
            self.record(event);
        }
    }

    fn admit_limited(&self) -> bool {
        let second = now_ms() / 1000;
        if self.limited_second.swap(second, Ordering::Relaxed) != second {
            let skipped = self
                .limited_count
                .swap(0, Ordering::Relaxed)
                .saturating_sub(LIMITED_PER_SECOND);
            if skipped > 0 {
                log::warn!("{skipped} audit events of a flood were not recorded");
            }
        }
        self.limited_count.fetch_add(1, Ordering::Relaxed) < LIMITED_PER_SECOND
    }

    /// Records an event and waits for the Redis copy (for one-shot CLI commands).
    pub async fn record_and_wait(&self, event: AuditEvent) {
        if let Some(xadd) = self.write_line(&event) {
            if let Err(e) = self.redis.query::<String>(xadd).await {
                log::warn!("audit event not written to redis: {e}");
            }
        }
    }

    /// Queues the line for the log sink and returns the `XADD` for the Redis copy.
    fn write_line(&self, event: &AuditEvent) -> Option<redis::Cmd> {
        let line = serde_json::to_string(event).ok()?;
        if let Some(tx) = &self.lines {
            if let Err(TrySendError::Full(_)) = tx.try_send(line.clone()) {
                let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_power_of_two() {
                    log::warn!("audit sink is behind; {n} audit lines dropped so far");
                }
            }
        }
        let mut xadd = redis::cmd("XADD");
        xadd.arg(&self.stream)
            .arg("MAXLEN")
            .arg("~")
            .arg(self.max_len)
            .arg("*")
            .arg("event")
            .arg(line);
        Some(xadd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AuditSettings, RedisSettings};
    use crate::metrics::Metrics;
    use std::time::Duration;

    fn audit() -> Audit {
        let redis = RedisSettings {
            url: "redis://127.0.0.1:1/0".into(),
            password: None,
            key_prefix: "t:".into(),
            timeout: Duration::from_millis(10),
            connect_timeout: Duration::from_millis(10),
        };
        let shared = Arc::new(SharedRedis::new(&redis, Metrics::new()).unwrap());
        let settings = AuditSettings {
            sink: AuditSink::Off,
            stream_max_len: 10,
        };
        Audit::start(&settings, shared, "t:").unwrap()
    }

    #[test]
    fn a_flood_of_attacker_triggered_events_is_capped() {
        let audit = audit();
        let admitted = (0..1000).filter(|_| audit.admit_limited()).count() as u64;
        // One second boundary may fall inside the loop: at most two seconds' worth.
        assert!(admitted >= LIMITED_PER_SECOND.min(1000), "{admitted}");
        assert!(admitted <= 2 * LIMITED_PER_SECOND, "{admitted}");
    }

    #[test]
    fn events_carry_no_more_than_a_short_user_agent() {
        let origin = Origin {
            ip: None,
            user_agent: http::HeaderValue::from_str(&"x".repeat(1000)).ok(),
        };
        let event = AuditEvent::new("logout", "user", &origin);
        assert_eq!(event.user_agent.len(), 256);
        assert_eq!(event.ip, "local");
    }
}
