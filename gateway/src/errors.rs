//! Error types, and which one to use where.
//!
//! - [`ConfigError`]: anything wrong with the operator's files at start-up or in `check-config`.
//!   It carries every problem found, each with its place in the file; the process exits non-zero.
//! - [`StoreError`]: a Redis call failed or took too long. Callers never retry inline; the
//!   request pipeline turns it into **503 with `Retry-After`** (never 500, never a redirect to
//!   the login page, since the user may well be logged in).
//! - [`CredentialError`]: the credential source (users file, database) could not answer. Also 503:
//!   a login that cannot be checked is not a wrong password.
//! - Inside the pingora pipeline everything becomes a `pingora::Error` whose type is
//!   `HTTPStatus(code)` (see [`http_status`]), so `fail_to_proxy` alone decides what the client sees.
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

impl From<StoreError> for Box<pingora::Error> {
    fn from(e: StoreError) -> Self {
        http_status(503, e.to_string())
    }
}

impl From<CredentialError> for Box<pingora::Error> {
    fn from(e: CredentialError) -> Self {
        http_status(503, e.to_string())
    }
}
