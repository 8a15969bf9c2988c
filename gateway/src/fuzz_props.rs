//! Property-based fuzzing of everything a hostile client or a careless operator feeds the
//! gateway: `Cookie` and `Set-Cookie` headers, the signed session cookie and form tokens,
//! `X-Auth-*` header stripping, public prefixes and dot segments, `next` redirects (also through
//! the real login and refusal routes), `Content-Length` framing, the config and users files,
//! password-hash strings and durations.
//!
//! Every property is an oracle, not a re-run of the code under test: an answer known from how
//! the input was built, an independent model (segments instead of string prefixes, a WHATWG URL
//! parser instead of string rules, a field-by-field validity model of a users file), a round trip
//! (seal then open, hash then verify), or an invariant every accepted value must satisfy (a
//! config `check-config` passes obeys every documented limit). A panic anywhere is a failure.
//!
//! - `FUZZ_CASES` (default [`DEFAULT_CASES`]) is the number of cases of a cheap property; a
//!   property that costs more per case runs `FUZZ_CASES / cost`.
//! - `FUZZ_SEED`: unset, a fixed seed (a plain `cargo test` checks the same inputs every time);
//!   `random` draws one; a number replays a run. Each property prints it; a failure names it.
//! - Each property prints `fuzz_props: NAME cases=N ...` (visible with `--nocapture`);
//!   `benches/fuzz.sh` sums them.
//!
//! Three findings of these properties were fixed rather than excluded: an encoded `;` hiding
//! a dot segment (`/static/..%3b/admin`), an argon2 `p` that overflowed argon2's own check,
//! and bcrypt strings whose base64 the verifier refuses.

use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderValue};
use pingora::http::RequestHeader;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{Config as RunnerConfig, RngSeed, TestCaseError, TestRunner};

use crate::auth::password::{limits, PasswordHash};
use crate::auth::users::UserTable;
use crate::config::{parse_duration, Config, MIN_SECRET_BYTES};
use crate::env::{Environment, Secret};
use crate::identity::Identity;
use crate::session::{Keys, SessionId};
use crate::web::cookies;
use crate::web::forward::{set_identity, strip_identity_headers};
use crate::web::head::edit_request;
use crate::web::request::{framing_problem, has_dot_segments, safe_next};

// ------------------------------------------------------------------------------------------
// Runner
// ------------------------------------------------------------------------------------------

/// Cases of a cheap property in a plain `cargo test`: the whole module stays within seconds.
const DEFAULT_CASES: u32 = 512;

fn base_cases() -> u32 {
    std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(DEFAULT_CASES)
}

/// The seed of a plain `cargo test`: the suite checks the same inputs every time.
const DEFAULT_SEED: u64 = 20_261_130;

/// One seed per run, printed, so that a failure can be replayed. `FUZZ_SEED=random` draws
/// one (what `benches/fuzz.sh` does, so each long run explores new inputs).
fn run_seed() -> u64 {
    static SEED: OnceLock<u64> = OnceLock::new();
    *SEED.get_or_init(
        || match std::env::var("FUZZ_SEED").ok().as_deref().map(str::trim) {
            None | Some("") => DEFAULT_SEED,
            Some("random") => {
                let mut bytes = [0u8; 8];
                getrandom::fill(&mut bytes).expect("OS randomness");
                u64::from_le_bytes(bytes)
            }
            Some(n) => n
                .parse()
                .unwrap_or_else(|_| panic!("FUZZ_SEED must be a number or `random`, not {n:?}")),
        },
    )
}

fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Runs `test` on `FUZZ_CASES / cost` inputs from `strategy`, prints how many ran, and fails
/// with the (shrunk) input and the seed that replays it.
fn fuzz<S: Strategy>(
    name: &str,
    cost: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    let cases = (base_cases() / cost).max(1);
    let config = RunnerConfig {
        cases,
        // Independent streams per property, all derived from the one printed seed.
        rng_seed: RngSeed::Fixed(run_seed() ^ fnv1a(name)),
        failure_persistence: None,
        ..RunnerConfig::default()
    };
    let mut runner = TestRunner::new(config);
    let ran = Cell::new(0u64);
    let started = Instant::now();
    let result = runner.run(&strategy, |value| {
        ran.set(ran.get() + 1);
        test(value)
    });
    eprintln!(
        "fuzz_props: {name} cases={} cost={cost} seed={} ms={}",
        ran.get(),
        run_seed(),
        started.elapsed().as_millis()
    );
    if let Err(e) = result {
        panic!(
            "{name}: {e}\nreplay: FUZZ_SEED={} FUZZ_CASES={} cargo test --lib fuzz_props::{name}",
            run_seed(),
            base_cases()
        );
    }
}

/// How often each branch of a property was taken, printed at its end: a property whose
/// inputs all land on one side would test little.
struct Tally {
    name: &'static str,
    counts: std::cell::RefCell<Vec<(&'static str, u64)>>,
}

impl Tally {
    fn new(name: &'static str) -> Self {
        Tally {
            name,
            counts: std::cell::RefCell::new(Vec::new()),
        }
    }

    fn add(&self, branch: &'static str) {
        let mut counts = self.counts.borrow_mut();
        match counts.iter_mut().find(|(b, _)| *b == branch) {
            Some((_, n)) => *n += 1,
            None => counts.push((branch, 1)),
        }
    }
}

impl Drop for Tally {
    fn drop(&mut self) {
        let counts: Vec<String> = self
            .counts
            .borrow()
            .iter()
            .map(|(b, n)| format!("{b}={n}"))
            .collect();
        eprintln!("fuzz_props: {} branches: {}", self.name, counts.join(" "));
    }
}

fn header_map(name: &str, values: &[String]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for v in values {
        map.append(
            http::header::HeaderName::from_bytes(name.as_bytes()).expect("name"),
            HeaderValue::from_str(v).expect("generated header values are valid"),
        );
    }
    map
}

/// Bytes allowed in a header value (RFC 9110 field-vchar, SP, HTAB, obs-text).
fn header_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        8 => 0x20u8..=0x7e,
        1 => Just(b'\t'),
        1 => 0x80u8..=0xff,
    ]
}

// ------------------------------------------------------------------------------------------
// Cookies
// ------------------------------------------------------------------------------------------

const OUR_COOKIE: &str = "gw";
const HIDDEN: [&str; 3] = ["gw", "gw_csrf", "remember_token"];

#[derive(Debug, Clone)]
enum CookiePart {
    Pair {
        name: String,
        value: String,
        quoted: bool,
        pad: [String; 4],
    },
    Flag(String),
    Blank(String),
}

impl CookiePart {
    fn render(&self) -> String {
        match self {
            CookiePart::Pair {
                name,
                value,
                quoted,
                pad,
            } => {
                let q = if *quoted { "\"" } else { "" };
                format!(
                    "{}{name}{}={}{q}{value}{q}{}",
                    pad[0], pad[1], pad[2], pad[3]
                )
            }
            CookiePart::Flag(name) => name.clone(),
            CookiePart::Blank(pad) => pad.clone(),
        }
    }
}

fn cookie_name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => select(vec!["gw", "GW", "gw_csrf", "xgw", "gw2", "remember_token", "app"])
            .prop_map(str::to_string),
        3 => "[A-Za-z0-9_.!#$%&'*+^`|~-]{1,8}",
    ]
}

fn cookie_part() -> impl Strategy<Value = CookiePart> {
    let pad = || "[ \t]{0,2}";
    prop_oneof![
        6 => (
            cookie_name(),
            // cookie-octets plus ',', without '"', ';', '\' or whitespace.
            "[\\x21\\x23-\\x3A\\x3C-\\x5B\\x5D-\\x7E]{0,16}",
            any::<bool>(),
            [pad(), pad(), pad(), pad()],
        )
            .prop_map(|(name, value, quoted, pad)| CookiePart::Pair {
                name,
                value,
                quoted,
                pad
            }),
        1 => cookie_name().prop_map(CookiePart::Flag),
        1 => pad().prop_map(CookiePart::Blank),
    ]
}

/// Several `Cookie` headers, each a list of parts joined by `;`.
fn cookie_headers() -> impl Strategy<Value = Vec<Vec<CookiePart>>> {
    vec(vec(cookie_part(), 0..6), 1..4)
}

/// Each generated header's parts joined as a `Cookie` header value.
fn render_headers(headers: &[Vec<CookiePart>]) -> Vec<String> {
    headers
        .iter()
        .map(|parts| {
            parts
                .iter()
                .map(CookiePart::render)
                .collect::<Vec<_>>()
                .join(";")
        })
        .collect()
}

#[test]
fn cookie_values_are_the_ones_sent() {
    fuzz(
        "cookie_values_are_the_ones_sent",
        1,
        cookie_headers(),
        |headers| {
            let rendered = render_headers(&headers);
            let expected: Vec<&str> = headers
                .iter()
                .flatten()
                .filter_map(|p| match p {
                    CookiePart::Pair { name, value, .. } if name == OUR_COOKIE => {
                        Some(value.as_str())
                    }
                    _ => None,
                })
                .collect();
            let map = header_map("cookie", &rendered);
            prop_assert_eq!(cookies::values(&map, OUR_COOKIE), expected);
            Ok(())
        },
    );
}

#[test]
fn hidden_cookies_are_removed_and_the_rest_kept_verbatim() {
    let names: Vec<String> = HIDDEN.iter().map(|s| s.to_string()).collect();
    fuzz(
        "hidden_cookies_are_removed_and_the_rest_kept_verbatim",
        1,
        cookie_headers(),
        |headers| {
            let rendered = render_headers(&headers);
            let name_of = |p: &CookiePart| match p {
                CookiePart::Pair { name, .. } | CookiePart::Flag(name) => Some(name.clone()),
                CookiePart::Blank(_) => None,
            };
            let mut kept = Vec::new();
            let mut removed = 0u64;
            for part in headers.iter().flatten() {
                let Some(name) = name_of(part) else { continue };
                match HIDDEN.iter().position(|h| *h == name) {
                    Some(i) => removed |= 1 << i,
                    None => kept.push(part.render().trim().to_string()),
                }
            }
            let map = header_map("cookie", &rendered);
            let rest = cookies::without(&map, &names);
            prop_assert_eq!(rest.removed, removed);
            prop_assert_eq!(rest.header, (!kept.is_empty()).then(|| kept.join("; ")));
            Ok(())
        },
    );
}

