//! Access rules (`[[access.rules]]`): which paths need which roles, which are public, which
//! are closed to everyone. One decision for the proxy path and the forward-auth endpoint.
//!
//! A rule's `path` covers that path and everything below it, on segment boundaries (`/admin`
//! covers `/admin` and `/admin/x`, never `/adminx`); written with a trailing `/` it covers only
//! what is below. Rules match the path as the app will read it: percent-escapes decoded
//! (`%2F` included), `\` read as `/`, runs of `/` collapsed, so `//admin/x`, `/admin//x` and
//! `/%61dmin` cannot slip past `/admin`. (Dot segments never get this far: the proxy refuses
//! them with 400.) Of the rules that match, the most specific wins: the longest path, then a
//! rule naming the request's method over one for every method.
//!
//! `[access] public` keeps its own, older meaning (see `Config::is_public`) and applies where
//! no rule matches.

use std::borrow::Cow;

/// What a rule asks of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// Proxied without a session.
    Public,
    /// Refused to everyone, signed in or not.
    Deny,
    /// A signed-in user with at least one of these roles.
    Roles(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessRule {
    /// As written (`/admin` or `/admin/`), already canonical.
    pub path: String,
    /// Upper-case methods; empty = every method.
    pub methods: Vec<String>,
    pub requirement: Requirement,
    /// Where the rule is in the config file, for messages.
    pub line: usize,
}

impl AccessRule {
    fn covers(&self, path: &str) -> bool {
        if self.path.ends_with('/') {
            return path.starts_with(self.path.as_str());
        }
        path.strip_prefix(self.path.as_str())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }

    fn applies_to(&self, method: &str) -> bool {
        self.methods.is_empty() || self.methods.iter().any(|m| m == method)
    }
}

/// The rule that decides `method path`, if any matches.
pub fn decide<'r>(rules: &'r [AccessRule], method: &str, path: &str) -> Option<&'r AccessRule> {
    if rules.is_empty() {
        return None;
    }
    let path = canonical(path);
    rules
        .iter()
        .filter(|r| r.applies_to(method) && r.covers(&path))
        .max_by_key(|r| (r.path.len(), !r.methods.is_empty()))
}

/// The path as the app will read it (see the module doc).
pub fn canonical(path: &str) -> Cow<'_, str> {
    if !path.contains(['%', '\\']) && !path.contains("//") {
        return Cow::Borrowed(path);
    }
    let decoded = percent_decode(path).replace('\\', "/");
    let mut out = String::with_capacity(decoded.len());
    for c in decoded.chars() {
        if c == '/' && out.ends_with('/') {
            continue;
        }
        out.push(c);
    }
    Cow::Owned(out)
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What the gateway asks of one request, rules first, then `[access] public`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict<'r> {
    Public,
    Deny,
    /// Any signed-in user.
    SignedIn,
    /// A signed-in user with at least one of these roles.
    Roles(&'r [String]),
}

impl Verdict<'_> {
    /// Whether a signed-in user with `roles` may go on.
    pub fn admits(self, roles: &[String]) -> bool {
        match self {
            Verdict::Public | Verdict::SignedIn => true,
            Verdict::Deny => false,
            Verdict::Roles(wanted) => has_any_role(roles, wanted),
        }
    }
}

pub fn verdict<'c>(config: &'c crate::config::Config, method: &str, path: &str) -> Verdict<'c> {
    match decide(&config.access.rules, method, path).map(|r| &r.requirement) {
        Some(Requirement::Public) => Verdict::Public,
        Some(Requirement::Deny) => Verdict::Deny,
        Some(Requirement::Roles(roles)) => Verdict::Roles(roles),
        None if config.is_public(path) => Verdict::Public,
        None => Verdict::SignedIn,
    }
}

/// The audit reason of a denial: method and path (capped; the query is left out).
pub fn denied_request(method: &str, path: &str) -> String {
    let path: String = path.chars().take(200).collect();
    format!("{method} {path}")
}

