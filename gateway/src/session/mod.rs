//! Server-side sessions: ids and cookies ([`token`]), what is stored ([`SessionRecord`]), the
//! store with its expiry rules ([`store`]) over a backend ([`backend`]: Redis, or memory in unit
//! tests), and which session a request presents ([`presented`]).

pub mod backend;
pub mod cache;
pub mod claims;
pub mod presented;
pub mod refresh;
pub mod store;
pub mod token;
pub mod tracking;
pub mod view;

use serde::{Deserialize, Serialize};

use crate::identity::Identity;
use std::sync::Arc;
use std::time::Duration;

pub use presented::{Presented, SessionGate};
pub use store::{CreateOutcome, SessionStore};
pub use token::{Handle, Keys, SealedWith, SessionId};

/// What Redis holds for one session. Nothing in it can be replayed as a cookie.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub user_id: String,
    pub username: String,
    pub roles: Vec<String>,
    /// Unix time in milliseconds.
    pub created_at_ms: u64,
    pub last_seen_ms: u64,
    pub ip: String,
    pub user_agent: String,
}

impl SessionRecord {
    pub fn identity(&self) -> Identity {
        Identity {
            id: self.user_id.clone(),
            username: self.username.clone(),
            roles: self.roles.clone(),
        }
    }

    /// When the absolute lifetime ends, however active the session is.
    pub fn absolute_deadline_ms(&self, absolute: Duration) -> u64 {
        self.created_at_ms
            .saturating_add(absolute.as_millis() as u64)
    }
}

/// A live session as loaded for a request. The record is shared with the validation cache:
/// a cache hit hands it out without copying its strings.
#[derive(Debug, Clone)]
pub struct LiveSession {
    pub handle: Handle,
    pub record: Arc<SessionRecord>,
}