/// Raw header text, biased towards the characters cookie parsing turns on.
fn raw_header_text() -> impl Strategy<Value = Vec<u8>> {
    let pieces = select(vec![
        "gw",
        "gw_csrf",
        "remember_token",
        "=",
        ";",
        " ",
        "\t",
        "\"",
        "x",
        "é",
        ",",
        "gw=",
    ]);
    prop_oneof![
        vec(header_byte(), 0..48),
        vec(pieces, 0..16).prop_map(|p| p.concat().into_bytes()),
    ]
}

#[test]
fn no_hidden_cookie_reaches_the_app_whatever_the_header() {
    let names: Vec<String> = HIDDEN.iter().map(|s| s.to_string()).collect();
    fuzz(
        "no_hidden_cookie_reaches_the_app_whatever_the_header",
        1,
        vec(raw_header_text(), 0..4),
        |raw| {
            let mut map = HeaderMap::new();
            for bytes in &raw {
                map.append(
                    http::header::COOKIE,
                    HeaderValue::from_bytes(bytes).expect("valid header bytes"),
                );
            }
            let texts: Vec<String> = raw
                .iter()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .collect();
            for v in cookies::values(&map, OUR_COOKIE) {
                prop_assert!(texts.iter().any(|t| t.contains(v)), "{v:?} not sent");
            }
            let rest = cookies::without(&map, &names);
            if let Some(header) = rest.header {
                // proxy.rs inserts this as the upstream `Cookie`: it must be a valid value.
                prop_assert!(HeaderValue::from_str(&header).is_ok());
                for pair in header.split(';') {
                    let key = pair.split_once('=').map_or(pair, |(k, _)| k).trim();
                    prop_assert!(!HIDDEN.contains(&key), "{key} passed in {header:?}");
                }
                let again = header_map("cookie", std::slice::from_ref(&header));
                for n in HIDDEN {
                    prop_assert!(cookies::values(&again, n).is_empty());
                }
            }
            Ok(())
        },
    );
}

#[test]
fn the_app_can_never_set_our_cookies() {
    let names: Vec<String> = HIDDEN[..2].iter().map(|s| s.to_string()).collect();
    let structured = (
        "[ \t]{0,2}",
        cookie_name(),
        "[ \t]{0,2}",
        prop::option::of("=[a-z0-9]{0,6}(; Path=/)?(; HttpOnly)?"),
    )
        .prop_map(|(a, name, b, rest)| match rest {
            Some(rest) => format!("{a}{name}{b}{rest}").into_bytes(),
            None => format!("{a}{name}").into_bytes(),
        });
    let one = prop_oneof![3 => structured, 1 => raw_header_text()];
    fuzz(
        "the_app_can_never_set_our_cookies",
        1,
        vec(one, 0..5),
        |raw| {
            let mut map = HeaderMap::new();
            let mut values = Vec::new();
            for bytes in &raw {
                let Ok(value) = HeaderValue::from_bytes(bytes) else {
                    continue;
                };
                map.append(http::header::SET_COOKIE, value.clone());
                values.push(value);
            }
            let sets_ours = |v: &HeaderValue| {
                let text = String::from_utf8_lossy(v.as_bytes());
                match text.find('=') {
                    Some(i) => names.iter().any(|n| n == text[..i].trim()),
                    None => false,
                }
            };
            let expected = values.iter().any(sets_ours).then(|| {
                values
                    .iter()
                    .filter(|v| !sets_ours(v))
                    .cloned()
                    .collect::<Vec<_>>()
            });
            prop_assert_eq!(cookies::set_cookies_without(&map, &names), expected);
            Ok(())
        },
    );
}

// ------------------------------------------------------------------------------------------
// Signed session cookie and form tokens
// ------------------------------------------------------------------------------------------

#[test]
fn sealed_cookies_open_and_every_single_byte_change_is_refused() {
    let strategy = (
        vec(any::<u8>(), MIN_SECRET_BYTES..80),
        vec(any::<u8>(), MIN_SECRET_BYTES..80),
        0usize..cookie_len(),
        any::<u8>(),
        ".{0,100}",
    );
    fuzz(
        "sealed_cookies_open_and_every_single_byte_change_is_refused",
        2,
        strategy,
        |(secret, other_secret, at, byte, junk)| {
            let keys = Keys::derive(&Secret::new(secret.clone()));
            let id = SessionId::generate().expect("OS randomness");
            let value = keys.seal(&id);
            prop_assert_eq!(value.len(), cookie_len());
            prop_assert!(value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
            prop_assert_eq!(keys.open(&value), Some(id.clone()));

            let mut bytes = value.clone().into_bytes();
            let new = if bytes[at] == byte {
                byte.wrapping_add(1)
            } else {
                byte
            };
            bytes[at] = new;
            let damaged = String::from_utf8_lossy(&bytes).into_owned();
            prop_assert_eq!(keys.open(&damaged), None, "byte {} -> {}", at, new);
            prop_assert_eq!(keys.open(&value[..at]), None);
            prop_assert_eq!(keys.open(&format!("{value}A")), None);
            if other_secret != secret {
                let other = Keys::derive(&Secret::new(other_secret));
                prop_assert_eq!(other.open(&value), None);
            }
            // Anything accepted is exactly the sealed form of what it opens to (no malleability).
            if let Some(opened) = keys.open(&junk) {
                prop_assert_eq!(keys.seal(&opened), junk.clone());
            }

            let nonce = &value[..16];
            let token = keys.login_form_token(nonce);
            prop_assert!(keys.login_form_valid(nonce, &token));
            prop_assert!(!keys.login_form_valid(&value[16..32], &token));
            prop_assert!(!keys.login_form_valid("", &token));
            let mut forged = token.clone().into_bytes();
            let i = at % forged.len();
            forged[i] = if forged[i] == b'0' { b'1' } else { b'0' };
            prop_assert!(!keys.login_form_valid(nonce, &String::from_utf8_lossy(&forged)));
            prop_assert_eq!(
                keys.login_form_valid(nonce, &junk),
                junk.eq_ignore_ascii_case(&token)
            );
            Ok(())
        },
    );
}

fn cookie_len() -> usize {
    crate::session::token::COOKIE_VALUE_LEN
}

// ------------------------------------------------------------------------------------------
// Identity headers
// ------------------------------------------------------------------------------------------

/// The model: a header is the gateway's if, read the way WSGI reads names (case folded, `-`
/// and `_` the same), it starts with `X_AUTH_`.
fn is_identity_header_model(name: &str) -> bool {
    let wsgi: String = name
        .chars()
        .map(|c| match c {
            '-' => '_',
            c => c.to_ascii_uppercase(),
        })
        .collect();
    wsgi.starts_with("X_AUTH_")
}

fn header_name() -> impl Strategy<Value = String> {
    let spoof = (
        vec(any::<bool>(), 5),
        select(vec!['-', '_']),
        select(vec!['-', '_']),
        "[A-Za-z0-9_-]{0,10}",
    )
        .prop_map(|(upper, s1, s2, suffix)| {
            let letters: Vec<char> = "xauth"
                .chars()
                .zip(upper)
                .map(|(c, u)| if u { c.to_ascii_uppercase() } else { c })
                .collect();
            format!(
                "{}{s1}{}{s2}{suffix}",
                letters[0],
                letters[1..].iter().collect::<String>()
            )
        });
    let near_miss = select(vec![
        "x-auth",
        "X_AUTH",
        "xauth-user",
        "x-authuser",
        "x-auth.user",
        "x--auth-user",
        "y-auth-user",
        "x-autho-user",
        "auth-user",
        "x-au_th-user",
        "x-authorization",
        "authorization",
        "x-forwarded-for",
        "cookie",
    ])
    .prop_map(str::to_string);
    prop_oneof![
        4 => spoof,
        2 => near_miss,
        2 => "[A-Za-z0-9!#$%&'*+.^_`|~-]{1,16}",
    ]
}

#[test]
fn no_client_header_can_pose_as_the_gateway() {
    let strategy = (
        vec((header_name(), "[ -~]{0,16}"), 0..12),
        "[a-z]{1,8}",
        "[0-9]{1,4}",
    );
    let tally = Tally::new("no_client_header_can_pose_as_the_gateway");
    fuzz(
        "no_client_header_can_pose_as_the_gateway",
        1,
        strategy,
        |(headers, username, id)| {
            let mut req = RequestHeader::build("GET", b"/reports", None).expect("request");
            for (name, value) in &headers {
                req.append_header(name.clone(), value.as_str())
                    .expect("valid generated header");
            }
            tally.add(
                if headers.iter().any(|(n, _)| is_identity_header_model(n)) {
                    "spoof_sent"
                } else {
                    "no_spoof"
                },
            );
            // Taken apart and edited the way the proxy edits the request it sends upstream.
            let mut stripped = req.clone();
            edit_request(&mut stripped, |parts| {
                strip_identity_headers(&mut parts.headers)
            });
            let mut sent: HashMap<String, usize> = HashMap::new();
            for (name, _) in &headers {
                *sent.entry(name.to_ascii_lowercase()).or_default() += 1;
            }
            for (name, count) in &sent {
                let left = stripped.headers.get_all(name.as_str()).iter().count();
                if is_identity_header_model(name) {
                    prop_assert_eq!(left, 0, "{} survived", name);
                } else {
                    prop_assert_eq!(left, *count, "{} was touched", name);
                }
            }
            let identity = Identity {
                id: id.clone(),
                username: username.clone(),
                roles: vec!["user".to_string()],
            };
            edit_request(&mut req, |parts| {
                strip_identity_headers(&mut parts.headers);
                set_identity(&mut parts.headers, &identity)
            })
            .expect("identity headers");
            // What goes on the wire to the app, original case and all.
            let mut wire = bytes::BytesMut::new();
            req.header_to_h1_wire(&mut wire);
            let text = String::from_utf8_lossy(&wire).into_owned();
            let mut ours: Vec<(String, String)> = Vec::new();
            for line in text.split("\r\n").filter(|l| !l.is_empty()) {
                let (name, value) = line.split_once(':').expect("a header line");
                if is_identity_header_model(name) {
                    ours.push((name.to_ascii_lowercase(), value.trim().to_string()));
                }
            }
            ours.sort();
            let mut expected = vec![
                ("x-auth-roles".to_string(), "user".to_string()),
                ("x-auth-user".to_string(), username),
                ("x-auth-user-id".to_string(), id),
            ];
            expected.sort();
            prop_assert_eq!(ours, expected, "on the wire:\n{}", text);
            Ok(())
        },
    );
}

// ------------------------------------------------------------------------------------------
// Public prefixes and dot segments
// ------------------------------------------------------------------------------------------

/// The documented rule, on path segments rather than string prefixes: a prefix ending in `/`
/// covers its subtree; one whose last segment names a file (has a `.`) covers that path
/// only; any other covers that path and its subtree.
fn is_public_model(prefixes: &[String], path: &str) -> bool {
    let segments: Vec<&str> = path.split('/').collect();
    prefixes.iter().any(|p| {
        let own: Vec<&str> = p.split('/').collect();
        if p.ends_with('/') {
            let head = &own[..own.len() - 1];
            segments.len() >= own.len() && segments[..head.len()] == *head
        } else if own.last().is_some_and(|last| last.contains('.')) {
            segments == own
        } else {
            segments.len() >= own.len() && segments[..own.len()] == own[..]
        }
    })
}

fn path_segment() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => select(vec![
            "static", "favicon.ico", "api", "v1", "health", "a", "a.b", "admin", "", "x.css",
            "staticadmin", "favicon.icoadmin", "healthz",
        ])
        .prop_map(str::to_string),
        1 => "[a-z.]{1,4}",
    ]
}

