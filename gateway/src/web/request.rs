//! Reading what the client sent: who it is, what it accepts, its body, and whether a redirect
//! target or a cross-site post can be trusted. Malformed input is never an error here: it reads
//! as "absent" or "not allowed", and the caller answers with a 4xx.

use std::collections::HashMap;
use std::net::IpAddr;

use http::Method;
use ipnet::IpNet;
use pingora::http::RequestHeader;

/// Where a request came from, for the record. Cheap to build on every request: the strings
/// are only made when an event or a session record needs them.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    /// `None` for the command line.
    pub ip: Option<std::net::IpAddr>,
    pub user_agent: Option<http::HeaderValue>,
    /// The request's `X-Request-Id` (see [`request_id`]); `None` for the command line.
    pub request_id: Option<http::HeaderValue>,
}

impl Origin {
    pub fn ip_text(&self) -> String {
        self.ip
            .map_or_else(|| "local".to_string(), |ip| ip.to_string())
    }

    /// The user agent as text, cut to a length worth keeping.
    pub fn user_agent_text(&self) -> String {
        let raw = self.user_agent.as_ref().map_or(&[][..], |v| v.as_bytes());
        String::from_utf8_lossy(raw).chars().take(256).collect()
    }
}

impl Origin {
    /// The request's origin: `client_ip` as established from the peer and trusted proxies.
    pub fn of(client_ip: Option<IpAddr>, req: &RequestHeader) -> Origin {
        Origin {
            ip: client_ip,
            user_agent: req.headers.get("user-agent").cloned(),
            request_id: req.headers.get(request_id::HEADER).cloned(),
        }
    }

    pub fn request_id_text(&self) -> Option<String> {
        self.request_id
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }
}

/// `X-Request-Id`: kept when a trusted proxy sent one we can pass on, otherwise made here;
/// sent upstream, returned to the client, and written into audit events and error logs.
pub mod request_id {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;

    use http::{HeaderMap, HeaderName, HeaderValue};

    pub const HEADER: &str = "x-request-id";
    pub const NAME: HeaderName = HeaderName::from_static(HEADER);

    /// Whether `headers` hold exactly one id worth passing on: at most 128 characters of
    /// letters, digits and `-_.:/+=`, so no header injection and no log spoofing.
    pub fn acceptable(headers: &HeaderMap) -> bool {
        let mut ids = headers.get_all(HEADER).iter();
        match (ids.next(), ids.next()) {
            (Some(id), None) => {
                let b = id.as_bytes();
                !b.is_empty()
                    && b.len() <= 128
                    && b.iter()
                        .all(|c| c.is_ascii_alphanumeric() || b"-_.:/+=".contains(c))
            }
            _ => false,
        }
    }

    /// A new id: this process's random prefix and a counter, unique without a system call
    /// per request.
    pub fn generate() -> HeaderValue {
        static PREFIX: OnceLock<String> = OnceLock::new();
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let prefix = PREFIX.get_or_init(|| {
            let mut random = [0u8; 8];
            let _ = getrandom::fill(&mut random);
            hex::encode(random)
        });
        // `{prefix}-{counter:x}`, written out by hand: `format!` cost as much as the rest of
        // making and inserting the id.
        let counter = COUNTER.fetch_add(1, Ordering::Relaxed);
        let digits = (64 - counter.leading_zeros()).div_ceil(4).max(1);
        let mut id = Vec::with_capacity(prefix.len() + 1 + digits as usize);
        id.extend_from_slice(prefix.as_bytes());
        id.push(b'-');
        for shift in (0..digits).rev() {
            id.push(b"0123456789abcdef"[(counter >> (shift * 4)) as usize & 0xf]);
        }
        // Hex digits and a dash: always a valid value.
        HeaderValue::from_maybe_shared(bytes::Bytes::from(id))
            .unwrap_or(HeaderValue::from_static("-"))
    }
}

/// Largest body the gateway reads itself (login forms, logout, JSON): plenty for a form.
pub const MAX_OWN_BODY: usize = 64 * 1024;

pub fn header<'r>(req: &'r RequestHeader, name: &str) -> Option<&'r str> {
    req.headers.get(name).and_then(|v| v.to_str().ok())
}

