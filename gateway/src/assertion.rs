//! The signed identity assertion: proof, for the app, that the `X-Auth-*` headers came from the
//! gateway and not from someone who reached the app directly.
//!
//! Header: `X-Auth-Assertion: v1;t=<unix seconds>;sig=<hex HMAC-SHA256>`, keyed with
//! `[identity] signing_secret`, over the UTF-8 bytes of these seven lines joined by `\n`
//! (no trailing newline):
//!
//! ```text
//! v1
//! <t, exactly as in the header>
//! <method, e.g. GET>
//! <path as sent upstream, plus "?" and the raw query when the query is non-empty>
//! <X-Auth-User-Id>
//! <X-Auth-User>
//! <X-Auth-Roles>
//! ```
//!
//! The app recomputes it, compares in constant time, and refuses timestamps outside a small
//! clock-skew window (see `docker/app/gateway_auth.py`). Binding the method and path means a
//! captured assertion cannot be replayed against another endpoint.

use hmac::{Hmac, Mac};
use http::request::Parts;
use http::HeaderName;
use sha2::Sha256;

use crate::env::Secret;
use crate::identity::Identity;

pub const ASSERTION: &str = "x-auth-assertion";
const ASSERTION_NAME: HeaderName = HeaderName::from_static(ASSERTION);

pub struct AssertionSigner {
    key: Secret,
}

impl AssertionSigner {
    pub fn new(key: Secret) -> Self {
        AssertionSigner { key }
    }

    /// The header value for `identity` making this request at unix time `now`.
    pub fn sign(&self, identity: &Identity, method: &str, target: &str, now: u64) -> String {
        let message = format!(
            "v1\n{now}\n{method}\n{target}\n{}\n{}\n{}",
            identity.id,
            identity.username,
            identity.roles.join(",")
        );
        // HMAC accepts keys of any length.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.key.expose())
            .unwrap_or_else(|_| unreachable!());
        mac.update(message.as_bytes());
        format!(
            "v1;t={now};sig={}",
            hex::encode(mac.finalize().into_bytes())
        )
    }

    /// Adds the assertion to a request already carrying `identity`'s headers.
    pub fn apply(&self, req: &mut Parts, identity: &Identity, now: u64) -> pingora::Result<()> {
        let target = match req.uri.query() {
            Some(q) if !q.is_empty() => format!("{}?{q}", req.uri.path()),
            _ => req.uri.path().to_string(),
        };
        let value = self.sign(identity, req.method.as_str(), &target, now);
        req.headers
            .insert(ASSERTION_NAME, crate::web::forward::header_value(value)?);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_the_documented_format() {
        // The same vector is checked by the example app's Python tests.
        let signer = AssertionSigner::new(Secret::new("test-identity-secret"));
        let who = Identity {
            id: "1".into(),
            username: "alice".into(),
            roles: vec!["admin".into(), "user".into()],
        };
        let v = signer.sign(&who, "GET", "/dashboard?x=1", 1_700_000_000);
        let expected_mac = {
            let mut m = <Hmac<Sha256> as Mac>::new_from_slice(b"test-identity-secret").unwrap();
            m.update(b"v1\n1700000000\nGET\n/dashboard?x=1\n1\nalice\nadmin,user");
            hex::encode(m.finalize().into_bytes())
        };
        assert_eq!(v, format!("v1;t=1700000000;sig={expected_mac}"));
    }
}