fn prefix() -> impl Strategy<Value = String> {
    (vec(path_segment(), 1..4), any::<bool>())
        .prop_map(|(segs, slash)| format!("/{}{}", segs.join("/"), if slash { "/" } else { "" }))
}

/// The operator's config, parsed once; properties change only what they test.
fn base_config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let env = FuzzEnv::standard();
        Config::parse("gw.toml", RICH_CONFIG, Path::new(FUZZ_DIR), &env)
            .unwrap_or_else(|e| panic!("the base config must be valid:\n{e}"))
    })
}

#[test]
fn public_prefixes_match_the_segment_model() {
    let strategy = vec(prefix(), 0..4).prop_flat_map(|prefixes| {
        let near = if prefixes.is_empty() {
            Just("/static/x".to_string()).boxed()
        } else {
            (
                select(prefixes.clone()),
                select(vec![
                    "", "/", "admin", "/admin", ".css", "/x/y", "x/", "//", "?",
                ]),
            )
                .prop_map(|(p, tail)| format!("{p}{tail}"))
                .boxed()
        };
        let path = prop_oneof![
            2 => near,
            2 => vec(path_segment(), 0..5).prop_map(|s| format!("/{}", s.join("/"))),
            1 => "[/a-z.]{0,12}",
        ];
        (Just(prefixes), path)
    });
    let config = std::cell::RefCell::new(base_config().clone());
    let tally = Tally::new("public_prefixes_match_the_segment_model");
    fuzz(
        "public_prefixes_match_the_segment_model",
        1,
        strategy,
        |(prefixes, path)| {
            config.borrow_mut().access.public = prefixes.clone();
            tally.add(if config.borrow().is_public(&path) {
                "public"
            } else {
                "private"
            });
            prop_assert_eq!(
                config.borrow().is_public(&path),
                is_public_model(&prefixes, &path),
                "prefixes {:?} path {:?}",
                prefixes,
                path
            );
            Ok(())
        },
    );
}

/// Percent-decodes every valid `%XX` once, as an app's router does.
fn percent_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

/// The path as a lenient app server sees it: decoded once, `\` as `/`, `;params` cut from each
/// segment (Tomcat-style), then dot segments resolved (RFC 3986 §5.2.4).
fn app_view(path: &str) -> String {
    let decoded = String::from_utf8_lossy(&percent_decode(path)).replace('\\', "/");
    let mut out: Vec<String> = Vec::new();
    let segments: Vec<&str> = decoded.split('/').collect();
    for (i, segment) in segments.iter().enumerate() {
        let name = segment.split(';').next().unwrap_or("");
        let last = i + 1 == segments.len();
        match name {
            "." if last => out.push(String::new()),
            "." => {}
            ".." => {
                if out.len() > 1 {
                    out.pop();
                }
                if last {
                    out.push(String::new());
                }
            }
            _ => out.push(name.to_string()),
        }
    }
    out.join("/")
}

