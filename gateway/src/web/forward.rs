//! The headers the gateway owns on the request it sends upstream.
//!
//! The app trusts `X-Auth-*` because only the gateway can set them: every client-sent header
//! whose name starts with `x-auth-` (case-insensitive, `_` read as `-`, since WSGI folds
//! `X_Auth_User` and `X-Auth-User` into one variable) is removed first, on every request.

use std::cell::RefCell;
use std::net::IpAddr;

use http::HeaderValue;
use pingora::http::RequestHeader;

use crate::identity::Identity;

pub const USER: &str = "x-auth-user";
pub const USER_ID: &str = "x-auth-user-id";
pub const ROLES: &str = "x-auth-roles";

/// Removes every header a client could use to pose as the gateway.
pub fn strip_identity_headers(req: &mut RequestHeader) {
    // Almost no request carries one: look before collecting anything.
    if !req
        .headers
        .keys()
        .any(|name| is_identity_header(name.as_str()))
    {
        return;
    }
    let spoofed: Vec<http::HeaderName> = req
        .headers
        .keys()
        .filter(|name| is_identity_header(name.as_str()))
        .cloned()
        .collect();
    for name in spoofed {
        req.remove_header(&name);
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
pub fn set_identity(req: &mut RequestHeader, identity: &Identity) -> pingora::Result<()> {
    set_identity_of(req, &identity.id, &identity.username, &identity.roles)
}

/// [`set_identity`] from borrowed parts, so a request need not copy the session's identity
/// first.
pub fn set_identity_of(
    req: &mut RequestHeader,
    id: &str,
    username: &str,
    roles: &[String],
) -> pingora::Result<()> {
    req.insert_header(USER, username)?;
    req.insert_header(USER_ID, id)?;
    // A `String` becomes the header value without another copy.
    req.insert_header(ROLES, roles.join(","))?;
    Ok(())
}

/// `X-Forwarded-For/-Proto/-Host`. Values a client sent are kept only when it is a trusted proxy.
pub fn set_forwarded(
    req: &mut RequestHeader,
    peer: Option<IpAddr>,
    peer_is_trusted: bool,
) -> pingora::Result<()> {
    match peer {
        Some(peer) if !peer_is_trusted => set_forwarded_for_stranger(req, peer),
        _ => set_forwarded_general(req, peer, peer_is_trusted),
    }
}

/// What [`set_forwarded_general`] does for a peer that is not a trusted proxy (nearly every
/// request), without reading or copying the values the client sent: they are all replaced.
fn set_forwarded_for_stranger(req: &mut RequestHeader, peer: IpAddr) -> pingora::Result<()> {
    match peer_value(peer) {
        Some(value) => req.insert_header("x-forwarded-for", value)?,
        None => req.insert_header("x-forwarded-for", peer.to_string())?,
    }
    req.insert_header("x-forwarded-proto", HeaderValue::from_static("http"))?;
    // The `Host` value as sent (a reference-counted clone, no copy) if it is text; else the
    // request target's authority.
    match req.headers.get(http::header::HOST) {
        Some(host) if host.to_str().is_ok() => {
            let host = host.clone();
            req.insert_header("x-forwarded-host", host)?;
        }
        _ => match req.uri.authority().map(|a| a.to_string()) {
            Some(authority) => req.insert_header("x-forwarded-host", authority)?,
            None => {
                req.remove_header("x-forwarded-host");
            }
        },
    }
    Ok(())
}

thread_local! {
    /// The peer address this thread last wrote into `X-Forwarded-For`, as a header value:
    /// every request of a connection comes from one address, and formatting it afresh for
    /// each request (text, allocation, copy) was a visible share of the per-request work.
    static LAST_PEER: RefCell<Option<(IpAddr, HeaderValue)>> = const { RefCell::new(None) };
}

/// `peer` as a header value: a reference-counted clone of the last one when it is the same
/// address. `None` only if the text were not a valid value (it always is).
fn peer_value(peer: IpAddr) -> Option<HeaderValue> {
    LAST_PEER.with(|last| {
        let mut last = last.borrow_mut();
        if let Some((ip, value)) = last.as_ref() {
            if *ip == peer {
                return Some(value.clone());
            }
        }
        let value = HeaderValue::try_from(peer.to_string()).ok()?;
        *last = Some((peer, value.clone()));
        Some(value)
    })
}

fn set_forwarded_general(
    req: &mut RequestHeader,
    peer: Option<IpAddr>,
    peer_is_trusted: bool,
) -> pingora::Result<()> {
    let prior_for = req
        .headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(", ");
    let prior_proto = req
        .headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .filter(|p| *p == "http" || *p == "https")
        .map(str::to_string);
    let prior_host = req
        .headers
        .get("x-forwarded-host")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let host = req
        .headers
        .get("host")
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
    req.remove_header("x-forwarded-for");
    if !forwarded_for.is_empty() {
        req.insert_header("x-forwarded-for", forwarded_for)?;
    }
    req.insert_header("x-forwarded-proto", proto)?;
    req.remove_header("x-forwarded-host");
    if let Some(h) = forwarded_host {
        req.insert_header("x-forwarded-host", h)?;
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
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        r.append_header("X-Auth-User", "mallory").unwrap();
        r.append_header("X_Auth_Roles", "admin").unwrap();
        r.append_header("Accept", "*/*").unwrap();
        strip_identity_headers(&mut r);
        assert_eq!(r.headers.len(), 1);
    }

    fn request(headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/reports", None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    fn values(r: &RequestHeader, name: &str) -> Vec<String> {
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
        r.append_header("x-forwarded-for", "1.2.3.4").unwrap();
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
    fn all(r: &RequestHeader) -> Vec<(String, Vec<Vec<u8>>)> {
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
        let targets: [&[u8]; 2] = [b"/reports?x=1", b"http://target.example:8443/reports"];
        for headers in &cases {
            for target in targets {
                for peer in ["203.0.113.7", "2001:db8::1", "203.0.113.8"] {
                    let peer: IpAddr = peer.parse().unwrap();
                    let mut general = RequestHeader::build("GET", target, None).unwrap();
                    for (k, v) in headers {
                        general.append_header(k.to_string(), v.clone()).unwrap();
                    }
                    let mut shortcut = general.clone();
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
            assert_eq!(peer_value(ip).unwrap(), ip.to_string().as_str());
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
        strip_identity_headers(&mut r);
        let alice = Identity {
            id: "1".into(),
            username: "alice".into(),
            roles: vec!["admin".into(), "user".into()],
        };
        set_identity(&mut r, &alice).unwrap();
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
        set_identity(&mut none, &nobody).unwrap();
        assert_eq!(values(&none, ROLES), [""]);
    }
}
