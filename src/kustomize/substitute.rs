//! postBuild variable substitution, with Flux's semantics (kustomize-controller v1.9.5 with
//! `fluxcd/pkg/kustomize` v1.35.6 and `fluxcd/pkg/envsubst` v1.7.1, its fork of drone/envsubst).
//! PURE: the variables are read by the caller (ConfigMaps, Secrets) and merged with
//! [`merge_variables`].
//!
//! The expression language ([`eval`]):
//! - `${var}`; a plain `$var` is never substituted; `$$` is a literal `$` outside expressions,
//!   so `$${var}` is the text `${var}`.
//! - defaults: `${var:=x}`, `${var=x}`, `${var:-x}`; also `${var:?x}` and `${var:+x}`, which
//!   Flux's parser accepts and treats as a default too (the value when non-empty, else `x`; not
//!   bash's meaning). The default may hold nested `${...}`. `${var-x}` is a parse error
//!   ("missing closing brace"), as in Flux.
//! - `${#var}` (length in bytes), `${var^}`, `${var^^}`, `${var,}`, `${var,,}` (case),
//!   `${var:pos}`, `${var:pos:len}` (byte offsets; negative counts from the end),
//!   `${var#glob}`, `${var##glob}`, `${var%glob}`, `${var%%glob}` (shortest/longest prefix or
//!   suffix; `*`, `?`, `[...]`, `\` escapes; `*` matches `/` too), `${var/pat/rep}`,
//!   `${var//pat/rep}`, `${var/#pat/rep}`, `${var/%pat/rep}` (`\/` and `\\` escapes in
//!   `pat` and `rep`).
//! - Strict mode (Flux 2.9's default, `StrictPostBuildSubstitutions`): a variable that is not
//!   defined fails unless its operator provides a default (`=`, `:=`, `:-`, `-`, `+`, `?`, `:+`,
//!   `:?`): `variable not set (strict mode): "name"`. A variable defined as `""` is defined.
//!
//! Per object ([`substitute_object`]): skipped when its label or annotation
//! `kustomize.toolkit.fluxcd.io/substitute` is `disabled`; run only when at least one variable
//! is defined or the strategy is `Always`; every variable name must match
//! [`VAR_NAME_PATTERN`]. Flux substitutes the YAML text of each object (marshalled with sorted
//! keys) and parses it back; pennant substitutes each string (keys and values) of the object,
//! in the same sorted order, and re-reads a substituted value the way that YAML text would
//! read: a string Flux's YAML writer leaves unquoted is re-parsed as a YAML 1.1 scalar
//! (`${replicas}` → the integer `3`, `${flag}` = `on` → `true`, `""` → `null`, `0755` → 493,
//! `'"1"'` → the string `1`, the documented `${quote}` trick), a quoted one stays a string, a
//! multi-line one keeps its block chomping. `tests/envsubst_flux.rs` checks this against Flux's
//! own round trip. Differences: where a value breaks Flux's YAML text (a quote inside a quoted
//! scalar, `- x` or `? x` in some places), Flux fails the build and pennant may substitute; a
//! value that is a bare YAML tag or block indicator (`!tag`, `|`, `>`) reads as null or fails
//! here and as `""` in Flux.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;

/// Label or annotation that opts an object out of substitution (value `disabled`).
pub const SUBSTITUTE_ANNOTATION: &str = "kustomize.toolkit.fluxcd.io/substitute";
/// Variable names Flux accepts (Go RE2 syntax; `[:alpha:]` is ASCII). Others fail the build.
pub const VAR_NAME_PATTERN: &str = "^[_[:alpha:]][_[:alpha:][:digit:]]*$";

/// A parse or evaluation error of one expression, with Flux's messages.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EnvsubstError {
    /// A malformed expression: `bad substitution`, `missing closing brace`, `unable to parse
    /// variable name`, `unable to parse substitution within function`, `unable to parse default
    /// function`.
    #[error("{0}")]
    Parse(&'static str),
    /// Strict mode: the variable has no value and the operator no default.
    #[error("variable not set (strict mode): {0:?}")]
    NotSet(String),
}

const BAD_SUBSTITUTION: EnvsubstError = EnvsubstError::Parse("bad substitution");
const MISSING_CLOSING_BRACE: EnvsubstError = EnvsubstError::Parse("missing closing brace");
const BAD_VARIABLE_NAME: EnvsubstError = EnvsubstError::Parse("unable to parse variable name");
const BAD_FUNC_PARAM: EnvsubstError =
    EnvsubstError::Parse("unable to parse substitution within function");
