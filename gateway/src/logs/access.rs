//! The access log: one line per request on the public listener (the app's pages, public paths,
//! the gateway's own endpoints and its refusals alike), written off the workers.
//!
//! A line holds the time, request id, client IP, method and path, status, body bytes sent,
//! duration in milliseconds, the upstream that answered, and the user id and the first 8
//! characters of the session handle (enough to find the session in `gateway sessions list`,
//! not enough to be one). The query string only with `[log] access_query = true`: it may
//! carry tokens. Never cookies, credentials or the session id.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use prometheus::IntCounter;
use serde::Serialize;

use super::lines::LineWriter;
use crate::config::{LogFormat, LogSettings};
use crate::session::Handle;

/// How many characters of the session handle a line shows.
const HANDLE_PREFIX: usize = 8;

pub struct AccessLog {
    writer: Option<LineWriter>,
    format: LogFormat,
    query: bool,
}

/// What one request did, as the proxy knows it at the end.
pub struct AccessEntry<'a> {
    pub request_id: &'a str,
    pub client_ip: Option<IpAddr>,
    pub method: &'a str,
    pub uri: &'a http::Uri,
    /// 0 when no answer was written (the client went away first).
    pub status: u16,
    pub bytes: usize,
    pub duration: Duration,
    pub upstream: Option<SocketAddr>,
    pub user_id: Option<&'a str>,
    pub session: Option<&'a Handle>,
}

#[derive(Serialize)]
struct Line<'a> {
    time: String,
    request_id: &'a str,
    client_ip: Option<String>,
    method: &'a str,
    path: &'a str,
    status: u16,
    bytes: usize,
    duration_ms: f64,
    upstream: Option<String>,
    user_id: Option<&'a str>,
    session: Option<&'a str>,
}

impl AccessLog {
    /// Starts the writer for `[log] access` (start-up only).
    pub fn start(settings: &LogSettings, dropped: IntCounter) -> std::io::Result<AccessLog> {
        Ok(AccessLog {
            writer: LineWriter::start("access", &settings.access, dropped)?,
            format: settings.format,
            query: settings.access_query,
        })
    }

    /// Whether lines are wanted at all: when not, the proxy gathers nothing for them.
    pub fn enabled(&self) -> bool {
        self.writer.is_some()
    }

    pub fn record(&self, entry: &AccessEntry) {
        if let Some(writer) = &self.writer {
            writer.write(self.render(entry));
        }
    }

    fn render(&self, entry: &AccessEntry) -> String {
        let path = match (self.query, entry.uri.path_and_query()) {
            (true, Some(pq)) => pq.as_str(),
            _ => entry.uri.path(),
        };
        let line = Line {
            time: super::now_rfc3339(),
            request_id: entry.request_id,
            client_ip: entry.client_ip.map(|ip| ip.to_string()),
            method: entry.method,
            path,
            status: entry.status,
            bytes: entry.bytes,
            // Microsecond precision is plenty, and keeps the number short.
            duration_ms: (entry.duration.as_micros() as f64) / 1000.0,
            upstream: entry.upstream.map(|a| a.to_string()),
            user_id: entry.user_id,
            session: entry.session.map(|h| h.prefix(HANDLE_PREFIX)),
        };
        match self.format {
            LogFormat::Json => serde_json::to_string(&line).unwrap_or_default(),
            LogFormat::Text => line.text(),
        }
    }
}

impl Line<'_> {
    /// A combined-log-like line, with `key=value` pairs for what that format lacks.
    fn text(&self) -> String {
        let or_dash = |v: Option<&str>| v.unwrap_or("-").to_string();
        format!(
            "{} {} \"{} {}\" {} {} {:.3}ms upstream={} user={} session={} request_id={}",
            self.time,
            or_dash(self.client_ip.as_deref()),
            self.method,
            self.path.escape_default(),
            self.status,
            self.bytes,
            self.duration_ms,
            or_dash(self.upstream.as_deref()),
            or_dash(self.user_id).escape_default(),
            or_dash(self.session),
            self.request_id,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LineSink;

    fn log(format: LogFormat, query: bool) -> AccessLog {
        AccessLog {
            writer: None,
            format,
            query,
        }
    }

    fn entry<'a>(uri: &'a http::Uri, handle: Option<&'a Handle>) -> AccessEntry<'a> {
        AccessEntry {
            request_id: "req-1",
            client_ip: "203.0.113.9".parse().ok(),
            method: "GET",
            uri,
            status: 200,
            bytes: 1234,
            duration: Duration::from_micros(2500),
            upstream: "127.0.0.1:5001".parse().ok(),
            user_id: Some("42"),
            session: handle,
        }
    }

    #[test]
    fn a_json_line_has_every_field_and_only_a_handle_prefix() {
        let uri: http::Uri = "/reports/1?token=abc".parse().unwrap();
        let handle = Handle::parse(&"ab".repeat(32)).unwrap();
        let line = log(LogFormat::Json, false).render(&entry(&uri, Some(&handle)));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["request_id"], "req-1");
        assert_eq!(v["client_ip"], "203.0.113.9");
        assert_eq!(v["method"], "GET");
        assert_eq!(v["path"], "/reports/1");
        assert_eq!(v["status"], 200);
        assert_eq!(v["bytes"], 1234);
        assert_eq!(v["duration_ms"], 2.5);
        assert_eq!(v["upstream"], "127.0.0.1:5001");
        assert_eq!(v["user_id"], "42");
        assert_eq!(v["session"], "abababab");
        assert!(!line.contains("token"), "{line}");
    }

    #[test]
    fn the_query_only_when_asked_for() {
        let uri: http::Uri = "/search?q=x".parse().unwrap();
        let line = log(LogFormat::Json, true).render(&entry(&uri, None));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["path"], "/search?q=x");
        assert_eq!(v["session"], serde_json::Value::Null);
    }

    #[test]
    fn a_text_line_reads_like_a_combined_log() {
        let uri: http::Uri = "/a\"b".parse().unwrap_or_else(|_| "/ab".parse().unwrap());
        let line = log(LogFormat::Text, false).render(&entry(&uri, None));
        assert!(line.contains(" 203.0.113.9 \"GET /"), "{line}");
        assert!(
            line.contains(
                " 200 1234 2.500ms upstream=127.0.0.1:5001 user=42 session=- request_id=req-1"
            ),
            "{line}"
        );
    }

    #[test]
    fn off_means_no_writer() {
        let settings = LogSettings {
            format: LogFormat::Json,
            level: log::LevelFilter::Info,
            access: LineSink::Off,
            access_query: false,
        };
        let log = AccessLog::start(&settings, IntCounter::new("d", "d").unwrap()).unwrap();
        assert!(!log.enabled());
    }
}
