//! Password hashes the gateway can check, in the formats Flask apps already store them:
//! argon2id (PHC string), bcrypt (`$2a$`, `$2b$`, `$2y$`, as Flask-Bcrypt writes them), and
//! Werkzeug's `pbkdf2:sha256:N$salt$hex` and `scrypt:n:r:p$salt$hex` (`generate_password_hash`).
//!
//! Verifying is deliberately slow CPU work: callers run it on a blocking thread (see
//! [`crate::auth::credentials`]), never on the proxy's async workers.

use argon2::password_hash::{PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use hmac::Hmac;
use sha2::{Sha256, Sha512};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordHash {
    Argon2(String),
    Bcrypt(String),
    WerkzeugPbkdf2 {
        digest: Pbkdf2Digest,
        iterations: u32,
        salt: String,
        hash: Vec<u8>,
    },
    WerkzeugScrypt {
        log_n: u8,
        r: u32,
        p: u32,
        salt: String,
        hash: Vec<u8>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pbkdf2Digest {
    Sha256,
    Sha512,
}

/// The most work one hash may ask for. A stored hash beyond them is refused where it is read
/// (check-config and start-up for the users file; the login, as "unusable", for the app's
/// table), because a single unauthenticated login would otherwise tie up a worker for minutes
/// or exhaust memory (the decoy for unknown users copies a real user's cost). Every default of
/// the libraries Flask apps use is well inside them.
pub mod limits {
    /// argon2: memory in KiB (256 MiB), passes, lanes.
    pub const ARGON2_MAX_MEMORY_KIB: u32 = 256 * 1024;
    pub const ARGON2_MAX_PASSES: u32 = 10;
    pub const ARGON2_MAX_LANES: u32 = 8;
    /// bcrypt: cost (2^cost rounds); Flask-Bcrypt's default is 12.
    pub const BCRYPT_MIN_COST: u32 = 4;
    pub const BCRYPT_MAX_COST: u32 = 16;
    /// Werkzeug pbkdf2 iterations; its default was 600,000 and then 1,000,000.
    pub const PBKDF2_MAX_ITERATIONS: u32 = 5_000_000;
    /// Werkzeug scrypt: memory 128·r·N bytes (128 MiB) and parallelism; its default is
    /// N = 2^15, r = 8, p = 1 (32 MiB).
    pub const SCRYPT_MAX_MEMORY_BYTES: u64 = 128 * 1024 * 1024;
    pub const SCRYPT_MAX_PARALLELISM: u32 = 16;
}

impl PasswordHash {
    /// Recognises a stored hash; the error says which formats are supported.
    pub fn parse(text: &str) -> Result<PasswordHash, String> {
        if text.starts_with("$argon2") {
            return parse_argon2(text);
        }
        if ["$2a$", "$2b$", "$2y$"].iter().any(|p| text.starts_with(p)) {
            return parse_bcrypt(text);
        }
        if let Some(rest) = text.strip_prefix("pbkdf2:") {
            return parse_werkzeug_pbkdf2(rest);
        }
        if let Some(rest) = text.strip_prefix("scrypt:") {
            return parse_werkzeug_scrypt(rest);
        }
        Err(
            "unrecognised hash format: use argon2id ($argon2id$...), bcrypt ($2b$...), \
             or Werkzeug pbkdf2:sha256:N$salt$hex / scrypt:n:r:p$salt$hex"
                .to_string(),
        )
    }

    /// Whether `password` matches. Malformed input is simply "no".
    pub fn verify(&self, password: &str) -> bool {
        match self {
            PasswordHash::Argon2(phc) => argon2::PasswordHash::new(phc).is_ok_and(|parsed| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            }),
            PasswordHash::Bcrypt(text) => bcrypt::verify(password, text).unwrap_or(false),
            PasswordHash::WerkzeugPbkdf2 {
                digest,
                iterations,
                salt,
                hash,
            } => {
                let mut out = vec![0u8; hash.len()];
                let derived = match digest {
                    Pbkdf2Digest::Sha256 => pbkdf2::pbkdf2::<Hmac<Sha256>>(
                        password.as_bytes(),
                        salt.as_bytes(),
                        *iterations,
                        &mut out,
                    ),
                    Pbkdf2Digest::Sha512 => pbkdf2::pbkdf2::<Hmac<Sha512>>(
                        password.as_bytes(),
                        salt.as_bytes(),
                        *iterations,
                        &mut out,
                    ),
                };
                derived.is_ok() && constant_time_eq(&out, hash)
            }
            PasswordHash::WerkzeugScrypt {
                log_n,
                r,
                p,
                salt,
                hash,
            } => {
                let Ok(params) = scrypt::Params::new(*log_n, *r, *p, hash.len()) else {
                    return false;
                };
                let mut out = vec![0u8; hash.len()];
                scrypt::scrypt(password.as_bytes(), salt.as_bytes(), &params, &mut out).is_ok()
                    && constant_time_eq(&out, hash)
            }
        }
    }

    /// A hash of a random password with the same algorithm and cost as `self`: checking a
    /// password against it takes as long as against a real user's hash, so an unknown username
    /// cannot be told apart by timing.
    pub fn decoy(&self) -> PasswordHash {
        let random = random_password();
        match self {
            PasswordHash::Argon2(phc) => argon2::PasswordHash::new(phc)
                .ok()
                .and_then(|parsed| argon2::Params::try_from(&parsed).ok())
                .and_then(|params| {
                    let algorithm = argon2::Algorithm::Argon2id;
                    let hasher = Argon2::new(algorithm, argon2::Version::V0x13, params);
                    hash_with(&hasher, &random)
                })
                .map_or_else(default_decoy, PasswordHash::Argon2),
            PasswordHash::Bcrypt(text) => {
                let cost = text
                    .parse::<bcrypt::HashParts>()
                    .map(|p| p.get_cost())
                    .unwrap_or(bcrypt::DEFAULT_COST);
                bcrypt::hash(&random, cost).map_or_else(|_| default_decoy(), PasswordHash::Bcrypt)
            }
            PasswordHash::WerkzeugPbkdf2 {
                digest,
                iterations,
                hash,
                ..
            } => PasswordHash::WerkzeugPbkdf2 {
                digest: *digest,
                iterations: *iterations,
                salt: random_password(),
                hash: vec![0u8; hash.len()],
            },
            PasswordHash::WerkzeugScrypt {
                log_n, r, p, hash, ..
            } => PasswordHash::WerkzeugScrypt {
                log_n: *log_n,
                r: *r,
                p: *p,
                salt: random_password(),
                hash: vec![0u8; hash.len()],
            },
        }
    }
}

/// The argon2id PHC string for `password` with the argon2 crate's defaults (19 MiB, t=2, p=1),
/// the parameters OWASP recommends as a floor.
pub fn hash_argon2id(password: &str) -> Option<String> {
    hash_with(&Argon2::default(), password)
}

fn hash_with(hasher: &Argon2, password: &str) -> Option<String> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).ok()?;
    let salt = SaltString::encode_b64(&salt).ok()?;
    hasher
        .hash_password(password.as_bytes(), &salt)
        .ok()
        .map(|h| h.to_string())
}