const BAD_DEFAULT: EnvsubstError = EnvsubstError::Parse("unable to parse default function");

/// Why an object could not be substituted; the message is Flux's
/// (`post build failed for 'Deployment.v1.apps/web': envsubst error: ...`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubstituteError {
    /// The object, as kustomize names it: `<Kind>.<version>.<group>/<name>` (`[noGrp]` for the
    /// core group).
    pub object: String,
    /// What failed.
    pub kind: SubstituteErrorKind,
}

/// What failed in [`substitute_object`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubstituteErrorKind {
    /// A variable name outside [`VAR_NAME_PATTERN`] (the first one in sorted order).
    InvalidName(String),
    /// An expression failed to parse or, in strict mode, named an undefined variable.
    Eval(EnvsubstError),
    /// The substituted text of a value is not YAML (e.g. `a: b` where a plain scalar stood).
    Yaml(String),
}

impl fmt::Display for SubstituteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "post build failed for '{}': envsubst error: ",
            self.object
        )?;
        match &self.kind {
            SubstituteErrorKind::InvalidName(n) => {
                write!(
                    f,
                    "'{n}' var name is invalid, must match '{VAR_NAME_PATTERN}'"
                )
            }
            SubstituteErrorKind::Eval(e) => write!(f, "variable substitution failed: {e}"),
            SubstituteErrorKind::Yaml(e) => write!(f, "YAMLToJSON: {e}"),
        }
    }
}

impl std::error::Error for SubstituteError {}

/// How [`substitute_object`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// Undefined variables without a default fail (Flux 2.9's default: true).
    pub strict: bool,
    /// `substituteStrategy: Always`: substitute even when no variable is defined.
    pub always: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            strict: true,
            always: false,
        }
    }
}

/// The variables of a Kustomization, merged as Flux does: the `substituteFrom` sources in order
/// (a later source wins on the same key; Secret values as their decoded bytes, lossily as
/// UTF-8), then the inline `substitute` map on top. Newlines are removed from every value.
pub fn merge_variables<'a>(
    substitute_from: impl IntoIterator<Item = &'a BTreeMap<String, String>>,
    substitute: &'a BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut vars = BTreeMap::new();
    for source in substitute_from.into_iter().chain([substitute]) {
        for (k, v) in source {
            vars.insert(k.clone(), v.replace('\n', ""));
        }
    }
    vars
}

/// True when the object's label or annotation [`SUBSTITUTE_ANNOTATION`] is `disabled`.
pub fn substitution_disabled(obj: &Value) -> bool {
    ["labels", "annotations"]
        .iter()
        .any(|m| obj["metadata"][m][SUBSTITUTE_ANNOTATION] == "disabled")
}

/// kustomize's name of an object in messages: `<Kind>.<version>.<group>/<name>`.
pub fn object_label(obj: &Value) -> String {
    let api_version = obj["apiVersion"].as_str().unwrap_or_default();
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let or = |s: &str, empty: &'static str| {
        if s.is_empty() {
            empty.to_string()
        } else {
            s.to_string()
        }
    };
    format!(
        "{}.{}.{}/{}",
        or(obj["kind"].as_str().unwrap_or_default(), "[noKind]"),
        or(version, "[noVer]"),
        or(group, "[noGrp]"),
        obj["metadata"]["name"].as_str().unwrap_or_default()
    )
}

/// Substitute `vars` into one built object (Flux's `SubstituteVariables`). Returns the object
/// unchanged when it opts out ([`substitution_disabled`]) or when `vars` is empty and
/// `options.always` is false.
pub fn substitute_object(
    obj: &Value,
    vars: &BTreeMap<String, String>,
    options: Options,
) -> Result<Value, SubstituteError> {
    if substitution_disabled(obj) || (vars.is_empty() && !options.always) {
        return Ok(obj.clone());
    }
    let fail = |kind| SubstituteError {
        object: object_label(obj),
        kind,
    };
    let name = regex::Regex::new(r"^[_A-Za-z][_A-Za-z0-9]*$").expect("a valid pattern");
    if let Some(bad) = vars.keys().find(|k| !name.is_match(k)) {
        return Err(fail(SubstituteErrorKind::InvalidName(bad.clone())));
    }
    substitute_value(obj, vars, options.strict).map_err(fail)
}

