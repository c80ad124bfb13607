//! Semantic versions and Masterminds-style version constraints (pure).
//!
//! Same semantics as `github.com/Masterminds/semver/v3` (`NewConstraint` + `Check`), which Flux
//! uses for `GitRepository.spec.ref.semver`, `HelmChart.spec.version` and OCI semver refs:
//! - `||` separates alternatives; inside one, comparators are ANDed, separated by spaces or commas;
//! - operators `=`, `!=`, `>`, `<`, `>=`/`=>`, `<=`/`=<`, `~`/`~>`, `^`, or none (= equal);
//! - partial versions and wildcards (`1`, `1.2`, `1.2.x`, `*`) widen: `1.2.x` is `>=1.2.0 <1.3.0`,
//!   `>1.2` is `>=1.3.0`, `<=1.2` is `<1.3.0`, `~1.2.3` is `>=1.2.3 <1.3.0`, `^1.2.3` is
//!   `>=1.2.3 <2.0.0`, `^0.2.3` is `>=0.2.3 <0.3.0`;
//! - `A - B` (spaces around the dash) is `>= A, <= B`;
//! - a pre-release version matches an alternative only when one of its comparators carries a
//!   pre-release itself (`>=1.0.0-0`).
//!
//! Tags are parsed leniently as Flux does: a leading `v` is allowed, the version needs all three
//! parts (`1.2` is not a version).

use std::cmp::Ordering;
use std::fmt;

/// A parsed semantic version; build metadata is kept but ignored in comparisons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
    /// Pre-release without the leading `-`, empty for a release.
    pub pre: String,
    /// Build metadata without the leading `+`.
    pub build: String,
}

impl Version {
    /// Parses a tag such as `v1.2.3`, `1.2.3-rc.1+build`: all three parts required.
    pub fn parse(s: &str) -> Option<Version> {
        let (v, parts) = parse_parts(s)?;
        (parts == 3).then_some(v)
    }

    /// SemVer precedence: build metadata ignored (`1.0.0+a` and `1.0.0+b` are equal).
    pub fn cmp_precedence(&self, other: &Version) -> Ordering {
        (self.major, self.minor, self.patch)
            .cmp(&(other.major, other.minor, other.patch))
            .then_with(|| compare_pre(&self.pre, &other.pre))
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Version {
    /// Semver precedence; build metadata only breaks ties so that the order is total.
    fn cmp(&self, other: &Self) -> Ordering {
        self.cmp_precedence(other)
            .then_with(|| self.build.cmp(&other.build))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)?;
        if !self.pre.is_empty() {
            write!(f, "-{}", self.pre)?;
        }
        if !self.build.is_empty() {
            write!(f, "+{}", self.build)?;
        }
        Ok(())
    }
}

/// `v?N(.N)?(.N)?(-pre)?(+build)?`; returns the version (missing parts 0) and how many numeric
/// parts were given.
fn parse_parts(s: &str) -> Option<(Version, usize)> {
    let s = s.strip_prefix('v').unwrap_or(s);
    let (rest, build) = match s.split_once('+') {
        Some((r, b)) => (r, Some(b)),
        None => (s, None),
    };
    let (core, pre) = match rest.split_once('-') {
        Some((c, p)) => (c, Some(p)),
        None => (rest, None),
    };
    // `-` and `+` must be followed by identifiers.
    if !pre.is_none_or(valid_idents) || !build.is_none_or(valid_idents) {
        return None;
    }
    let (pre, build) = (pre.unwrap_or(""), build.unwrap_or(""));
    let nums: Vec<&str> = core.split('.').collect();
    if nums.len() > 3
        || nums
            .iter()
            .any(|n| n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    let n = |i: usize| nums.get(i).map_or(Some(0), |p| p.parse().ok());
    Some((
        Version {
            major: n(0)?,
            minor: n(1)?,
            patch: n(2)?,
            pre: pre.to_string(),
            build: build.to_string(),
        },
        nums.len(),
    ))
}

/// Dot-separated non-empty `[0-9A-Za-z-]+` identifiers.
fn valid_idents(s: &str) -> bool {
    s.split('.')
        .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
}

/// Pre-release precedence: a release (empty) is higher than any pre-release; identifiers compare
/// numerically when both are numbers, numbers sort before words, fewer identifiers sort first.
fn compare_pre(a: &str, b: &str) -> Ordering {
    match (a.is_empty(), b.is_empty()) {
        (true, true) => return Ordering::Equal,
        (true, false) => return Ordering::Greater,
        (false, true) => return Ordering::Less,
        _ => {}
    }
    let mut ai = a.split('.');
    let mut bi = b.split('.');
    loop {
        match (ai.next(), bi.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) => {
                let ord = match (x.parse::<u64>(), y.parse::<u64>()) {
                    (Ok(m), Ok(n)) => m.cmp(&n),
                    (Ok(_), Err(_)) => Ordering::Less,
                    (Err(_), Ok(_)) => Ordering::Greater,
                    (Err(_), Err(_)) => x.cmp(y),
                };
                if ord != Ordering::Equal {
                    return ord;
                }
            }
        }
    }
}

/// Why a constraint string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("improper constraint: {0:?}")]
pub struct ConstraintError(pub String);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
    Tilde,
    Caret,
}

