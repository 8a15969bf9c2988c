//! Prometheus metrics, served on the admin listener's `/metrics`.
//!
//! - `gateway_requests_total{outcome}`: every request on the public listener, by what the
//!   gateway did with it (see [`Outcome`]); `gateway_request_duration_seconds{outcome}`: how
//!   long each took, from its head being read to its answer being written.
//! - `gateway_upstream_responses_total{class}`: the app's answers by status class (`2xx` …).
//! - `gateway_open_connections`: client connections open on the public listener now (read
//!   from the kernel's socket table when scraped: nothing is counted per request).
//! - `gateway_sessions_created_total`; `gateway_sessions_ended_total{reason}` (see
//!   [`EndReason`]; an expiry is counted when it is noticed).
//! - `gateway_login_duration_seconds`: login form submissions, from body read to answer
//!   (password hashing included).
//! - `gateway_log_lines_dropped_total{log}`: audit (`audit`) and access (`access`) lines
//!   dropped because their writer fell behind.
//! - `gateway_redis_duration_seconds`: latency of each Redis call, failures included.
//! - `gateway_redis_errors_total`: Redis calls that failed or hit the deadline.
//! - `gateway_logins_total{result}`: login attempts by result (`throttled` counts the attempts
//!   the login throttle refused).
//! - `gateway_session_cache_total{result}`: session checks answered from the validation cache
//!   (`hit`) or from Redis (`miss`, which includes every check while the cache is not usable).
//! - `gateway_session_cache_invalidations_total`: entries dropped because Redis said the session
//!   changed; `gateway_session_cache_flushes_total`: whole-cache flushes (tracking lost or
//!   re-established); `gateway_session_cache_entries`: entries held now.
//! - `gateway_config_reloads_total{result}`: reloads on SIGHUP (`ok`, or `failed` when the old
//!   files stayed in force).

mod open_connections;

use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry,
};

/// What the gateway did with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Proxied,
    Public,
    Unauthenticated,
    StoreUnavailable,
    GatewayPage,
    BadRequest,
    UpstreamError,
    /// Refused by an access rule (403).
    Forbidden,
}

impl Outcome {
    const ALL: [Outcome; 8] = [
        Outcome::Proxied,
        Outcome::Public,
        Outcome::Unauthenticated,
        Outcome::StoreUnavailable,
        Outcome::GatewayPage,
        Outcome::BadRequest,
        Outcome::UpstreamError,
        Outcome::Forbidden,
    ];

    fn label(self) -> &'static str {
        match self {
            Outcome::Proxied => "proxied",
            Outcome::Public => "public",
            Outcome::Unauthenticated => "unauthenticated",
            Outcome::StoreUnavailable => "store_unavailable",
            Outcome::GatewayPage => "gateway_page",
            Outcome::BadRequest => "bad_request",
            Outcome::UpstreamError => "upstream_error",
            Outcome::Forbidden => "forbidden",
        }
    }
}

/// Why a session ended, for `gateway_sessions_ended_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// Its user ended it: logout, sign out everywhere, ending one of their other sessions, or
    /// a new login replacing it.
    Logout,
    /// An operator revoked it (admin API or command line).
    Revoked,
    /// The per-user session limit pushed it out.
    Evicted,
    /// Its idle or absolute timeout passed (counted once, when its cookie comes back or a
    /// listing finds it gone).
    Expired,
    /// Its user was disabled, removed or changed (`[login] refresh_interval`).
    UserChanged,
}

impl EndReason {
    const ALL: [EndReason; 5] = [
        EndReason::Logout,
        EndReason::Revoked,
        EndReason::Evicted,
        EndReason::Expired,
        EndReason::UserChanged,
    ];

    fn label(self) -> &'static str {
        match self {
            EndReason::Logout => "logout",
            EndReason::Revoked => "revoked",
            EndReason::Evicted => "evicted",
            EndReason::Expired => "expired",
            EndReason::UserChanged => "user_changed",
        }
    }
}

/// Cheap to clone: the collectors are reference-counted.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// One counter and one histogram per [`Outcome`], resolved once: no label lookup per
    /// request.
    requests: [IntCounter; 8],
    request_durations: [Histogram; 8],
    /// By status class: index 0 is 1xx … 4 is 5xx.
    upstream_responses: [IntCounter; 5],
    sessions_created: IntCounter,
    sessions_ended: [IntCounter; 5],
    logins: IntCounterVec,
    login_duration: Histogram,
    lines_dropped: IntCounterVec,
    redis_duration: Histogram,
    redis_errors: IntCounter,
    pub cache: CacheMetrics,
    config_reloads: IntCounterVec,
}