fn substitute_value(
    v: &Value,
    vars: &BTreeMap<String, String>,
    strict: bool,
) -> Result<Value, SubstituteErrorKind> {
    Ok(match v {
        Value::String(s) => {
            let out = eval(s, vars, strict).map_err(SubstituteErrorKind::Eval)?;
            if out == *s {
                Value::String(out)
            } else if emitted_plain(s) {
                read_plain(&out)?
            } else if s.contains('\n') {
                // written as a literal block (`|-`, or `|` with a final newline): its chomping
                // drops the newlines an empty value leaves at the end
                let body = out.trim_end_matches('\n');
                Value::String(if s.ends_with('\n') {
                    format!("{body}\n")
                } else {
                    body.into()
                })
            } else {
                Value::String(out)
            }
        }
        Value::Array(a) => Value::Array(
            a.iter()
                .map(|x| substitute_value(x, vars, strict))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(m) => {
            // sorted, as Flux's YAML text is: the first failing expression is the same
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let mut out = serde_json::Map::new();
            for k in keys {
                let key = eval(k, vars, strict).map_err(SubstituteErrorKind::Eval)?;
                out.insert(key, substitute_value(&m[k], vars, strict)?);
            }
            Value::Object(out)
        }
        other => other.clone(),
    })
}

/// Whether Flux's YAML writer (go-yaml v2's scalar analysis, block context) writes `s` as a
/// plain, unquoted scalar — the case in which the substituted text is re-typed when read back.
/// Only strings holding `${` matter here, so the YAML 1.1 keywords it also quotes (`true`, `~`,
/// numbers) cannot occur.
fn emitted_plain(s: &str) -> bool {
    let chars: Vec<char> = s.chars().collect();
    let blank_after = |i: usize| chars.get(i + 1).is_none_or(|c| *c == ' ' || *c == '\t');
    let Some(&first) = chars.first() else {
        return false;
    };
    if "#,[]{}&*!|>'\"%@`".contains(first) || ("?:-".contains(first) && blank_after(0)) {
        return false;
    }
    for (i, &c) in chars.iter().enumerate() {
        let indicator = (c == ':' && blank_after(i))
            || (c == '#' && i > 0 && matches!(chars[i - 1], ' ' | '\t'));
        if indicator || c == '\n' || (c.is_control() && c != '\t') {
            return false;
        }
    }
    s.trim_matches([' ', '\t']) == s
}

/// Read a substituted plain scalar back as YAML 1.1, as sigs.k8s.io/yaml's `YAMLToJSON` (go-yaml
/// v2) does: YAML 1.1 booleans and nulls, Go's integer syntax (`0x1F`, `0o17`, `0755` octal,
/// `1_000`), whole floats as integers, a trailing ` #comment` dropped; a block sequence (`- x`),
/// mapping (`a: b`) or key (`? x`) where the scalar stood is an error.
fn read_plain(text: &str) -> Result<Value, SubstituteErrorKind> {
    const TRUE: [&str; 11] = [
        "y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON",
    ];
    const FALSE: [&str; 11] = [
        "n", "N", "no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF",
    ];
    let t = text.trim();
    let not_allowed = |what: &str| {
        Err(SubstituteErrorKind::Yaml(format!(
            "{what} are not allowed in this context: {t:?}"
        )))
    };
    if t == "-" || t.starts_with("- ") {
        return not_allowed("block sequence entries");
    }
    if t == "?" || t.starts_with("? ") {
        return not_allowed("mapping keys");
    }
    let flow_or_quoted = t.starts_with(['{', '[', '"', '\'']);
    if !flow_or_quoted && (t.contains(": ") || t.ends_with(':')) {
        return not_allowed("mapping values");
    }
    if !flow_or_quoted {
        // a plain scalar: YAML 1.1's resolution (go-yaml v2), where it differs from YAML 1.2's
        let p = match t.find(" #").or_else(|| t.find("\t#")) {
            Some(i) => t[..i].trim_end(),
            None => t,
        };
        if p.is_empty() || ["~", "null", "Null", "NULL"].contains(&p) {
            return Ok(Value::Null);
        }
        if TRUE.contains(&p) {
            return Ok(Value::Bool(true));
        }
        if FALSE.contains(&p) {
            return Ok(Value::Bool(false));
        }
        let digits = p.replace('_', "");
        if let Some(n) = go_int(&digits) {
            return Ok(Value::from(n));
        }
        let float = regex::Regex::new(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$")
            .expect("a valid pattern");
        if float.is_match(&digits)
            && let Ok(f) = digits.parse::<f64>()
        {
            return Ok(whole_float_as_integer(Value::from(f)));
        }
    }
    match serde_saphyr::from_str::<Value>(t) {
        Ok(v) => Ok(whole_float_as_integer(v)),
        // not YAML on its own (e.g. an unbalanced quote): Flux's parser fails too
        Err(e) => Err(SubstituteErrorKind::Yaml(e.to_string())),
    }
}

/// Go's `strconv.ParseInt(s, 0, 64)`: an optional sign, then `0x`/`0o`/`0b` prefixes or a
/// leading `0` for octal.
fn go_int(s: &str) -> Option<i64> {
    let (neg, digits) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let lower = digits.to_ascii_lowercase();
    let (radix, body) = if let Some(h) = lower.strip_prefix("0x") {
        (16, h)
    } else if let Some(o) = lower.strip_prefix("0o") {
        (8, o)
    } else if let Some(b) = lower.strip_prefix("0b") {
        (2, b)
    } else if lower.len() > 1 && lower.starts_with('0') {
        (8, &lower[1..])
    } else {
        (10, lower.as_str())
    };
    if body.is_empty() || !body.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let n = i64::from_str_radix(body, radix).ok()?;
    Some(if neg { -n } else { n })
}

/// sigs.k8s.io/yaml writes a float without a fractional part as an integer (`1e3` → `1000`).
fn whole_float_as_integer(v: Value) -> Value {
    match v.as_f64() {
        Some(f) if v.is_f64() && f.fract() == 0.0 && f.abs() < 9.0e15 => Value::from(f as i64),
        _ => v,
    }
}

// ---------------------------------------------------------------------------------------------
// The expression language. A hand-written scanner and recursive-descent parser for the grammar
// of `fluxcd/pkg/envsubst` (its observable behaviour, including its quirks, is pinned by the
// table tests below).

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Text(String),
    /// `${param<op>args...}`; `op` is empty for `${param}`.
    Func {
        param: String,
        op: String,
        args: Vec<Node>,
    },
}

#[derive(Debug, PartialEq)]
enum Token {
    Eof,
    /// `${`
    Open,
    /// `}`
    Close,
    Text(String),
    Illegal,
}

/// Which tokens a scan may produce.
#[derive(Clone, Copy)]
struct Mode {
    text: bool,
    open: bool,
    close: bool,
    /// `$$` → `$` (and, inside replace patterns, `\/` → `/`, `\\` → `\`).
    escapes: bool,
    backslash: bool,
}

const TEXT_MODE: Mode = Mode {
    text: true,
    open: true,
    close: false,
    escapes: true,
    backslash: false,
};
const WORD: Mode = Mode {
    text: true,
    open: false,
    close: false,
    escapes: false,
    backslash: false,
};
const CLOSE: Mode = Mode {
    text: false,
    open: false,
    close: true,
    escapes: false,
    backslash: false,
};

/// `accept(c, n)`: may `c` extend a text token that would then be `n` bytes long?
type Accept = fn(char, usize) -> bool;

struct Parser {
    s: Vec<char>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.s.get(self.pos).copied()
    }

    fn escaped(&self, c: char, mode: Mode) -> bool {
        let next = self.s.get(self.pos + 1).copied();
        mode.escapes
            && ((c == '$' && next == Some('$'))
                || (mode.backslash && c == '\\' && matches!(next, Some('/' | '\\'))))
    }

    fn scan(&mut self, mode: Mode, accept: Accept) -> Token {
        let Some(c) = self.peek() else {
            return Token::Eof;
        };
        if mode.open && c == '$' && self.s.get(self.pos + 1) == Some(&'{') {
            self.pos += 2;
            return Token::Open;
        }
        if mode.close && c == '}' {
            self.pos += 1;
            return Token::Close;
        }
        if !mode.text {
            return Token::Illegal;
        }
        let mut out = String::new();
        let mut first = true;
        while let Some(c) = self.peek() {
            if !first && mode.open && c == '$' && self.s.get(self.pos + 1) == Some(&'{') {
                break;
            }
            if self.escaped(c, mode) {
                out.push(self.s[self.pos + 1]);
                self.pos += 2;
            } else if accept(c, out.len() + c.len_utf8()) {
                out.push(c);
                self.pos += 1;
            } else if first {
                return Token::Illegal;
            } else {
                break;
            }
            first = false;
        }
        Token::Text(out)
    }

    /// The whole input: text and `${...}` expressions.
    fn parse_all(&mut self) -> Result<Vec<Node>, EnvsubstError> {
        let mut nodes = vec![];
        loop {
            match self.scan(TEXT_MODE, |_, _| true) {
                Token::Eof => return Ok(nodes),
                Token::Text(t) => nodes.push(Node::Text(t)),
                Token::Open => nodes.push(self.parse_func()?),
                _ => return Err(BAD_SUBSTITUTION),
            }
        }
    }

    /// After `${`.
    fn parse_func(&mut self) -> Result<Node, EnvsubstError> {
        if self.peek() == Some('#') {
            let Token::Text(op) = self.scan(WORD, |c, n| c == '#' && n == 1) else {
                return Err(BAD_SUBSTITUTION);
            };
            let Token::Text(param) = self.scan(WORD, ident) else {
                return Err(BAD_SUBSTITUTION);
            };
            return self.close(Node::Func {
                param,
                op,
                args: vec![],
            });
        }
        let Token::Text(param) = self.scan(WORD, ident) else {
            return Err(BAD_VARIABLE_NAME);
        };
        match self.peek() {
            Some(':') => match self.s.get(self.pos + 1) {
                Some('=' | '-' | '?' | '+') => self.parse_default(param),
                // Flux's scanner loses the `:` when the input ends right after it
                None => Err(BAD_SUBSTITUTION),
                Some(_) => self.parse_substr(param),
            },
            Some('=') => self.parse_default(param),
            Some(',' | '^') => {
                let Token::Text(op) = self.scan(WORD, |c, n| (c == ',' || c == '^') && n < 3)
                else {
                    return Err(BAD_SUBSTITUTION);
                };
                self.close(Node::Func {
                    param,
                    op,
                    args: vec![],
                })
            }
            Some('/') => self.parse_replace(param),
            Some(c @ ('#' | '%')) => {
                let accept: Accept = if c == '#' {
                    |c, n| c == '#' && n < 3
                } else {
                    |c, n| c == '%' && n < 3
                };
                let Token::Text(op) = self.scan(WORD, accept) else {
                    return Err(BAD_SUBSTITUTION);
                };
                let pattern = self.param(|c, _| c != '}', false)?;
                self.close(Node::Func {
                    param,
                    op,
                    args: vec![pattern],
                })
            }
            _ => match self.scan(CLOSE, |_, _| false) {
                Token::Close => Ok(Node::Func {
                    param,
                    op: String::new(),
                    args: vec![],
                }),
                _ => Err(MISSING_CLOSING_BRACE),
            },
        }
    }

    /// One argument: a nested `${...}` or text accepted by `accept`.
    fn param(&mut self, accept: Accept, escapes: bool) -> Result<Node, EnvsubstError> {
        let mode = Mode {
            text: true,
            open: true,
            close: false,
            escapes,
            backslash: escapes,
        };
        match self.scan(mode, accept) {
            Token::Open => self.parse_func(),
            Token::Text(t) => Ok(Node::Text(t)),
            _ => Err(BAD_FUNC_PARAM),
        }
    }

    fn close(&mut self, node: Node) -> Result<Node, EnvsubstError> {
        match self.scan(CLOSE, |_, _| false) {
            Token::Close => Ok(node),
            _ => Err(BAD_SUBSTITUTION),
        }
    }

    fn parse_default(&mut self, param: String) -> Result<Node, EnvsubstError> {
        let accept: Accept = if self.peek() == Some('=') {
            |c, n| n == 1 && c == '='
        } else {
            |c, n| (n == 1 && c == ':') || (n == 2 && "=-?+".contains(c))
        };
        let Token::Text(op) = self.scan(WORD, accept) else {
            return Err(BAD_DEFAULT);
        };
        let mut args = vec![];
        while self.peek() != Some('}') {
            args.push(self.param(|c, _| c != '}', false)?);
        }
        self.close(Node::Func { param, op, args })
    }

    fn parse_substr(&mut self, param: String) -> Result<Node, EnvsubstError> {
        let Token::Text(op) = self.scan(WORD, |c, n| n == 1 && c == ':') else {
            return Err(BAD_SUBSTITUTION);
        };
        let mut args = vec![self.param(|c, _| c != ':' && c != '}', false)?];
        let colon_or_close = Mode {
            close: true,
            ..WORD
        };
        match self.scan(colon_or_close, |c, _| c == ':') {
            Token::Close => return Ok(Node::Func { param, op, args }),
            Token::Text(_) => {}
            _ => return Err(BAD_SUBSTITUTION),
        }
        args.push(self.param(|c, _| c != '}', false)?);
        self.close(Node::Func { param, op, args })
    }

    fn parse_replace(&mut self, param: String) -> Result<Node, EnvsubstError> {
        let Token::Text(op) = self.scan(WORD, |c, n| {
            (n == 1 && c == '/') || (n == 2 && "/#%".contains(c))
        }) else {
            return Err(BAD_SUBSTITUTION);
        };
        let mut args = vec![self.param(|c, _| c != '/', true)?];
        if !matches!(self.scan(WORD, |c, _| c == '/'), Token::Text(_)) {
            return Err(BAD_SUBSTITUTION);
        }
        if self.peek() != Some('}') {
            args.push(self.param(|c, _| c != '}', true)?);
        }
        self.close(Node::Func { param, op, args })
    }
}

