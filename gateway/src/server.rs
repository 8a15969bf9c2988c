//! Builds and runs the pingora server from our one config file: pingora's own settings are
//! derived here, so operators never see pingora's YAML.
//!
//! Services: the public proxy, the admin listener, and the upstream health checker. Signals:
//! - SIGTERM drains: health checks turn 503 and responses stop offering keep-alive at once,
//!   while requests are still served for `[server] drain_delay` (so the load balancer moves
//!   away); then the listeners close, in-flight requests get `grace_period`, and whatever is
//!   left is stopped after `shutdown_timeout`.
//! - SIGINT stops fast.
//! - SIGQUIT hands the listening sockets to a new process started with `--upgrade`
//!   (zero-downtime binary upgrade).
//! - SIGHUP reloads the users file and the login template ([`crate::reload`]); it never stops
//!   the gateway, not even before the services run.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use async_trait::async_trait;
use pingora::lb::health_check::TcpHealthCheck;
use pingora::lb::{selection::RoundRobin, LoadBalancer};
use pingora::listeners::{L4BufferSettings, ListenerConfig, TcpSocketOptions};
use pingora::proxy::HttpProxy;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use pingora::services::background::background_service;
use pingora::services::listening::Service;
use tokio::signal::unix::{signal, SignalKind};

use crate::admin::AdminApi;
use crate::app::App;
use crate::audit::AttemptWindows;
use crate::proxy::Gateway;
use crate::reload::{ignore_hangups_until_served, ReloadOnHangup};
use crate::session::tracking::CacheTracker;

/// Runs until a shutdown signal; returns an operator-facing message if start-up fails.
/// pingora retries a listener it cannot bind, forever; a taken port is an operator's mistake
/// to report at once. (With `--upgrade` the sockets come from the old process instead.)
fn check_ports_free(app: &App) -> Result<(), String> {
    let server = &app.config.server;
    for (key, addr) in [
        ("listen", server.listen),
        ("admin_listen", server.admin_listen),
    ] {
        std::net::TcpListener::bind(addr)
            .map_err(|e| format!("[server] {key}: cannot listen on {addr}: {e}"))?;
    }
    Ok(())
}

