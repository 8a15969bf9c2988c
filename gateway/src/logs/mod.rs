//! What the gateway writes besides the audit: its operational log (stderr) and the access log.
//!
//! - Operational log: `[log] level` sets the default filter and `RUST_LOG` (read through
//!   [`Environment`]) overrides it, in env_logger's syntax (`info,pingora=warn`). `[log] format`
//!   = `text` (the default: a readable line) or `json` (one object per line: `time`, `level`,
//!   `target`, `message`). pingora logs through the same `log` facade, so its lines take the
//!   same shape.
//! - Access log ([`access`]): one line per request, off the workers ([`lines`]).
//!
//! Before the config is read (or for the one-shot commands) the log is text at `info`.

pub mod access;
pub mod lines;

use std::io::Write;

use crate::config::{LogFormat, LogSettings};
use crate::env::Environment;

/// Installs the process's logger (start-up only; a second call is ignored).
pub fn init(settings: &LogSettings, env: &dyn Environment) {
    let mut builder = env_logger::Builder::new();
    builder.filter_level(settings.level);
    if let Some(filters) = env.var("RUST_LOG").filter(|f| !f.trim().is_empty()) {
        builder.parse_filters(&filters);
    }
    if settings.format == LogFormat::Json {
        builder.format(|out, record| {
            writeln!(
                out,
                "{}",
                json_line(record.level(), record.target(), &record.args().to_string())
            )
        });
        // A panic's own message is plain text on stderr, which would break a collector's
        // parser at the moment its line matters most: send it through the log instead.
        std::panic::set_hook(Box::new(|info| log::error!("panic: {info}")));
    }
    let _ = builder.try_init();
}

/// The logger for commands that run before (or without) a config: text, `info`, `RUST_LOG`.
pub fn init_default(env: &dyn Environment) {
    init(
        &LogSettings {
            format: LogFormat::Text,
            level: log::LevelFilter::Info,
            access: crate::config::LineSink::Off,
            access_query: false,
        },
        env,
    );
}

fn json_line(level: log::Level, target: &str, message: &str) -> String {
    serde_json::json!({
        "time": now_rfc3339(),
        "level": level.as_str().to_ascii_lowercase(),
        "target": target,
        "message": message,
    })
    .to_string()
}

pub(crate) fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_line_is_one_object_whatever_the_message_holds() {
        let line = json_line(
            log::Level::Warn,
            "gateway::proxy",
            "quote \" newline \n tab \t and \u{7} bell",
        );
        assert!(!line.contains('\n'));
        let parsed: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(parsed["level"], "warn");
        assert_eq!(parsed["target"], "gateway::proxy");
        assert_eq!(
            parsed["message"],
            "quote \" newline \n tab \t and \u{7} bell"
        );
        assert!(parsed["time"].as_str().unwrap().ends_with('Z'));
    }
}