fn ident(c: char, _: usize) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Evaluate every `${...}` of `text` against `vars` (see the module docs for the forms). With
/// `strict`, an undefined variable without a default is an error; otherwise it reads as `""`.
pub fn eval(
    text: &str,
    vars: &BTreeMap<String, String>,
    strict: bool,
) -> Result<String, EnvsubstError> {
    if !text.contains('$') {
        return Ok(text.to_string());
    }
    let nodes = Parser {
        s: text.chars().collect(),
        pos: 0,
    }
    .parse_all()?;
    let mut out = String::new();
    for n in &nodes {
        eval_node(n, vars, strict, &mut out)?;
    }
    Ok(out)
}

fn eval_node(
    node: &Node,
    vars: &BTreeMap<String, String>,
    strict: bool,
    out: &mut String,
) -> Result<(), EnvsubstError> {
    let (param, op, args) = match node {
        Node::Text(t) => {
            out.push_str(t);
            return Ok(());
        }
        Node::Func { param, op, args } => (param, op.as_str(), args),
    };
    // arguments first, as Flux: an undefined variable in a default fails even when unused
    let mut a = Vec::with_capacity(args.len());
    for arg in args {
        let mut s = String::new();
        eval_node(arg, vars, strict, &mut s)?;
        a.push(s);
    }
    let default_op = matches!(op, "-" | "+" | "=" | "?" | ":-" | ":+" | ":=" | ":?");
    let v = match vars.get(param) {
        Some(v) => v.as_str(),
        None if strict && !default_op => return Err(EnvsubstError::NotSet(param.clone())),
        None => "",
    };
    out.push_str(&apply(op, v, &a));
    Ok(())
}