pub fn run(app: Arc<App>, upgrade: bool) -> Result<(), String> {
    ignore_hangups_until_served().map_err(|e| format!("cannot handle SIGHUP: {e}"))?;
    if !upgrade {
        check_ports_free(&app)?;
    }
    let config = &app.config;
    app.metrics.watch_connections(config.server.listen.port());
    let mut conf = ServerConf {
        // The threads of the proxy workers are set per worker; the admin listener and the
        // background services need one each.
        threads: 1,
        work_stealing: true,
        daemon: false,
        grace_period_seconds: Some(config.server.grace_period.as_secs()),
        graceful_shutdown_timeout_seconds: Some(config.server.shutdown_timeout.as_secs()),
        ..ServerConf::default()
    };
    // Two gateways on one host must not share pingora's upgrade socket or pid file.
    let port = config.server.listen.port();
    conf.upgrade_sock = format!("/tmp/gateway-{port}-upgrade.sock");
    conf.pid_file = format!("/tmp/gateway-{port}.pid");
    let opt = Opt {
        upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(Some(opt), conf);
    server.bootstrap();

    let mut upstreams = LoadBalancer::<RoundRobin>::try_from_iter(config.upstream.servers.iter())
        .map_err(|e| format!("[upstream] servers: cannot resolve: {e}"))?;
    let mut check = TcpHealthCheck::new();
    check.peer_template.options.connection_timeout = Some(config.upstream.connect_timeout);
    upstreams.set_health_check(check);
    upstreams.health_check_frequency = Some(config.upstream.health_check_interval);
    let health_checker = background_service("upstream health checks", upstreams);

    let upstreams = health_checker.task();
    let workers = proxy_workers(
        &server.configuration,
        &app,
        &upstreams,
        config.server.listen,
        config.server.threads,
    );

    let mut admin = Service::new("admin".to_string(), AdminApi { app: app.clone() });
    admin.add_tcp(&config.server.admin_listen.to_string());

    if let Some(cache) = app.store.cache() {
        server.add_service(background_service(
            "session cache tracking",
            CacheTracker {
                cache: cache.clone(),
                redis: app.redis.clone(),
                key_prefix: config.redis.key_prefix.clone(),
            },
        ));
    }
    server.add_service(background_service(
        "reload on SIGHUP",
        ReloadOnHangup { app: app.clone() },
    ));
    server.add_service(background_service(
        "audit attempt windows",
        AttemptWindows { app: app.clone() },
    ));
    server.add_service(health_checker);
    for worker in workers {
        server.add_service(worker);
    }
    server.add_service(admin);
    log::info!(
        "gateway listening on {} (admin {}), upstreams {:?}",
        config.server.listen,
        config.server.admin_listen,
        config.upstream.servers
    );
    server.run(RunArgs {
        shutdown_signal: Box::new(DrainOnSignal { app }),
    });
    Ok(())
}

/// Most proxy workers, each with its own listening socket: pingora hands its listening sockets
/// to a new process on upgrade (SIGQUIT) in one message of at most 32 descriptors and 2 KiB of
/// addresses, so beyond this the threads are shared out among this many workers instead.
const MAX_WORKERS: usize = 16;

/// Bytes each client connection's read buffer holds. pingora's default (64 KiB, zeroed, kept
/// for the connection's life) made an idle keep-alive connection cost about 88 KiB; with 4 KiB
/// it costs about 29 KiB (benches/README.md, "Where the memory goes"). Requests are small;
/// larger bodies simply take more reads.
const CONNECTION_READ_BUFFER: usize = 4096;

/// The public proxy, built the way nginx runs its workers: one pingora service per worker,
/// each on its own single-thread runtime with its own listening socket on the same port
/// (`SO_REUSEPORT`), so the kernel spreads connections over the workers and a connection, its
/// tasks and the upstream connections it reuses stay on one thread. One runtime of several
/// threads measured about half the throughput on two cores: tasks and pooled upstream
/// connections hop between threads, and every hop is a cross-thread wake-up.
fn proxy_workers(
    conf: &Arc<ServerConf>,
    app: &Arc<App>,
    upstreams: &Arc<LoadBalancer<RoundRobin>>,
    listen: SocketAddr,
    threads: usize,
) -> Vec<Service<HttpProxy<Gateway>>> {
    let workers = threads.clamp(1, MAX_WORKERS);
    (0..workers)
        .map(|i| {
            let mut proxy = pingora::proxy::http_proxy_service_with_name(
                conf,
                Gateway {
                    app: app.clone(),
                    upstreams: upstreams.clone(),
                },
                &format!("gateway {i}"),
            );
            proxy.threads = Some(threads / workers + usize::from(i < threads % workers));
            let mut options = TcpSocketOptions::default();
            options.so_reuseport = Some(true);
            proxy.add_listener(
                ListenerConfig::tcp(worker_address(listen, i))
                    .tcp_socket_options(options)
                    .l4_buffer(L4BufferSettings::default().read(CONNECTION_READ_BUFFER)),
            );
            proxy
        })
        .collect()
}

/// `listen` spelled differently for each worker (`:8080`, `:08080`, `:008080`, ...): pingora
/// keeps its listening sockets in a table keyed by the address as written, so workers sharing
/// one spelling would share (and close twice) one socket; and an upgrade hands each worker's
/// socket to the same worker of the new process.
fn worker_address(listen: SocketAddr, worker: usize) -> String {
    let text = listen.to_string();
    match text.rsplit_once(':') {
        Some((host, port)) => format!("{host}:{}{port}", "0".repeat(worker)),
        None => text,
    }
}

/// pingora's signal handling, plus: mark the gateway as draining the moment shutdown starts.
struct DrainOnSignal {
    app: Arc<App>,
}

#[async_trait]
impl ShutdownSignalWatch for DrainOnSignal {
    async fn recv(&self) -> ShutdownSignal {
        let (Ok(mut quit), Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::quit()),
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            log::error!("cannot install signal handlers; stop the gateway with SIGKILL");
            return std::future::pending().await;
        };
        let kind = tokio::select! {
            _ = quit.recv() => ShutdownSignal::GracefulUpgrade,
            _ = term.recv() => ShutdownSignal::GracefulTerminate,
            _ = int.recv() => ShutdownSignal::FastShutdown,
        };
        self.app.draining.store(true, Ordering::Relaxed);
        if matches!(kind, ShutdownSignal::GracefulTerminate) {
            let delay = self.app.config.server.drain_delay;
            log::info!("SIGTERM: draining for {delay:?} before closing the listeners");
            tokio::time::sleep(delay).await;
        }
        log::info!("shutting down ({kind:?})");
        kind
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_worker_spelling_is_distinct_and_means_the_same_address() {
        for listen in [
            "127.0.0.1:8080",
            "0.0.0.0:1",
            "[::1]:65535",
            "[2001:db8::7]:443",
            "[fe80::1%2]:8080",
        ] {
            let listen: SocketAddr = listen.parse().unwrap();
            let spelled: Vec<String> = (0..MAX_WORKERS)
                .map(|i| worker_address(listen, i))
                .collect();
            assert_eq!(spelled[0], listen.to_string());
            for (i, text) in spelled.iter().enumerate() {
                assert_eq!(text.parse::<SocketAddr>().ok(), Some(listen), "{text}");
                assert!(!spelled[..i].contains(text), "{text}");
            }
        }
    }
}