/// A GET/HEAD that a browser makes when the user follows a link or types a URL.
pub fn is_page_navigation(req: &RequestHeader) -> bool {
    (req.method == Method::GET || req.method == Method::HEAD) && prefers_html(req)
}

/// A CORS preflight: browsers send it before a cross-origin call, never with credentials, so
/// it cannot carry a session and the app must answer it unauthenticated.
pub fn is_cors_preflight(req: &RequestHeader) -> bool {
    req.method == Method::OPTIONS && req.headers.contains_key("access-control-request-method")
}

pub fn prefers_html(req: &RequestHeader) -> bool {
    header(req, "accept").is_some_and(|a| a.contains("text/html"))
}

pub fn wants_json(req: &RequestHeader) -> bool {
    header(req, "accept").is_some_and(|a| a.contains("application/json")) || is_json(req)
}

pub fn is_json(req: &RequestHeader) -> bool {
    header(req, "content-type").is_some_and(|c| {
        c.split(';')
            .next()
            .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
    })
}

pub fn is_form(req: &RequestHeader) -> bool {
    header(req, "content-type").is_some_and(|c| {
        c.split(';').next().is_some_and(|t| {
            t.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
    })
}

/// The path and query as the client sent them, e.g. `/reports?x=1`.
pub fn path_and_query(req: &RequestHeader) -> &str {
    req.uri.path_and_query().map_or("/", |pq| pq.as_str())
}

/// Why a request's framing is refused (400) before anything else looks at it, if it is.
///
/// - An HTTP/1.1 request without `Host` (RFC 9112 §3.2).
/// - More than one `Content-Length`, or a list (`5, 5`), or anything but digits: app servers
///   disagree on what those mean, and a disagreement between the gateway and the app about
///   where a body ends desynchronises the pooled upstream connection (request smuggling).
pub fn framing_problem(req: &RequestHeader) -> Option<&'static str> {
    if req.version == http::Version::HTTP_11 && !req.headers.contains_key(http::header::HOST) {
        return Some("missing_host");
    }
    let mut lengths = req.headers.get_all(http::header::CONTENT_LENGTH).iter();
    if let Some(first) = lengths.next() {
        let digits = !first.is_empty() && first.as_bytes().iter().all(u8::is_ascii_digit);
        if !digits || lengths.next().is_some() {
            return Some("bad_content_length");
        }
    }
    None
}

/// Whether a path contains `.` or `..` segments, literally or percent-encoded (`%2e`), also
/// behind `\\` or `;` tricks. Browsers resolve these before sending; a request that still has
/// them is trying to make the gateway's path checks and the app's routing disagree (e.g.
/// `/static/../admin` looks public to a prefix check).
pub fn has_dot_segments(path: &str) -> bool {
    let lowered = path.to_ascii_lowercase();
    let decoded = lowered
        .replace("%2e", ".")
        .replace("%2f", "/")
        .replace("%5c", "/")
        .replace("%3b", ";")
        .replace('\\', "/");
    decoded.split('/').any(|segment| {
        let name = segment.split(';').next().unwrap_or("");
        name == "." || name == ".."
    })
}

/// One query parameter, decoded.
pub fn query_param(req: &RequestHeader, name: &str) -> Option<String> {
    let query = req.uri.query()?;
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    TooLarge,
    Unreadable,
}

/// `application/x-www-form-urlencoded` fields; later duplicates lose to the first.
pub fn form_fields(body: &[u8]) -> HashMap<String, String> {
    let mut fields = HashMap::new();
    for (k, v) in form_urlencoded::parse(body) {
        fields
            .entry(k.into_owned())
            .or_insert_with(|| v.into_owned());
    }
    fields
}

/// Whether a state-changing request comes from our own pages.
///
/// Browsers send `Origin` on every cross-site POST (and `Referer` unless told not to); when
/// either is present its host must be the one the request was sent to. Requests with neither
/// come from non-browser clients, which cannot be made to carry the user's cookies by a third
/// party.
pub fn same_origin(req: &RequestHeader) -> bool {
    let host = header(req, "host")
        .or_else(|| req.uri.authority().map(|a| a.as_str()))
        .unwrap_or("");
    let source = header(req, "origin")
        .filter(|o| !o.is_empty())
        .or_else(|| header(req, "referer").filter(|r| !r.is_empty()));
    match source {
        None => true,
        Some("null") => false,
        Some(url) => url_host(url).is_some_and(|h| h.eq_ignore_ascii_case(host)),
    }
}

/// The `host[:port]` part of an absolute http(s) URL.
fn url_host(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    (!authority.is_empty() && !authority.contains('@')).then_some(authority)
}

/// `next` if it is a path on this site, so login can never redirect somewhere else.
///
/// Refused: absolute URLs, scheme-relative `//host`, backslash tricks (`/\host`, which browsers
/// read as `//host`), control characters, and anything not starting with a single `/`.
pub fn safe_next(next: &str) -> Option<&str> {
    let ok = next.starts_with('/')
        && !next.starts_with("//")
        && !next.starts_with("/\\")
        && !next.contains('\\')
        && !next.bytes().any(|b| b.is_ascii_control() || b == b' ')
        && next.len() <= 2048;
    // Percent-encoded slashes and backslashes right after the leading '/' are decoded by some
    // servers and browsers into `//`; refuse them too.
    let lowered = next.get(1..4).map(str::to_ascii_lowercase);
    let encoded_trick = matches!(lowered.as_deref(), Some("%2f") | Some("%5c"));
    (ok && !encoded_trick).then_some(next)
}

/// The client's address: the TCP peer, unless the peer is a trusted proxy, in which case the
/// right-most `X-Forwarded-For` entry that is not itself a trusted proxy.
pub fn client_ip(peer: Option<IpAddr>, req: &RequestHeader, trusted: &[IpNet]) -> Option<IpAddr> {
    let peer = peer?;
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let forwarded: Vec<IpAddr> = req
        .headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse::<IpAddr>().ok())
        .collect();
    Some(
        forwarded
            .iter()
            .rev()
            .find(|ip| !is_trusted(ip))
            .or(forwarded.first())
            .copied()
            .unwrap_or(peer),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_the_process_prefix_and_a_rising_hex_counter() {
        let parse = |id: http::HeaderValue| {
            let text = id.to_str().unwrap().to_string();
            let (prefix, counter) = text.split_once('-').unwrap();
            assert_eq!(prefix.len(), 16, "{text}");
            assert!(prefix.bytes().all(|b| b.is_ascii_hexdigit()), "{text}");
            assert!(!counter.is_empty() && (counter == "0" || !counter.starts_with('0')));
            (
                prefix.to_string(),
                u64::from_str_radix(counter, 16).unwrap(),
            )
        };
        let (first_prefix, first) = parse(request_id::generate());
        let (second_prefix, second) = parse(request_id::generate());
        assert_eq!(first_prefix, second_prefix);
        assert!(second > first);
        let mut headers = http::HeaderMap::new();
        headers.insert(request_id::NAME, request_id::generate());
        assert!(request_id::acceptable(&headers));
    }

    fn req(headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("POST", b"/login", None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    #[test]
    fn next_must_stay_on_site() {
        for good in ["/", "/reports?x=1", "/a/b#c"] {
            assert_eq!(safe_next(good), Some(good));
        }
        for bad in [
            "//evil.com",
            "/\\evil.com",
            "https://evil.com",
            "javascript:alert(1)",
            "\\\\evil",
            "/%2F/evil.com",
            "/%5cevil.com",
            "",
            "evil",
            "/a\nb",
        ] {
            assert_eq!(safe_next(bad), None, "{bad}");
        }
    }

    #[test]
    fn dot_segments_are_spotted_in_any_spelling() {
        for bad in [
            "/static/../admin",
            "/static/./x",
            "/static/%2e%2e/admin",
            "/static/%2E./admin",
            "/static/..;/admin",
            "/static/..%3b/admin",
            "/static/..%3Bx/admin",
            "/static\\..\\admin",
            "/static%2f..%2fadmin",
            "/..",
        ] {
            assert!(has_dot_segments(bad), "{bad}");
        }
        for fine in [
            "/",
            "/static/app.css",
            "/a..b/c",
            "/.well-known/x",
            "/v1.2/x",
        ] {
            assert!(!has_dot_segments(fine), "{fine}");
        }
    }

    #[test]
    fn origin_must_match_host() {
        assert!(same_origin(&req(&[("host", "gw:8080")])));
        assert!(same_origin(&req(&[
            ("host", "gw:8080"),
            ("origin", "http://gw:8080")
        ])));
        assert!(!same_origin(&req(&[
            ("host", "gw:8080"),
            ("origin", "https://evil.com")
        ])));
        assert!(!same_origin(&req(&[
            ("host", "gw:8080"),
            ("origin", "null")
        ])));
        assert!(same_origin(&req(&[
            ("host", "gw"),
            ("referer", "https://gw/login?x")
        ])));
        assert!(!same_origin(&req(&[
            ("host", "gw"),
            ("referer", "https://gw.evil/")
        ])));
        assert!(!same_origin(&req(&[
            ("host", "gw"),
            ("referer", "https://evil@gw/")
        ])));
    }

    #[test]
    fn forwarded_for_only_from_trusted_peers() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let r = req(&[("x-forwarded-for", "1.2.3.4, 10.0.0.9")]);
        let lb: IpAddr = "10.0.0.2".parse().unwrap();
        let stranger: IpAddr = "5.6.7.8".parse().unwrap();
        assert_eq!(
            client_ip(Some(lb), &r, &trusted),
            Some("1.2.3.4".parse().unwrap())
        );
        assert_eq!(client_ip(Some(stranger), &r, &trusted), Some(stranger));
        assert_eq!(client_ip(Some(lb), &req(&[]), &trusted), Some(lb));
    }

    #[test]
    fn origin_edge_cases() {
        let host = ("host", "gw.example");
        // Origin decides when present, even against a Referer.
        assert!(same_origin(&req(&[
            host,
            ("origin", "https://gw.example"),
            ("referer", "https://evil.com/")
        ])));
        assert!(!same_origin(&req(&[
            host,
            ("origin", "https://evil.com"),
            ("referer", "https://gw.example/")
        ])));
        // An empty Origin falls back to the Referer.
        assert!(!same_origin(&req(&[
            host,
            ("origin", ""),
            ("referer", "https://evil.com/")
        ])));
        // Host names compare without case; ports must match.
        assert!(same_origin(&req(&[host, ("origin", "https://GW.Example")])));
        assert!(!same_origin(&req(&[
            host,
            ("origin", "https://gw.example:8443")
        ])));
        assert!(!same_origin(&req(&[
            ("host", "gw.example:8443"),
            ("origin", "https://gw.example")
        ])));
        // Only http(s) URLs with a host count.
        for bad in [
            "gw.example",
            "ftp://gw.example",
            "https://",
            "https:///x",
            "data:,x",
        ] {
            assert!(!same_origin(&req(&[host, ("origin", bad)])), "{bad}");
        }
        assert!(same_origin(&req(&[
            host,
            ("referer", "http://gw.example?x=1")
        ])));
        assert!(same_origin(&req(&[
            host,
            ("referer", "https://gw.example#frag")
        ])));
        // No Host header: an empty host matches nothing a browser sends.
        assert!(!same_origin(&req(&[("origin", "https://gw.example")])));
    }

    #[test]
    fn next_refuses_more_tricks() {
        for bad in [
            "/%2f/evil.com",
            "/%5Cevil.com",
            "/a\tb",
            "/a b",
            "/\u{7f}",
            "/ok\r\nSet-Cookie:x",
        ] {
            assert_eq!(safe_next(bad), None, "{bad:?}");
        }
        let long = format!("/{}", "a".repeat(2047));
        assert_eq!(safe_next(&long), Some(long.as_str()));
        let too_long = format!("/{}", "a".repeat(2048));
        assert_eq!(safe_next(&too_long), None);
        for good in ["/%2e", "/a/%2fb", "/search?q=%2F%2Fx", "/caf%C3%A9"] {
            assert_eq!(safe_next(good), Some(good), "{good}");
        }
    }

    #[test]
    fn the_client_is_the_rightmost_untrusted_hop() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()];
        let lb: IpAddr = "10.0.0.2".parse().unwrap();
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        // A client that writes its own X-Forwarded-For cannot pick its address.
        let spoofed = req(&[("x-forwarded-for", "6.6.6.6, 1.2.3.4")]);
        assert_eq!(client_ip(Some(lb), &spoofed, &trusted), ip("1.2.3.4"));
        // Chains of trusted proxies are walked back, across headers.
        let chain = req(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-for", "10.1.1.1, 10.2.2.2"),
        ]);
        assert_eq!(client_ip(Some(lb), &chain, &trusted), ip("1.2.3.4"));
        // Junk entries are skipped, IPv6 works.
        let v6 = req(&[("x-forwarded-for", "2001:db8::7, garbage, fd00::1")]);
        assert_eq!(client_ip(ip("fd00::2"), &v6, &trusted), ip("2001:db8::7"));
        // Only proxies behind: the first hop is the best there is.
        let internal = req(&[("x-forwarded-for", "10.9.9.9, 10.8.8.8")]);
        assert_eq!(client_ip(Some(lb), &internal, &trusted), ip("10.9.9.9"));
        // Nothing trusted: the header means nothing.
        assert_eq!(client_ip(Some(lb), &spoofed, &[]), Some(lb));
        assert_eq!(client_ip(None, &spoofed, &trusted), None);
    }

    #[test]
    fn preflights_are_options_asking_about_a_method() {
        let build = |method: &str, headers: &[(&str, &str)]| {
            let mut r = RequestHeader::build(method, b"/api/x", None).unwrap();
            for (k, v) in headers {
                r.append_header(k.to_string(), *v).unwrap();
            }
            r
        };
        let asks = [("access-control-request-method", "POST")];
        assert!(is_cors_preflight(&build("OPTIONS", &asks)));
        assert!(!is_cors_preflight(&build("OPTIONS", &[])));
        assert!(!is_cors_preflight(&build("GET", &asks)));
        assert!(!is_cors_preflight(&build("POST", &asks)));
    }

    #[test]
    fn content_types_and_fields_are_read_leniently() {
        assert!(is_form(&req(&[(
            "content-type",
            "Application/X-WWW-Form-Urlencoded; charset=utf-8"
        )])));
        assert!(is_json(&req(&[(
            "content-type",
            "application/json;charset=UTF-8"
        )])));
        assert!(!is_json(&req(&[("content-type", "application/jsonp")])));
        assert!(!is_form(&req(&[(
            "content-type",
            "multipart/form-data; boundary=x"
        )])));
        assert!(!is_json(&req(&[])));
        let fields = form_fields(b"a=1&b=two+words&a=2&c=%E4%BD%A0&d");
        assert_eq!(fields["a"], "1", "the first of duplicates wins");
        assert_eq!(fields["b"], "two words");
        assert_eq!(fields["c"], "\u{4f60}");
        assert_eq!(fields["d"], "");
        let r = RequestHeader::build("GET", b"/logout?scope=all&next=%2Fx%3Fy", None).unwrap();
        assert_eq!(query_param(&r, "scope").as_deref(), Some("all"));
        assert_eq!(query_param(&r, "next").as_deref(), Some("/x?y"));
        assert_eq!(query_param(&r, "nope"), None);
    }

    #[test]
    fn ambiguous_framing_is_refused() {
        let with = |headers: &[(&str, &str)]| {
            let mut r = RequestHeader::build("POST", b"/x", None).unwrap();
            for (k, v) in headers {
                r.append_header(k.to_string(), *v).unwrap();
            }
            framing_problem(&r)
        };
        assert_eq!(with(&[("host", "gw")]), None);
        assert_eq!(with(&[("host", "gw"), ("content-length", "5")]), None);
        assert_eq!(with(&[]), Some("missing_host"));
        for bad in [
            vec![("host", "gw"), ("content-length", "5, 5")],
            vec![
                ("host", "gw"),
                ("content-length", "5"),
                ("content-length", "5"),
            ],
            vec![
                ("host", "gw"),
                ("content-length", "5"),
                ("content-length", "6"),
            ],
            vec![("host", "gw"), ("content-length", "+5")],
            vec![("host", "gw"), ("content-length", "")],
            vec![("host", "gw"), ("content-length", "0x10")],
        ] {
            assert_eq!(with(&bad), Some("bad_content_length"), "{bad:?}");
        }
        let mut old = RequestHeader::build("GET", b"/x", None).unwrap();
        old.set_version(http::Version::HTTP_10);
        assert_eq!(
            framing_problem(&old),
            None,
            "HTTP/1.0 has no Host requirement"
        );
    }
}