fn apply(op: &str, v: &str, a: &[String]) -> String {
    let arg = |i: usize| a.get(i).map(String::as_str);
    match op {
        "#" if a.is_empty() => v.len().to_string(),
        "," => map_first(v, |c| c.to_lowercase().collect()),
        ",," => v.to_lowercase(),
        "^" => map_first(v, |c| c.to_uppercase().collect()),
        "^^" => v.to_uppercase(),
        "#" => trim_prefix(v, &a[0], false),
        "##" => trim_prefix(v, &a[0], true),
        "%" => trim_suffix(v, &a[0], false),
        "%%" => trim_suffix(v, &a[0], true),
        ":" => substr(v, a),
        "/" => v.replacen(&a[0], arg(1).unwrap_or(""), 1),
        "//" => v.replace(&a[0], arg(1).unwrap_or("")),
        "/#" => match (arg(1), v.strip_prefix(a[0].as_str())) {
            (Some(rep), Some(rest)) => format!("{rep}{rest}"),
            _ => v.to_string(),
        },
        "/%" => match (arg(1), v.strip_suffix(a[0].as_str())) {
            (Some(rep), Some(rest)) => format!("{rest}{rep}"),
            _ => v.to_string(),
        },
        // `${var}`, the default operators, and any other casing combination
        _ if v.is_empty() && !a.is_empty() => a.concat(),
        _ => v.to_string(),
    }
}

