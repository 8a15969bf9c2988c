//! The command line: `run`, `check-config`, `hash-password`, `sessions list|revoke`,
//! `audit tail`. Every command reads the same config file as the running gateway.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};

use crate::app::App;
use crate::audit::{Trail, TrailReader};
use crate::auth::password;
use crate::config::{AuditSink, Config};
use crate::env::{Environment, SystemEnvironment};
use crate::errors::ConfigError;
use crate::session::view::{sessions_json, timestamp};
use crate::session::Handle;
use crate::web::request::Origin;
use crate::{logs, operator, server};

#[derive(Parser)]
#[command(
    name = "gateway",
    version,
    about = "Authentication gateway with server-side sessions"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct ConfigArg {
    /// Path to gateway.toml
    #[arg(long, short = 'c', default_value = "/etc/gateway/gateway.toml")]
    config: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway
    Run {
        #[command(flatten)]
        config: ConfigArg,
        /// Take over the listening sockets of a running gateway (after sending it SIGQUIT)
        #[arg(long, short = 'u')]
        upgrade: bool,
    },
    /// Check the config (and users file); list every problem with its line
    CheckConfig {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Read a password from stdin and print its argon2id hash for the users file
    HashPassword,
    /// List or revoke sessions
    Sessions {
        #[command(subcommand)]
        action: SessionsCommand,
    },
    /// Read the audit trail
    Audit {
        #[command(subcommand)]
        action: AuditCommand,
    },
}

#[derive(Subcommand)]
enum SessionsCommand {
    /// One line per live session (or JSON with --json)
    List {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Revoke one session, all of a user's, or all
    Revoke {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long, conflicts_with_all = ["user", "all"], required_unless_present_any = ["user", "all"])]
        handle: Option<String>,
        #[arg(long, conflicts_with = "all")]
        user: Option<String>,
        #[arg(long)]
        all: bool,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Print the latest audit events (from Redis, any instance's), oldest first
    Tail {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long, short = 'n', default_value_t = 50)]
        count: usize,
        /// Keep printing new events as they arrive
        #[arg(long, short = 'f')]
        follow: bool,
        /// Which stream: the security events, the (aggregated) failed attempts, or both merged
        #[arg(long, value_enum, default_value_t = TrailChoice::All)]
        trail: TrailChoice,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum TrailChoice {
    All,
    Security,
    Attempts,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let env = SystemEnvironment;
    // `run` installs the logger its config asks for, once the config is read.
    if !matches!(cli.command, Command::Run { .. }) {
        logs::init_default(&env);
    }
    match cli.command {
        Command::Run { config, upgrade } => run(&config.config, upgrade, &env),
        Command::CheckConfig { config } => check_config(&config.config, &env),
        Command::HashPassword => hash_password(),
        Command::Sessions { action } => sessions(action, &env),
        Command::Audit { action } => audit(action, &env),
    }
}

fn report(error: &ConfigError) -> ExitCode {
    let mut err = std::io::stderr().lock();
    for problem in &error.problems {
        let _ = writeln!(err, "{problem}");
    }
    let _ = writeln!(err, "{} problem(s) found", error.problems.len());
    ExitCode::FAILURE
}

/// Config and users file together: both must be right before anything starts.
fn run(path: &std::path::Path, upgrade: bool, env: &dyn Environment) -> ExitCode {
    let config = match Config::load(path, env) {
        Ok(config) => config,
        Err(e) => return report(&e),
    };
    logs::init(&config.log, env);
    let app = match App::new(config) {
        Ok(app) => app,
        Err(e) => return report(&e),
    };
    match server::run(app, upgrade) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("{message}");
            ExitCode::FAILURE
        }
    }
}

fn check_config(path: &std::path::Path, env: &dyn Environment) -> ExitCode {
    match Config::load(path, env) {
        Ok(_) => {
            println!("config OK: {}", path.display());
            ExitCode::SUCCESS
        }
        Err(e) => report(&e),
    }
}

fn hash_password() -> ExitCode {
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line).is_err() {
        eprintln!("could not read a password from stdin");
        return ExitCode::FAILURE;
    }
    let password = line.trim_end_matches(['\n', '\r']);
    if password.is_empty() {
        eprintln!("empty password; pipe one in, e.g. `printf %s 'pw' | gateway hash-password`");
        return ExitCode::FAILURE;
    }
    match password::hash_argon2id(password) {
        Some(hash) => {
            println!("{hash}");
            ExitCode::SUCCESS
        }
        None => {
            eprintln!("hashing failed");
            ExitCode::FAILURE
        }
    }
}

