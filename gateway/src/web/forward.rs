//! The headers the gateway owns on the request it sends upstream.
//!
//! The app trusts `X-Auth-*` because only the gateway can set them: every client-sent header
//! whose name starts with `x-auth-` (case-insensitive, `_` read as `-`, since WSGI folds
//! `X_Auth_User` and `X-Auth-User` into one variable) is removed first, on every request.

use std::cell::RefCell;
use std::net::IpAddr;

use http::header::HOST;
use http::request::Parts;
use http::{HeaderMap, HeaderName, HeaderValue};
use pingora::{Error, ErrorType};

use crate::identity::Identity;

pub const USER: &str = "x-auth-user";
pub const USER_ID: &str = "x-auth-user-id";
pub const ROLES: &str = "x-auth-roles";

// Names built once: inserting a prebuilt name neither parses nor allocates it.
const USER_NAME: HeaderName = HeaderName::from_static(USER);
const USER_ID_NAME: HeaderName = HeaderName::from_static(USER_ID);
const ROLES_NAME: HeaderName = HeaderName::from_static(ROLES);
const FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// `text` as a header value; text with a control character cannot be one.
pub fn header_value(text: impl Into<String>) -> pingora::Result<HeaderValue> {
    HeaderValue::try_from(text.into())
        .map_err(|_| Error::explain(ErrorType::InvalidHTTPHeader, "invalid header value"))
}

/// Removes every header a client could use to pose as the gateway.
pub fn strip_identity_headers(headers: &mut HeaderMap) {
    // Almost no request carries one: look before collecting anything.
    if !headers.keys().any(|name| is_identity_header(name.as_str())) {
        return;
    }
    let spoofed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| is_identity_header(name.as_str()))
        .cloned()
        .collect();
    for name in spoofed {
        headers.remove(&name);
    }
}

fn is_identity_header(name: &str) -> bool {
    let prefix = b"x-auth-";
    name.len() >= prefix.len()
        && name.as_bytes()[..prefix.len()]
            .iter()
            .zip(prefix)
            .all(|(c, p)| c.to_ascii_lowercase() == *p || (*c == b'_' && *p == b'-'))
}

/// Tells the app who the user is.
pub fn set_identity(headers: &mut HeaderMap, identity: &Identity) -> pingora::Result<()> {
    set_identity_of(headers, &identity.id, &identity.username, &identity.roles)
}

/// [`set_identity`] from borrowed parts, so a request need not copy the session's identity
/// first.
pub fn set_identity_of(
    headers: &mut HeaderMap,
    id: &str,
    username: &str,
    roles: &[String],
) -> pingora::Result<()> {
    headers.insert(USER_NAME, header_value(username)?);
    headers.insert(USER_ID_NAME, header_value(id)?);
    headers.insert(ROLES_NAME, header_value(roles.join(","))?);
    Ok(())
}

/// `X-Forwarded-For/-Proto/-Host`. Values a client sent are kept only when it is a trusted proxy.
pub fn set_forwarded(
    req: &mut Parts,
    peer: Option<IpAddr>,
    peer_is_trusted: bool,
) -> pingora::Result<()> {
    match peer {
        Some(peer) if !peer_is_trusted => {
            set_forwarded_for_stranger(req, peer);
            Ok(())
        }
        _ => set_forwarded_general(req, peer, peer_is_trusted),
    }
}

/// What [`set_forwarded_general`] does for a peer that is not a trusted proxy (nearly every
/// request), without reading or copying the values the client sent: they are all replaced.
fn set_forwarded_for_stranger(req: &mut Parts, peer: IpAddr) {
    let headers = &mut req.headers;
    headers.insert(FORWARDED_FOR, peer_value(peer));
    headers.insert(FORWARDED_PROTO, HeaderValue::from_static("http"));
    // The `Host` value as sent (a reference-counted clone, no copy) if it is text; else the
    // request target's authority.
    let host = match headers.get(HOST) {
        Some(host) if host.to_str().is_ok() => Some(host.clone()),
        _ => req
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok()),
    };
    match host {
        Some(host) => headers.insert(FORWARDED_HOST, host),
        None => headers.remove(FORWARDED_HOST),
    };
}

thread_local! {
    /// The peer address this thread last wrote into `X-Forwarded-For`, as a header value:
    /// every request of a connection comes from one address, and formatting it afresh for
    /// each request (text, allocation, copy) was a visible share of the per-request work.
    static LAST_PEER: RefCell<Option<(IpAddr, HeaderValue)>> = const { RefCell::new(None) };
}