#[test]
fn paths_without_dot_segments_mean_the_same_to_the_app() {
    let segment = prop_oneof![
        3 => select(vec![
            ".", "..", "%2e", "%2E", "%2e%2e", ".%2e", "%2E.", "..;", "..;x", ";..", ".;",
            "%2e%2e;a", "..%3b", "%2e%2e%3Bx", "..%00", "%252e%252e", "a..b", ".well-known",
            "...", "static", "admin", "", "x", "%41",
        ])
        .prop_map(str::to_string),
        1 => "[a-z.%;25e]{0,5}",
    ];
    let sep = select(vec!["/", "/", "/", "\\", "%2f", "%2F", "%5c", "%5C", "//"]);
    let strategy = (
        select(vec!["/static/", "/favicon.ico", "/api/v1/health", "/", ""]),
        vec((segment, sep), 0..6),
    )
        .prop_map(|(start, parts)| {
            let mut path = start.to_string();
            for (seg, sep) in parts {
                path.push_str(&seg);
                path.push_str(sep);
            }
            if path.starts_with('/') {
                path
            } else {
                format!("/{path}")
            }
        });
    let prefixes: Vec<String> = ["/static/", "/favicon.ico", "/api/v1/health"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut config = base_config().clone();
    config.access.public = prefixes.clone();
    let tally = Tally::new("paths_without_dot_segments_mean_the_same_to_the_app");
    fuzz(
        "paths_without_dot_segments_mean_the_same_to_the_app",
        1,
        strategy,
        |path| {
            if has_dot_segments(&path) {
                tally.add("refused");
                return Ok(());
            }
            tally.add(if config.is_public(&path) {
                "public"
            } else {
                "private"
            });
            let view = app_view(&path);
            let plain = String::from_utf8_lossy(&percent_decode(&path))
                .replace('\\', "/")
                .split('/')
                .map(|s| s.split(';').next().unwrap_or(""))
                .collect::<Vec<_>>()
                .join("/");
            prop_assert_eq!(&view, &plain, "a dot segment survived in {:?}", path);
            if config.is_public(&path) {
                prop_assert!(
                    is_public_model(&prefixes, &view),
                    "{:?} is public to the gateway, {:?} to the app is not",
                    path,
                    view
                );
            }
            Ok(())
        },
    );
}

// ------------------------------------------------------------------------------------------
// `next` redirects
// ------------------------------------------------------------------------------------------

fn next_candidate() -> impl Strategy<Value = String> {
    let piece = select(vec![
        "/",
        "//",
        "\\",
        "/\\",
        "%2f",
        "%2F",
        "%5c",
        "%5C",
        "%09",
        "%0a",
        "%00",
        "http:",
        "https:",
        "javascript:",
        "evil.example",
        "@",
        ":",
        "?",
        "#",
        ".",
        "..",
        "\t",
        "\n",
        "\r",
        " ",
        "\u{0}",
        "\u{7f}",
        "\u{3000}",
        "\u{ff0f}",
        "\u{2044}",
        "a",
        "x=1",
        "&",
        "%",
        "%25",
        "é",
        "[::1]",
        "gw.example",
    ]);
    prop_oneof![
        3 => vec(piece.clone(), 0..8).prop_map(|p| p.concat()),
        2 => vec(piece, 0..6).prop_map(|p| format!("/{}", p.concat())),
        1 => ".{0,24}",
        1 => "[ -~]{0,24}",
    ]
}

/// Where a browser on the login page goes when it follows `location`.
fn follow(base: &url::Url, location: &str) -> Result<url::Url, TestCaseError> {
    base.join(location)
        .map_err(|e| TestCaseError::fail(format!("{location:?} is not a URL reference: {e}")))
}

fn same_site(base: &url::Url, target: &url::Url) -> Result<(), TestCaseError> {
    prop_assert_eq!(target.origin(), base.origin(), "left the site: {}", target);
    prop_assert!(target.username().is_empty() && target.password().is_none());
    Ok(())
}

/// `%2f` and `%5c` decoded, as the code's comment says some servers and browsers do.
fn decode_slashes(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let code = rest.get(i + 1..i + 3).map(str::to_ascii_lowercase);
        match code.as_deref() {
            Some("2f") => out.push('/'),
            Some("5c") => out.push('\\'),
            _ => {
                out.push('%');
                rest = &rest[i + 1..];
                continue;
            }
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    out
}

#[test]
fn an_accepted_next_never_leaves_the_site() {
    let bases: Vec<url::Url> = ["https://gw.example/login?x=1", "http://gw.example:8080/a/b"]
        .iter()
        .map(|u| url::Url::parse(u).expect("base URL"))
        .collect();
    let tally = Tally::new("an_accepted_next_never_leaves_the_site");
    fuzz(
        "an_accepted_next_never_leaves_the_site",
        1,
        next_candidate(),
        |next| {
            let Some(accepted) = safe_next(&next) else {
                tally.add("refused");
                return Ok(());
            };
            tally.add("accepted");
            prop_assert_eq!(accepted, next.as_str());
            prop_assert!(accepted.starts_with('/'));
            // It becomes a `Location` header: invalid bytes there would be a 500.
            prop_assert!(HeaderValue::from_str(accepted).is_ok(), "{accepted:?}");
            for base in &bases {
                same_site(base, &follow(base, accepted)?)?;
                same_site(base, &follow(base, &decode_slashes(accepted))?)?;
            }
            Ok(())
        },
    );
}

fn html_unescape(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let entity = [
            ("&amp;", '&'),
            ("&lt;", '<'),
            ("&gt;", '>'),
            ("&quot;", '"'),
            ("&#39;", '\''),
        ]
        .iter()
        .find(|(e, _)| rest.starts_with(e));
        match entity {
            Some((e, c)) => {
                out.push(*c);
                rest = &rest[e.len()..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn hidden_field(html: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker)? + marker.len();
    let end = html[start..].find('"')?;
    Some(html_unescape(&html[start..start + end]))
}

/// The whole browser round trip through the real routes: a page navigation without a session
/// is sent to login with `next`, the login page carries it in its form, and the login
/// redirects there. None of the three may lead off the site.
#[test]
fn the_login_round_trip_stays_on_the_site() {
    use crate::testing::{Req, TestApp, HOST};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let t = TestApp::new();
    let base = url::Url::parse(&format!("https://{HOST}/")).expect("base");
    let nonce_name = t.app.config.session.nonce_cookie_name();
    let strategy = prop_oneof![
        2 => next_candidate(),
        1 => "/[ -~]{0,24}",
    ];
    let tally = Tally::new("the_login_round_trip_stays_on_the_site");
    fuzz(
        "the_login_round_trip_stays_on_the_site",
        16,
        strategy,
        |next| {
            runtime.block_on(async {
                // 1. A page navigation to `next` as a request target, where it is one.
                let target = RequestHeader::build("GET", next.as_bytes(), None);
                tally.add(if target.is_ok() {
                    "request_target"
                } else {
                    "not_a_target"
                });
                tally.add(if safe_next(&next).is_some() {
                    "next_kept"
                } else {
                    "next_dropped"
                });
                if let Ok(mut head) = target {
                    head.insert_header("host", HOST).expect("host");
                    head.insert_header("accept", "text/html").expect("accept");
                    let reply = crate::routes::unauthenticated(&t.app, &head, false);
                    prop_assert_eq!(reply.status, 302);
                    let location = reply.header_value("location").expect("location");
                    prop_assert!(HeaderValue::from_str(location).is_ok());
                    same_site(&base, &follow(&base, location)?)?;
                    let target = follow(&base, location)?;
                    prop_assert_eq!(target.path(), "/login");
                    let carried = target
                        .query_pairs()
                        .find(|(k, _)| k == "next")
                        .map(|(_, v)| v.into_owned());
                    prop_assert_eq!(
                        carried.as_deref(),
                        Some(crate::web::request::path_and_query(&head))
                    );
                }
                // 2. The login page with that `next`.
                let encoded: String = form_urlencoded::byte_serialize(next.as_bytes()).collect();
                let page = t.serve(Req::page(&format!("/login?next={encoded}"))).await;
                prop_assert_eq!(page.status, 200);
                let field = hidden_field(&page.text(), "next").expect("next field");
                prop_assert_eq!(
                    field.as_str(),
                    safe_next(&next).unwrap_or(""),
                    "the page keeps exactly a safe next"
                );
                // 3. The form login, posting `next` back.
                let token = page.form_field("csrf_token").expect("csrf field");
                let nonce = page.cookie(&nonce_name).expect("nonce cookie");
                let reply = t
                    .serve(
                        Req::post_form(
                            "/login",
                            &[
                                ("username", "alice"),
                                ("password", "alice-pw"),
                                ("csrf_token", &token),
                                ("next", &next),
                            ],
                        )
                        .cookie(&format!("{nonce_name}={nonce}")),
                    )
                    .await;
                prop_assert_eq!(reply.status, 303, "{}", reply.text());
                let location = reply.header_value("location").expect("location");
                prop_assert_eq!(location, safe_next(&next).unwrap_or("/"));
                same_site(&base, &follow(&base, location)?)?;
                Ok(())
            })
        },
    );
}

// ------------------------------------------------------------------------------------------
// Content-Length framing
// ------------------------------------------------------------------------------------------

/// One `Content-Length` field value, and whether it is a plain length (1*DIGIT).
fn content_length_value() -> impl Strategy<Value = (String, bool)> {
    let plain = prop_oneof![
        any::<u64>().prop_map(|n| n.to_string()),
        (0u64..100).prop_map(|n| n.to_string()),
        "0{1,5}[0-9]{1,3}",
        "[0-9]{20,30}",
    ]
    .prop_map(|v| (v, true));
    let refused = prop_oneof![
        (0u64..100, 0u64..100, select(vec![",", ", ", " ,", ",,"]))
            .prop_map(|(a, b, sep)| format!("{a}{sep}{b}")),
        (0u64..100).prop_map(|n| format!("{n},")),
        select(vec![
            "", "+5", "-1", "0x10", " 5", "5 ", "5\t", "1e3", "５", "5;", "\"5\"", "5.0", "-0",
            "٣",
        ])
        .prop_map(str::to_string),
        "[ -~]{1,8}".prop_filter("not all digits", |s| !s.bytes().all(|b| b.is_ascii_digit())),
    ]
    .prop_map(|v| (v, false));
    prop_oneof![2 => plain, 3 => refused]
}

#[test]
fn content_length_is_one_plain_number_or_refused() {
    let strategy = (
        any::<bool>(),
        any::<bool>(),
        vec(content_length_value(), 0..4),
        select(vec!["GET", "POST", "PUT", "HEAD"]),
    );
    let tally = Tally::new("content_length_is_one_plain_number_or_refused");
    fuzz(
        "content_length_is_one_plain_number_or_refused",
        1,
        strategy,
        |(http11, host, lengths, method)| {
            let mut req = RequestHeader::build(method, b"/upload", None).expect("request");
            if !http11 {
                req.set_version(http::Version::HTTP_10);
            }
            if host {
                req.append_header("host", "gw.example").expect("host");
            }
            for (value, _) in &lengths {
                req.append_header("content-length", value.as_str())
                    .expect("valid header value");
            }
            let expected = if http11 && !host {
                Some("missing_host")
            } else if lengths.is_empty() || (lengths.len() == 1 && lengths[0].1) {
                None
            } else {
                Some("bad_content_length")
            };
            tally.add(expected.unwrap_or("accepted"));
            prop_assert_eq!(framing_problem(&req), expected, "{:?}", lengths);
            Ok(())
        },
    );
}

// ------------------------------------------------------------------------------------------
// Config and users files
// ------------------------------------------------------------------------------------------

const FUZZ_DIR: &str = "/fuzz";

/// An environment with a few files and variables and no disk: a mutated config naming
/// `/etc/passwd` as its users file reads nothing.
struct FuzzEnv {
    vars: HashMap<String, String>,
    files: HashMap<PathBuf, String>,
}

impl FuzzEnv {
    fn standard() -> FuzzEnv {
        let dir = Path::new(FUZZ_DIR);
        let secret = "0123456789abcdef-fuzz-secret-0123456789abcdef";
        FuzzEnv {
            vars: [
                ("REDIS_PASSWORD", "redis-password"),
                ("GATEWAY_SESSION_SECRET", secret),
                ("GATEWAY_IDENTITY_SECRET", secret),
                ("GATEWAY_ADMIN_TOKEN", "admin-token-0123456789"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            files: HashMap::from([
                (dir.join("users.toml"), crate::testing::users_toml()),
                (
                    dir.join("demo-users.toml"),
                    include_str!("../../config/demo-users.toml").to_string(),
                ),
                (dir.join("secret.txt"), format!("{secret}\n")),
                (
                    dir.join("login.html"),
                    "<form action=\"{{action}}\"><input name=\"csrf_token\" value=\"{{csrf_token}}\">\
                     <input name=\"next\" value=\"{{next}}\">{{error}}</form>"
                        .to_string(),
                ),
            ]),
        }
    }
}

impl Environment for FuzzEnv {
    fn var(&self, name: &str) -> Option<String> {
        self.vars.get(name).cloned()
    }

    fn read_file(&self, path: &Path) -> io::Result<String> {
        self.files
            .get(path)
            .cloned()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "not in the fuzz environment"))
    }
}

/// Every section and most keys, each with a valid value.
const RICH_CONFIG: &str = r#"[server]
listen = "127.0.0.1:8080"
admin_listen = "127.0.0.1:9090"
threads = 2
trusted_proxies = ["10.0.0.0/8", "192.0.2.1"]
drain_delay = "5s"
grace_period = "10s"
shutdown_timeout = "5s"

[upstream]
servers = ["127.0.0.1:5001", "localhost:5002"]
connect_timeout = "2s"
read_timeout = "60s"
health_check_interval = "5s"
app_session_cookie = "whalefall_session"
strip_cookies = ["remember_token"]

[redis]
url = "redis://127.0.0.1:6379/0"
password_env = "REDIS_PASSWORD"
key_prefix = "gw:"
timeout = "250ms"
connect_timeout = "1s"

[session]
cookie_name = "gateway_session"
secret_file = "secret.txt"
idle_timeout = "30m"
absolute_timeout = "8h"
touch_interval = "1m"
cookie_secure = true
host_prefix = true
max_per_user = 5
on_limit = "reject"
cache = true
cache_entries = 1000

[login]
path = "/auth/login"
logout_path = "/logout"
api_path = "/api/v1/auth/login"
app_logout_paths = ["/auth/logout"]
language = "en"
users_file = "users.toml"
template = "login.html"
max_failures_per_user = 10
max_failures_per_ip = 0
failure_window = "15m"

[access]
public = ["/static/", "/favicon.ico", "/api/v1/health"]

[identity]
signing_secret_env = "GATEWAY_IDENTITY_SECRET"

[admin]
token = "admin-token-0123456789"

[audit]
sink = "off"
stream_max_len = 10000
"#;

/// A config that takes its users from the app's database instead of a users file.
const DATABASE_CONFIG: &str = r#"[upstream]
servers = ["127.0.0.1:5001"]
[session]
secret = "0123456789abcdef0123456789abcdef"
cookie_secure = false
[login]
path = "/login"
[login.database]
url = "postgres://gateway@127.0.0.1:5432/app"
query = "SELECT id, username, password, role, is_active FROM users WHERE username = $1"
pool_size = 4
timeout = "2s"
"#;

fn base_configs() -> Vec<&'static str> {
    vec![
        RICH_CONFIG,
        DATABASE_CONFIG,
        include_str!("../../config/gateway.toml"),
        include_str!("../../config/demo.toml"),
    ]
}

/// Every problem names a file the config reader read, and a line inside it.
fn check_problems(
    error: &crate::errors::ConfigError,
    files: &[(&str, &str)],
) -> Result<(), TestCaseError> {
    prop_assert!(!error.problems.is_empty());
    for p in &error.problems {
        let Some(line) = p.line else {
            return Err(TestCaseError::fail(format!("no line: {p}")));
        };
        let Some((_, text)) = files.iter().find(|(name, _)| *name == p.file) else {
            return Err(TestCaseError::fail(format!("unknown file: {p}")));
        };
        let lines = text.split('\n').count();
        prop_assert!(
            (1..=lines).contains(&line),
            "line {} of {} lines: {}",
            line,
            lines,
            p
        );
    }
    Ok(())
}

/// What `check-config` promises about any config it accepts, read off the documentation.
fn check_accepted(c: &Config) -> Result<(), TestCaseError> {
    let s = &c.session;
    prop_assert!(s.secret.len() >= MIN_SECRET_BYTES);
    prop_assert!(s.idle_timeout >= Duration::from_secs(1));
    prop_assert!(s.absolute_timeout >= s.idle_timeout);
    prop_assert!(s.touch_interval <= s.idle_timeout);
    prop_assert!((1..=10_000_000).contains(&s.cache_entries));
    prop_assert!(s.max_per_user != Some(0));
    let bare = s
        .cookie_name
        .strip_prefix("__Host-")
        .unwrap_or(&s.cookie_name);
    for name in [bare.to_string(), format!("{bare}_csrf")] {
        prop_assert!(!name.is_empty());
        prop_assert!(name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)));
        prop_assert!(name != "session");
        prop_assert!(c.upstream.app_session_cookie.as_deref() != Some(name.as_str()));
        prop_assert!(!c.upstream.strip_cookies.contains(&name));
    }
    if s.cookie_name.starts_with("__Host-") {
        prop_assert!(s.cookie_secure);
    }
    prop_assert!(c.server.listen != c.server.admin_listen);
    prop_assert!((1..=1024).contains(&c.server.threads));
    prop_assert!(!c.upstream.servers.is_empty());
    for server in &c.upstream.servers {
        let (host, port) = server.rsplit_once(':').expect("HOST:PORT");
        prop_assert!(!host.is_empty() && !server.contains("://"));
        prop_assert!(port.parse::<u16>().is_ok_and(|p| p != 0));
    }
    prop_assert!(c.upstream.strip_cookies.len() <= 32);
    let r = &c.redis;
    prop_assert!(["redis://", "rediss://", "unix://"]
        .iter()
        .any(|s| r.url.starts_with(s)));
    prop_assert!(!r.timeout.is_zero());
    let l = &c.login;
    prop_assert!(l.users_file.is_some() || l.database.is_some());
    prop_assert!(l.throttle.window >= Duration::from_secs(1));
    let mut own = vec![l.path.as_str(), l.logout_path.as_str()];
    own.extend(l.api_path.as_deref());
    own.push(crate::routes::SESSIONS_PATH);
    own.push(crate::routes::HEALTH_PATH);
    for p in own
        .iter()
        .copied()
        .chain(l.app_logout_paths.iter().map(String::as_str))
    {
        prop_assert!(p.starts_with('/') && !p.starts_with("//"), "{p}");
        prop_assert!(!p.contains(['?', '#', ' ']), "{p}");
    }
    let distinct: HashSet<&&str> = own.iter().collect();
    prop_assert_eq!(
        distinct.len(),
        own.len(),
        "two endpoints share a path: {:?}",
        own
    );
    for p in &l.app_logout_paths {
        prop_assert!(!own.contains(&p.as_str()));
    }
    if let Some(db) = &l.database {
        let url = db.url.expose_str();
        prop_assert!(url.starts_with("postgres://") || url.starts_with("postgresql://"));
        prop_assert!(db.query.contains("$1"));
        prop_assert!((1..=256).contains(&db.pool_size));
    }
    for p in &c.access.public {
        prop_assert!(p.starts_with('/'));
    }
    if let Some(token) = &c.admin.token {
        prop_assert!(token.len() >= 16);
    }
    if let Some(key) = &c.identity.signing_secret {
        prop_assert!(key.len() >= MIN_SECRET_BYTES);
    }
    prop_assert!(c.audit.stream_max_len >= 1);
    Ok(())
}

fn config_files<'a>(config_text: &'a str, env: &'a FuzzEnv) -> Vec<(String, &'a str)> {
    let mut files: Vec<(String, &str)> = vec![("gw.toml".to_string(), config_text)];
    for (path, text) in &env.files {
        files.push((path.display().to_string(), text.as_str()));
    }
    files
}

fn check_config_text(text: &str, env: &FuzzEnv) -> Result<(), TestCaseError> {
    match Config::parse("gw.toml", text, Path::new(FUZZ_DIR), env) {
        Ok(config) => check_accepted(&config),
        Err(e) => {
            let files = config_files(text, env);
            let files: Vec<(&str, &str)> = files.iter().map(|(n, t)| (n.as_str(), *t)).collect();
            check_problems(&e, &files)
        }
    }
}

/// TOML-shaped noise: real section and key names, syntax pieces and odd values.
fn toml_soup() -> impl Strategy<Value = String> {
    let piece = select(vec![
        "[",
        "]",
        "[[",
        "]]",
        "=",
        " = ",
        "\"",
        "'",
        "'''",
        "\"\"\"",
        "\n",
        "\r\n",
        "#",
        "{",
        "}",
        ",",
        ".",
        " ",
        "server",
        "session",
        "login",
        "login.database",
        "upstream",
        "redis",
        "access",
        "admin",
        "audit",
        "identity",
        "listen",
        "secret",
        "servers",
        "users_file",
        "public",
        "threads",
        "idle_timeout",
        "cookie_name",
        "\"30m\"",
        "\"127.0.0.1:1\"",
        "[\"127.0.0.1:5001\"]",
        "-1",
        "0",
        "99999999999999999999",
        "9223372036854775807",
        "-9223372036854775808",
        "1.5",
        "inf",
        "nan",
        "true",
        "1979-05-27T07:32:00Z",
        "0x7f",
        "1_000",
        "\\u0000",
        "\\",
        "é",
        "\u{0}",
        "\u{feff}",
    ]);
    prop_oneof![
        3 => vec(piece, 0..40).prop_map(|p| p.concat()),
        1 => ".{0,120}",
    ]
}

#[test]
fn arbitrary_config_text_is_refused_with_lines_never_a_panic() {
    let env = FuzzEnv::standard();
    fuzz(
        "arbitrary_config_text_is_refused_with_lines_never_a_panic",
        2,
        toml_soup(),
        |text| check_config_text(&text, &env),
    );
}

#[derive(Debug, Clone)]
enum Mutation {
    DeleteLine(usize),
    DuplicateLine(usize),
    SwapLines(usize, usize),
    ReplaceValue(usize, String),
    InsertLine(usize, String),
    ReplaceChar(usize, char),
    Truncate(usize),
}

fn config_value() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => select(vec![
            "0", "-1", "1", "2", "1024", "1025", "4294967295", "4294967296",
            "9223372036854775807", "-9223372036854775808", "1.5", "inf", "nan", "true",
            "false", "\"\"", "\"0s\"", "\"1ms\"", "\"999999999999999999999d\"",
            "\"30 minutes\"", "\"18446744073709551615ms\"", "[]", "[\"\"]", "[1, 2]", "{}",
            "{ a = 1 }", "\"/\"", "\"//x\"", "\"/a b\"", "\"/login\"", "\"/logout\"",
            "\"/_gateway/health\"", "\"/_gateway/sessions\"", "\"session\"",
            "\"gateway_session\"", "\"whalefall_session\"", "\"remember_token\"",
            "\"__Host-x\"", "\"a;b\"", "\"redis://:pw@127.0.0.1:99999/0\"",
            "\"rediss://[::1\"", "\"unix:///tmp/r.sock\"", "\"redis://h/x\"", "\"http://h\"",
            "\"0.0.0.0:0\"", "\"127.0.0.1:9090\"", "\"127.0.0.1:8080\"", "\"[::1]:80\"",
            "\"10.0.0.0/33\"", "\"::/0\"", "[\"/static/\"]", "[\"static\"]", "\"file\"",
            "\"off\"", "\"stdout\"", "\"reject\"", "\"zh-CN\"", "\"fr\"",
            "\"postgres://u@h/db\"", "\"mysql://u@h/db\"", "\"select 1\"",
            "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"",
            "\"0123456789abcdef0123456789abcdef\"", "\"short\"", "1979-05-27T07:32:00Z",
            "'''\nmulti\n'''", "\"\\u0000\"", "\"é\"", "[\"127.0.0.1:0\"]",
            "[\"http://127.0.0.1:5001\"]", "[\":5001\"]", "\"users.toml\"", "\"nope.toml\"",
            "\"secret.txt\"", "\"login.html\"", "\"REDIS_PASSWORD\"", "\"UNSET_VAR\"",
        ])
        .prop_map(str::to_string),
        1 => any::<i64>().prop_map(|n| n.to_string()),
        1 => "\"[ -~]{0,12}\"",
        1 => "\"[0-9]{1,4}(ms|s|m|h|d)\"",
    ]
}