#[derive(Debug, Clone)]
struct Comparator {
    op: Op,
    /// The constraint's version with wildcards and missing parts as 0.
    con: Version,
    /// A wildcard or missing part anywhere (`1.2`, `1.x`, `*`).
    dirty: bool,
    /// The minor part is a wildcard or missing (`1`, `1.x`).
    minor_dirty: bool,
    /// The patch part is a wildcard or missing (`1.2`, `1.2.x`).
    patch_dirty: bool,
}

/// A parsed constraint such as `>=1.0 <2.0 || ^3.1`.
#[derive(Debug, Clone)]
pub struct Constraint {
    /// Alternatives (OR) of comparators (AND), each with "has a pre-release comparator".
    groups: Vec<(Vec<Comparator>, bool)>,
    source: String,
}

impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl Constraint {
    /// Parses a Masterminds constraint; errors name the offending alternative.
    pub fn parse(s: &str) -> Result<Constraint, ConstraintError> {
        let mut groups = Vec::new();
        for alt in s.split("||") {
            let comparators = parse_group(alt).ok_or_else(|| ConstraintError(alt.to_string()))?;
            let has_pre = comparators.iter().any(|c| !c.con.pre.is_empty());
            groups.push((comparators, has_pre));
        }
        Ok(Constraint {
            groups,
            source: s.to_string(),
        })
    }

    /// Whether `v` satisfies any alternative (Masterminds' `Constraints.Check`).
    pub fn matches(&self, v: &Version) -> bool {
        self.groups
            .iter()
            .any(|(cs, has_pre)| (v.pre.is_empty() || *has_pre) && cs.iter().all(|c| c.check(v)))
    }

    /// The highest version among `candidates` (e.g. tag names) that parses and matches,
    /// with the candidate it came from. Unparseable candidates are skipped.
    pub fn highest<'a, I>(&self, candidates: I) -> Option<(&'a str, Version)>
    where
        I: IntoIterator<Item = &'a str>,
    {
        candidates
            .into_iter()
            .filter_map(|c| Version::parse(c).map(|v| (c, v)))
            .filter(|(_, v)| self.matches(v))
            .max_by(|(a, x), (b, y)| x.cmp_precedence(y).then_with(|| b.cmp(a)))
    }
}

fn parse_group(s: &str) -> Option<Vec<Comparator>> {
    // Tokens: (operator, version) pairs; a bare `-` between two versions is a hyphen range.
    let tokens = tokenize(s)?;
    let mut out = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let (op, ver) = &tokens[i];
        if op.as_str() == "-" {
            return None;
        }
        if op.is_empty() && tokens.get(i + 1).is_some_and(|(o, _)| o == "-") {
            let (_, upper) = tokens.get(i + 2).filter(|(o, _)| o.is_empty())?;
            out.push(comparator(">=", ver)?);
            out.push(comparator("<=", upper)?);
            i += 3;
            continue;
        }
        out.push(comparator(op, ver)?);
        i += 1;
    }
    (!out.is_empty()).then_some(out)
}

