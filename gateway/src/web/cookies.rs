//! The gateway's cookies: finding its session cookie among the browser's, building `Set-Cookie`,
//! and removing it from what goes upstream (the app's own cookies pass through untouched).

use cookie::{Cookie, SameSite};
use http::{HeaderMap, HeaderValue};

/// Every value the client sent for cookie `name`, across all `Cookie` headers.
pub fn values<'h>(headers: &'h HeaderMap, name: &str) -> Vec<&'h str> {
    each_value(headers, name).collect()
}

/// [`values`], one at a time: a caller that stops at the first good one allocates nothing.
pub fn each_value<'h: 'n, 'n>(
    headers: &'h HeaderMap,
    name: &'n str,
) -> impl Iterator<Item = &'h str> + 'n {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(move |pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k.trim() == name).then(|| v.trim().trim_matches('"'))
        })
}

/// Most cookie names [`without`] can report on; config keeps lists below it.
pub const MAX_HIDDEN: usize = 64;

/// The request's cookies once some have been taken out.
#[derive(Debug, PartialEq, Eq)]
pub struct Remaining {
    /// The `Cookie` header for the app, other pairs verbatim; `None` if nothing is left.
    pub header: Option<String>,
    /// Bit `i` is set when `names[i]` was among the request's cookies.
    pub removed: u64,
}

/// The `Cookie` header without the cookies in `names` (at most [`MAX_HIDDEN`]).
pub fn without(headers: &HeaderMap, names: &[String]) -> Remaining {
    let mut removed = 0u64;
    let kept: Vec<&str> = headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|pair| {
            let key = pair.split_once('=').map_or(*pair, |(k, _)| k.trim());
            match names.iter().take(MAX_HIDDEN).position(|n| n == key) {
                Some(i) => {
                    removed |= 1 << i;
                    false
                }
                None => !pair.is_empty(),
            }
        })
        .collect();
    Remaining {
        header: (!kept.is_empty()).then(|| kept.join("; ")),
        removed,
    }
}

/// The `Set-Cookie` values of a response minus those that set a cookie in `names`; `None`
/// when there is nothing to take out (the common case, which then costs no allocation).
pub fn set_cookies_without(headers: &HeaderMap, names: &[String]) -> Option<Vec<HeaderValue>> {
    let sets_ours = |value: &HeaderValue| {
        let text = String::from_utf8_lossy(value.as_bytes());
        let name = text.split_once('=').map_or("", |(name, _)| name.trim());
        names.iter().any(|n| n == name)
    };
    let all = headers.get_all(http::header::SET_COOKIE);
    if !all.iter().any(sets_ours) {
        return None;
    }
    Some(all.iter().filter(|v| !sets_ours(v)).cloned().collect())
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
        let rest = without(&h, &ours);
        assert_eq!(
            rest.header.as_deref(),
            Some("app_pref=dark; csrftoken=abc==")
        );
        assert_eq!(rest.removed, 0b11);
        let rest = without(&headers(&["gw=1"]), &ours);
        assert_eq!((rest.header, rest.removed), (None, 0b01));
        let rest = without(&headers(&["gwx=1; xgw=2"]), &ours);
        assert_eq!(rest.header.as_deref(), Some("gwx=1; xgw=2"));
        assert_eq!(rest.removed, 0);
    }

    #[test]
    fn app_cannot_set_our_cookies() {
        let ours = ["gw".to_string(), "gw_csrf".to_string()];
        let mut h = HeaderMap::new();
        for v in [
            "whalefall_session=eyJj; HttpOnly; Path=/",
            "gw=forged; Path=/",
            "gw_csrf=x",
            "gwx=kept",
        ] {
            h.append(http::header::SET_COOKIE, v.parse().unwrap());
        }
        let kept = set_cookies_without(&h, &ours).expect("ours were set");
        let kept: Vec<&str> = kept.iter().map(|v| v.to_str().unwrap()).collect();
        assert_eq!(
            kept,
            ["whalefall_session=eyJj; HttpOnly; Path=/", "gwx=kept"]
        );
        h.remove(http::header::SET_COOKIE);
        h.append(http::header::SET_COOKIE, "app=1".parse().unwrap());
        assert_eq!(set_cookies_without(&h, &ours), None);
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

    #[test]
    fn values_are_read_as_browsers_send_them() {
        let h = headers(&["gw=\"quoted\"; other=1", " gw = spaced ;flag; =x", "gw=a=b"]);
        assert_eq!(values(&h, "gw"), vec!["quoted", "spaced", "a=b"]);
        // Cookie names are case-sensitive: `GW` is someone else's cookie.
        assert!(values(&headers(&["GW=x; gw_csrf=y"]), "gw").is_empty());
        assert!(values(&HeaderMap::new(), "gw").is_empty());
    }

    #[test]
    fn the_app_gets_its_cookies_in_the_order_sent() {
        let ours = ["gw".to_string()];
        let h = headers(&["z=1; gw=secret", "a=2;; flag ; gw=again; m=3"]);
        let rest = without(&h, &ours);
        assert_eq!(rest.header.as_deref(), Some("z=1; a=2; flag; m=3"));
        assert_eq!(rest.removed, 1);
        let nothing_to_hide = without(&headers(&["a=1"]), &[]);
        assert_eq!(nothing_to_hide.header.as_deref(), Some("a=1"));
        assert_eq!(without(&HeaderMap::new(), &ours).header, None);
    }

    #[test]
    fn removal_reports_which_of_the_hidden_names_were_sent() {
        let names: Vec<String> = ["gw", "gw_csrf", "legacy_sid", "tracking"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let rest = without(&headers(&["tracking=1; app=2; legacy_sid=3"]), &names);
        assert_eq!(rest.header.as_deref(), Some("app=2"));
        assert_eq!(rest.removed, 0b1100);
    }

    #[test]
    fn an_app_response_without_our_cookies_is_untouched() {
        let ours = ["gw".to_string()];
        let mut h = HeaderMap::new();
        for v in ["gw_pref=1; Path=/", "xgw=2", "app=3; Path=/; HttpOnly"] {
            h.append(http::header::SET_COOKIE, v.parse().unwrap());
        }
        assert_eq!(set_cookies_without(&h, &ours), None);
        h.append(http::header::SET_COOKIE, " gw =stolen".parse().unwrap());
        let kept = set_cookies_without(&h, &ours).unwrap();
        assert_eq!(kept.len(), 3, "only the one setting ours goes");
        assert_eq!(set_cookies_without(&HeaderMap::new(), &ours), None);
    }

    #[test]
    fn the_expiry_cookie_replaces_the_session_cookie() {
        let policy = CookiePolicy { secure: true };
        let expired = policy.expired("gw");
        // Browsers only drop a cookie set with the same name, path and flags.
        for attr in [
            "gw=;",
            "Path=/",
            "Max-Age=0",
            "HttpOnly",
            "SameSite=Lax",
            "Secure",
            "1970",
        ] {
            assert!(expired.contains(attr), "{attr}: {expired}");
        }
        let strict = policy.strict("gw_csrf", "n", 3600);
        for attr in [
            "gw_csrf=n",
            "SameSite=Strict",
            "Max-Age=3600",
            "HttpOnly",
            "Path=/",
        ] {
            assert!(strict.contains(attr), "{attr}: {strict}");
        }
        assert!(
            !policy.session("gw", "v").contains("Max-Age"),
            "ends with the browser"
        );
    }
}