fn map_first(v: &str, f: impl Fn(char) -> String) -> String {
    let mut chars = v.chars();
    match chars.next() {
        Some(c) => f(c) + chars.as_str(),
        None => String::new(),
    }
}

/// `${v:pos}` / `${v:pos:len}` on bytes, as Go slices strings; a non-integer argument leaves
/// `v` unchanged.
fn substr(v: &str, a: &[String]) -> String {
    let b = v.as_bytes();
    let n = b.len() as i64;
    let Ok(mut pos) = a[0].parse::<i64>() else {
        return v.to_string();
    };
    if pos < 0 {
        pos = (n + pos).max(0);
    }
    let slice =
        |from: i64, to: i64| String::from_utf8_lossy(&b[from as usize..to as usize]).into_owned();
    let Some(len) = a.get(1) else {
        return if pos < n {
            slice(pos, n)
        } else {
            String::new()
        };
    };
    let Ok(len) = len.parse::<i64>() else {
        return v.to_string();
    };
    if len < 0 {
        let end = n + len;
        // Go would panic on pos > len(s) here; pennant returns ""
        return if end < pos || pos > n {
            String::new()
        } else {
            slice(pos, end)
        };
    }
    if pos + len >= n {
        return if pos < n {
            slice(pos, n)
        } else {
            String::new()
        };
    }
    slice(pos, pos + len)
}

