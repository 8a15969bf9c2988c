//! Checking a username and password, without stalling the proxy and without leaking which
//! usernames exist.
//!
//! Hash verification runs on a few low-priority threads of its own ([`HashingPool`]), at most
//! one per two cores at a time, so a login storm queues behind itself instead of starving
//! proxied traffic on the async workers. Unknown
//! and disabled users cost exactly what a wrong password costs: an unknown name is checked
//! against a decoy hash of the same algorithm and cost, and a disabled user's real hash is
//! checked before the answer is "no".
//!
//! Users come from the users file, the app's database, or both (file first). The users file can
//! be replaced while the gateway runs ([`Authenticator::replace_users`], on SIGHUP).

use std::sync::{Arc, PoisonError, RwLock};

use crate::auth::database::UserDatabase;
use crate::auth::hashing::HashingPool;
use crate::auth::password::{default_decoy, PasswordHash};
use crate::auth::users::{User, UserTable};
use crate::errors::CredentialError;
use crate::identity::Identity;

/// Flask-Bcrypt's default cost: what a WhaleFall-style database holds.
const DATABASE_DECOY_COST: u32 = 12;

pub struct Authenticator {
    /// Swapped whole by a reload (SIGHUP), so a login or a refresh reads one table from start to
    /// end. Read on logins and user refreshes only, never on the proxy's path.
    file: RwLock<Arc<FileUsers>>,
    database: Option<UserDatabase>,
    /// With a database, a bcrypt decoy shaped like its hashes, made once (it is slow to make)
    /// and used whatever the users file holds.
    database_decoy: Option<PasswordHash>,
    hashing: HashingPool,
}

/// The users file's table, and the decoy that costs what checking one of its users costs.
struct FileUsers {
    table: UserTable,
    decoy: PasswordHash,
}

impl Authenticator {
    pub fn new(users: UserTable, database: Option<UserDatabase>) -> Authenticator {
        let database_decoy = database.as_ref().map(|_| {
            bcrypt::hash("decoy", DATABASE_DECOY_COST)
                .map_or_else(|_| default_decoy(), PasswordHash::Bcrypt)
                .decoy()
        });
        let file = FileUsers::new(users, database_decoy.as_ref());
        Authenticator {
            file: RwLock::new(Arc::new(file)),
            database,
            database_decoy,
            hashing: HashingPool::start(hashing_slots()),
        }
    }

    /// Puts a freshly read users file in force (a reload): logins and user refreshes from now
    /// on read it; one already under way finishes with the table it started with.
    pub fn replace_users(&self, users: UserTable) {
        let file = Arc::new(FileUsers::new(users, self.database_decoy.as_ref()));
        // A poisoned lock only means a panic elsewhere while it was held; the Arc inside is
        // whole either way.
        *self.file.write().unwrap_or_else(PoisonError::into_inner) = file;
    }

    /// Whether `users` is exactly the users file in force.
    pub fn has_users(&self, users: &UserTable) -> bool {
        self.file_users().table == *users
    }

    fn file_users(&self) -> Arc<FileUsers> {
        self.file
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    async fn find(
        &self,
        file: &FileUsers,
        username: &str,
    ) -> Result<Option<User>, CredentialError> {
        if let Some(user) = file.table.find(username) {
            return Ok(Some(user.clone()));
        }
        match &self.database {
            Some(db) => db.find(username).await,
            None => Ok(None),
        }
    }

    /// Checks one login attempt. Every kind of "no" takes as long as a wrong password.
    pub async fn authenticate(
        &self,
        username: &str,
        password: String,
    ) -> Result<Verdict, CredentialError> {
        let file = self.file_users();
        let user = self.find(&file, username.trim()).await?;
        let hash = user
            .as_ref()
            .map_or_else(|| file.decoy.clone(), |u| u.password_hash.clone());
        let matched = self
            .hashing
            .run(move || hash.verify(&password))
            .await
            .ok_or_else(|| CredentialError("password check failed: no checking thread".into()))?;
        Ok(match user {
            None => Verdict::Rejected(Rejection::UnknownUser),
            Some(_) if !matched => Verdict::Rejected(Rejection::WrongPassword),
            Some(u) if u.disabled => Verdict::Rejected(Rejection::Disabled),
            Some(u) => Verdict::Accepted(u.identity),
        })
    }
}

/// What the credential sources say now about a signed-in user (for `refresh_interval`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserNow {
    Active(Identity),
    Disabled,
    /// Deleted, or renamed (the name is no one's now, or another id's).
    Removed,
}

impl Authenticator {
    /// Reads the signed-in user `id`, known as `username`, again (users file, then database).
    pub async fn current(&self, id: &str, username: &str) -> Result<UserNow, CredentialError> {
        Ok(match self.find(&self.file_users(), username).await? {
            Some(user) if user.identity.id != id => UserNow::Removed,
            None => UserNow::Removed,
            Some(user) if user.disabled => UserNow::Disabled,
            Some(user) => UserNow::Active(user.identity),
        })
    }
}

impl FileUsers {
    fn new(table: UserTable, database_decoy: Option<&PasswordHash>) -> FileUsers {
        let decoy = match database_decoy {
            Some(decoy) => decoy.clone(),
            None => table
                .typical_hash()
                .map_or_else(default_decoy, PasswordHash::decoy),
        };
        FileUsers { table, decoy }
    }
}

/// Password checks that may run at once: half the cores (at least one), so a storm of logins
/// (each a deliberately slow hash) always leaves cores for proxying, on top of the checks' low
/// priority. The other logins wait their turn; measured on 2 cores, proxied p99 during 8
/// clients' login storm stays within 2x of quiet only when one core is left (benches/README.md,
/// login storm).
fn hashing_slots() -> usize {
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    (cpus / 2).max(1)
}

/// The outcome of one login attempt. The client is told only "accepted" or "rejected"; the
/// reason goes to the audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accepted(Identity),
    Rejected(Rejection),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    UnknownUser,
    WrongPassword,
    Disabled,
}

impl Rejection {
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::UnknownUser => "unknown_user",
            Rejection::WrongPassword => "wrong_password",
            Rejection::Disabled => "disabled",
        }
    }
}