fn config_line() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => select(vec![
            "[server]", "[upstream]", "[session]", "[login]", "[login.database]", "[access]",
            "[identity]", "[admin]", "[audit]", "[redis]", "[unknown]", "[[users]]",
            "threads = 0", "listen = \"127.0.0.1:9090\"", "secret = \"short\"",
            "secret_env = \"NOPE\"", "secret_file = \"missing.txt\"",
            "users_file = \"nope.toml\"", "users_file = \"/etc/passwd\"",
            "users_file = \"demo-users.toml\"", "public = [\"static\"]",
            "cookie_name = \"session\"", "strip_cookies = [\"gateway_session\"]",
            "app_session_cookie = \"gateway_session\"", "idle_timeout = \"0s\"",
            "absolute_timeout = \"1s\"", "touch_interval = \"9h\"", "sink = \"file\"",
            "file = \"/nonexistent-dir/audit.log\"", "url = \"postgres://x\"",
            "query = \"select 1\"", "pool_size = 0", "token = \"short\"",
            "signing_secret = \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"", "max_per_user = 0",
            "cache_entries = 0", "api_path = \"/logout\"", "app_logout_paths = [\"/login\"]",
            "language = \"fr\"", "template = \"login.html\"", "template = \"missing.html\"",
            "x = 1", "a.b.c = 1", "\"quoted key\" = 1", "= 1", "[", "]]", "key = ",
            "🦀 = 1", "servers = []", "servers = [\"localhost:1\", \"b:0\"]", "host_prefix = false",
            "cookie_secure = false", "password = \"x\"", "password_file = \"secret.txt\"",
        ])
        .prop_map(str::to_string),
        1 => ("[a-z_]{1,12}", config_value()).prop_map(|(k, v)| format!("{k} = {v}")),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let index = any::<usize>();
    prop_oneof![
        2 => index.prop_map(Mutation::DeleteLine),
        1 => index.prop_map(Mutation::DuplicateLine),
        1 => (index, index).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
        4 => (index, config_value()).prop_map(|(i, v)| Mutation::ReplaceValue(i, v)),
        2 => (index, config_line()).prop_map(|(i, l)| Mutation::InsertLine(i, l)),
        2 => (index, any::<char>()).prop_map(|(i, c)| Mutation::ReplaceChar(i, c)),
        1 => index.prop_map(Mutation::Truncate),
    ]
}

