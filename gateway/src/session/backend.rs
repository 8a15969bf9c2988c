//! Where sessions are kept: the [`SessionBackend`] trait, with a Redis implementation for
//! production ([`RedisBackend`]) and an in-memory one for unit tests ([`MemoryBackend`]).
//!
//! A backend only stores; the rules (ids, deadlines, when to touch, what an expired cookie
//! means) live once, in [`super::SessionStore`]. Both backends keep the same contract:
//! - a record has a TTL and disappears by itself when it passes;
//! - a handle stays in the all-sessions index until removed, so a genuine cookie without a
//!   record can tell "expired" (still indexed) from "revoked" (removed with the record), and
//!   whoever removes an expired handle from it (a returning cookie, or a listing) is the one
//!   who reports the expiry: each is reported once, whichever instance notices it;
//! - `create` applies the per-user limit atomically with storing the record.

mod memory;
mod redis;

pub use self::memory::MemoryBackend;
pub use self::redis::RedisBackend;

use async_trait::async_trait;

use super::{Handle, LiveSession, SessionRecord};
use crate::config::LimitPolicy;
use crate::errors::StoreError;

/// The per-user session limit, as `create` applies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserLimit {
    pub max: u32,
    pub policy: LimitPolicy,
}

/// What a listing found.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    /// The live sessions, oldest first.
    pub live: Vec<LiveSession>,
    /// Sessions that expired unnoticed and that this listing took out of the all-sessions
    /// index: it is the one to report them.
    pub expired: Vec<Handle>,
}

/// What `create` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// Stored; these older sessions of the user were evicted to make room.
    Stored { evicted: Vec<Handle> },
    /// The user is at the limit and the policy is to refuse.
    LimitReached,
}

#[async_trait]
pub trait SessionBackend: Send + Sync {
    /// Stores `record` under `handle` for `ttl_ms` and indexes it by user and overall. Index
    /// entries older than `absolute_ms` are pruned first; with a limit, the user's live sessions
    /// beyond it are evicted (oldest first) or the creation refused.
    async fn create(
        &self,
        handle: &Handle,
        record: &SessionRecord,
        ttl_ms: u64,
        absolute_ms: u64,
        limit: Option<UserLimit>,
    ) -> Result<Created, StoreError>;

    /// The record under `handle`, if it has not expired or been removed.
    async fn get(&self, handle: &Handle) -> Result<Option<SessionRecord>, StoreError>;

    /// Removes `handle` from the all-sessions index; whether it was there.
    async fn unindex(&self, handle: &Handle) -> Result<bool, StoreError>;

    /// Rewrites the record under `handle` with a new TTL, only if it still exists (a touch
    /// must never bring back a session revoked meanwhile).
    async fn replace(
        &self,
        handle: &Handle,
        record: &SessionRecord,
        ttl_ms: u64,
    ) -> Result<(), StoreError>;

    /// Live sessions of one user (or of everyone), oldest first. Dead index entries are pruned
    /// from the listed index and from the all-sessions index; those this call removed from the
    /// latter are returned as expired.
    async fn list(&self, user_id: Option<&str>) -> Result<Listing, StoreError>;

    /// Removes the records and index entries of `sessions`.
    async fn delete_all(&self, sessions: &[LiveSession]) -> Result<(), StoreError>;

    /// Whether the backend answers (readiness, health checks).
    async fn ping(&self) -> Result<(), StoreError>;
}
