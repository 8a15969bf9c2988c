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

use async_trait::async_trait;
use serde::Serialize;

use crate::clock::{Clock, SystemClock};
use crate::config::{AuditSettings, AuditSink};
use crate::redis_conn::SharedRedis;
use crate::session::{Handle, LiveSession};
use crate::web::request::Origin;

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
        SystemClock.now_ms(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        hex::encode(random)
    )
}

/// Cap for [`Audit::record_limited`].
pub const LIMITED_PER_SECOND: u64 = 20;

/// The shared copy of the trail that every instance appends to and `gateway audit tail` reads:
/// a capped Redis stream in production, a list in memory in unit tests.
#[async_trait]
pub trait EventStream: Send + Sync {
    /// Appends one JSON line without waiting (the request must not).
    fn append(&self, line: String);
    /// Appends one JSON line and waits for it (one-shot CLI commands).
    async fn append_and_wait(&self, line: String);
}

/// `XADD {prefix}audit MAXLEN ~ N * event <line>`.
pub struct RedisStream {
    redis: Arc<SharedRedis>,
    key: String,
    max_len: u64,
}

impl RedisStream {
    pub fn new(redis: Arc<SharedRedis>, key_prefix: &str, max_len: u64) -> RedisStream {
        RedisStream {
            redis,
            key: format!("{key_prefix}audit"),
            max_len,
        }
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    fn xadd(&self, line: String) -> redis::Cmd {
        let mut xadd = redis::cmd("XADD");
        xadd.arg(&self.key)
            .arg("MAXLEN")
            .arg("~")
            .arg(self.max_len)
            .arg("*")
            .arg("event")
            .arg(line);
        xadd
    }
}

#[async_trait]
impl EventStream for RedisStream {
    fn append(&self, line: String) {
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let redis = self.redis.clone();
        let xadd = self.xadd(line);
        tokio::spawn(async move {
            if let Err(e) = redis.query::<String>(xadd).await {
                log::warn!("audit event not written to redis: {e}");
            }
        });
    }

    async fn append_and_wait(&self, line: String) {
        if let Err(e) = self.redis.query::<String>(self.xadd(line)).await {
            log::warn!("audit event not written to redis: {e}");
        }
    }
}

/// The stream as a list, for unit tests to read back.
#[derive(Default)]
pub struct MemoryStream {
    lines: std::sync::Mutex<Vec<String>>,
}

impl MemoryStream {
    /// Every event appended so far, parsed.
    pub fn events(&self) -> Vec<serde_json::Value> {
        self.lines.lock().map_or_else(
            |_| Vec::new(),
            |lines| {
                lines
                    .iter()
                    .filter_map(|l| serde_json::from_str(l).ok())
                    .collect()
            },
        )
    }
}

#[async_trait]
impl EventStream for MemoryStream {
    fn append(&self, line: String) {
        if let Ok(mut lines) = self.lines.lock() {
            lines.push(line);
        }
    }

    async fn append_and_wait(&self, line: String) {
        self.append(line);
    }
}

pub struct Audit {
    lines: Option<SyncSender<String>>,
    dropped: Arc<AtomicU64>,
    /// Second (unix) and count of rate-limited events recorded in it.
    limited_second: AtomicU64,
    limited_count: AtomicU64,
    stream: Arc<dyn EventStream>,
}

impl Audit {
    /// Starts the writer thread for the configured sink (start-up only).
    pub fn start(settings: &AuditSettings, stream: Arc<dyn EventStream>) -> std::io::Result<Audit> {
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
            stream,
        })
    }

    /// Records an event without waiting for either sink.
    pub fn record(&self, event: AuditEvent) {
        if let Some(line) = self.write_line(&event) {
            self.stream.append(line);
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
        let second = SystemClock.now_ms() / 1000;
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

    /// Records an event and waits for the shared copy (for one-shot CLI commands).
    pub async fn record_and_wait(&self, event: AuditEvent) {
        if let Some(line) = self.write_line(&event) {
            self.stream.append_and_wait(line).await;
        }
    }

    /// Queues the line for the log sink and returns it for the shared stream.
    fn write_line(&self, event: &AuditEvent) -> Option<String> {
        let line = serde_json::to_string(event).ok()?;
        if let Some(tx) = &self.lines {
            if let Err(TrySendError::Full(_)) = tx.try_send(line.clone()) {
                let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_power_of_two() {
                    log::warn!("audit sink is behind; {n} audit lines dropped so far");
                }
            }
        }
        Some(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AuditSettings;

    fn audit() -> Audit {
        let settings = AuditSettings {
            sink: AuditSink::Off,
            stream_max_len: 10,
        };
        Audit::start(&settings, Arc::new(MemoryStream::default())).unwrap()
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
