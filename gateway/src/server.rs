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

use std::sync::atomic::Ordering;
use std::sync::Arc;

use async_trait::async_trait;
use pingora::lb::health_check::TcpHealthCheck;
use pingora::lb::{selection::RoundRobin, LoadBalancer};
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use pingora::services::background::background_service;
use pingora::services::listening::Service;
use tokio::signal::unix::{signal, SignalKind};

use crate::admin::AdminApi;
use crate::app::App;
use crate::audit::AttemptWindows;
use crate::proxy::Gateway;
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
    if !upgrade {
        check_ports_free(&app)?;
    }
    let config = &app.config;
    let mut conf = ServerConf {
        threads: config.server.threads,
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

    let mut proxy = pingora::proxy::http_proxy_service_with_name(
        &server.configuration,
        Gateway {
            app: app.clone(),
            upstreams: health_checker.task(),
        },
        "gateway",
    );
    proxy.add_tcp(&config.server.listen.to_string());

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
        "audit attempt windows",
        AttemptWindows { app: app.clone() },
    ));
    server.add_service(health_checker);
    server.add_service(proxy);
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