/// `peer` as a header value: a reference-counted clone of the last one when it is the same
/// address.
fn peer_value(peer: IpAddr) -> HeaderValue {
    LAST_PEER.with(|last| {
        let mut last = last.borrow_mut();
        if let Some((ip, value)) = last.as_ref() {
            if *ip == peer {
                return value.clone();
            }
        }
        // An address's text is digits, dots, colons and hex letters: always a valid value.
        let value = HeaderValue::from_str(&peer.to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        *last = Some((peer, value.clone()));
        value
    })
}

fn set_forwarded_general(
    req: &mut Parts,
    peer: Option<IpAddr>,
    peer_is_trusted: bool,
) -> pingora::Result<()> {
    let headers = &mut req.headers;
    let prior_for = headers
        .get_all(&FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(", ");
    let prior_proto = headers
        .get(&FORWARDED_PROTO)
        .and_then(|v| v.to_str().ok())
        .filter(|p| *p == "http" || *p == "https")
        .map(str::to_string);
    let prior_host = headers
        .get(&FORWARDED_HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let host = headers
        .get(HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri.authority().map(|a| a.to_string()));
    let peer_text = peer.map(|p| p.to_string());

    let forwarded_for = match (peer_is_trusted && !prior_for.is_empty(), &peer_text) {
        (true, Some(p)) => format!("{prior_for}, {p}"),
        (_, Some(p)) => p.clone(),
        (_, None) => prior_for.clone(),
    };
    let proto = match (peer_is_trusted, prior_proto) {
        (true, Some(p)) => p,
        _ => "http".to_string(),
    };
    let forwarded_host = match (peer_is_trusted, prior_host) {
        (true, Some(h)) => Some(h),
        _ => host,
    };
    headers.remove(&FORWARDED_FOR);
    if !forwarded_for.is_empty() {
        headers.insert(FORWARDED_FOR, header_value(forwarded_for)?);
    }
    headers.insert(FORWARDED_PROTO, header_value(proto)?);
    headers.remove(&FORWARDED_HOST);
    if let Some(h) = forwarded_host {
        headers.insert(FORWARDED_HOST, header_value(h)?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_header_spellings() {
        for spoof in [
            "x-auth-user",
            "x_auth_user",
            "x-auth_roles",
            "x_auth-anything",
        ] {
            assert!(is_identity_header(spoof), "{spoof}");
        }
        for fine in [
            "x-authorization",
            "authorization",
            "x-auth",
            "x-forwarded-for",
        ] {
            assert!(!is_identity_header(fine), "{fine}");
        }
    }

    #[test]
    fn spoofed_headers_are_removed() {
        let mut r = request(&[
            ("X-Auth-User", "mallory"),
            ("X_Auth_Roles", "admin"),
            ("Accept", "*/*"),
        ]);
        strip_identity_headers(&mut r.headers);
        assert_eq!(r.headers.len(), 1);
    }

    fn parts(target: &str, headers: &[(&str, HeaderValue)]) -> Parts {
        let mut r = http::Request::builder().uri(target).body(()).unwrap();
        for (k, v) in headers {
            let name = HeaderName::from_bytes(k.as_bytes()).unwrap();
            r.headers_mut().append(name, v.clone());
        }
        r.into_parts().0
    }

    fn request(headers: &[(&str, &str)]) -> Parts {
        let headers: Vec<(&str, HeaderValue)> = headers
            .iter()
            .map(|(k, v)| (*k, HeaderValue::from_str(v).unwrap()))
            .collect();
        parts("/reports", &headers)
    }

    fn values(r: &Parts, name: &str) -> Vec<String> {
        r.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    }

    const SENT: [(&str, &str); 4] = [
        ("host", "gw.example"),
        ("x-forwarded-for", "6.6.6.6"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "evil.example"),
    ];

    #[test]
    fn a_strangers_forwarding_headers_are_replaced() {
        let mut r = request(&SENT);
        set_forwarded(&mut r, Some("203.0.113.7".parse().unwrap()), false).unwrap();
        assert_eq!(values(&r, "x-forwarded-for"), ["203.0.113.7"]);
        assert_eq!(values(&r, "x-forwarded-proto"), ["http"]);
        assert_eq!(values(&r, "x-forwarded-host"), ["gw.example"]);
    }

    #[test]
    fn a_trusted_proxys_forwarding_headers_are_extended() {
        let mut r = request(&SENT);
        r.headers
            .append(FORWARDED_FOR, HeaderValue::from_static("1.2.3.4"));
        set_forwarded(&mut r, Some("10.0.0.2".parse().unwrap()), true).unwrap();
        assert_eq!(
            values(&r, "x-forwarded-for"),
            ["6.6.6.6, 1.2.3.4, 10.0.0.2"]
        );
        assert_eq!(values(&r, "x-forwarded-proto"), ["https"]);
        assert_eq!(values(&r, "x-forwarded-host"), ["evil.example"]);
        // A scheme that is not one is not passed on, even from a trusted proxy.
        let mut r = request(&[("host", "gw.example"), ("x-forwarded-proto", "javascript")]);
        set_forwarded(&mut r, Some("10.0.0.2".parse().unwrap()), true).unwrap();
        assert_eq!(values(&r, "x-forwarded-proto"), ["http"]);
        assert_eq!(values(&r, "x-forwarded-for"), ["10.0.0.2"]);
        assert_eq!(values(&r, "x-forwarded-host"), ["gw.example"]);
    }

    /// Every header, by name, with its values in order.
    fn all(r: &Parts) -> Vec<(String, Vec<Vec<u8>>)> {
        let mut names: Vec<String> = r.headers.keys().map(|k| k.to_string()).collect();
        names.sort();
        names
            .into_iter()
            .map(|n| {
                let vs = r.headers.get_all(n.as_str()).iter();
                let vs = vs.map(|v| v.as_bytes().to_vec()).collect();
                (n, vs)
            })
            .collect()
    }

    #[test]
    fn the_strangers_shortcut_sets_what_the_general_rule_sets() {
        let host_bytes = http::HeaderValue::from_bytes(b"caf\xc3\xa9.example").unwrap();
        let cases: Vec<Vec<(&str, http::HeaderValue)>> = vec![
            vec![],
            vec![("host", "gw.example".parse().unwrap())],
            SENT.iter().map(|(k, v)| (*k, v.parse().unwrap())).collect(),
            vec![
                ("x-forwarded-for", "1.1.1.1".parse().unwrap()),
                ("X-Forwarded-For", "2.2.2.2, 3.3.3.3".parse().unwrap()),
                ("x-forwarded-host", "a.example".parse().unwrap()),
                ("x-forwarded-host", "b.example".parse().unwrap()),
                ("x-forwarded-proto", "gopher".parse().unwrap()),
            ],
            // Not text: the general rule falls back to the target's authority.
            vec![("host", host_bytes)],
        ];
        let targets = ["/reports?x=1", "http://target.example:8443/reports"];
        for headers in &cases {
            for target in targets {
                for peer in ["203.0.113.7", "2001:db8::1", "203.0.113.8"] {
                    let peer: IpAddr = peer.parse().unwrap();
                    let mut general = parts(target, headers);
                    let mut shortcut = parts(target, headers);
                    set_forwarded_general(&mut general, Some(peer), false).unwrap();
                    set_forwarded(&mut shortcut, Some(peer), false).unwrap();
                    assert_eq!(all(&shortcut), all(&general), "{headers:?} {peer}");
                }
            }
        }
    }

    #[test]
    fn the_remembered_peer_value_follows_the_peer() {
        for peer in ["192.0.2.1", "192.0.2.1", "192.0.2.2", "::1", "192.0.2.1"] {
            let ip: IpAddr = peer.parse().unwrap();
            assert_eq!(peer_value(ip), ip.to_string().as_str());
        }
    }

    #[test]
    fn the_app_sees_only_the_identity_the_gateway_sets() {
        let mut r = request(&[
            ("X-Auth-User", "mallory"),
            ("x-auth-user", "mallory2"),
            ("X_AUTH_ROLES", "admin"),
            ("x-auth-user-id", "0"),
            ("cookie", "app=1"),
        ]);
        strip_identity_headers(&mut r.headers);
        let alice = Identity {
            id: "1".into(),
            username: "alice".into(),
            roles: vec!["admin".into(), "user".into()],
        };
        set_identity(&mut r.headers, &alice).unwrap();
        assert_eq!(values(&r, USER), ["alice"]);
        assert_eq!(values(&r, USER_ID), ["1"]);
        assert_eq!(values(&r, ROLES), ["admin,user"]);
        assert!(r.headers.get("x_auth_roles").is_none());
        assert_eq!(
            values(&r, "cookie"),
            ["app=1"],
            "other headers are left alone"
        );
        let mut none = request(&[]);
        let nobody = Identity {
            id: "9".into(),
            username: "nobody".into(),
            roles: vec![],
        };
        set_identity(&mut none.headers, &nobody).unwrap();
        assert_eq!(values(&none, ROLES), [""]);
    }
}