fn mutate(text: &str, mutations: &[Mutation]) -> String {
    let mut lines: Vec<String> = text.split('\n').map(str::to_string).collect();
    for m in mutations {
        let n = lines.len().max(1);
        match m {
            Mutation::DeleteLine(i) if lines.len() > 1 => {
                lines.remove(i % n);
            }
            Mutation::DeleteLine(_) => {}
            Mutation::DuplicateLine(i) => {
                let line = lines.get(i % n).cloned().unwrap_or_default();
                lines.insert(i % n, line);
            }
            Mutation::SwapLines(a, b) if !lines.is_empty() => lines.swap(a % n, b % n),
            Mutation::SwapLines(..) => {}
            Mutation::ReplaceValue(i, value) => {
                if let Some(line) = lines.get_mut(i % n) {
                    if let Some((key, _)) = line.split_once('=') {
                        *line = format!("{key}= {value}");
                    }
                }
            }
            Mutation::InsertLine(i, line) => lines.insert(i % (lines.len() + 1), line.clone()),
            Mutation::ReplaceChar(i, c) => {
                let joined = lines.join("\n");
                let mut chars: Vec<char> = joined.chars().collect();
                if !chars.is_empty() {
                    let at = i % chars.len();
                    chars[at] = *c;
                }
                let changed: String = chars.into_iter().collect();
                lines = changed.split('\n').map(str::to_string).collect();
            }
            Mutation::Truncate(i) => {
                let joined = lines.join("\n");
                let keep = i % (joined.chars().count() + 1);
                let cut: String = joined.chars().take(keep).collect();
                lines = cut.split('\n').map(str::to_string).collect();
            }
        }
    }
    lines.join("\n")
}

#[test]
fn mutated_configs_are_refused_with_lines_or_obey_every_limit() {
    let env = FuzzEnv::standard();
    for (i, text) in base_configs().iter().enumerate() {
        if let Err(e) = Config::parse("gw.toml", text, Path::new(FUZZ_DIR), &env) {
            panic!("base config {i} must be valid:\n{e}");
        }
    }
    let strategy = (select(base_configs()), vec(mutation(), 1..5));
    let tally = Tally::new("mutated_configs_are_refused_with_lines_or_obey_every_limit");
    fuzz(
        "mutated_configs_are_refused_with_lines_or_obey_every_limit",
        4,
        strategy,
        |(base, mutations)| {
            let text = mutate(base, &mutations);
            let accepted = Config::parse("gw.toml", &text, Path::new(FUZZ_DIR), &env).is_ok();
            tally.add(if accepted { "accepted" } else { "refused" });
            check_config_text(&text, &env)
        },
    );
}

// ------------------------------------------------------------------------------------------
// Users file
// ------------------------------------------------------------------------------------------

#[derive(Debug, serde::Deserialize)]
struct Vector {
    hash: String,
}

/// Real hashes made by the Python libraries (tests/vectors), all within the limits.
fn vector_hashes() -> &'static [String] {
    static HASHES: OnceLock<Vec<String>> = OnceLock::new();
    HASHES.get_or_init(|| {
        let vectors: Vec<Vector> =
            serde_json::from_str(include_str!("../../tests/vectors/password_hashes.json"))
                .expect("tests/vectors/password_hashes.json");
        vectors.into_iter().map(|v| v.hash).collect()
    })
}

#[derive(Debug, Clone)]
enum Field {
    Absent,
    Str(String),
    Int(i64),
    Bool(bool),
    List(Vec<String>),
}

impl Field {
    fn to_toml(&self) -> Option<toml::Value> {
        match self {
            Field::Absent => None,
            Field::Str(s) => Some(toml::Value::String(s.clone())),
            Field::Int(n) => Some(toml::Value::Integer(*n)),
            Field::Bool(b) => Some(toml::Value::Boolean(*b)),
            Field::List(items) => Some(toml::Value::Array(
                items.iter().cloned().map(toml::Value::String).collect(),
            )),
        }
    }
}

#[derive(Debug, Clone)]
struct UserSpec {
    username: Field,
    id: Field,
    hash: Field,
    roles: Field,
    disabled: Field,
    extra: bool,
}

/// What the users file promises, field by field: `None` if this entry must be refused,
/// otherwise (trimmed username, id, roles, disabled).
fn user_model(u: &UserSpec) -> Option<(String, String, Vec<String>, bool)> {
    if u.extra {
        return None;
    }
    let username = match &u.username {
        Field::Str(s) if !s.trim().is_empty() => s.trim().to_string(),
        _ => return None,
    };
    let id = match &u.id {
        Field::Str(s) => s.clone(),
        Field::Int(n) => n.to_string(),
        _ => return None,
    };
    if id.is_empty() || id.contains([':', ',', '\n', '{', '}']) {
        return None;
    }
    match &u.hash {
        Field::Str(h) if vector_hashes().contains(h) || h.starts_with("pbkdf2:sha256:1$") => {}
        _ => return None,
    }
    let roles = match &u.roles {
        Field::Absent => Vec::new(),
        Field::List(r) if r.iter().all(|r| !r.is_empty() && !r.contains(',')) => r.clone(),
        _ => return None,
    };
    let disabled = match &u.disabled {
        Field::Absent => false,
        Field::Bool(b) => *b,
        _ => return None,
    };
    Some((username, id, roles, disabled))
}

fn user_spec() -> impl Strategy<Value = UserSpec> {
    let username = prop_oneof![
        6 => select(vec!["alice", "bob", " alice ", "carol", "jürgen", "a b"])
            .prop_map(|s| Field::Str(s.to_string())),
        1 => select(vec!["", "  ", "\t"]).prop_map(|s| Field::Str(s.to_string())),
        1 => "[ -~]{0,8}".prop_map(Field::Str),
        1 => Just(Field::Absent),
        1 => any::<i64>().prop_map(Field::Int),
    ];
    let id = prop_oneof![
        4 => (0i64..6).prop_map(Field::Int),
        4 => select(vec!["1", "2", "u-3", "", "a:b", "a,b", "{x}", "a\nb", "é"])
            .prop_map(|s| Field::Str(s.to_string())),
        1 => any::<i64>().prop_map(Field::Int),
        1 => any::<bool>().prop_map(Field::Bool),
        1 => Just(Field::Absent),
    ];
    let valid_hash = select(vector_hashes().to_vec()).prop_map(Field::Str);
    let hash = prop_oneof![
        6 => valid_hash,
        2 => "[0-9a-f]{64}".prop_map(|h| Field::Str(format!("pbkdf2:sha256:1$salt${h}"))),
        1 => select(vec![
            "plaintext", "", "$2b$03$aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "pbkdf2:sha256:0$salt$00", "scrypt:3:8:1$s$00", "$argon2id$x",
        ])
        .prop_map(|s| Field::Str(s.to_string())),
        1 => Just(Field::Absent),
        1 => any::<i64>().prop_map(Field::Int),
    ];
    let roles = prop_oneof![
        3 => Just(Field::Absent),
        4 => vec(select(vec!["admin", "user", "x", "", "a,b"]).prop_map(str::to_string), 0..3)
            .prop_map(Field::List),
        1 => Just(Field::Str("admin".to_string())),
    ];
    let disabled = prop_oneof![
        3 => Just(Field::Absent),
        3 => any::<bool>().prop_map(Field::Bool),
        1 => Just(Field::Str("yes".to_string())),
    ];
    (
        username,
        id,
        hash,
        roles,
        disabled,
        prop::bool::weighted(0.05),
    )
        .prop_map(|(username, id, hash, roles, disabled, extra)| UserSpec {
            username,
            id,
            hash,
            roles,
            disabled,
            extra,
        })
}