/// A decoy when no real hash is available to copy the cost from.
pub fn default_decoy() -> PasswordHash {
    PasswordHash::Argon2(hash_argon2id(&random_password()).unwrap_or_default())
}

fn random_password() -> String {
    let mut bytes = [0u8; 16];
    let _ = getrandom::fill(&mut bytes);
    hex::encode(bytes)
}

fn parse_argon2(text: &str) -> Result<PasswordHash, String> {
    use limits::*;
    let parsed =
        argon2::PasswordHash::new(text).map_err(|e| format!("not a valid argon2 hash: {e}"))?;
    if argon2::Algorithm::try_from(parsed.algorithm).is_err() {
        return Err("not a valid argon2 hash: unknown variant".to_string());
    }
    if parsed.version.is_some_and(|v| v != 0x13) {
        return Err("not a valid argon2 hash: only version 19 (v=19) is supported".to_string());
    }
    if parsed.hash.is_none() || parsed.salt.is_none() {
        return Err("not a valid argon2 hash: the salt or the hash is missing".to_string());
    }
    // The limits are checked on the raw numbers first: argon2 0.5's own check multiplies `p`
    // before it bounds it, which overflows (a panic in debug builds) for a huge `p`.
    let cost = |name: &str| parsed.params.get_decimal(name).unwrap_or(0);
    let (m, t, p) = (cost("m"), cost("t"), cost("p"));
    if m > ARGON2_MAX_MEMORY_KIB || t > ARGON2_MAX_PASSES || p > ARGON2_MAX_LANES {
        return Err(format!(
            "argon2 cost too high (m={m}, t={t}, p={p}): at most m={ARGON2_MAX_MEMORY_KIB} (KiB), \
             t={ARGON2_MAX_PASSES}, p={ARGON2_MAX_LANES}"
        ));
    }
    argon2::Params::try_from(&parsed).map_err(|e| format!("unsupported argon2 parameters: {e}"))?;
    Ok(PasswordHash::Argon2(text.to_string()))
}

