//! The gateway's cookies: finding its session cookie among the browser's, building `Set-Cookie`,
//! and removing it from what goes upstream (the app's own cookies pass through untouched).

use cookie::{Cookie, SameSite};
use http::HeaderMap;

/// Every value the client sent for cookie `name`, across all `Cookie` headers.
pub fn values<'h>(headers: &'h HeaderMap, name: &str) -> Vec<&'h str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k.trim() == name).then(|| v.trim().trim_matches('"'))
        })
        .collect()
}

/// The `Cookie` header without the cookies in `names`, other pairs kept verbatim; `None` if
/// nothing is left.
pub fn without(headers: &HeaderMap, names: &[String]) -> Option<String> {
    let kept: Vec<&str> = headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|pair| {
            let key = pair.split_once('=').map_or(*pair, |(k, _)| k.trim());
            !pair.is_empty() && !names.iter().any(|n| n == key)
        })
        .collect();
    (!kept.is_empty()).then(|| kept.join("; "))
}

/// Cookie attributes the gateway uses for all its cookies.
#[derive(Debug, Clone, Copy)]
pub struct CookiePolicy {
    pub secure: bool,
}

impl CookiePolicy {
    /// The session cookie: a browser-session cookie (no Max-Age); lifetime is enforced in Redis.
    pub fn session(&self, name: &str, value: &str) -> String {
        Cookie::build((name, value))
            .http_only(true)
            .same_site(SameSite::Lax)
            .path("/")
            .secure(self.secure)
            .build()
            .to_string()
    }

    /// A short-lived cookie that only our own forms need back.
    pub fn strict(&self, name: &str, value: &str, max_age_secs: i64) -> String {
        Cookie::build((name, value))
            .http_only(true)
            .same_site(SameSite::Strict)
            .path("/")
            .secure(self.secure)
            .max_age(cookie::time::Duration::seconds(max_age_secs))
            .build()
            .to_string()
    }

    /// Tells the browser to drop a cookie.
    pub fn expired(&self, name: &str) -> String {
        Cookie::build((name, ""))
            .http_only(true)
            .same_site(SameSite::Lax)
            .path("/")
            .secure(self.secure)
            .max_age(cookie::time::Duration::ZERO)
            .expires(cookie::time::OffsetDateTime::UNIX_EPOCH)
            .build()
            .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(http::header::COOKIE, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn finds_our_cookie_across_headers() {
        let h = headers(&["a=1; gw=x", "gw=y;b=2"]);
        assert_eq!(values(&h, "gw"), vec!["x", "y"]);
        assert!(values(&h, "nope").is_empty());
    }

    #[test]
    fn strips_only_our_cookie() {
        let ours = ["gw".to_string(), "gw_csrf".to_string()];
        let h = headers(&["app_pref=dark; gw=secret; csrftoken=abc==", "gw_csrf=n"]);
        assert_eq!(
            without(&h, &ours).as_deref(),
            Some("app_pref=dark; csrftoken=abc==")
        );
        assert_eq!(without(&headers(&["gw=1"]), &ours), None);
        assert_eq!(
            without(&headers(&["gwx=1; xgw=2"]), &ours).as_deref(),
            Some("gwx=1; xgw=2")
        );
    }

    #[test]
    fn session_cookie_attributes() {
        let c = CookiePolicy { secure: true }.session("gw", "v");
        for attr in ["HttpOnly", "SameSite=Lax", "Path=/", "Secure"] {
            assert!(c.contains(attr), "{c}");
        }
        assert!(!c.contains("Domain"));
        assert!(!CookiePolicy { secure: false }
            .session("gw", "v")
            .contains("Secure"));
    }
}