/// The validation cache's counters.
#[derive(Clone)]
pub struct CacheMetrics {
    pub hits: IntCounter,
    pub misses: IntCounter,
    pub invalidations: IntCounter,
    pub flushes: IntCounter,
    pub entries: IntGauge,
}

fn counter(name: &str, help: &str) -> IntCounter {
    IntCounter::new(name, help).unwrap_or_else(|e| panic!("metric definition: {e}"))
}

fn counters(name: &str, help: &str, label: &str) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), &[label])
        .unwrap_or_else(|e| panic!("metric definition: {e}"))
}

/// Request and login latencies: from a cached session check to a slow app or a hash.
const REQUEST_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("gateway_requests_total", "Requests by what the gateway did"),
            &["outcome"],
        )
        .unwrap_or_else(|e| panic!("metric definition: {e}"));
        let logins = IntCounterVec::new(
            Opts::new("gateway_logins_total", "Login attempts by result"),
            &["result"],
        )
        .unwrap_or_else(|e| panic!("metric definition: {e}"));
        let redis_duration = Histogram::with_opts(
            HistogramOpts::new("gateway_redis_duration_seconds", "Redis call latency").buckets(
                vec![
                    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                    0.5, 1.0,
                ],
            ),
        )
        .unwrap_or_else(|e| panic!("metric definition: {e}"));
        let redis_errors = IntCounter::new(
            "gateway_redis_errors_total",
            "Redis calls that failed or timed out",
        )
        .unwrap_or_else(|e| panic!("metric definition: {e}"));
        let cache_results = IntCounterVec::new(
            Opts::new(
                "gateway_session_cache_total",
                "Session checks by where they were answered",
            ),
            &["result"],
        )
        .unwrap_or_else(|e| panic!("metric definition: {e}"));
        let request_durations = HistogramVec::new(
            HistogramOpts::new(
                "gateway_request_duration_seconds",
                "Request duration by what the gateway did",
            )
            .buckets(REQUEST_BUCKETS.to_vec()),
            &["outcome"],
        )
        .unwrap_or_else(|e| panic!("metric definition: {e}"));
        let upstream_responses = counters(
            "gateway_upstream_responses_total",
            "The app's responses by status class",
            "class",
        );
        let sessions_created = counter(
            "gateway_sessions_created_total",
            "Sessions created by a login",
        );
        let sessions_ended = counters(
            "gateway_sessions_ended_total",
            "Sessions ended, by why",
            "reason",
        );
        let login_duration = Histogram::with_opts(
            HistogramOpts::new(
                "gateway_login_duration_seconds",
                "Login form submissions, password check included",
            )
            .buckets(REQUEST_BUCKETS.to_vec()),
        )
        .unwrap_or_else(|e| panic!("metric definition: {e}"));
        let lines_dropped = counters(
            "gateway_log_lines_dropped_total",
            "Audit and access log lines dropped because their writer fell behind",
            "log",
        );
        let cache = CacheMetrics {
            hits: cache_results.with_label_values(&["hit"]),
            misses: cache_results.with_label_values(&["miss"]),
            invalidations: counter(
                "gateway_session_cache_invalidations_total",
                "Cached sessions dropped because Redis said they changed",
            ),
            flushes: counter(
                "gateway_session_cache_flushes_total",
                "Whole-cache flushes: invalidation tracking lost or re-established",
            ),
            entries: IntGauge::new("gateway_session_cache_entries", "Cached sessions held now")
                .unwrap_or_else(|e| panic!("metric definition: {e}")),
        };
        let config_reloads = IntCounterVec::new(
            Opts::new(
                "gateway_config_reloads_total",
                "Reloads on SIGHUP by result",
            ),
            &["result"],
        )
        .unwrap_or_else(|e| panic!("metric definition: {e}"));
        // Both series exist from the start, so a first failure shows as a change from 0.
        for result in ["ok", "failed"] {
            config_reloads.with_label_values(&[result]);
        }
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(config_reloads.clone()),
            Box::new(logins.clone()),
            Box::new(redis_duration.clone()),
            Box::new(redis_errors.clone()),
            Box::new(cache_results),
            Box::new(cache.invalidations.clone()),
            Box::new(cache.flushes.clone()),
            Box::new(cache.entries.clone()),
            Box::new(request_durations.clone()),
            Box::new(upstream_responses.clone()),
            Box::new(sessions_created.clone()),
            Box::new(sessions_ended.clone()),
            Box::new(login_duration.clone()),
            Box::new(lines_dropped.clone()),
        ] {
            registry
                .register(c)
                .unwrap_or_else(|e| panic!("metric registration: {e}"));
        }
        let requests = Outcome::ALL.map(|o| requests.with_label_values(&[o.label()]));
        let request_durations =
            Outcome::ALL.map(|o| request_durations.with_label_values(&[o.label()]));
        let upstream_responses = ["1xx", "2xx", "3xx", "4xx", "5xx"]
            .map(|class| upstream_responses.with_label_values(&[class]));
        let sessions_ended = EndReason::ALL.map(|r| sessions_ended.with_label_values(&[r.label()]));
        for log in ["audit", "access"] {
            lines_dropped.with_label_values(&[log]);
        }
        Metrics {
            registry,
            requests,
            request_durations,
            upstream_responses,
            sessions_created,
            sessions_ended,
            logins,
            login_duration,
            lines_dropped,
            redis_duration,
            redis_errors,
            cache,
            config_reloads,
        }
    }

    pub fn request(&self, outcome: Outcome, took: Duration) {
        self.requests[outcome as usize].inc();
        self.request_durations[outcome as usize].observe(took.as_secs_f64());
    }

    /// Counts one answer from the app.
    pub fn upstream_response(&self, status: u16) {
        if let Some(counter) = (status / 100)
            .checked_sub(1)
            .and_then(|i| self.upstream_responses.get(usize::from(i)))
        {
            counter.inc();
        }
    }

    pub fn session_created(&self) {
        self.sessions_created.inc();
    }

    pub fn sessions_ended(&self, reason: EndReason, count: usize) {
        self.sessions_ended[reason as usize].inc_by(count as u64);
    }

    pub fn observe_login(&self, took: Duration) {
        self.login_duration.observe(took.as_secs_f64());
    }

    /// The counter of `log`'s dropped lines, for its [`crate::logs::lines::LineWriter`].
    pub fn lines_dropped(&self, log: &str) -> IntCounter {
        self.lines_dropped.with_label_values(&[log])
    }

    /// Adds `gateway_open_connections` for the listener on `port` (start-up only).
    pub fn watch_connections(&self, port: u16) {
        let gauge = open_connections::OpenConnections::new(port);
        if let Err(e) = self.registry.register(Box::new(gauge)) {
            log::warn!("gateway_open_connections not available: {e}");
        }
    }

    pub fn login(&self, result: &str) {
        self.logins.with_label_values(&[result]).inc();
    }

    pub fn observe_redis(&self, took: Duration, ok: bool) {
        self.redis_duration.observe(took.as_secs_f64());
        if !ok {
            self.redis_errors.inc();
        }
    }

    pub fn config_reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.config_reloads.with_label_values(&[result]).inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metric families.
        let _ = prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_outcome_counts_under_its_own_label() {
        let m = Metrics::new();
        m.request(Outcome::Proxied, Duration::from_millis(1));
        m.request(Outcome::Proxied, Duration::from_millis(1));
        m.request(Outcome::UpstreamError, Duration::from_millis(1));
        let text = String::from_utf8(m.render()).unwrap();
        assert!(
            text.contains("gateway_requests_total{outcome=\"proxied\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("gateway_requests_total{outcome=\"upstream_error\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("gateway_requests_total{outcome=\"public\"} 0"),
            "{text}"
        );
    }

    #[test]
    fn answers_count_by_class_and_nonsense_statuses_are_ignored() {
        let m = Metrics::new();
        for status in [200, 204, 302, 404, 503, 0, 99, 600, 999] {
            m.upstream_response(status);
        }
        let text = String::from_utf8(m.render()).unwrap();
        for (class, n) in [("1xx", 0), ("2xx", 2), ("3xx", 1), ("4xx", 1), ("5xx", 1)] {
            let line = format!("gateway_upstream_responses_total{{class=\"{class}\"}} {n}");
            assert!(text.contains(&line), "{line} in {text}");
        }
    }

    #[test]
    fn ended_sessions_count_by_reason() {
        let m = Metrics::new();
        m.sessions_ended(EndReason::Logout, 3);
        m.sessions_ended(EndReason::UserChanged, 1);
        let text = String::from_utf8(m.render()).unwrap();
        assert!(
            text.contains("gateway_sessions_ended_total{reason=\"logout\"} 3"),
            "{text}"
        );
        assert!(text.contains("gateway_sessions_ended_total{reason=\"user_changed\"} 1"));
        assert!(text.contains("gateway_sessions_ended_total{reason=\"evicted\"} 0"));
        assert!(text.contains("gateway_log_lines_dropped_total{log=\"audit\"} 0"));
    }
}
