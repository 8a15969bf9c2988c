//! A span-aware reader over a parsed TOML document that collects every problem instead of
//! stopping at the first.
//!
//! serde's `deny_unknown_fields` stops at the first unknown key; operators fixing a config want the
//! whole list. So each section is read key by key: [`Section::get`] deserialises one value with
//! serde (reporting a wrong type at that value's line) and [`Section::finish`] reports every key
//! nobody asked for, with a "did you mean" hint. Nothing here panics on any input.

use std::cell::RefCell;
use std::fmt;
use std::ops::{Range, RangeInclusive};
use std::time::Duration;

use serde::de::DeserializeOwned;
use toml::de::{DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

use crate::errors::{ConfigError, ConfigProblem};

/// The source text and the problems found in it so far.
pub struct Document<'i> {
    file: String,
    source: &'i str,
    problems: RefCell<Vec<ConfigProblem>>,
}

impl<'i> Document<'i> {
    pub fn new(file: impl Into<String>, source: &'i str) -> Self {
        Document {
            file: file.into(),
            source,
            problems: RefCell::new(Vec::new()),
        }
    }

    /// Parses the text; a syntax error is reported (with its line) and yields `None`.
    pub fn parse(&self) -> Option<Spanned<DeTable<'i>>> {
        match DeTable::parse(self.source) {
            Ok(table) => Some(table),
            Err(e) => {
                let line = e.span().map(|s| self.line_of(s.start));
                self.report(line, "", format!("invalid TOML: {}", e.message().trim()));
                None
            }
        }
    }

    pub fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.source.len());
        self.source.as_bytes()[..end]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1
    }

    pub fn report(&self, line: Option<usize>, key: &str, message: impl Into<String>) {
        self.problems.borrow_mut().push(ConfigProblem {
            file: self.file.clone(),
            line,
            key: key.to_string(),
            message: message.into(),
        });
    }

    pub fn report_at(&self, span: &Range<usize>, key: &str, message: impl Into<String>) {
        self.report(Some(self.line_of(span.start)), key, message);
    }

    /// Adds problems found in another file the config names (e.g. the users file), as they are.
    pub fn report_all(&self, problems: Vec<ConfigProblem>) {
        self.problems.borrow_mut().extend(problems);
    }

    pub fn into_result<T>(self, value: T) -> Result<T, ConfigError> {
        let problems = self.problems.into_inner();
        if problems.is_empty() {
            Ok(value)
        } else {
            Err(ConfigError { problems })
        }
    }

    /// The top level, read as a section whose "keys" are the section names.
    pub fn root<'d>(&'d self, table: &'d Spanned<DeTable<'i>>) -> Section<'d, 'i> {
        Section {
            doc: self,
            name: String::new(),
            table: table.get_ref(),
            span: table.span(),
            used: RefCell::new(Vec::new()),
        }
    }
}

/// One `[section]` (or the root table) being read.
pub struct Section<'d, 'i> {
    doc: &'d Document<'i>,
    name: String,
    table: &'d DeTable<'i>,
    span: Range<usize>,
    used: RefCell<Vec<String>>,
}

impl<'d, 'i> Section<'d, 'i> {
    /// How a key is named in messages: `[session] idle_timeout`.
    pub fn label(&self, key: &str) -> String {
        if self.name.is_empty() {
            format!("[{key}]")
        } else {
            format!("[{}] {key}", self.name)
        }
    }

    fn entry(&self, key: &str) -> Option<&'d Spanned<DeValue<'i>>> {
        self.used.borrow_mut().push(key.to_string());
        self.table
            .iter()
            .find(|(k, _)| k.get_ref().as_ref() == key)
            .map(|(_, v)| v)
    }

    pub fn has(&self, key: &str) -> bool {
        self.table.iter().any(|(k, _)| k.get_ref().as_ref() == key)
    }

    pub fn line_of_key(&self, key: &str) -> Option<usize> {
        self.table
            .iter()
            .find(|(k, _)| k.get_ref().as_ref() == key)
            .map(|(k, _)| self.doc.line_of(k.span().start))
    }

    /// Adds problems found in another file this section names (e.g. the users file), as they are.
    pub fn report_all(&self, problems: Vec<ConfigProblem>) {
        self.doc.report_all(problems);
    }

