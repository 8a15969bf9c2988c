//! The Rust integration tests, as one test binary (`cargo test --test it`): one module per
//! area, all sharing the harness in `support` (real `redis-server`, echo upstream, the compiled
//! `gateway` binary) and `session_helpers`. One binary links the harness once and runs every
//! area in one process; tests never rely on being alone in it (free ports are handed out once
//! per process, every test starts its own Redis, upstream and gateway).
//!
//! Run one area with a filter: `cargo test --test it expiry::`.

mod session_helpers;
mod support;
mod tls_certs;

mod access_rules;
mod admin;
mod admin_api;
mod audit;
mod check_config;
mod cli_sessions;
mod cookies;
mod database_source;
mod drop_in;
mod example_configs;
mod expiry;
mod forward_auth;
mod framing;
mod graceful_shutdown;
mod identity_assertion;
mod limits;
mod login;
mod login_template;
mod login_throttle;
mod logout;
mod logs;
mod multi_instance;
mod password_formats;
mod proxy_auth;
mod redis_cluster;
mod redis_outage;
mod redis_topologies;
mod reload;
mod request_ids;
mod revocation;
mod session_cache;
mod sessions;
mod streaming;
mod trusted_proxy;
mod upstream_failover;
mod websocket;
