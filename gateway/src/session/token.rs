//! Session ids, their signed cookie form, and the names they are stored under.
//!
//! - A [`SessionId`] is 32 bytes from the OS CSPRNG. It only ever exists in the browser's cookie
//!   and in this process's memory while a request is handled.
//! - The cookie value is `base64url(id || HMAC-SHA256(cookie_key, id))`: a forged or damaged
//!   cookie is refused by [`Keys::open`] before Redis is asked anything.
//! - Redis and operators see only the [`Handle`], `hex(SHA-256(id))`. It names the session (for
//!   listing and revoking) but cannot be turned back into a cookie.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::env::Secret;

type HmacSha256 = Hmac<Sha256>;

const ID_LEN: usize = 32;
const TAG_LEN: usize = 32;
/// Length of a well-formed cookie value: 64 bytes in unpadded base64url.
pub const COOKIE_VALUE_LEN: usize = 86;

#[derive(Clone, PartialEq, Eq)]
pub struct SessionId([u8; ID_LEN]);

impl SessionId {
    /// A fresh id from the operating system's CSPRNG.
    pub fn generate() -> Result<SessionId, getrandom::Error> {
        let mut bytes = [0u8; ID_LEN];
        getrandom::fill(&mut bytes)?;
        Ok(SessionId(bytes))
    }

    pub fn handle(&self) -> Handle {
        Handle(hex::encode(Sha256::digest(self.0)))
    }
}

impl std::fmt::Debug for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionId([redacted])")
    }
}

/// The public name of a session: hex SHA-256 of its id. Safe to log, store and show.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Handle(String);

impl Handle {
    /// Accepts only the exact shape a handle has (64 lowercase hex digits).
    pub fn parse(text: &str) -> Option<Handle> {
        let ok = text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        ok.then(|| Handle(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Keys derived from the configured secret, one per purpose, so a tag made for one use can
/// never be replayed as another.
#[derive(Clone)]
pub struct Keys {
    cookie: [u8; 32],
    csrf: [u8; 32],
}

impl Keys {
    pub fn derive(secret: &Secret) -> Keys {
        Keys {
            cookie: derive_key(secret, b"gateway/session-cookie/v1"),
            csrf: derive_key(secret, b"gateway/csrf/v1"),
        }
    }

    /// The cookie value for `id`.
    pub fn seal(&self, id: &SessionId) -> String {
        let mut out = [0u8; ID_LEN + TAG_LEN];
        out[..ID_LEN].copy_from_slice(&id.0);
        out[ID_LEN..].copy_from_slice(&mac(&self.cookie, &id.0));
        URL_SAFE_NO_PAD.encode(out)
    }

    /// The session id inside a cookie value, if the value is well-formed and its tag is ours.
    pub fn open(&self, value: &str) -> Option<SessionId> {
        if value.len() != COOKIE_VALUE_LEN {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(value).ok()?;
        if bytes.len() != ID_LEN + TAG_LEN {
            return None;
        }
        let (id, tag) = bytes.split_at(ID_LEN);
        let mut m = HmacSha256::new_from_slice(&self.cookie).ok()?;
        m.update(id);
        m.verify_slice(tag).ok()?;
        let mut raw = [0u8; ID_LEN];
        raw.copy_from_slice(id);
        Some(SessionId(raw))
    }

    /// The anti-forgery token of a login form, bound to the nonce in the browser's cookie.
    pub fn login_form_token(&self, nonce: &str) -> String {
        self.csrf_token(&format!("login:{nonce}"))
    }

    pub fn login_form_valid(&self, nonce: &str, token: &str) -> bool {
        !nonce.is_empty() && self.csrf_valid(&format!("login:{nonce}"), token)
    }

    /// The anti-forgery token of forms that act on the session `handle` (logout, sessions).
    pub fn session_form_token(&self, handle: &Handle) -> String {
        self.csrf_token(&format!("session:{handle}"))
    }

    pub fn session_form_valid(&self, handle: &Handle, token: &str) -> bool {
        self.csrf_valid(&format!("session:{handle}"), token)
    }

    /// An anti-forgery token bound to `context`.
    fn csrf_token(&self, context: &str) -> String {
        hex::encode(&mac(&self.csrf, context.as_bytes())[..16])
    }

    /// Constant-time check of a token made by [`Keys::csrf_token`].
    fn csrf_valid(&self, context: &str, token: &str) -> bool {
        let Ok(given) = hex::decode(token) else {
            return false;
        };
        let Ok(mut m) = HmacSha256::new_from_slice(&self.csrf) else {
            return false;
        };
        m.update(context.as_bytes());
        m.verify_truncated_left(&given).is_ok() && given.len() == 16
    }
}

fn derive_key(secret: &Secret, purpose: &[u8]) -> [u8; 32] {
    mac(secret.expose(), purpose)
}

fn mac(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut m = HmacSha256::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    m.update(data);
    m.finalize().into_bytes().into()
}

/// Random URL-safe text, for nonces that are not session ids.
pub fn random_token() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 18];
    getrandom::fill(&mut bytes)?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        Keys::derive(&Secret::new("0123456789abcdef0123456789abcdef"))
    }

    #[test]
    fn sealed_ids_open_and_tampered_ones_do_not() {
        let id = SessionId::generate().unwrap();
        let value = keys().seal(&id);
        assert_eq!(value.len(), COOKIE_VALUE_LEN);
        assert_eq!(keys().open(&value), Some(id.clone()));

        for i in [0, 40, 85] {
            let mut bytes = value.clone().into_bytes();
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            assert_eq!(keys().open(std::str::from_utf8(&bytes).unwrap()), None);
        }
        let other = Keys::derive(&Secret::new("another-secret-another-secret-xx"));
        assert_eq!(other.open(&value), None);
        assert_eq!(keys().open(""), None);
        assert_eq!(keys().open(&"é".repeat(43)), None);
        assert_eq!(keys().open(&"!".repeat(86)), None);
    }

    #[test]
    fn the_handle_is_not_the_cookie() {
        let id = SessionId::generate().unwrap();
        let handle = id.handle();
        assert!(Handle::parse(handle.as_str()).is_some());
        assert!(keys().open(handle.as_str()).is_none());
        assert!(!keys().seal(&id).contains(handle.as_str()));
    }

    #[test]
    fn csrf_tokens_are_bound_to_their_context() {
        let t = keys().csrf_token("nonce-1");
        assert!(keys().csrf_valid("nonce-1", &t));
        assert!(!keys().csrf_valid("nonce-2", &t));
        assert!(!keys().csrf_valid("nonce-1", "zz"));
        assert!(!keys().csrf_valid("nonce-1", ""));
    }
}