    /// Reports a problem about `key` at its line (or the section's line if it is absent).
    pub fn problem(&self, key: &str, message: impl Into<String>) {
        let line = self
            .line_of_key(key)
            .unwrap_or_else(|| self.doc.line_of(self.span.start));
        self.doc.report(Some(line), &self.label(key), message);
    }

    /// The value of `key` deserialised as `T`; a wrong type is reported and yields `None`.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Option<T> {
        let value = self.entry(key)?;
        match T::deserialize(ValueDeserializer::from(value.clone())) {
            Ok(v) => Some(v),
            Err(e) => {
                self.doc.report_at(
                    &value.span(),
                    &self.label(key),
                    e.message().trim().to_string(),
                );
                None
            }
        }
    }

    pub fn get_or<T: DeserializeOwned>(&self, key: &str, default: T) -> T {
        self.get(key).unwrap_or(default)
    }

    pub fn required<T: DeserializeOwned>(&self, key: &str) -> Option<T> {
        if !self.has(key) {
            self.problem(key, "is required");
            self.entry(key);
            return None;
        }
        self.get(key)
    }

    /// A string value converted by `parse`, whose error message is reported at the value.
    pub fn parse_with<T>(
        &self,
        key: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let raw: String = self.get(key)?;
        match parse(&raw) {
            Ok(v) => Some(v),
            Err(message) => {
                self.problem(key, message);
                None
            }
        }
    }

    /// An integer in `range`, or `default` when absent. A wrong type or a value outside `range`
    /// is reported (the message states the range) and also yields `default`.
    pub fn integer_in<T: ConfigInt>(&self, key: &str, range: RangeInclusive<T>, default: T) -> T {
        self.integer_opt(key, range).unwrap_or(default)
    }

    /// An optional integer in `range`: `None` when absent (or reported as for `integer_in`).
    pub fn integer_opt<T: ConfigInt>(&self, key: &str, range: RangeInclusive<T>) -> Option<T> {
        let n = self.get::<i64>(key)?;
        self.check_range(key, n, &range, false)
    }

    /// Like [`Section::integer_in`] for a limit that `0` switches off (`None`); absent gives
    /// `default`.
    pub fn integer_or_off<T: ConfigInt>(
        &self,
        key: &str,
        range: RangeInclusive<T>,
        default: Option<T>,
    ) -> Option<T> {
        match self.get::<i64>(key) {
            Some(0) => None,
            Some(n) => self.check_range(key, n, &range, true).or(default),
            None => default,
        }
    }

    /// `n` if it is in `range`; otherwise reports what is allowed (`off`: 0 is allowed too).
    fn check_range<T: ConfigInt>(
        &self,
        key: &str,
        n: i64,
        range: &RangeInclusive<T>,
        off: bool,
    ) -> Option<T> {
        let converted = T::try_from(n).ok();
        if let Some(v) = converted.filter(|v| range.contains(v)) {
            return Some(v);
        }
        let (lo, hi) = (*range.start(), *range.end());
        let allowed = match (off, hi == T::MAX) {
            _ if converted.is_none() && n > 0 => format!("at most {}", T::MAX),
            (true, true) if T::try_from(1).ok() == Some(lo) => "0 (off) or more".to_string(),
            (true, true) => format!("0 (off), or {lo} or more"),
            (true, false) => format!("0 (off), or between {lo} and {hi}"),
            (false, true) => format!("{lo} or more"),
            (false, false) => format!("between {lo} and {hi}"),
        };
        self.problem(key, format!("is {n}; must be {allowed}"));
        None
    }

    pub fn duration(&self, key: &str, default: Duration) -> Duration {
        self.parse_with(key, parse_duration).unwrap_or(default)
    }

    /// A nested table such as `[login.database]`; `None` when absent or not a table.
    pub fn section(&self, key: &str) -> Option<Section<'d, 'i>> {
        let value = self.entry(key)?;
        match value.get_ref() {
            DeValue::Table(table) => Some(Section {
                doc: self.doc,
                name: if self.name.is_empty() {
                    key.to_string()
                } else {
                    format!("{}.{key}", self.name)
                },
                table,
                span: value.span(),
                used: RefCell::new(Vec::new()),
            }),
            _ => {
                self.problem(key, "must be a table");
                None
            }
        }
    }

    /// An array of tables such as `[[access.rules]]`, each named `access.rules[N]` (from 1) in
    /// messages; empty when absent, reported when not an array of tables.
    pub fn sections(&self, key: &str) -> Vec<Section<'d, 'i>> {
        let Some(value) = self.entry(key) else {
            return Vec::new();
        };
        let DeValue::Array(items) = value.get_ref() else {
            self.problem(key, "must be an array of tables ([[...]])");
            return Vec::new();
        };
        let base = if self.name.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.name)
        };
        items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| match item.get_ref() {
                DeValue::Table(table) => Some(Section {
                    doc: self.doc,
                    name: format!("{base}[{}]", i + 1),
                    table,
                    span: item.span(),
                    used: RefCell::new(Vec::new()),
                }),
                _ => {
                    self.doc
                        .report_at(&item.span(), &self.label(key), "must be a table");
                    None
                }
            })
            .collect()
    }

    /// Reports a problem at a line of the file, under its own label.
    pub fn problem_at_line(&self, line: usize, label: &str, message: impl Into<String>) {
        self.doc.report(Some(line), label, message);
    }

    /// The line a section starts on.
    pub fn line(&self) -> usize {
        self.doc.line_of(self.span.start)
    }

    /// An empty stand-in for an absent section, so defaults flow through the same code.
    pub fn empty(&self, key: &str, empty: &'d DeTable<'i>) -> Section<'d, 'i> {
        Section {
            doc: self.doc,
            name: key.to_string(),
            table: empty,
            span: self.span.clone(),
            used: RefCell::new(Vec::new()),
        }
    }

    /// Reports every key in this section that nothing read.
    pub fn finish(&self, known: &[&str]) {
        let used = self.used.borrow();
        for (key, _) in self.table.iter() {
            let name = key.get_ref().as_ref();
            if used.iter().any(|u| u == name) {
                continue;
            }
            let what = if self.name.is_empty() {
                "unknown section"
            } else {
                "unknown key"
            };
            let hint = closest(name, known)
                .map(|k| format!(" (did you mean `{k}`?)"))
                .unwrap_or_default();
            self.doc
                .report_at(&key.span(), &self.label(name), format!("{what}{hint}"));
        }
    }
}