fn render_users(users: &[UserSpec]) -> String {
    let entries: Vec<toml::Value> = users
        .iter()
        .map(|u| {
            let mut table = toml::Table::new();
            for (key, field) in [
                ("username", &u.username),
                ("id", &u.id),
                ("password_hash", &u.hash),
                ("roles", &u.roles),
                ("disabled", &u.disabled),
            ] {
                if let Some(v) = field.to_toml() {
                    table.insert(key.to_string(), v);
                }
            }
            if u.extra {
                table.insert("role".to_string(), toml::Value::String("admin".into()));
            }
            toml::Value::Table(table)
        })
        .collect();
    let mut root = toml::Table::new();
    root.insert("users".to_string(), toml::Value::Array(entries));
    toml::to_string(&root).expect("a table serialises")
}

#[test]
fn users_files_are_read_exactly_as_the_model_says() {
    let tally = Tally::new("users_files_are_read_exactly_as_the_model_says");
    fuzz(
        "users_files_are_read_exactly_as_the_model_says",
        2,
        vec(user_spec(), 0..5),
        |users| {
            let text = render_users(&users);
            let models: Vec<_> = users.iter().map(user_model).collect();
            let mut names = HashSet::new();
            let mut ids = HashSet::new();
            let expected_ok = models.iter().all(|m| match m {
                Some((name, id, _, _)) => names.insert(name.clone()) & ids.insert(id.clone()),
                None => false,
            });
            tally.add(if expected_ok { "valid" } else { "invalid" });
            match UserTable::parse("users.toml", &text) {
                Ok(table) => {
                    prop_assert!(expected_ok, "accepted:\n{}", text);
                    prop_assert_eq!(table.len(), users.len());
                    for (name, id, roles, disabled) in models.into_iter().flatten() {
                        let user = table.find(&name).expect("every listed user");
                        prop_assert_eq!(&user.identity.id, &id);
                        prop_assert_eq!(&user.identity.roles, &roles);
                        prop_assert_eq!(user.disabled, disabled);
                    }
                }
                Err(e) => {
                    prop_assert!(!expected_ok, "refused ({}):\n{}", e, text);
                    check_problems(&e, &[("users.toml", &text)])?;
                }
            }
            Ok(())
        },
    );
}

#[test]
fn arbitrary_users_files_are_refused_with_lines_never_a_panic() {
    let text = prop_oneof![
        2 => toml_soup(),
        2 => (vec(user_spec(), 0..3), vec(mutation(), 1..4))
            .prop_map(|(users, m)| mutate(&render_users(&users), &m)),
    ];
    fuzz(
        "arbitrary_users_files_are_refused_with_lines_never_a_panic",
        2,
        text,
        |text| {
            if let Err(e) = UserTable::parse("users.toml", &text) {
                check_problems(&e, &[("users.toml", &text)])?;
            }
            Ok(())
        },
    );
}

// ------------------------------------------------------------------------------------------
// Password hashes
// ------------------------------------------------------------------------------------------

/// The cost an accepted hash string states, read independently of the parser: every one
/// must be within `limits`.
fn check_cost_within_limits(text: &str) -> Result<(), TestCaseError> {
    use limits::*;
    if let Some(rest) = text.strip_prefix("$argon2") {
        let fields: Vec<&str> = rest.split('$').collect();
        // PHC: $argon2id[$v=19]$m=..,t=..,p=..$salt$hash; a missing parameter takes the
        // crate's default, which is inside every limit.
        let params = fields
            .iter()
            .find(|f| f.contains('=') && !f.starts_with("v="));
        let mut max = HashMap::new();
        for kv in params.map(|p| p.split(',')).into_iter().flatten() {
            if let Some((k, v)) = kv.split_once('=') {
                let n: u64 = v.parse().unwrap_or(u64::MAX);
                let e = max.entry(k).or_insert(0);
                *e = n.max(*e);
            }
        }
        let get = |k: &str| max.get(k).copied().unwrap_or(0);
        prop_assert!(get("m") <= u64::from(ARGON2_MAX_MEMORY_KIB), "{text}");
        prop_assert!(get("t") <= u64::from(ARGON2_MAX_PASSES), "{text}");
        prop_assert!(get("p") <= u64::from(ARGON2_MAX_LANES), "{text}");
    } else if text.starts_with("$2") {
        let cost: u32 = text
            .get(4..6)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| TestCaseError::fail(format!("no cost in accepted {text:?}")))?;
        prop_assert!(
            (BCRYPT_MIN_COST..=BCRYPT_MAX_COST).contains(&cost),
            "{text}"
        );
    } else if let Some(rest) = text.strip_prefix("pbkdf2:") {
        let method = rest.split('$').next().unwrap_or("");
        if let Some(n) = method.split(':').nth(1) {
            let n: u64 = n.parse().unwrap_or(u64::MAX);
            prop_assert!(
                (1..=u64::from(PBKDF2_MAX_ITERATIONS)).contains(&n),
                "{text}"
            );
        }
    } else if let Some(rest) = text.strip_prefix("scrypt:") {
        let method = rest.split('$').next().unwrap_or("");
        let numbers: Vec<u128> = method
            .split(':')
            .map(|n| n.parse().unwrap_or(u128::MAX))
            .collect();
        prop_assert_eq!(numbers.len(), 3, "{}", text);
        let (n, r, p) = (numbers[0], numbers[1], numbers[2]);
        let memory = 128u128.saturating_mul(r).saturating_mul(n);
        prop_assert!(memory <= u128::from(SCRYPT_MAX_MEMORY_BYTES), "{text}");
        prop_assert!(p <= u128::from(SCRYPT_MAX_PARALLELISM), "{text}");
    } else {
        return Err(TestCaseError::fail(format!(
            "accepted an unknown format: {text:?}"
        )));
    }
    Ok(())
}

#[test]
fn arbitrary_hash_strings_never_panic_or_exceed_the_limits() {
    let prefix = select(vec![
        "$argon2id$",
        "$argon2i$",
        "$argon2d$",
        "$argon2id$v=19$",
        "$2a$",
        "$2b$",
        "$2y$",
        "$2x$",
        "pbkdf2:",
        "pbkdf2:sha256:",
        "pbkdf2:sha512:",
        "scrypt:",
        "",
        "$",
    ]);
    let tail = prop_oneof![
        ".{0,80}",
        "[0-9a-zA-Z$=,:./+]{0,90}",
        vec(
            select(vec![
                "m=",
                "t=",
                "p=",
                ",",
                "$",
                ":",
                "1",
                "0",
                "8",
                "16",
                "4294967295",
                "99999999999",
                "c2FsdHNhbHQ",
                "YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXo0NTY3ODk",
                "00ff",
                "salt",
            ]),
            0..16
        )
        .prop_map(|p| p.concat()),
    ];
    fuzz(
        "arbitrary_hash_strings_never_panic_or_exceed_the_limits",
        1,
        (prefix, tail),
        |(prefix, tail)| {
            let text = format!("{prefix}{tail}");
            if PasswordHash::parse(&text).is_ok() {
                check_cost_within_limits(&text)?;
            }
            Ok(())
        },
    );
}

const BCRYPT_ALPHABET: &[u8] = b"./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

fn interesting_u64() -> impl Strategy<Value = u64> {
    prop_oneof![
        3 => 0u64..40,
        2 => (0u32..64).prop_map(|k| 1u64 << k),
        2 => select(vec![
            7, 8, 9, 15, 16, 17, 1023, 1024, 19_456, 65_536, 262_143, 262_144, 262_145,
            1_000_000, 4_999_999, 5_000_000, 5_000_001, 1 << 20, (1 << 20) + 1,
            u64::from(u32::MAX), u64::from(u32::MAX) + 1, u64::MAX,
        ]),
        1 => any::<u64>(),
    ]
}

