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

    /// The first `n` characters: enough for a person to tell sessions apart in a log line.
    pub fn prefix(&self, n: usize) -> &str {
        &self.0[..n.min(self.0.len())]
    }
}

impl std::fmt::Display for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Keys derived from the configured secret, one per purpose, so a tag made for one use can
/// never be replayed as another; and those of the previous secrets of a rotation, which are
/// still accepted but never used to seal.
#[derive(Clone)]
pub struct Keys {
    current: KeySet,
    previous: Vec<KeySet>,
}

/// Each key as an HMAC already keyed: every request checks a cookie, and keying (hashing the
/// key's inner and outer pads) would otherwise be half of that check's work.
#[derive(Clone)]
struct KeySet {
    cookie: HmacSha256,
    csrf: HmacSha256,
}

impl KeySet {
    fn derive(secret: &Secret) -> KeySet {
        KeySet {
            cookie: keyed(&derive_key(secret, b"gateway/session-cookie/v1")),
            csrf: keyed(&derive_key(secret, b"gateway/csrf/v1")),
        }
    }
}

/// Which secret a cookie was sealed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealedWith {
    Current,
    /// A previous secret of a rotation: the cookie is re-issued under the current one.
    Previous,
}

impl Keys {
    pub fn derive(secret: &Secret) -> Keys {
        Keys::with_previous(secret, &[])
    }

    pub fn with_previous(secret: &Secret, previous: &[Secret]) -> Keys {
        Keys {
            current: KeySet::derive(secret),
            previous: previous.iter().map(KeySet::derive).collect(),
        }
    }

    /// Whether previous secrets are still accepted (a rotation is under way).
    pub fn rotating(&self) -> bool {
        !self.previous.is_empty()
    }

    fn all(&self) -> impl Iterator<Item = &KeySet> {
        std::iter::once(&self.current).chain(&self.previous)
    }

    /// The cookie value for `id`.
    pub fn seal(&self, id: &SessionId) -> String {
        let mut out = [0u8; ID_LEN + TAG_LEN];
        out[..ID_LEN].copy_from_slice(&id.0);
        out[ID_LEN..].copy_from_slice(&tag(&self.current.cookie, &id.0));
        URL_SAFE_NO_PAD.encode(out)
    }

    /// The session id inside a cookie value, if the value is well-formed and its tag is ours
    /// (made with the current secret or a previous one).
    pub fn open(&self, value: &str) -> Option<SessionId> {
        self.open_sealed(value).map(|(id, _)| id)
    }

    /// [`Keys::open`], also saying which secret sealed it.
    pub fn open_sealed(&self, value: &str) -> Option<(SessionId, SealedWith)> {
        if value.len() != COOKIE_VALUE_LEN {
            return None;
        }
        // base64's size estimate rounds up to whole 3-byte groups: 66 for 86 characters.
        let mut bytes = [0u8; COOKIE_VALUE_LEN.div_ceil(4) * 3];
        if URL_SAFE_NO_PAD.decode_slice(value, &mut bytes).ok()? != ID_LEN + TAG_LEN {
            return None;
        }
        let (id, rest) = bytes.split_at(ID_LEN);
        let given = &rest[..TAG_LEN];
        let verifies = |keys: &KeySet| {
            let mut m = keys.cookie.clone();
            m.update(id);
            m.verify_slice(given).is_ok()
        };
        let sealed = if verifies(&self.current) {
            SealedWith::Current
        } else if self.previous.iter().any(verifies) {
            SealedWith::Previous
        } else {
            return None;
        };
        let mut raw = [0u8; ID_LEN];
        raw.copy_from_slice(id);
        Some((SessionId(raw), sealed))
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
        hex::encode(&tag(&self.current.csrf, context.as_bytes())[..16])
    }

    /// Constant-time check of a token made by [`Keys::csrf_token`], under the current secret
    /// or a previous one (a form rendered just before a rotation still submits).
    fn csrf_valid(&self, context: &str, token: &str) -> bool {
        let Ok(given) = hex::decode(token) else {
            return false;
        };
        given.len() == 16
            && self.all().any(|keys| {
                let mut m = keys.csrf.clone();
                m.update(context.as_bytes());
                m.verify_truncated_left(&given).is_ok()
            })
    }
}

fn derive_key(secret: &Secret, purpose: &[u8]) -> [u8; 32] {
    tag(&keyed(secret.expose()), purpose)
}

fn keyed(key: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length, so this cannot fail.
    HmacSha256::new_from_slice(key).unwrap_or_else(|_| unreachable!())
}

fn tag(key: &HmacSha256, data: &[u8]) -> [u8; 32] {
    let mut m = key.clone();
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
    fn a_rotation_accepts_the_previous_secret_and_seals_with_the_new_one() {
        let old = Secret::new("0123456789abcdef0123456789abcdef");
        let new = Secret::new("fedcba9876543210fedcba9876543210");
        let id = SessionId::generate().unwrap();
        let before = Keys::derive(&old).seal(&id);
        let form = Keys::derive(&old).csrf_token("nonce-1");
        let rotated = Keys::with_previous(&new, &[old]);
        assert_eq!(
            rotated.open_sealed(&before),
            Some((id.clone(), SealedWith::Previous))
        );
        let after = rotated.seal(&id);
        assert_ne!(after, before);
        assert_eq!(
            rotated.open_sealed(&after),
            Some((id.clone(), SealedWith::Current))
        );
        assert!(rotated.csrf_valid("nonce-1", &form));
        // Once the old secret is dropped, what it sealed is refused.
        let done = Keys::derive(&new);
        assert_eq!(done.open(&before), None);
        assert_eq!(done.open(&after), Some(id));
        assert!(!done.csrf_valid("nonce-1", &form));
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