/// The integer types a config value is read into; `MAX` marks a range with no upper limit.
pub trait ConfigInt: Copy + PartialOrd + fmt::Display + TryFrom<i64> {
    const MAX: Self;
}

impl ConfigInt for u32 {
    const MAX: Self = u32::MAX;
}

impl ConfigInt for u64 {
    const MAX: Self = u64::MAX;
}

impl ConfigInt for usize {
    const MAX: Self = usize::MAX;
}

/// "250ms", "45s", "30m", "8h", "1d", or combinations such as "1h30m". A bare number is refused
/// because its unit would be a guess; so is prose such as "30 minutes", to keep one spelling.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let refuse = || {
        format!("`{text}` is not a duration: use a number and a unit, e.g. \"250ms\", \"45s\", \"30m\", \"8h\"")
    };
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(refuse());
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let number: u64 = rest[..digits].parse().map_err(|_| refuse())?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit_ms: u64 = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(refuse()),
        };
        rest = &rest[unit_len..];
        let ms = number.checked_mul(unit_ms).ok_or_else(refuse)?;
        total = total
            .checked_add(Duration::from_millis(ms))
            .ok_or_else(refuse)?;
    }
    Ok(total)
}

/// The known key nearest to a misspelt one, if it is close enough to be a likely typo.
fn closest<'k>(name: &str, known: &[&'k str]) -> Option<&'k str> {
    known
        .iter()
        .map(|k| (edit_distance(name, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_need_units() {
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        for bad in [
            "30",
            "30 minutes",
            "m",
            "-5s",
            "1.5h",
            "",
            "99999999999999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn typos_get_a_suggestion() {
        assert_eq!(
            closest("idle_timout", &["idle_timeout", "absolute_timeout"]),
            Some("idle_timeout")
        );
        assert_eq!(closest("zzz", &["idle_timeout"]), None);
    }
}
