//! The two files `[login]` names besides the config itself: the users file and the login
//! template. Read and checked here both at start-up (and by `check-config`) and when the
//! running gateway reloads them on SIGHUP ([`crate::reload`]), so an operator sees the same
//! problem, at the same line, either way.

use std::path::Path;

use crate::auth::users::UserTable;
use crate::env::Environment;
use crate::errors::ConfigProblem;

/// Why a file `[login]` names cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginFileError {
    /// A problem with the file as a whole (it cannot be read, or a template that does not
    /// compile, whose message names the template's own line): reported at the `[login]` key
    /// that names the file.
    AtKey { key: &'static str, message: String },
    /// Problems inside the users file, each at its own line there.
    InFile(Vec<ConfigProblem>),
}

impl LoginFileError {
    /// Each problem as one line for the log, the file and line first, without the config
    /// file's own place (which only a full config load knows).
    pub fn lines(&self) -> Vec<String> {
        match self {
            LoginFileError::AtKey { key, message } => vec![format!("[login] {key}: {message}")],
            LoginFileError::InFile(problems) => problems.iter().map(|p| p.to_string()).collect(),
        }
    }

    /// Where each problem is (file and line, or the key), without what it is: for the audit
    /// trail, which must never quote a line of the users file.
    pub fn places(&self) -> Vec<String> {
        match self {
            LoginFileError::AtKey { key, .. } => vec![format!("[login] {key}")],
            LoginFileError::InFile(problems) => problems
                .iter()
                .map(|p| match p.line {
                    Some(line) => format!("{}:{line}", p.file),
                    None => p.file.clone(),
                })
                .collect(),
        }
    }
}

/// Reads and checks the users file (`[login] users_file`).
pub fn read_users_file(path: &Path, env: &dyn Environment) -> Result<UserTable, LoginFileError> {
    let text = env.read_file(path).map_err(|e| LoginFileError::AtKey {
        key: "users_file",
        message: format!("cannot read `{}`: {e}", path.display()),
    })?;
    UserTable::parse(&path.display().to_string(), &text)
        .map_err(|e| LoginFileError::InFile(e.problems))
}

/// Reads and checks the login template (`[login] template`): its text, if it compiles and
/// renders.
pub fn read_login_template(path: &Path, env: &dyn Environment) -> Result<String, LoginFileError> {
    let at_key = |message| LoginFileError::AtKey {
        key: "template",
        message,
    };
    let text = env
        .read_file(path)
        .map_err(|e| at_key(format!("cannot read `{}`: {e}", path.display())))?;
    crate::pages::check_login_template(&text)
        .map_err(|message| at_key(format!("`{}`: {message}", path.display())))?;
    Ok(text)
}