/// Splits `>= 1.2, <2` into `[(">=", "1.2"), ("<", "2")]`; a hyphen-range dash (with spaces
/// around it) becomes `("-", "")`.
fn tokenize(s: &str) -> Option<Vec<(String, String)>> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    let is_op = |c: u8| matches!(c, b'=' | b'!' | b'<' | b'>' | b'~' | b'^');
    let is_ver = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'*' | b'+' | b'-');
    loop {
        while i < b.len() && (b[i].is_ascii_whitespace() || b[i] == b',') {
            i += 1;
        }
        if i >= b.len() {
            return Some(out);
        }
        if b[i] == b'-' && b.get(i + 1).is_none_or(|c| c.is_ascii_whitespace()) {
            out.push(("-".to_string(), String::new()));
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && is_op(b[i]) {
            i += 1;
        }
        let op = s[start..i].to_string();
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        let vstart = i;
        while i < b.len() && is_ver(b[i]) {
            i += 1;
        }
        if vstart == i {
            return None;
        }
        out.push((op, s[vstart..i].to_string()));
    }
}

fn comparator(op: &str, ver: &str) -> Option<Comparator> {
    let op = match op {
        "" | "=" => Op::Eq,
        "!=" => Op::Ne,
        ">" => Op::Gt,
        "<" => Op::Lt,
        ">=" | "=>" => Op::Ge,
        "<=" | "=<" => Op::Le,
        "~" | "~>" => Op::Tilde,
        "^" => Op::Caret,
        _ => return None,
    };
    let v = ver.strip_prefix('v').unwrap_or(ver);
    let (core, suffix) = match v.find(['-', '+']) {
        Some(p) => v.split_at(p),
        None => (v, ""),
    };
    let parts: Vec<&str> = core.split('.').collect();
    if parts.len() > 3 || parts.iter().any(|p| p.is_empty()) {
        return None;
    }
    let is_x = |p: Option<&&str>| p.is_none_or(|p| matches!(*p, "x" | "X" | "*"));
    let (dirty, minor_dirty, patch_dirty, text) = if is_x(parts.first()) {
        (true, false, false, format!("0.0.0{suffix}"))
    } else if is_x(parts.get(1)) {
        (true, true, false, format!("{}.0.0{suffix}", parts[0]))
    } else if is_x(parts.get(2)) {
        (
            true,
            false,
            true,
            format!("{}.{}.0{suffix}", parts[0], parts[1]),
        )
    } else {
        (false, false, false, format!("{core}{suffix}"))
    };
    let (con, _) = parse_parts(&text)?;
    Some(Comparator {
        op,
        con,
        dirty,
        minor_dirty,
        patch_dirty,
    })
}

impl Comparator {
    /// One comparator, the pre-release gate having been applied per alternative.
    fn check(&self, v: &Version) -> bool {
        let c = &self.con;
        let cmp = v.cmp_precedence(c);
        match self.op {
            Op::Eq if self.dirty => self.tilde(v),
            Op::Eq => cmp == Ordering::Equal,
            Op::Ne => {
                if self.dirty {
                    if c.major != v.major {
                        return true;
                    }
                    if self.minor_dirty {
                        return false;
                    }
                    if c.minor != v.minor {
                        return true;
                    }
                    if self.patch_dirty {
                        return compare_pre(&v.pre, &c.pre) != Ordering::Equal;
                    }
                }
                cmp != Ordering::Equal
            }
            Op::Gt => {
                if !self.dirty {
                    return cmp == Ordering::Greater;
                }
                if v.major != c.major {
                    return v.major > c.major;
                }
                if self.minor_dirty {
                    return false;
                }
                if self.patch_dirty {
                    return v.minor > c.minor;
                }
                cmp == Ordering::Greater
            }
            Op::Lt => cmp == Ordering::Less,
            Op::Ge => cmp != Ordering::Less,
            Op::Le => {
                if !self.dirty {
                    return cmp != Ordering::Greater;
                }
                !(v.major > c.major
                    || (v.major == c.major && v.minor > c.minor && !self.minor_dirty))
            }
            Op::Tilde => self.tilde(v),
            Op::Caret => {
                if cmp == Ordering::Less {
                    return false;
                }
                if c.major > 0 || self.minor_dirty {
                    return v.major == c.major;
                }
                if v.major > 0 {
                    return false;
                }
                if c.minor > 0 || self.patch_dirty {
                    return v.minor == c.minor;
                }
                if v.minor > 0 {
                    return false;
                }
                v.patch == c.patch
            }
        }
    }

