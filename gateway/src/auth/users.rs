//! The users file: `[[users]]` tables with `username`, `id`, `password_hash`, `roles`, `disabled`.
//!
//! Read with the config (`[login] users_file`, see [`crate::config`]), so `gateway check-config`
//! and start-up report the same problems, and again the same way on a reload (SIGHUP). Every bad entry is reported with
//! its line, and a hash in a format the gateway cannot check is an error at start-up rather than
//! a user who mysteriously cannot log in.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use crate::auth::password::PasswordHash;
use crate::env::Environment;
use crate::errors::{ConfigError, ConfigProblem};
use crate::identity::Identity;

/// A user the gateway may let in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub identity: Identity,
    pub password_hash: PasswordHash,
    pub disabled: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    #[serde(default)]
    users: Vec<UserEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserEntry {
    username: Spanned<String>,
    id: Spanned<UserId>,
    password_hash: Spanned<String>,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    disabled: bool,
}

/// Databases hand out integer ids; config files often quote them. Accept both.
#[derive(Deserialize)]
#[serde(untagged)]
enum UserId {
    Text(String),
    Number(i64),
}

/// The users from the users file, by username.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct UserTable {
    by_name: HashMap<String, User>,
}

/// Only the count: the table sits in `Config`, whose `Debug` output must not show password hashes.
impl fmt::Debug for UserTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserTable")
            .field("users", &self.by_name.len())
            .finish()
    }
}

impl UserTable {
    /// Reads and checks a users file on its own. The config already does this for its
    /// `users_file` (`config.login.users`); this is for callers without a config.
    pub fn load(path: &Path, env: &dyn Environment) -> Result<UserTable, ConfigError> {
        let name = path.display().to_string();
        let text = env
            .read_file(path)
            .map_err(|e| ConfigError::single(&name, format!("cannot read users file: {e}")))?;
        UserTable::parse(&name, &text)
    }

    pub fn parse(file: &str, text: &str) -> Result<UserTable, ConfigError> {
        let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
        let parsed: UsersFile = toml::from_str(text).map_err(|e| ConfigError {
            problems: vec![ConfigProblem {
                file: file.to_string(),
                line: e.span().map(|s| line_of(s.start)),
                key: String::new(),
                message: e.message().trim().to_string(),
            }],
        })?;
        let mut problems = Vec::new();
        let mut report = |offset: usize, key: &str, message: String| {
            problems.push(ConfigProblem {
                file: file.to_string(),
                line: Some(line_of(offset)),
                key: key.to_string(),
                message,
            })
        };
        let mut by_name = HashMap::new();
        let mut ids = HashMap::new();
        for entry in parsed.users {
            let username = entry.username.get_ref().trim().to_string();
            let id = match entry.id.get_ref() {
                UserId::Text(t) => t.clone(),
                UserId::Number(n) => n.to_string(),
            };
            if username.is_empty() {
                report(
                    entry.username.span().start,
                    "username",
                    "must not be empty".into(),
                );
                continue;
            }
            if id.is_empty() || id.contains([':', ',', '\n', '{', '}']) {
                report(
                    entry.id.span().start,
                    "id",
                    "must be non-empty without ':', ',', '{', '}' or newlines".into(),
                );
                continue;
            }
            if let Some(role) = entry.roles.iter().find(|r| r.is_empty() || r.contains(',')) {
                report(
                    entry.username.span().start,
                    "roles",
                    format!("role `{role}` must be non-empty and contain no comma"),
                );
            }
            let hash = match PasswordHash::parse(entry.password_hash.get_ref()) {
                Ok(h) => h,
                Err(message) => {
                    report(entry.password_hash.span().start, "password_hash", message);
                    continue;
                }
            };
            if ids.insert(id.clone(), ()).is_some() {
                report(entry.id.span().start, "id", format!("`{id}` is used twice"));
            }
            let user = User {
                identity: Identity {
                    id,
                    username: username.clone(),
                    roles: entry.roles,
                },
                password_hash: hash,
                disabled: entry.disabled,
            };
            if by_name.insert(username.clone(), user).is_some() {
                report(
                    entry.username.span().start,
                    "username",
                    format!("`{username}` is listed twice"),
                );
            }
        }
        if problems.is_empty() {
            Ok(UserTable { by_name })
        } else {
            Err(ConfigError { problems })
        }
    }

    pub fn find(&self, username: &str) -> Option<&User> {
        self.by_name.get(username)
    }

    /// Some enabled user's hash, for decoys that cost what a real check costs.
    pub fn typical_hash(&self) -> Option<&PasswordHash> {
        let mut users: Vec<&User> = self.by_name.values().filter(|u| !u.disabled).collect();
        users.sort_by(|a, b| a.identity.username.cmp(&b.identity.username));
        users.first().map(|u| &u.password_hash)
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_users_with_numeric_or_text_ids() {
        let t = UserTable::parse(
            "users.toml",
            r#"
[[users]]
username = "alice"
id = 1
password_hash = "pbkdf2:sha256:1000$salt$00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff"
roles = ["admin"]

[[users]]
username = "bob"
id = "b-2"
password_hash = "pbkdf2:sha256:1000$salt$00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff"
disabled = true
"#,
        )
        .unwrap();
        assert_eq!(t.find("alice").unwrap().identity.id, "1");
        assert!(t.find("bob").unwrap().disabled);
        assert!(t.find("carol").is_none());
    }

    #[test]
    fn bad_entries_are_reported_with_lines() {
        let err = UserTable::parse(
            "users.toml",
            "[[users]]\nusername = \"a\"\nid = 1\npassword_hash = \"plaintext\"\n",
        )
        .unwrap_err();
        assert_eq!(err.problems[0].line, Some(4));
        let err =
            UserTable::parse("users.toml", "[[users]]\nusername = \"a\"\nrole = 1\n").unwrap_err();
        assert!(err.to_string().contains("role"), "{err}");
    }
}
