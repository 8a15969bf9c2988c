//! A bare pingora reverse proxy: the baseline row of `benches/load.sh`.
//!
//! Only `upstream_peer` is implemented (one fixed upstream, plain HTTP, pingora's own
//! upstream keep-alive pool), with the same global allocator, release profile and thread
//! count as the gateway, in pingora's default runtime model: one work-stealing runtime with
//! THREADS threads behind one listener. Whatever the gateway costs on top of this row is the
//! gateway's own work; what this row costs over nginx is pingora's.
//!
//!   cargo build --release --example bare_proxy
//!   target/release/examples/bare_proxy LISTEN UPSTREAM THREADS [READ_BUFFER]
//!   e.g. target/release/examples/bare_proxy 127.0.0.1:8081 127.0.0.1:8000 2
//!
//! READ_BUFFER (bytes, optional; 0 = none) sets the listener's L4 read buffer, which every
//! downstream connection holds for its whole life (pingora's default: 64 KiB). The memory
//! measurement of `benches/load.sh` runs a second copy with a small one, to show what that
//! buffer costs per keep-alive connection.
//!
//! SIGTERM or SIGINT stops it (one second of grace, like the bench's gateway config).

use std::net::SocketAddr;
use std::process::ExitCode;

use async_trait::async_trait;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::prelude::HttpPeer;
use pingora::proxy::{ProxyHttp, Session};
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::Server;
use pingora::Result;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct BareProxy {
    upstream: SocketAddr,
}

#[async_trait]
impl ProxyHttp for BareProxy {
    type CTX = ();

    fn new_ctx(&self) -> Self::CTX {}

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut Self::CTX,
    ) -> Result<Box<HttpPeer>> {
        // A parsed SocketAddr: no name resolution per request. Plain HTTP, no SNI.
        Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
    }
}

fn usage() -> ExitCode {
    eprintln!("usage: bare_proxy LISTEN_ADDR UPSTREAM_ADDR THREADS [READ_BUFFER_BYTES]");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (listen, upstream, threads, read_buffer) = match args.as_slice() {
        [l, u, t] => (l, u, t, None),
        [l, u, t, r] => (l, u, t, Some(r)),
        _ => return usage(),
    };
    let (Ok(listen), Ok(upstream), Ok(threads)) = (
        listen.parse::<SocketAddr>(),
        upstream.parse::<SocketAddr>(),
        threads.parse::<usize>(),
    ) else {
        return usage();
    };
    let read_buffer = match read_buffer.map(|r| r.parse::<usize>()) {
        None => None,
        Some(Ok(bytes)) => Some(bytes),
        Some(Err(_)) => return usage(),
    };
    if threads == 0 {
        return usage();
    }

    let conf = ServerConf {
        threads,
        work_stealing: true,
        daemon: false,
        grace_period_seconds: Some(1),
        graceful_shutdown_timeout_seconds: Some(1),
        // one pid file and upgrade socket per listening port, so two copies never collide
        pid_file: format!("/tmp/bare-proxy-{}.pid", listen.port()),
        upgrade_sock: format!("/tmp/bare-proxy-{}-upgrade.sock", listen.port()),
        ..ServerConf::default()
    };
    // An empty Opt: pingora must not read our argv as its own options.
    let mut server = Server::new_with_opt_and_conf(Some(Opt::default()), conf);
    server.bootstrap();

    let mut proxy = pingora::proxy::http_proxy_service_with_name(
        &server.configuration,
        BareProxy { upstream },
        "bare proxy",
    );
    let mut endpoint = ListenerConfig::tcp(listen.to_string());
    if let Some(bytes) = read_buffer {
        endpoint = endpoint.l4_buffer(L4BufferSettings::default().read(bytes));
    }
    proxy.add_listener(endpoint);
    server.add_service(proxy);
    let buffer = read_buffer.map_or("default".to_string(), |b| format!("{b} bytes"));
    eprintln!("bare_proxy: {listen} -> {upstream}, {threads} threads, L4 read buffer {buffer}");
    server.run_forever()
}