/// `$2b$CC$` + 22 characters of salt + 31 of hash, in bcrypt's base64 alphabet.
fn parse_bcrypt(text: &str) -> Result<PasswordHash, String> {
    use limits::*;
    let bad = || "not a valid bcrypt hash ($2b$CC$ and 53 characters)".to_string();
    let rest = &text.get(4..).ok_or_else(bad)?;
    let (cost, body) = rest.split_once('$').ok_or_else(bad)?;
    let valid_body = body.len() == 53
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'/');
    if cost.len() != 2 || !cost.bytes().all(|b| b.is_ascii_digit()) || !valid_body {
        return Err(bad());
    }
    let cost: u32 = cost.parse().map_err(|_| bad())?;
    if !(BCRYPT_MIN_COST..=BCRYPT_MAX_COST).contains(&cost) {
        return Err(format!(
            "bcrypt cost {cost} is out of range: use {BCRYPT_MIN_COST} to {BCRYPT_MAX_COST}"
        ));
    }
    text.parse::<bcrypt::HashParts>()
        .map_err(|e| format!("not a valid bcrypt hash: {e}"))?;
    // bcrypt's own verify decodes salt and digest strictly; one that does not decode (bits
    // set past the last byte) could never log anyone in, so it is refused here, visibly.
    use base64::Engine;
    let (salt, digest) = body.split_at(22);
    if bcrypt::BASE_64.decode(salt).is_err() || bcrypt::BASE_64.decode(digest).is_err() {
        return Err(
            "not a valid bcrypt hash: the salt or the digest is not canonical bcrypt base64"
                .to_string(),
        );
    }
    Ok(PasswordHash::Bcrypt(text.to_string()))
}

fn parse_werkzeug_pbkdf2(rest: &str) -> Result<PasswordHash, String> {
    let bad = || "not a valid Werkzeug pbkdf2 hash (pbkdf2:sha256:ITERATIONS$SALT$HEX)".to_string();
    let (method, tail) = rest.split_once('$').ok_or_else(bad)?;
    let (salt, hex_hash) = tail.split_once('$').ok_or_else(bad)?;
    let mut parts = method.split(':');
    let digest = match parts.next() {
        Some("sha256") => Pbkdf2Digest::Sha256,
        Some("sha512") => Pbkdf2Digest::Sha512,
        _ => return Err("Werkzeug pbkdf2 hashes must use sha256 or sha512".to_string()),
    };
    let iterations = match parts.next() {
        Some(n) => n.parse::<u32>().map_err(|_| bad())?,
        // Werkzeug's default when the method string omits it (an old Werkzeug's default).
        None => 260_000,
    };
    let hash = hex::decode(hex_hash).map_err(|_| bad())?;
    let digest_len = match digest {
        Pbkdf2Digest::Sha256 => 32,
        Pbkdf2Digest::Sha512 => 64,
    };
    if iterations == 0 || salt.is_empty() || hash.len() != digest_len || parts.next().is_some() {
        return Err(bad());
    }
    if iterations > limits::PBKDF2_MAX_ITERATIONS {
        return Err(format!(
            "pbkdf2 with {iterations} iterations is too costly: at most {}",
            limits::PBKDF2_MAX_ITERATIONS
        ));
    }
    Ok(PasswordHash::WerkzeugPbkdf2 {
        digest,
        iterations,
        salt: salt.to_string(),
        hash,
    })
}

