//! The one place the gateway reads its environment: variables, secret files, and [`Secret`].
//!
//! Everything that reads `std::env` or a secret file goes through [`Environment`], so tests hand
//! in a map instead of touching the real process environment, and a secret's bytes are wrapped in
//! [`Secret`] from the moment they are read, so a stray `{:?}` cannot print them.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

/// Where configuration may take values from besides the config file itself.
pub trait Environment: Send + Sync {
    fn var(&self, name: &str) -> Option<String>;
    fn read_file(&self, path: &Path) -> std::io::Result<String>;
}

/// The real process environment and file system.
pub struct SystemEnvironment;

impl Environment for SystemEnvironment {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }

    fn read_file(&self, path: &Path) -> std::io::Result<String> {
        std::fs::read_to_string(path)
    }
}

/// A fixed set of variables over the real file system: for tests and tools.
#[derive(Default)]
pub struct StaticEnvironment {
    pub vars: HashMap<String, String>,
    /// Files by path, read instead of the disk; a path not listed is read from the disk.
    pub files: HashMap<std::path::PathBuf, String>,
}

impl Environment for StaticEnvironment {
    fn var(&self, name: &str) -> Option<String> {
        self.vars.get(name).cloned()
    }

    fn read_file(&self, path: &Path) -> std::io::Result<String> {
        match self.files.get(path) {
            Some(text) => Ok(text.clone()),
            None => std::fs::read_to_string(path),
        }
    }
}

/// Secret bytes (HMAC keys, passwords, tokens). Debug and Display never show the content.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Secret(bytes.into())
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    pub fn expose_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("")
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_format_their_content() {
        let s = Secret::new("hunter2-hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
