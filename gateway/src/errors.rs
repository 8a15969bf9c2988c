//! Error types, and which one to use where.
//!
//! - [`ConfigError`]: anything wrong with the operator's files (the config and the users file it
//!   names) at start-up or in `check-config`. It carries every problem found, each with its file
//!   and line; the process exits non-zero.
//! - [`StoreError`]: a Redis call failed or took too long. Callers never retry inline; whoever
//!   answers the request turns it into a **503**: with `Retry-After` on the public listener
//!   (`routes::store_unavailable`), a plain 503 from the admin API, an error line from the CLI.
//!   Never a 401 or a redirect to the login page, since the user may well be logged in.
//! - [`CredentialError`]: the credential source (users file, database) could not answer. Also
//!   503 (`routes::credentials_unavailable`): a login that cannot be checked is not a wrong
//!   password.
//! - Answers the gateway decides itself are not errors: `request_filter` and the gateway's own
//!   routes build a `Reply` and send it (400 for dot segments, 302 to login or 401 without a
//!   session, 503 when Redis is down, the login and logout pages) and return `Ok(true)`.
//! - A `pingora::Error` is only for what goes wrong while proxying to the app: [`http_status`]
//!   makes one that carries the status the client should get (502 no healthy upstream, 400 a
//!   request target that cannot be forwarded), and `fail_to_proxy` turns it, or any error of
//!   pingora's own (upstream timeout 504, other upstream failure 502, a malformed request 400,
//!   anything else 500), into that status and a small HTML or JSON page.
//!
//! Bad client input (cookies, headers, bodies) is not an error type at all: it is treated as
//! "no session" or answered with a 4xx by the handler that reads it.

use std::fmt;

/// One problem in a config or users file: where it is and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub file: String,
    pub line: Option<usize>,
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: ", self.file, line)?,
            None => write!(f, "{}: ", self.file)?,
        }
        if self.key.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.key, self.message)
        }
    }
}

/// Every problem found in the operator's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub problems: Vec<ConfigProblem>,
}

impl ConfigError {
    pub fn single(file: &str, message: impl Into<String>) -> Self {
        ConfigError {
            problems: vec![ConfigProblem {
                file: file.to_string(),
                line: None,
                key: String::new(),
                message: message.into(),
            }],
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// The session store (Redis) did not answer in time or answered with an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    Timeout,
    Unavailable(String),
    /// The gateway itself failed before asking the store (no randomness for a new id, a record
    /// that would not serialise): not an outage to retry, so 500, not 503.
    Internal(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Timeout => f.write_str("session store timed out"),
            StoreError::Unavailable(why) => write!(f, "session store unavailable: {why}"),
            StoreError::Internal(why) => write!(f, "internal error: {why}"),
        }
    }
}

impl std::error::Error for StoreError {}

/// The credential source could not be asked (as opposed to: it said no).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialError(pub String);

impl fmt::Display for CredentialError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "credential source unavailable: {}", self.0)
    }
}

impl std::error::Error for CredentialError {}

/// A pingora error that carries the HTTP status the client should get.
pub fn http_status(code: u16, context: impl Into<String>) -> Box<pingora::Error> {
    pingora::Error::explain(pingora::ErrorType::HTTPStatus(code), context.into())
}