/// Remove the shortest (or longest) non-empty prefix matching the glob `pattern`.
fn trim_prefix(v: &str, pattern: &str, longest: bool) -> String {
    let mut ends: Vec<usize> = v.char_indices().map(|(i, c)| i + c.len_utf8()).collect();
    if longest {
        ends.reverse();
    }
    for end in ends {
        match glob_match(pattern, &v[..end]) {
            None => return v.to_string(), // malformed pattern: unchanged
            Some(true) => return v[end..].to_string(),
            Some(false) => {}
        }
    }
    v.to_string()
}

/// Flux trims suffixes by reversing the value and the pattern (character by character).
fn trim_suffix(v: &str, pattern: &str, longest: bool) -> String {
    let rev = |s: &str| s.chars().rev().collect::<String>();
    rev(&trim_prefix(&rev(v), &rev(pattern), longest))
}

/// Glob match of the whole `name`: `*` (any run, `/` included), `?`, `[...]` with `^` negation
/// and ranges, `\` escapes. `None` for a malformed pattern.
fn glob_match(pattern: &str, name: &str) -> Option<bool> {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    glob_at(&p, &n)
}

fn glob_at(p: &[char], n: &[char]) -> Option<bool> {
    let Some((&c, rest)) = p.split_first() else {
        return Some(n.is_empty());
    };
    match c {
        '*' => {
            for skip in 0..=n.len() {
                if glob_at(rest, &n[skip..])? {
                    return Some(true);
                }
            }
            Some(false)
        }
        '?' => match n.split_first() {
            Some((_, tail)) => glob_at(rest, tail),
            None => {
                glob_at(rest, n)?;
                Some(false)
            }
        },
        '[' => {
            let close = rest.iter().skip(1).position(|&x| x == ']')? + 1;
            let (class, after) = (&rest[..close], &rest[close + 1..]);
            let (negate, class) = match class.split_first() {
                Some(('^', cl)) => (true, cl),
                _ => (false, class),
            };
            let Some((&x, tail)) = n.split_first() else {
                glob_at(after, n)?;
                return Some(false);
            };
            let mut hit = false;
            let mut i = 0;
            while i < class.len() {
                let lo = class[i];
                if i + 2 < class.len() && class[i + 1] == '-' {
                    hit |= lo <= x && x <= class[i + 2];
                    i += 3;
                } else {
                    hit |= lo == x;
                    i += 1;
                }
            }
            if hit != negate {
                glob_at(after, tail)
            } else {
                glob_at(after, tail)?;
                Some(false)
            }
        }
        '\\' => {
            let (&lit, rest) = rest.split_first()?;
            match n.split_first() {
                Some((&x, tail)) if x == lit => glob_at(rest, tail),
                _ => Some(false),
            }
        }
        _ => match n.split_first() {
            Some((&x, tail)) if x == c => glob_at(rest, tail),
            _ => Some(false),
        },
    }
}

#[cfg(test)]
mod tests;