/// Whether `roles` satisfies `wanted` (at least one in common).
pub fn has_any_role(roles: &[String], wanted: &[String]) -> bool {
    wanted.iter().any(|w| roles.iter().any(|r| r == w))
}

/// Rules that can never decide anything because an earlier one with the same path and the
/// same methods always wins: (the shadowed rule, the one that shadows it).
pub fn shadowed(rules: &[AccessRule]) -> Vec<(&AccessRule, &AccessRule)> {
    let mut found = Vec::new();
    for (i, later) in rules.iter().enumerate() {
        let mut methods = later.methods.clone();
        methods.sort();
        if let Some(earlier) = rules[..i].iter().find(|e| {
            let mut m = e.methods.clone();
            m.sort();
            e.path == later.path && m == methods
        }) {
            found.push((later, earlier));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(path: &str, methods: &[&str], requirement: Requirement) -> AccessRule {
        AccessRule {
            path: path.to_string(),
            methods: methods.iter().map(|m| m.to_string()).collect(),
            requirement,
            line: 1,
        }
    }

    fn admins() -> Requirement {
        Requirement::Roles(vec!["admin".into()])
    }

    #[test]
    fn rules_match_on_segment_boundaries_whatever_the_spelling() {
        let rules = [rule("/admin", &[], admins())];
        for path in [
            "/admin",
            "/admin/",
            "/admin/x",
            "//admin/x",
            "/admin//x",
            "/%61dmin/x",
            "/admin%2Fx",
            "%2Fadmin",
            "/\\admin",
        ] {
            assert!(decide(&rules, "GET", path).is_some(), "{path}");
        }
        for path in ["/adminx", "/admi", "/", "/x/admin", "/Admin"] {
            assert!(decide(&rules, "GET", path).is_none(), "{path}");
        }
    }

    #[test]
    fn a_trailing_slash_covers_only_what_is_below() {
        let rules = [rule("/reports/", &[], admins())];
        assert!(decide(&rules, "GET", "/reports/q").is_some());
        assert!(decide(&rules, "GET", "/reports/").is_some());
        assert!(decide(&rules, "GET", "/reports").is_none());
        assert!(decide(&rules, "GET", "/reportsx/q").is_none());
    }

    #[test]
    fn the_most_specific_rule_wins() {
        let rules = [
            rule("/admin", &[], admins()),
            rule("/admin/status", &[], Requirement::Public),
            rule("/admin", &["DELETE"], Requirement::Deny),
        ];
        assert_eq!(
            decide(&rules, "GET", "/admin/users").unwrap().requirement,
            admins()
        );
        assert_eq!(
            decide(&rules, "GET", "/admin/status").unwrap().requirement,
            Requirement::Public
        );
        assert_eq!(
            decide(&rules, "DELETE", "/admin/users")
                .unwrap()
                .requirement,
            Requirement::Deny
        );
        // The longer path still wins over a method-specific shorter one.
        assert_eq!(
            decide(&rules, "DELETE", "/admin/status")
                .unwrap()
                .requirement,
            Requirement::Public
        );
    }

    #[test]
    fn a_rule_with_the_same_path_and_methods_as_an_earlier_one_is_shadowed() {
        let rules = [
            rule("/admin", &["POST", "DELETE"], admins()),
            rule("/admin", &["DELETE", "POST"], Requirement::Deny),
            rule("/admin", &[], Requirement::Deny),
        ];
        let found = shadowed(&rules);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0.requirement, Requirement::Deny);
    }

    #[test]
    fn roles_need_one_in_common() {
        let have = vec!["user".to_string(), "auditor".to_string()];
        assert!(has_any_role(&have, &["admin".into(), "auditor".into()]));
        assert!(!has_any_role(&have, &["admin".into()]));
        assert!(!has_any_role(&[], &["admin".into()]));
    }
}