/// A hash string built from its parts, and whether the documented format and limits accept
/// it.
fn structured_hash() -> impl Strategy<Value = (String, bool)> {
    use limits::*;
    // Canonical unpadded base64 of random bytes, as every argon2 implementation writes it.
    let b64 = |n: usize| {
        vec(any::<u8>(), n).prop_map(|b| {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(b)
        })
    };
    let argon2 = (
        select(vec!["argon2id", "argon2i", "argon2d", "argon2x"]),
        select(vec![None, Some(19u32), Some(19), Some(16), Some(20)]),
        prop_oneof![interesting_u64(), 8u64..=u64::from(ARGON2_MAX_MEMORY_KIB)],
        prop_oneof![interesting_u64(), 1u64..=u64::from(ARGON2_MAX_PASSES)],
        prop_oneof![interesting_u64(), 1u64..=u64::from(ARGON2_MAX_LANES)],
        b64(16),
        b64(32),
    )
        .prop_map(|(alg, v, m, t, p, salt, hash)| {
            let version = v.map(|v| format!("$v={v}")).unwrap_or_default();
            let text = format!("${alg}{version}$m={m},t={t},p={p}${salt}${hash}");
            let ok = alg != "argon2x"
                && matches!(v, None | Some(19))
                && (1..=u64::from(ARGON2_MAX_LANES)).contains(&p)
                && (1..=u64::from(ARGON2_MAX_PASSES)).contains(&t)
                && u128::from(m) >= 8 * u128::from(p)
                && m <= u64::from(ARGON2_MAX_MEMORY_KIB);
            (text, ok)
        });
    let bcrypt = (
        select(vec!["2a", "2b", "2y", "2x", "2"]),
        prop_oneof![
            4 => (0u32..100).prop_map(|c| format!("{c:02}")),
            1 => select(vec!["4", "004", "ab", "", "1a"]).prop_map(str::to_string),
        ],
        vec(select(BCRYPT_ALPHABET.to_vec()), 53),
        select(vec![None, Some('!'), Some('$'), Some('é')]),
        0usize..53,
        select(vec![0i8, 0, 0, -1, 1]),
    )
        .prop_map(|(prefix, cost, mut body, bad, at, len_delta)| {
            let mut text = String::from_utf8(std::mem::take(&mut body)).expect("ASCII alphabet");
            if let Some(c) = bad {
                text.replace_range(at..at + 1, &c.to_string());
            }
            match len_delta {
                -1 => {
                    text.pop();
                }
                1 => text.push('a'),
                _ => {}
            }
            let ok = ["2a", "2b", "2y"].contains(&prefix)
                && cost.len() == 2
                && cost
                    .parse::<u32>()
                    .is_ok_and(|c| (BCRYPT_MIN_COST..=BCRYPT_MAX_COST).contains(&c))
                && bad.is_none()
                && len_delta == 0;
            (format!("${prefix}${cost}${text}"), ok)
        });
    let hex = |bytes: usize| vec(any::<u8>(), bytes).prop_map(hex::encode);
    let pbkdf2 = (
        select(vec!["sha256", "sha512", "sha1", "", "SHA256"]),
        prop_oneof![
            4 => interesting_u64().prop_map(|n| Some(n.to_string())),
            1 => Just(None),
            1 => select(vec!["-1", "abc", "", "1.5"]).prop_map(|s| Some(s.to_string())),
        ],
        prop::bool::weighted(0.1),
        select(vec!["salt", "", "sält", "s:a"]),
        prop_oneof![
            3 => Just(None),
            1 => select(vec![-2i32, -1, 1, 2, 32]).prop_map(Some),
        ],
        prop::bool::weighted(0.05),
        hex(64),
    )
        .prop_map(|(digest, iterations, extra, salt, delta, bad_hex, full)| {
            let digest_hex: i32 = match digest {
                "sha512" => 128,
                _ => 64,
            };
            let wanted = match delta {
                None => digest_hex,
                Some(d) => (digest_hex + d).max(0),
            };
            let mut hash: String = full.repeat(2).chars().take(wanted as usize).collect();
            if bad_hex && !hash.is_empty() {
                hash.replace_range(0..1, "g");
            }
            let mut method = digest.to_string();
            if let Some(n) = &iterations {
                method.push(':');
                method.push_str(n);
            }
            if extra {
                method.push_str(":x");
            }
            let iterations_ok = match &iterations {
                None => true,
                Some(n) => {
                    n.bytes().all(|b| b.is_ascii_digit())
                        && n.parse::<u32>()
                            .is_ok_and(|n| (1..=PBKDF2_MAX_ITERATIONS).contains(&n))
                }
            };
            let ok = ["sha256", "sha512"].contains(&digest)
                && iterations_ok
                && !extra
                && !salt.is_empty()
                && wanted == digest_hex
                && !bad_hex;
            (format!("pbkdf2:{method}${salt}${hash}"), ok)
        });
    let scrypt = (
        prop_oneof![interesting_u64(), (1u32..=20).prop_map(|k| 1u64 << k)],
        prop_oneof![interesting_u64(), 1u64..=16],
        prop_oneof![interesting_u64(), 1u64..=16],
        select(vec!["salt", "", "s:a"]),
        select(vec![128usize, 128, 128, 64, 126, 130]),
        hex(65),
    )
        .prop_map(|(n, r, p, salt, hex_len, full)| {
            let hash: String = full.chars().take(hex_len).collect();
            let fits = |v: u64| u32::try_from(v).is_ok();
            let log_n = u64::from(n.trailing_zeros());
            let ok = n >= 2
                && n.is_power_of_two()
                && fits(r)
                && fits(p)
                && r >= 1
                && p >= 1
                && !salt.is_empty()
                && hex_len == 128
                && u128::from(n) * u128::from(r) * 128 <= u128::from(SCRYPT_MAX_MEMORY_BYTES)
                && p <= u64::from(SCRYPT_MAX_PARALLELISM)
                && log_n < 16 * r
                && u128::from(r) * u128::from(p) < (1 << 30);
            (format!("scrypt:{n}:{r}:{p}${salt}${hash}"), ok)
        });
    prop_oneof![argon2, bcrypt, pbkdf2, scrypt]
}

/// Whether the bcrypt crate can decode the salt and digest of an accepted hash, which
/// `bcrypt::verify` does before any hashing (so this costs nothing at cost 16).
fn bcrypt_decodes(text: &str) -> bool {
    use base64::Engine;
    let body = &text[7..];
    bcrypt::BASE_64.decode(&body[..22]).is_ok() && bcrypt::BASE_64.decode(&body[22..]).is_ok()
}

#[test]
fn structured_hashes_are_accepted_exactly_when_valid_and_within_limits() {
    let tally = Tally::new("structured_hashes_are_accepted_exactly_when_valid_and_within_limits");
    fuzz(
        "structured_hashes_are_accepted_exactly_when_valid_and_within_limits",
        1,
        structured_hash(),
        |(text, ok)| {
            // A well-formed bcrypt string is valid only if the bcrypt crate (the verifier) can
            // decode its salt and digest.
            let ok = ok && (!text.starts_with("$2") || bcrypt_decodes(&text));
            let parsed = PasswordHash::parse(&text);
            tally.add(if ok { "valid" } else { "invalid" });
            prop_assert_eq!(parsed.is_ok(), ok, "{:?}: {:?}", text, parsed);
            if let Ok(hash) = parsed {
                check_cost_within_limits(&text)?;
                if let PasswordHash::Bcrypt(b) = &hash {
                    // An accepted hash must be one the verifier can actually use.
                    if !bcrypt_decodes(b) {
                        return Err(TestCaseError::fail(format!("accepted but unusable: {b}")));
                    }
                }
            }
            Ok(())
        },
    );
}

#[test]
fn hashes_made_by_the_libraries_verify_and_damaged_ones_do_not() {
    let strategy = (
        // At most 64 bytes: bcrypt only reads the first 72.
        ".{0,16}",
        "[ -~]{1,16}",
        1u32..50,
        prop_oneof![
            6 => Just(0u8),
            3 => Just(1u8),
            1 => Just(2u8),
        ],
        any::<usize>(),
    );
    fuzz(
        "hashes_made_by_the_libraries_verify_and_damaged_ones_do_not",
        8,
        strategy,
        |(password, salt, iterations, kind, at)| {
            let salt = salt.replace('$', "_");
            let text = match kind {
                0 => {
                    let mut out = [0u8; 32];
                    pbkdf2::pbkdf2::<hmac::Hmac<sha2::Sha256>>(
                        password.as_bytes(),
                        salt.as_bytes(),
                        iterations,
                        &mut out,
                    )
                    .expect("any key length");
                    format!("pbkdf2:sha256:{iterations}${salt}${}", hex::encode(out))
                }
                1 => {
                    let log_n = (iterations % 4 + 1) as u8;
                    let params = scrypt::Params::new(log_n, 1, 1, 64).expect("small params");
                    let mut out = [0u8; 64];
                    scrypt::scrypt(password.as_bytes(), salt.as_bytes(), &params, &mut out)
                        .expect("scrypt");
                    format!("scrypt:{}:1:1${salt}${}", 1u32 << log_n, hex::encode(out))
                }
                _ => bcrypt::hash(&password, 4).expect("bcrypt"),
            };
            let hash = PasswordHash::parse(&text)
                .map_err(|e| TestCaseError::fail(format!("refused {text:?}: {e}")))?;
            prop_assert!(hash.verify(&password), "{text}");
            let wrong = format!("{password}x");
            prop_assert!(!hash.verify(&wrong));
            // One changed digest character: refused when read or never matching.
            let digest_start = text.rfind('$').map_or(0, |i| i + 1);
            let digest_len = text.len() - digest_start;
            prop_assume!(digest_len > 0);
            let i = digest_start + at % digest_len;
            let mut damaged = text.clone().into_bytes();
            damaged[i] = match damaged[i] {
                b'0' => b'1',
                b'.' => b'/',
                _ => b'0',
            };
            let damaged = String::from_utf8(damaged).expect("ASCII");
            if let Ok(h) = PasswordHash::parse(&damaged) {
                prop_assert!(!h.verify(&password), "{damaged}");
            }
            Ok(())
        },
    );
}

// ------------------------------------------------------------------------------------------
// Durations
// ------------------------------------------------------------------------------------------

#[test]
fn durations_add_up_or_are_refused() {
    let term = (
        prop_oneof![
            4 => (0u64..100_000).prop_map(|n| n.to_string()),
            1 => any::<u64>().prop_map(|n| n.to_string()),
            1 => "[0-9]{19,25}",
            // Never empty and never starting with a digit-free unit, so a bad term cannot
            // merge with its neighbour into a good one ("5m" + "s").
            1 => select(vec!["-1", "1.5", "1,5"]).prop_map(str::to_string),
        ],
        select(vec![
            "ms", "s", "m", "h", "d", "us", "M", "S", " s", "min", "x",
        ]),
    );
    let strategy = (vec(term, 0..4), "[ \t]{0,2}", "[ \t]{0,2}");
    let tally = Tally::new("durations_add_up_or_are_refused");
    fuzz(
        "durations_add_up_or_are_refused",
        1,
        strategy,
        |(terms, before, after)| {
            let text = format!(
                "{before}{}{after}",
                terms
                    .iter()
                    .map(|(n, u)| format!("{n}{u}"))
                    .collect::<String>()
            );
            let mut total: Option<u128> = (!terms.is_empty()).then_some(0);
            for (n, unit) in &terms {
                let scale: Option<u128> = match *unit {
                    "ms" => Some(1),
                    "s" => Some(1_000),
                    "m" => Some(60_000),
                    "h" => Some(3_600_000),
                    "d" => Some(86_400_000),
                    _ => None,
                };
                let number = (!n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                    .then(|| n.parse::<u64>().ok())
                    .flatten();
                total = match (total, number, scale) {
                    (Some(t), Some(n), Some(s)) if u128::from(n) * s <= u128::from(u64::MAX) => {
                        Some(t + u128::from(n) * s)
                    }
                    _ => None,
                };
            }
            tally.add(if total.is_some() { "valid" } else { "invalid" });
            let expected = total.map(|ms| {
                Duration::from_secs((ms / 1000) as u64) + Duration::from_millis((ms % 1000) as u64)
            });
            match (parse_duration(&text), expected) {
                (Ok(d), Some(e)) => prop_assert_eq!(d, e, "{:?}", text),
                (Err(_), None) => {}
                (got, want) => {
                    return Err(TestCaseError::fail(format!(
                        "{text:?}: got {got:?}, model says {want:?}"
                    )))
                }
            }
            Ok(())
        },
    );
}