/// An [`App`] for one-shot commands: its audit lines go to Redis (and a file sink), never into
/// the command's own output.
fn tool_app(path: &std::path::Path, env: &dyn Environment) -> Result<Arc<App>, ExitCode> {
    let mut config = Config::load(path, env).map_err(|e| report(&e))?;
    if config.audit.sink == AuditSink::Stdout {
        config.audit.sink = AuditSink::Off;
    }
    App::new(config).map_err(|e| report(&e))
}

fn block_on<F: std::future::Future>(future: F) -> Result<F::Output, ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map(|rt| rt.block_on(future))
        .map_err(|e| {
            eprintln!("cannot start runtime: {e}");
            ExitCode::FAILURE
        })
}

fn operator_origin() -> Origin {
    Origin {
        ip: None,
        user_agent: http::HeaderValue::from_str(&format!(
            "gateway-cli/{}",
            env!("CARGO_PKG_VERSION")
        ))
        .ok(),
        request_id: None,
    }
}

fn sessions(action: SessionsCommand, env: &dyn Environment) -> ExitCode {
    let (config, job): (PathBuf, SessionsCommand) = match &action {
        SessionsCommand::List { config, .. } | SessionsCommand::Revoke { config, .. } => {
            (config.config.clone(), action)
        }
    };
    let app = match tool_app(&config, env) {
        Ok(app) => app,
        Err(code) => return code,
    };
    let by = operator_origin();
    let outcome = block_on(async {
        match job {
            SessionsCommand::List { user, json, .. } => {
                let sessions = operator::list(&app, user.as_deref(), &by).await?;
                if json {
                    println!("{}", sessions_json(&sessions));
                } else {
                    for s in &sessions {
                        println!(
                            "{}  user={} ({})  created={}  last_seen={}  ip={}  ua={:?}",
                            s.handle,
                            s.record.user_id,
                            s.record.username,
                            timestamp(s.record.created_at_ms),
                            timestamp(s.record.last_seen_ms),
                            s.record.ip,
                            s.record.user_agent,
                        );
                    }
                    eprintln!("{} live session(s)", sessions.len());
                }
                Ok(true)
            }
            SessionsCommand::Revoke {
                handle, user, all, ..
            } => {
                let n = if let Some(h) = handle {
                    let Some(handle) = Handle::parse(&h) else {
                        eprintln!("`{h}` is not a session handle (64 lowercase hex digits)");
                        return Ok(false);
                    };
                    usize::from(operator::revoke_handle(&app, &handle, &by).await?)
                } else if let Some(user) = user {
                    operator::revoke_user(&app, &user, &by).await?
                } else if all {
                    operator::revoke_all(&app, &by).await?
                } else {
                    0
                };
                println!("revoked {n} session(s)");
                Ok(true)
            }
        }
    });
    match outcome {
        Ok(Ok(true)) => ExitCode::SUCCESS,
        Ok(Ok(false)) => ExitCode::FAILURE,
        Ok(Err(e @ crate::errors::StoreError::Internal(_))) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
        Ok(Err(e)) => {
            eprintln!("{e}");
            ExitCode::from(3)
        }
        Err(code) => code,
    }
}

fn audit(action: AuditCommand, env: &dyn Environment) -> ExitCode {
    let AuditCommand::Tail {
        config,
        count,
        follow,
        trail,
    } = action;
    let app = match tool_app(&config.config, env) {
        Ok(app) => app,
        Err(code) => return code,
    };
    let trails: &[Trail] = match trail {
        TrailChoice::All => &Trail::ALL,
        TrailChoice::Security => &[Trail::Security],
        TrailChoice::Attempts => &[Trail::Attempts],
    };
    let outcome = block_on(async {
        let mut reader = TrailReader::new(&app.redis, &app.config.redis.key_prefix, trails);
        reader
            .latest(count)
            .await?
            .iter()
            .for_each(|l| println!("{l}"));
        if !follow {
            return Ok::<(), crate::errors::StoreError>(());
        }
        // `--follow` polls until the operator interrupts it.
        loop {
            let lines = reader.newer().await?;
            lines.iter().for_each(|l| println!("{l}"));
            if lines.is_empty() {
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
        }
    });
    match outcome {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("{e}");
            ExitCode::from(3)
        }
        Err(code) => code,
    }
}