    fn tilde(&self, v: &Version) -> bool {
        let c = &self.con;
        if v.cmp_precedence(c) == Ordering::Less {
            return false;
        }
        if c.major == 0 && c.minor == 0 && c.patch == 0 && !self.minor_dirty && !self.patch_dirty {
            return true;
        }
        v.major == c.major && (v.minor == c.minor || self.minor_dirty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(c: &str, v: &str) -> bool {
        let c = Constraint::parse(c).unwrap_or_else(|e| panic!("{e}"));
        let v = Version::parse(v).unwrap_or_else(|| panic!("version {v}"));
        c.matches(&v)
    }

    /// Cases taken from Masterminds/semver v3's `TestConstraintCheck` and README ranges.
    #[test]
    fn constraints_match_like_masterminds() {
        let table: &[(&str, &str, bool)] = &[
            ("=2.0.0", "1.2.3", false),
            ("=2.0.0", "2.0.0", true),
            ("=2.0", "1.2.3", false),
            ("=2.0", "2.0.0", true),
            ("=2.0", "2.0.1", true),
            ("4.1", "4.1.0", true),
            ("4.11.x", "4.11.7", true),
            ("4.11.x", "4.12.0", false),
            ("4.11.x", "4.10.9", false),
            ("!=4.1.0", "4.1.0", false),
            ("!=4.1.0", "4.1.1", true),
            ("!=4.1.x", "4.1.0", false),
            ("!=4.1.x", "4.1.1", false),
            ("!=4.1.x", "4.2.1", true),
            ("!=4.x", "5.1.0", true),
            (">1.1", "4.1.0", true),
            (">1.1", "1.1.0", false),
            (">1.1", "1.1.5", false),
            (">1.1", "1.2.0", true),
            (">0", "0.0.1-alpha", false),
            (">0", "1.0.0", true),
            (">0", "0.9.0", false),
            (">11", "11.1.0", false),
            (">11", "12.0.0", true),
            ("<1.1", "0.1.0", true),
            ("<1.1", "1.1.0", false),
            ("<1.1", "1.1.1", false),
            ("<=1.1", "1.1.1", true),
            ("<=1.1", "1.2.0", false),
            ("<=1", "1.9.9", true),
            ("<=1", "2.0.0", false),
            (">=1.1", "4.1.0", true),
            (">=1.1", "1.1.0", true),
            (">=1.1", "0.0.9", false),
            (">=0", "0.0.1-alpha", false),
            (">=0.0", "0.0.1-alpha", false),
            (">=0-0", "0.0.1-alpha", true),
            (">=0.0.0-0", "0.0.1-alpha", true),
            (">=0.0.0-0", "1.2.3", true),
            (">=0.0.0-0", "3.4.5-beta.1", true),
            ("<0", "0.0.0-alpha", false),
            ("<0-z", "0.0.0-alpha", true),
            (">=0", "0.0.0", true),
            ("=0", "1.0.0", false),
            ("*", "1.0.0", true),
            ("*", "4.5.6", true),
            ("*", "1.2.3-alpha.1", false),
            ("*-0", "1.2.3-alpha.1", true),
            ("2.*", "1.0.0", false),
            ("2.*", "3.4.5", false),
            ("2.*", "2.1.1", true),
            ("2.1.*", "2.1.1", true),
            ("2.1.*", "2.2.1", false),
            ("~1.2.3", "1.2.4", true),
            ("~1.2.3", "1.3.4", false),
            ("~1.2", "1.2.4", true),
            ("~1.2", "1.3.4", false),
            ("~1", "1.2.4", true),
            ("~1", "2.3.4", false),
            ("~0.2.3", "0.2.5", true),
            ("~0.2.3", "0.3.5", false),
            ("~1.2.3-beta.2", "1.2.3-beta.4", true),
            ("~1.2.3-beta.2", "1.2.4-beta.2", true),
            ("~1.2.3-beta.2", "1.3.4-beta.2", false),
            ("^1.2.3", "1.8.9", true),
            ("^1.2.3", "2.8.9", false),
            ("^1.2.3", "1.2.1", false),
            ("^1.1.0", "2.1.0", false),
            ("^1.2.0", "2.2.1", false),
            ("^1.2.0", "1.2.1-alpha.1", false),
            ("^1.2.1-alpha", "1.2.1-alpha.1", true),
            ("^1.2.1-alpha.1", "1.2.1-alpha.1", true),
            ("^1.2", "1.8.9", true),
            ("^1.2", "1.1.1", false),
            ("^1", "1.8.9", true),
            ("^1", "2.8.9", false),
            ("^1.x", "1.1.1", true),
            ("^1.x", "2.1.1", false),
            ("^1.1.2-alpha", "1.2.1-beta1", true),
            ("^0.2.3", "0.2.5", true),
            ("^0.2.3", "0.5.6", false),
            ("^0.2", "0.2.5", true),
            ("^0.2", "0.5.6", false),
            ("^0.0.3", "0.0.3", true),
            ("^0.0.3", "0.0.4", false),
            ("^0.0", "0.0.3", true),
            ("^0.0", "0.1.4", false),
            ("^0", "0.2.3", true),
            ("^0", "1.1.4", false),
            (">=1.0 <2.0", "1.5.0", true),
            (">=1.0 <2.0", "2.0.0", false),
            (">=1.0, <2.0", "0.9.0", false),
            (">= 1.0, < 2.0", "1.9.9", true),
            ("1.2 - 1.4", "1.3.0", true),
            ("1.2 - 1.4", "1.4.9", true),
            ("1.2 - 1.4", "1.5.0", false),
            ("1.2 - 1.4", "1.1.9", false),
            ("1.2.3 - 1.4.5", "1.4.5", true),
            ("1.2.3 - 1.4.5", "1.4.6", false),
            ("1.x || >=2.5.0", "1.9.0", true),
            ("1.x || >=2.5.0", "2.4.0", false),
            ("1.x || >=2.5.0", "2.5.0", true),
            // Pre-releases only when a comparator of the same alternative has one.
            (">=1.0.0-0 <2.0.0", "1.5.0-rc.1", true),
            (">=1.0.0 <2.0.0", "1.5.0-rc.1", false),
            (">=1.0.0-0 <2.0.0 || 3.x", "3.0.0-rc.1", false),
            (">=1.0.0-rc.1", "1.0.0-rc.2", true),
            (">=1.0.0-rc.1", "1.0.0-beta", false),
            ("v1.2.3", "1.2.3", true),
        ];
        for (c, v, want) in table {
            assert_eq!(check(c, v), *want, "{c:?} against {v}");
        }
    }

    #[test]
    fn constraint_errors() {
        for bad in [
            "", "   ", ">>1.0", "1.2.3.4", "foo", "1.2 -", ">= ", "1.2 || ",
        ] {
            assert!(
                Constraint::parse(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn tags_parse_leniently_but_need_three_parts() {
        assert_eq!(Version::parse("v1.2.3").unwrap().to_string(), "1.2.3");
        assert_eq!(Version::parse("01.02.03").unwrap().to_string(), "1.2.3");
        assert_eq!(
            Version::parse("1.2.3-rc.1+b5").unwrap().to_string(),
            "1.2.3-rc.1+b5"
        );
        for bad in ["1.2", "1", "v1.2", "latest", "1.2.3.4", "1.2.3-", "1.2.x"] {
            assert!(Version::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn precedence_follows_semver() {
        let order = [
            "1.0.0-alpha",
            "1.0.0-alpha.1",
            "1.0.0-alpha.beta",
            "1.0.0-beta",
            "1.0.0-beta.2",
            "1.0.0-beta.11",
            "1.0.0-rc.1",
            "1.0.0",
            "1.0.1",
            "1.10.0",
            "2.0.0",
        ];
        for w in order.windows(2) {
            let (a, b) = (Version::parse(w[0]).unwrap(), Version::parse(w[1]).unwrap());
            assert!(a < b, "{a} < {b}");
        }
    }

    #[test]
    fn highest_picks_newest_matching_tag() {
        let tags = [
            "v1.0.0",
            "v1.2.0",
            "v1.10.0",
            "v2.0.0",
            "v1.11.0-rc.1",
            "latest",
            "1.3",
        ];
        let c = Constraint::parse(">=1.0.0 <2.0.0").unwrap();
        assert_eq!(c.highest(tags).unwrap().0, "v1.10.0");
        let c = Constraint::parse(">=1.0.0-0 <2.0.0").unwrap();
        assert_eq!(c.highest(tags).unwrap().0, "v1.11.0-rc.1");
        let c = Constraint::parse("~1.2").unwrap();
        assert_eq!(c.highest(tags).unwrap().0, "v1.2.0");
        assert!(Constraint::parse("3.x").unwrap().highest(tags).is_none());
    }
}