fn parse_werkzeug_scrypt(rest: &str) -> Result<PasswordHash, String> {
    let bad = || "not a valid Werkzeug scrypt hash (scrypt:N:R:P$SALT$HEX)".to_string();
    let (method, tail) = rest.split_once('$').ok_or_else(bad)?;
    let (salt, hex_hash) = tail.split_once('$').ok_or_else(bad)?;
    let numbers: Vec<u64> = method
        .split(':')
        .map(|n| n.parse::<u64>().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    let [n, r, p] = numbers[..] else {
        return Err(bad());
    };
    if n < 2 || !n.is_power_of_two() {
        return Err("scrypt N must be a power of two".to_string());
    }
    let hash = hex::decode(hex_hash).map_err(|_| bad())?;
    let log_n = n.trailing_zeros() as u8;
    let (r, p) = (
        u32::try_from(r).map_err(|_| bad())?,
        u32::try_from(p).map_err(|_| bad())?,
    );
    // Werkzeug derives 64 bytes.
    if salt.is_empty() || hash.len() != 64 {
        return Err(bad());
    }
    let memory = 128u64.saturating_mul(u64::from(r)).saturating_mul(n);
    if memory > limits::SCRYPT_MAX_MEMORY_BYTES || p > limits::SCRYPT_MAX_PARALLELISM {
        return Err(format!(
            "scrypt N={n} r={r} p={p} is too costly: at most {} MiB (128·r·N) and p={}",
            limits::SCRYPT_MAX_MEMORY_BYTES / (1024 * 1024),
            limits::SCRYPT_MAX_PARALLELISM
        ));
    }
    scrypt::Params::new(log_n, r, p, hash.len())
        .map_err(|e| format!("unsupported scrypt parameters: {e}"))?;
    Ok(PasswordHash::WerkzeugScrypt {
        log_n,
        r,
        p,
        salt: salt.to_string(),
        hash,
    })
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_argon2_hashes_verify() {
        let h = PasswordHash::parse(&hash_argon2id("s3cret").unwrap()).unwrap();
        assert!(h.verify("s3cret"));
        assert!(!h.verify("s3cret "));
    }

    #[test]
    fn garbage_is_refused_with_a_reason() {
        for bad in [
            "",
            "plain",
            "$2b$",
            "pbkdf2:md5:1$a$00",
            "scrypt:3:8:1$s$00",
            "$argon2id$x",
        ] {
            assert!(PasswordHash::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn decoys_cost_the_same_and_match_nothing() {
        let real = PasswordHash::parse("pbkdf2:sha256:1000$salt$00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff").unwrap();
        match real.decoy() {
            PasswordHash::WerkzeugPbkdf2 { iterations, .. } => assert_eq!(iterations, 1000),
            other => panic!("decoy changed algorithm: {other:?}"),
        }
        let bcrypt = PasswordHash::Bcrypt(bcrypt::hash("x", 4).unwrap());
        let decoy = bcrypt.decoy();
        assert!(matches!(&decoy, PasswordHash::Bcrypt(t) if t.starts_with("$2b$04$")));
        assert!(!decoy.verify("x"));
    }

    /// One entry of tests/vectors/password_hashes.json: a hash made by the real Python library
    /// a Flask app stores it with (tests/vectors/make_vectors.py).
    #[derive(Debug, serde::Deserialize)]
    struct Vector {
        scheme: String,
        library: String,
        password: String,
        hash: String,
    }

    fn vectors() -> Vec<Vector> {
        serde_json::from_str(include_str!("../../../tests/vectors/password_hashes.json"))
            .expect("tests/vectors/password_hashes.json")
    }

    /// Vector scheme prefix, and the word every parse error for that family names.
    const FAMILIES: &[(&str, &str)] = &[
        ("argon2", "argon2"),
        ("bcrypt", "bcrypt"),
        ("werkzeug-pbkdf2", "pbkdf2"),
        ("werkzeug-scrypt", "scrypt"),
    ];

    fn family_of(v: &Vector) -> (&'static str, &'static str) {
        *FAMILIES
            .iter()
            .find(|(prefix, _)| v.scheme.starts_with(prefix))
            .unwrap_or_else(|| panic!("scheme {} has no family here", v.scheme))
    }

    /// Broken copies of a good hash: its last character cut off, and its cost parameter
    /// (argon2 `m`, bcrypt cost, pbkdf2 iterations, scrypt N) made non-numeric.
    fn malformed_variants(v: &Vector) -> Vec<String> {
        let h = &v.hash;
        let garbled = match family_of(v).0 {
            "argon2" => h.replacen("m=", "m=x", 1),
            "bcrypt" => format!("{}xx{}", &h[..4], &h[6..]),
            "werkzeug-pbkdf2" => h.replacen("sha256:", "sha256:x", 1),
            _ => h.replacen("scrypt:", "scrypt:x", 1),
        };
        assert_ne!(&garbled, h, "{}: nothing garbled", v.scheme);
        vec![h[..h.len() - 1].to_string(), garbled]
    }

    /// Every vector of one family parses as that family, verifies with its password and not
    /// with a wrong one; broken copies are refused with a reason naming the family.
    fn check_family(family: &str) {
        let vs: Vec<Vector> = vectors()
            .into_iter()
            .filter(|v| family_of(v).0 == family)
            .collect();
        assert!(!vs.is_empty(), "no vectors for {family}");
        let mut failures = Vec::new();
        for v in &vs {
            let what = format!("{} ({}) {}", v.scheme, v.library, v.hash);
            let parsed = match PasswordHash::parse(&v.hash) {
                Ok(parsed) => parsed,
                Err(e) => {
                    failures.push(format!("refused ({e}): {what}"));
                    continue;
                }
            };
            let right_kind = match (&parsed, family) {
                (PasswordHash::Argon2(_), "argon2") | (PasswordHash::Bcrypt(_), "bcrypt") => true,
                (PasswordHash::WerkzeugPbkdf2 { digest, .. }, "werkzeug-pbkdf2") => {
                    *digest == Pbkdf2Digest::Sha256
                }
                (PasswordHash::WerkzeugScrypt { .. }, "werkzeug-scrypt") => true,
                _ => false,
            };
            if !right_kind {
                failures.push(format!("parsed as {parsed:?}: {what}"));
            }
            if !parsed.verify(&v.password) {
                failures.push(format!("right password refused: {what}"));
            }
            if parsed.verify(&format!("{}x", v.password)) {
                failures.push(format!("wrong password accepted: {what}"));
            }
            let word = family_of(v).1;
            for bad in malformed_variants(v) {
                match PasswordHash::parse(&bad) {
                    Ok(p) => failures.push(format!("malformed {bad:?} accepted as {p:?}")),
                    Err(e) if !e.contains(word) => {
                        failures.push(format!("malformed {bad:?}: reason {e:?} names no {word}"))
                    }
                    Err(_) => {}
                }
            }
        }
        assert!(failures.is_empty(), "{family}:\n{}", failures.join("\n"));
    }

    #[test]
    fn every_vector_belongs_to_a_tested_family() {
        for v in vectors() {
            family_of(&v);
        }
    }

    #[test]
    fn argon2_hashes_from_argon2_cffi() {
        check_family("argon2");
    }

    #[test]
    fn bcrypt_2a_2b_2y_hashes_from_python_bcrypt() {
        check_family("bcrypt");
    }

    /// The 10^6-round vector takes seconds in a debug build: the PBKDF2 loop is instantiated
    /// in this crate, which the dev profile does not optimise.
    #[test]
    fn werkzeug_pbkdf2_sha256_hashes() {
        check_family("werkzeug-pbkdf2");
    }

    #[test]
    fn werkzeug_scrypt_hashes() {
        check_family("werkzeug-scrypt");
    }

    /// Hashes that would tie up a worker or exhaust memory on one unauthenticated login.
    #[test]
    fn absurd_costs_are_refused_with_the_limit() {
        let salt = "c2FsdHNhbHRzYWx0c2FsdA";
        let tag = "YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXo0NTY3ODk";
        let digest64 = "00".repeat(64);
        for (bad, says) in [
            (
                format!("$argon2id$v=19$m=4294967295,t=2,p=1${salt}${tag}"),
                "argon2 cost too high",
            ),
            (
                format!("$argon2id$v=19$m=19456,t=100,p=1${salt}${tag}"),
                "argon2 cost too high",
            ),
            // argon2's own check overflows on a huge `p` (a panic in debug builds).
            (
                format!("$argon2id$v=19$m=8,t=1,p=536870912${salt}${tag}"),
                "argon2 cost too high",
            ),
            // Bits past the last byte of the salt: bcrypt's verifier would refuse it forever.
            (
                format!("$2b$04${}/{}", "a".repeat(21), "a".repeat(31)),
                "not canonical bcrypt base64",
            ),
            (format!("$2b$31${}", "a".repeat(53)), "bcrypt cost 31"),
            (format!("$2b$03${}", "a".repeat(53)), "bcrypt cost 3"),
            (
                format!("scrypt:1073741824:8:1$salt${digest64}"),
                "too costly",
            ),
            (format!("scrypt:32768:8:64$salt${digest64}"), "too costly"),
            (
                format!("pbkdf2:sha256:4294967295$salt${}", "00".repeat(32)),
                "too costly",
            ),
        ] {
            let err = PasswordHash::parse(&bad).expect_err(&bad);
            assert!(err.contains(says), "{bad}: {err}");
        }
        // The libraries' own defaults are well inside the limits.
        for fine in [
            format!("$argon2id$v=19$m=19456,t=2,p=1${salt}${tag}"),
            format!("$2b$12${}.{}", "a".repeat(21), "a".repeat(31)),
            format!("scrypt:32768:8:1$salt${digest64}"),
            format!("pbkdf2:sha256:1000000$salt${}", "00".repeat(32)),
        ] {
            assert!(PasswordHash::parse(&fine).is_ok(), "{fine}");
        }
    }

    /// Malformed hashes are refused where they are read, not accepted and then never matched.
    #[test]
    fn malformed_hashes_are_refused() {
        let salt = "c2FsdHNhbHRzYWx0c2FsdA";
        let tag = "YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXo0NTY3ODk";
        for bad in [
            format!("$argon2id$v=19$m=19456,t=2,p=1${salt}"),
            format!("$argon2xx$v=19$m=19456,t=2,p=1${salt}${tag}"),
            format!("$argon2id$v=99$m=19456,t=2,p=1${salt}${tag}"),
            format!("$2b$12${}", "a".repeat(52)),
            format!("$2b$12${}$", "a".repeat(53)),
            format!("$2b$4${}", "a".repeat(53)),
            format!("$2b$12${}!", "a".repeat(52)),
            // A truncated digest would even verify a password against its prefix.
            format!("pbkdf2:sha256:1000$salt${}", "00".repeat(16)),
            format!("scrypt:32768:8:1$salt${}", "00".repeat(16)),
        ] {
            assert!(PasswordHash::parse(&bad).is_err(), "{bad}");
        }
    }
}
