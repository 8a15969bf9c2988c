//! The app's own PostgreSQL `users` table as a credential source, so operators put the gateway
//! in front of the app without exporting users.
//!
//! The query (default [`DEFAULT_USER_QUERY`](crate::config::DEFAULT_USER_QUERY)) takes the
//! username as `$1` and returns `id, username, password, role, is_active`. Ids may be integers
//! or text; `role` may hold one role or a comma-separated list; a NULL `is_active` counts as
//! inactive. Connections are pooled and every lookup is bounded by `[login.database] timeout`:
//! a database that is down or slow is a [`CredentialError`] (503), never a failed login.

use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::types::Type;
use tokio_postgres::{NoTls, Row};

use crate::auth::password::PasswordHash;
use crate::auth::users::User;
use crate::config::DatabaseSettings;
use crate::errors::CredentialError;
use crate::identity::Identity;

pub struct UserDatabase {
    pool: Pool,
    query: String,
    timeout: Duration,
}

impl UserDatabase {
    /// Prepares the pool; connections are opened on first use, so start-up does not need the
    /// database to be up.
    pub fn new(settings: &DatabaseSettings) -> Result<UserDatabase, String> {
        let config = tokio_postgres::Config::from_str(settings.url.expose_str())
            .map_err(|e| format!("[login.database] url: {e}"))?;
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(settings.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(settings.timeout))
            .create_timeout(Some(settings.timeout))
            .recycle_timeout(Some(settings.timeout))
            .build()
            .map_err(|e| format!("[login.database]: {e}"))?;
        Ok(UserDatabase {
            pool,
            query: settings.query.clone(),
            timeout: settings.timeout,
        })
    }

    /// The user named `username`, if the table has one.
    pub async fn find(&self, username: &str) -> Result<Option<User>, CredentialError> {
        let lookup = async {
            let client = self
                .pool
                .get()
                .await
                .map_err(|e| CredentialError(format!("user database: {e}")))?;
            let statement = client
                .prepare_cached(&self.query)
                .await
                .map_err(|e| CredentialError(format!("user database query: {e}")))?;
            client
                .query_opt(&statement, &[&username])
                .await
                .map_err(|e| CredentialError(format!("user database query: {e}")))
        };
        let row = tokio::time::timeout(self.timeout, lookup)
            .await
            .map_err(|_| CredentialError("user database timed out".into()))??;
        Ok(row.and_then(|row| user_from_row(&row)))
    }
}

fn user_from_row(row: &Row) -> Option<User> {
    if row.len() < 5 {
        log::error!("[login.database] query must return id, username, password, role, is_active");
        return None;
    }
    let id = match *row.columns()[0].type_() {
        Type::INT2 => row.try_get::<_, i16>(0).ok()?.to_string(),
        Type::INT4 => row.try_get::<_, i32>(0).ok()?.to_string(),
        Type::INT8 => row.try_get::<_, i64>(0).ok()?.to_string(),
        _ => row.try_get::<_, String>(0).ok()?,
    };
    let username: String = row.try_get(1).ok()?;
    let stored: Option<String> = row.try_get(2).ok()?;
    let role: Option<String> = row.try_get(3).ok()?;
    let active: Option<bool> = row.try_get(4).ok()?;
    let password_hash = match stored.as_deref().map(PasswordHash::parse) {
        Some(Ok(hash)) => hash,
        _ => {
            log::warn!("user id {id} in the database has no password hash the gateway can check");
            return None;
        }
    };
    let roles = role
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(str::to_string)
        .collect();
    Some(User {
        identity: Identity {
            id,
            username,
            roles,
        },
        password_hash,
        disabled: !active.unwrap_or(false),
    })
}
