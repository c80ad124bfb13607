//! HelmRelease values: `spec.valuesFrom` (ConfigMap/Secret keys) and inline `spec.values`
//! composed into the one map handed to Helm, in Flux's order (fluxcd/pkg
//! `chartutil.ChartValuesFromReferences`, reference/flux.md §2.2), and the digest of the result
//! (`status.lastAttemptedConfigDigest`, byte-for-byte Flux's `chartutil.DigestValues`).
//!
//! The pure part is [`compose`] (and [`strvals`], [`config_digest`]); [`fetch`] is the thin
//! I/O that reads the referenced objects, each once per call.
//!
//! Precedence (the *documented* rule, implemented explicitly, helm-controller docs
//! "Values references"): entries without `targetPath` merge in list order (later wins), inline
//! `values` merge on top of them, then every `targetPath` entry is set on top of that, in list
//! order. Flux reaches the same result for the documented cases through shared map references
//! (its test "target path precedence over all"), but lets inline values win for a top-level
//! scalar path and lets a later plain entry win over an earlier `targetPath` when no inline
//! value shares the map; here a `targetPath` always wins, and a path through a value of another
//! type (e.g. `a.b` when `a` is a string) is an error instead of being silently dropped.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Api;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// The default `valuesKey` (same as Flux's `GetValuesKey`).
pub const DEFAULT_VALUES_KEY: &str = "values.yaml";

/// The kind of object a values reference points at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ValuesKind {
    ConfigMap,
    Secret,
}

impl ValuesKind {
    /// `"ConfigMap"` or `"Secret"`, the API kind (as in `valuesFrom[].kind`).
    pub fn as_str(self) -> &'static str {
        match self {
            ValuesKind::ConfigMap => "ConfigMap",
            ValuesKind::Secret => "Secret",
        }
    }

    /// Parses `valuesFrom[].kind`; `None` for any other kind (the CRD's enum rejects those).
    pub fn parse(kind: &str) -> Option<Self> {
        match kind {
            "ConfigMap" => Some(ValuesKind::ConfigMap),
            "Secret" => Some(ValuesKind::Secret),
            _ => None,
        }
    }

    /// The resource's plural, as the API server names it in a not-found message.
    fn plural(self) -> &'static str {
        match self {
            ValuesKind::ConfigMap => "configmaps",
            ValuesKind::Secret => "secrets",
        }
    }
}

/// One `spec.valuesFrom[]` entry, borrowed from the HelmRelease (fields as Flux's
/// `meta.ValuesReference`: kind, name, valuesKey, targetPath, optional, literal).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ValuesRef<'a> {
    pub kind: ValuesKind,
    /// Name of the object, in the HelmRelease's namespace.
    pub name: &'a str,
    /// The data key; `None` or empty means [`DEFAULT_VALUES_KEY`].
    pub values_key: Option<&'a str>,
    /// Helm `--set`-style path at which the key's content is set as one value; `None` or empty
    /// means the content is a YAML document merged at the root.
    pub target_path: Option<&'a str>,
    /// A missing object or key is skipped instead of failing (parse errors still fail).
    pub optional: bool,
    /// With `target_path`: the content is set verbatim as a string (`helm --set-literal`).
    pub literal: bool,
}

impl<'a> ValuesRef<'a> {
    /// The data key to read (`valuesKey`, default `values.yaml`).
    pub fn key(&self) -> &'a str {
        self.values_key
            .filter(|k| !k.is_empty())
            .unwrap_or(DEFAULT_VALUES_KEY)
    }

    fn path(&self) -> Option<&'a str> {
        self.target_path.filter(|p| !p.is_empty())
    }
}

/// What the cluster held for one reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Content<'a> {
    /// The key's content (ConfigMap `data`/`binaryData`, Secret `data`, decoded).
    Data(&'a str),
    /// The object does not exist.
    ObjectNotFound,
    /// The object exists but has no such key.
    KeyNotFound,
    /// The key's bytes are not UTF-8.
    NotUtf8,
}

/// An owned [`Content`], as [`fetch`] returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fetched {
    Data(String),
    ObjectNotFound,
    KeyNotFound,
    NotUtf8,
}

impl Fetched {
    pub fn as_content(&self) -> Content<'_> {
        match self {
            Fetched::Data(s) => Content::Data(s),
            Fetched::ObjectNotFound => Content::ObjectNotFound,
            Fetched::KeyNotFound => Content::KeyNotFound,
            Fetched::NotUtf8 => Content::NotUtf8,
        }
    }
}

/// Why values could not be composed. `Display` is Flux's `ErrValuesReference` message:
/// `could not resolve[ optional] <Kind> chart values reference '<ns>/<name>' with key '<key>':
/// <reason>`. The reason never quotes a Secret's content (a YAML or `--set` parse error in a
/// Secret names the position and the kind of error only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValuesError {
    /// A reference that cannot be resolved: `reason` is Flux's (`secrets "x" not found`,
    /// `key not found`, `failed to read values data: …`, a `--set` error).
    Reference {
        kind: ValuesKind,
        namespace: String,
        name: String,
        key: String,
        optional: bool,
        reason: String,
    },
    /// Reading the object failed for another reason than not-found (transient: retry).
    Api {
        kind: ValuesKind,
        namespace: String,
        name: String,
        message: String,
    },
}

impl std::fmt::Display for ValuesError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ValuesError::Reference {
                kind,
                namespace,
                name,
                key,
                optional,
                reason,
            } => write!(
                f,
                "could not resolve{} {} chart values reference '{namespace}/{name}' with key \
                 '{key}': {reason}",
                if *optional { " optional" } else { "" },
                kind.as_str()
            ),
            ValuesError::Api {
                kind,
                namespace,
                name,
                message,
            } => write!(
                f,
                "failed to get {} '{namespace}/{name}': {message}",
                kind.as_str()
            ),
        }
    }
}

impl std::error::Error for ValuesError {}

impl ValuesError {
    fn reference(namespace: &str, r: &ValuesRef<'_>, reason: String) -> Self {
        ValuesError::Reference {
            kind: r.kind,
            namespace: namespace.to_string(),
            name: r.name.to_string(),
            key: r.key().to_string(),
            optional: r.optional,
            reason,
        }
    }
}

/// Composes the values of a HelmRelease in `namespace` from its `valuesFrom` entries (each with
/// what [`fetch`] found) and its inline `values` (a JSON object; anything else counts as none).
///
/// Order: entries without `targetPath` are parsed as YAML mappings and deep-merged in list
/// order; inline values are merged on top; then each `targetPath` entry is set with Helm's
/// `--set` rules ([`strvals`]): quoted content (`'…'` or `"…"`) as a string (`--set-string`),
/// `literal` content verbatim. Deep merge: maps merge recursively, any other value (lists
/// included) replaces (Flux's `MergeMaps`).
///
/// Errors (first entry in list order wins): a missing object or key unless `optional`; content
/// that is not a YAML mapping; a `targetPath` value `--set` cannot parse or place.
pub fn compose(
    namespace: &str,
    entries: &[(ValuesRef<'_>, Content<'_>)],
    inline: Option<&Value>,
) -> Result<Value, ValuesError> {
    let mut result = Map::new();
    let mut paths = Vec::new();
    for (r, content) in entries {
        let data = match content {
            Content::Data(s) => *s,
            Content::ObjectNotFound | Content::KeyNotFound if r.optional => continue,
            Content::ObjectNotFound => {
                let reason = format!("{} \"{}\" not found", r.kind.plural(), r.name);
                return Err(ValuesError::reference(namespace, r, reason));
            }
            Content::KeyNotFound => {
                return Err(ValuesError::reference(namespace, r, "key not found".into()));
            }
            Content::NotUtf8 => {
                let reason = "failed to read values data: not valid UTF-8".to_string();
                return Err(ValuesError::reference(namespace, r, reason));
            }
        };
        if let Some(path) = r.path() {
            paths.push((r, path, data));
            continue;
        }
        let values = read_values(data, r.kind == ValuesKind::Secret)
            .map_err(|e| ValuesError::reference(namespace, r, e))?;
        merge_maps(&mut result, values);
    }
    if let Some(Value::Object(inline)) = inline {
        merge_maps(&mut result, inline.clone());
    }
    for (r, path, data) in paths {
        replace_path_value(&mut result, path, data, r.literal).map_err(|e| {
            let reason = e.describe(r.kind == ValuesKind::Secret);
            ValuesError::reference(namespace, r, reason)
        })?;
    }
    Ok(Value::Object(result))
}

/// Reads the content of every reference in `namespace`, in order: each object is fetched once
/// per call (cached by kind and name), ConfigMap keys from `data` then `binaryData` (Flux reads
/// `data` only: a key only in `binaryData` is "key not found" there), Secret keys from `data`.
///
/// Errors: only API failures other than not-found ([`ValuesError::Api`]); a missing object or
/// key is reported per entry, for [`compose`] to judge against `optional`.
pub async fn fetch(
    client: &kube::Client,
    namespace: &str,
    refs: &[ValuesRef<'_>],
) -> Result<Vec<Fetched>, ValuesError> {
    enum Obj {
        Missing,
        ConfigMap(Box<ConfigMap>),
        Secret(Box<Secret>),
    }
    let mut cache: HashMap<(ValuesKind, &str), Obj> = HashMap::new();
    let mut out = Vec::with_capacity(refs.len());
    for r in refs {
        let obj = match cache.entry((r.kind, r.name)) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(slot) => {
                let api_err = |e: kube::Error| ValuesError::Api {
                    kind: r.kind,
                    namespace: namespace.to_string(),
                    name: r.name.to_string(),
                    message: e.to_string(),
                };
                let obj = match r.kind {
                    ValuesKind::ConfigMap => {
                        Api::<ConfigMap>::namespaced(client.clone(), namespace)
                            .get_opt(r.name)
                            .await
                            .map_err(api_err)?
                            .map_or(Obj::Missing, |o| Obj::ConfigMap(Box::new(o)))
                    }
                    ValuesKind::Secret => Api::<Secret>::namespaced(client.clone(), namespace)
                        .get_opt(r.name)
                        .await
                        .map_err(api_err)?
                        .map_or(Obj::Missing, |o| Obj::Secret(Box::new(o))),
                };
                slot.insert(obj)
            }
        };
        let key = r.key();
        let bytes_to = |b: &[u8]| match std::str::from_utf8(b) {
            Ok(s) => Fetched::Data(s.to_string()),
            Err(_) => Fetched::NotUtf8,
        };
        out.push(match &*obj {
            Obj::Missing => Fetched::ObjectNotFound,
            Obj::ConfigMap(cm) => {
                if let Some(s) = cm.data.as_ref().and_then(|d| d.get(key)) {
                    Fetched::Data(s.clone())
                } else if let Some(b) = cm.binary_data.as_ref().and_then(|d| d.get(key)) {
                    bytes_to(&b.0)
                } else {
                    Fetched::KeyNotFound
                }
            }
            Obj::Secret(s) => match s.data.as_ref().and_then(|d| d.get(key)) {
                Some(b) => bytes_to(&b.0),
                None => Fetched::KeyNotFound,
            },
        });
    }
    Ok(out)
}

/// [`fetch`] then [`compose`]: the values a HelmRelease in `namespace` gives Helm.
pub async fn fetch_and_compose(
    client: &kube::Client,
    namespace: &str,
    refs: &[ValuesRef<'_>],
    inline: Option<&Value>,
) -> Result<Value, ValuesError> {
    let fetched = fetch(client, namespace, refs).await?;
    let entries: Vec<_> = refs
        .iter()
        .copied()
        .zip(fetched.iter().map(Fetched::as_content))
        .collect();
    compose(namespace, &entries, inline)
}

/// Deep merge of `b` into `a` (Flux's `MergeMaps`, from Helm): a map merges into a map
/// recursively; any other value of `b` replaces `a`'s.
pub fn merge_maps(a: &mut Map<String, Value>, b: Map<String, Value>) {
    for (k, v) in b {
        match (a.get_mut(&k), v) {
            (Some(Value::Object(am)), Value::Object(bm)) => merge_maps(am, bm),
            (_, v) => {
                a.insert(k, v);
            }
        }
    }
}

/// Parses a values document as Helm's `ReadValues` does: the first YAML document, which must
/// be a mapping (an empty document or `null` is an empty map). Scalars resolve as YAML 1.1
/// (go-yaml v2, which Helm's `sigs.k8s.io/yaml` uses): `yes`/`on` are booleans, `0644` is octal.
/// For a Secret (`redact`), the error names the position only.
fn read_values(data: &str, redact: bool) -> Result<Map<String, Value>, String> {
    let mut options = serde_saphyr::Options::default();
    options.legacy_octal_numbers = true;
    options.with_snippet = false;
    let docs: Vec<Value> =
        serde_saphyr::from_multiple_with_options(data, options).map_err(|e| {
            let at = e
                .location()
                .map(|l| format!(" at line {} column {}", l.line(), l.column()))
                .unwrap_or_default();
            if redact {
                format!("failed to read values data: invalid YAML{at}")
            } else {
                format!("failed to read values data: {e}")
            }
        })?;
    match docs.into_iter().next() {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(m)) => Ok(m),
        Some(other) => Err(format!(
            "failed to read values data: a YAML mapping is required, got {}",
            json_type(&other)
        )),
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// Sets `content` at `path` in `values` as Flux's `ReplacePathValue` /
/// `ReplacePathLiteralValue` do: literal → verbatim string (metacharacters escaped, the path
/// keeps its `\.` escapes); content wrapped in single or double quotes → the unquoted text as a
/// string (`--set-string`); otherwise `--set` with type coercion. The whole `path=content` is
/// one strvals line, so an unescaped `,` in content starts another `key=value`.
pub fn replace_path_value(
    values: &mut Map<String, Value>,
    path: &str,
    content: &str,
    literal: bool,
) -> Result<(), StrvalsError> {
    if literal {
        let mut escaped = String::with_capacity(content.len());
        for c in content.chars() {
            if matches!(c, '\\' | ',' | '[' | ']' | '{' | '}') {
                escaped.push('\\');
            }
            escaped.push(c);
        }
        return strvals::parse_into(&format!("{path}={escaped}"), values, true);
    }
    let single = content.starts_with('\'') && content.ends_with('\'');
    let double = content.starts_with('"') && content.ends_with('"');
    if single || double {
        let trimmed = content.trim_matches(|c| c == '\'' || c == '"');
        return strvals::parse_into(&format!("{path}={trimmed}"), values, true);
    }
    strvals::parse_into(&format!("{path}={content}"), values, false)
}

pub use strvals::StrvalsError;

/// Helm's `--set` parser (`helm.sh/helm/v4/pkg/strvals`), re-implemented: a line of
/// `name=value` pairs separated by `,`; `.` nests maps, `[n]` indexes lists (padding with
/// `null` up to `n`, at most 65536), `\` escapes the next character, `{a,b}` is a list, and
/// unquoted values are typed like Helm's `typedVal` (`true`/`false`/`null` in any case,
/// `0`, base-10 integers without a leading zero; everything else a string).
pub mod strvals {
    use serde_json::{Map, Value};

    /// The largest list index `[n]` accepted (Helm's `MaxIndex`).
    pub const MAX_INDEX: i64 = 65536;
    /// The deepest `a.b.c` nesting accepted (Helm's `MaxNestedNameLevel`).
    pub const MAX_NESTED_NAME_LEVEL: usize = 30;

    /// A `--set` line Helm would reject. `Display` is Helm's message (which may quote the
    /// line); [`StrvalsError::describe`] can leave the quoted text out.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct StrvalsError {
        kind: ErrorKind,
        /// Text from the line the message quotes (a key, an index, trailing data).
        quoted: String,
        number: i64,
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum ErrorKind {
        KeyNoValue,
        KeyNoValueComma,
        KeyMapNoValue,
        NestedTooDeep,
        IndexSyntax,
        IndexRange,
        NegativeIndex,
        IndexTooLarge,
        UnexpectedAfterIndex,
        ListUnterminated,
        /// A path through a value that is not a map/list (Helm panics and recovers).
        Conversion,
    }

    impl StrvalsError {
        fn new(kind: ErrorKind, quoted: impl Into<String>, number: i64) -> Self {
            StrvalsError {
                kind,
                quoted: quoted.into(),
                number,
            }
        }

        /// Helm's message; with `redact`, the text quoted from the line is left out (for values
        /// from a Secret).
        pub fn describe(&self, redact: bool) -> String {
            let q = if redact {
                String::new()
            } else {
                format!("{:?} ", self.quoted)
            };
            let q = q.as_str();
            let n = self.number;
            match self.kind {
                ErrorKind::KeyNoValue => format!("key {q}has no value"),
                ErrorKind::KeyNoValueComma => format!("key {q}has no value (cannot end with ,)"),
                ErrorKind::KeyMapNoValue => format!("key map {q}has no value"),
                ErrorKind::NestedTooDeep => format!(
                    "value name nested level is greater than maximum supported nested level of {MAX_NESTED_NAME_LEVEL}"
                ),
                ErrorKind::IndexSyntax => {
                    format!("error parsing index: strconv.Atoi: parsing {q}invalid syntax")
                        .replacen("\" invalid", "\": invalid", 1)
                }
                ErrorKind::IndexRange => {
                    format!("error parsing index: strconv.Atoi: parsing {q}value out of range")
                        .replacen("\" value", "\": value", 1)
                }
                ErrorKind::NegativeIndex => format!("negative {n} index not allowed"),
                ErrorKind::IndexTooLarge => {
                    format!("index of {n} is greater than maximum supported index of {MAX_INDEX}")
                }
                ErrorKind::UnexpectedAfterIndex if redact => {
                    "unexpected data at end of array index".to_string()
                }
                ErrorKind::UnexpectedAfterIndex => {
                    // Go's %q of a []rune: ['a' 'b']
                    let runes: Vec<String> =
                        self.quoted.chars().map(|c| format!("{c:?}")).collect();
                    format!(
                        "unexpected data at end of array index: [{}]",
                        runes.join(" ")
                    )
                }
                ErrorKind::ListUnterminated => "list must terminate with '}'".to_string(),
                ErrorKind::Conversion => format!(
                    "unable to parse key: interface conversion: interface {{}} is {}, not {}",
                    self.quoted_type(),
                    if n == 0 {
                        "[]interface {}"
                    } else {
                        "map[string]interface {}"
                    }
                ),
            }
        }

        fn quoted_type(&self) -> &str {
            // For a conversion error `quoted` holds the Go type of the value found, which
            // is never user content.
            &self.quoted
        }
    }

    impl std::fmt::Display for StrvalsError {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(&self.describe(false))
        }
    }

    impl std::error::Error for StrvalsError {}

    /// Internal outcome: Helm's parser ends a line on `io.EOF`, which is not an error.
    enum Stop {
        Eof,
        Err(StrvalsError),
    }

    impl From<StrvalsError> for Stop {
        fn from(e: StrvalsError) -> Self {
            Stop::Err(e)
        }
    }

    fn go_type(v: &Value) -> &'static str {
        match v {
            Value::Null => "nil",
            Value::Bool(_) => "bool",
            Value::Number(n) if n.is_f64() => "float64",
            Value::Number(_) => "int64",
            Value::String(_) => "string",
            Value::Array(_) => "[]interface {}",
            Value::Object(_) => "map[string]interface {}",
        }
    }

    fn conversion(found: &Value, want_map: bool) -> StrvalsError {
        StrvalsError::new(ErrorKind::Conversion, go_type(found), i64::from(want_map))
    }

    /// Parses `line` into `dest` (Helm's `ParseInto`, or `ParseIntoString` when
    /// `force_string`): existing keys are overwritten, maps along a path are kept and extended.
    /// On error `dest` may hold part of the line, as Helm's.
    pub fn parse_into(
        line: &str,
        dest: &mut Map<String, Value>,
        force_string: bool,
    ) -> Result<(), StrvalsError> {
        let mut p = Parser {
            chars: line.chars().collect(),
            pos: 0,
            force_string,
        };
        loop {
            match p.key(dest, 0) {
                Ok(()) => {}
                Err(Stop::Eof) => return Ok(()),
                Err(Stop::Err(e)) => return Err(e),
            }
        }
    }

    /// Parses `line` into a new map (Helm's `Parse` / `ParseString`).
    pub fn parse(line: &str, force_string: bool) -> Result<Map<String, Value>, StrvalsError> {
        let mut m = Map::new();
        parse_into(line, &mut m, force_string)?;
        Ok(m)
    }

    struct Parser {
        chars: Vec<char>,
        pos: usize,
        force_string: bool,
    }

    enum ListErr {
        Eof,
        NotList,
        Err(StrvalsError),
    }

    fn set(data: &mut Map<String, Value>, key: &str, v: Value) {
        if !key.is_empty() {
            data.insert(key.to_string(), v);
        }
    }

    fn set_index(mut list: Vec<Value>, index: i64, v: Value) -> (Vec<Value>, Result<(), Stop>) {
        if index < 0 {
            let e = StrvalsError::new(ErrorKind::NegativeIndex, "", index);
            return (list, Err(e.into()));
        }
        if index > MAX_INDEX {
            let e = StrvalsError::new(ErrorKind::IndexTooLarge, "", index);
            return (list, Err(e.into()));
        }
        let i = index as usize;
        if list.len() <= i {
            list.resize(i + 1, Value::Null);
        }
        list[i] = v;
        (list, Ok(()))
    }

    impl Parser {
        fn next(&mut self) -> Option<char> {
            let c = self.chars.get(self.pos).copied();
            if c.is_some() {
                self.pos += 1;
            }
            c
        }

        /// Helm's `runesUntil`: the text up to one of `stop` (unescaped), and that stop
        /// character, or `None` at the end of the line.
        fn until(&mut self, stop: &[char]) -> (String, Option<char>) {
            let mut v = String::new();
            loop {
                match self.next() {
                    None => return (v, None),
                    Some(c) if stop.contains(&c) => return (v, Some(c)),
                    Some('\\') => match self.next() {
                        None => return (v, None),
                        Some(n) => v.push(n),
                    },
                    Some(c) => v.push(c),
                }
            }
        }

        fn typed(&self, s: String) -> Value {
            if self.force_string {
                Value::String(s)
            } else {
                typed_val(s)
            }
        }

        fn key(&mut self, data: &mut Map<String, Value>, level: usize) -> Result<(), Stop> {
            let (k, last) = self.until(&['=', '[', ',', '.']);
            match last {
                None if k.is_empty() => Err(Stop::Eof),
                None => Err(StrvalsError::new(ErrorKind::KeyNoValue, k, 0).into()),
                Some('[') => {
                    let i = self.key_index()?;
                    let list = match data.get(&k) {
                        None => Vec::new(),
                        Some(Value::Array(a)) => a.clone(),
                        Some(other) => return Err(conversion(other, false).into()),
                    };
                    let (list, res) = self.list_item(list, i, level);
                    set(data, &k, Value::Array(list));
                    res
                }
                Some('=') => match self.val_list() {
                    Ok(vl) => {
                        set(data, &k, Value::Array(vl));
                        Ok(())
                    }
                    Err(ListErr::Eof) => {
                        set(data, &k, Value::String(String::new()));
                        Err(Stop::Eof)
                    }
                    Err(ListErr::NotList) => {
                        let (rs, _) = self.until(&[',']);
                        let v = self.typed(rs);
                        set(data, &k, v);
                        Ok(())
                    }
                    Err(ListErr::Err(e)) => Err(e.into()),
                },
                Some(',') => {
                    set(data, &k, Value::String(String::new()));
                    Err(StrvalsError::new(ErrorKind::KeyNoValueComma, k, 0).into())
                }
                Some(_) => {
                    // '.'
                    let level = level + 1;
                    if level > MAX_NESTED_NAME_LEVEL {
                        return Err(StrvalsError::new(ErrorKind::NestedTooDeep, "", 0).into());
                    }
                    let mut inner = match data.get(&k) {
                        None => Map::new(),
                        Some(Value::Object(m)) => m.clone(),
                        Some(other) => return Err(conversion(other, true).into()),
                    };
                    let res = self.key(&mut inner, level);
                    if res.is_ok() && inner.is_empty() {
                        return Err(StrvalsError::new(ErrorKind::KeyMapNoValue, k, 0).into());
                    }
                    if !inner.is_empty() {
                        set(data, &k, Value::Object(inner));
                    }
                    res
                }
            }
        }

        /// Helm's `keyIndex` (after `[`): the text up to `]` as a Go `strconv.Atoi` integer.
        fn key_index(&mut self) -> Result<i64, Stop> {
            let (v, last) = self.until(&[']']);
            if last.is_none() {
                // "error parsing index: EOF" wraps io.EOF: the line ends without error.
                return Err(Stop::Eof);
            }
            atoi(&v).map_err(Stop::Err)
        }

        fn list_item(
            &mut self,
            list: Vec<Value>,
            i: i64,
            level: usize,
        ) -> (Vec<Value>, Result<(), Stop>) {
            if i < 0 {
                let e = StrvalsError::new(ErrorKind::NegativeIndex, "", i);
                return (list, Err(e.into()));
            }
            let (k, last) = self.until(&['[', '.', '=']);
            if !k.is_empty() {
                let e = StrvalsError::new(ErrorKind::UnexpectedAfterIndex, k, 0);
                return (list, Err(e.into()));
            }
            match last {
                None => (list, Err(Stop::Eof)),
                Some('=') => match self.val_list() {
                    Ok(vl) => set_index(list, i, Value::Array(vl)),
                    Err(ListErr::Eof) => set_index(list, i, Value::String(String::new())),
                    Err(ListErr::NotList) => {
                        let (rs, _) = self.until(&[',']);
                        let v = self.typed(rs);
                        set_index(list, i, v)
                    }
                    Err(ListErr::Err(e)) => (list, Err(e.into())),
                },
                Some('[') => {
                    let next_i = match self.key_index() {
                        Ok(n) => n,
                        Err(e) => return (list, Err(e)),
                    };
                    let current = match list.get(i as usize) {
                        None | Some(Value::Null) => Vec::new(),
                        Some(Value::Array(a)) => a.clone(),
                        Some(other) => {
                            let e = conversion(other, false);
                            return (list, Err(e.into()));
                        }
                    };
                    let (inner, res) = self.list_item(current, next_i, level);
                    if res.is_err() {
                        return (list, res);
                    }
                    set_index(list, i, Value::Array(inner))
                }
                Some(_) => {
                    // '.': a map inside the list; a non-map there is replaced.
                    let mut inner = match list.get(i as usize) {
                        Some(Value::Object(m)) => m.clone(),
                        _ => Map::new(),
                    };
                    let res = self.key(&mut inner, level);
                    if res.is_err() {
                        return (list, res);
                    }
                    set_index(list, i, Value::Object(inner))
                }
            }
        }

        /// Helm's `valList`: `{a,b,c}` as a list of typed values.
        fn val_list(&mut self) -> Result<Vec<Value>, ListErr> {
            match self.next() {
                None => return Err(ListErr::Eof),
                Some('{') => {}
                Some(_) => {
                    self.pos -= 1;
                    return Err(ListErr::NotList);
                }
            }
            let mut list = Vec::new();
            loop {
                let (rs, last) = self.until(&[',', '}']);
                match last {
                    None => {
                        let e = StrvalsError::new(ErrorKind::ListUnterminated, "", 0);
                        return Err(ListErr::Err(e));
                    }
                    Some('}') => {
                        if let Some(c) = self.next()
                            && c != ','
                        {
                            self.pos -= 1;
                        }
                        list.push(self.typed(rs));
                        return Ok(list);
                    }
                    Some(_) => list.push(self.typed(rs)),
                }
            }
        }
    }

    /// Go's `strconv.Atoi` on a 64-bit platform.
    fn atoi(s: &str) -> Result<i64, StrvalsError> {
        let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(StrvalsError::new(ErrorKind::IndexSyntax, s, 0));
        }
        s.parse::<i64>()
            .map_err(|_| StrvalsError::new(ErrorKind::IndexRange, s, 0))
    }

    /// Go's `strings.EqualFold(s, word)` for an ASCII lowercase `word`: ASCII case folding plus
    /// the two non-ASCII letters that fold onto ASCII ones (U+017F ſ → s, U+212A K → k).
    fn equal_fold(s: &str, word: &str) -> bool {
        let mut a = s.chars().map(|c| match c {
            '\u{17F}' => 's',
            '\u{212A}' => 'k',
            c => c.to_ascii_lowercase(),
        });
        let mut b = word.chars();
        loop {
            match (a.next(), b.next()) {
                (None, None) => return true,
                (Some(x), Some(y)) if x == y => {}
                _ => return false,
            }
        }
    }

    /// Helm's `typedVal` for `--set`: `true`/`false`/`null` (any case) → bool/null; `0` → 0;
    /// a base-10 int64 not starting with `0` (sign allowed) → integer; else the string.
    pub fn typed_val(s: String) -> Value {
        if equal_fold(&s, "true") {
            return Value::Bool(true);
        }
        if equal_fold(&s, "false") {
            return Value::Bool(false);
        }
        if equal_fold(&s, "null") {
            return Value::Null;
        }
        if s == "0" {
            return Value::from(0i64);
        }
        if !s.is_empty() && !s.starts_with('0') {
            let digits = s.strip_prefix(['+', '-']).unwrap_or(&s);
            if !digits.is_empty()
                && digits.bytes().all(|b| b.is_ascii_digit())
                && let Ok(n) = s.parse::<i64>()
            {
                return Value::from(n);
            }
        }
        Value::String(s)
    }
}

/// Flux's `status.lastAttemptedConfigDigest` for composed values: `sha256:<64 hex>` over the
/// values encoded as YAML the way fluxcd/pkg `chartutil.DigestValues` does (sigs.k8s.io/yaml's
/// `JSONObjectToYAMLObject`, keys sorted recursively, go-yaml v2 encoder: block style, indent 2,
/// lists not indented under their key, unlimited line width, go-yaml's quoting rules). An
/// empty map (or a non-map) digests as nothing: `sha256:e3b0c442…b855`.
///
/// Numbers are float64 as in Flux (so integers beyond 2^53 round as there): integral ones
/// print as integers (`JSONObjectToYAMLObject`), others as Go's
/// `strconv.FormatFloat(f, 'g', -1, 64)`. Not reproduced: keys longer than 128 bytes or with
/// line breaks (go-yaml writes `? key`), single-quoted text with U+2028/U+2029 line separators,
/// and integers above 2^53 set through a `targetPath` (int64 in Flux, exact there).
pub fn config_digest(values: &Value) -> String {
    let mut out = String::new();
    if let Value::Object(m) = values
        && !m.is_empty()
    {
        yaml_v2::map(&mut out, m, 0, false);
    }
    let sum = Sha256::digest(out.as_bytes());
    let mut hex = String::with_capacity(64);
    for b in sum {
        hex.push_str(&format!("{b:02x}"));
    }
    format!("sha256:{hex}")
}

/// The YAML text [`config_digest`] hashes (for tests and debugging).
pub fn digest_yaml(values: &Value) -> String {
    let mut out = String::new();
    if let Value::Object(m) = values
        && !m.is_empty()
    {
        yaml_v2::map(&mut out, m, 0, false);
    }
    out
}

/// The subset of go-yaml v2's emitter that JSON-shaped values reach (see [`config_digest`]).
mod yaml_v2 {
    use serde_json::{Map, Value};

    /// A block mapping at `indent`; with `inline_first`, the first key follows a `- ` already
    /// written on the current line.
    pub(super) fn map(out: &mut String, m: &Map<String, Value>, indent: usize, inline_first: bool) {
        let mut keys: Vec<&String> = m.keys().collect();
        keys.sort();
        for (n, k) in keys.into_iter().enumerate() {
            if n > 0 || !inline_first {
                out.push_str(&" ".repeat(indent));
            }
            out.push_str(&scalar_str(k, true, indent));
            out.push(':');
            match &m[k] {
                Value::Object(inner) if !inner.is_empty() => {
                    out.push('\n');
                    map(out, inner, indent + 2, false);
                }
                Value::Array(items) if !items.is_empty() => {
                    out.push('\n');
                    seq(out, items, indent, false);
                }
                v => {
                    out.push(' ');
                    out.push_str(&scalar(v, indent + 2));
                    if !out.ends_with('\n') {
                        out.push('\n');
                    }
                }
            }
        }
    }

    fn seq(out: &mut String, items: &[Value], indent: usize, inline_first: bool) {
        for (n, item) in items.iter().enumerate() {
            if n > 0 || !inline_first {
                out.push_str(&" ".repeat(indent));
            }
            out.push('-');
            match item {
                Value::Object(inner) if !inner.is_empty() => {
                    out.push(' ');
                    map(out, inner, indent + 2, true);
                }
                Value::Array(inner) if !inner.is_empty() => {
                    out.push(' ');
                    seq(out, inner, indent + 2, true);
                }
                v => {
                    out.push(' ');
                    out.push_str(&scalar(v, indent + 2));
                    if !out.ends_with('\n') {
                        out.push('\n');
                    }
                }
            }
        }
    }

    /// A scalar (or empty collection) in block context; `block_indent` is where a literal
    /// block's lines go.
    fn scalar(v: &Value, block_indent: usize) -> String {
        match v {
            Value::Null => "null".into(),
            Value::Bool(b) => b.to_string(),
            Value::Number(n) => number(n),
            Value::String(s) => scalar_str(s, false, block_indent),
            Value::Array(_) => "[]".into(),
            Value::Object(_) => "{}".into(),
        }
    }

    /// Every number as Flux holds it: a float64 (sigs.k8s.io/yaml and encoding/json decode
    /// numbers so), printed as an integer when integral and within int64 (or uint64) range.
    fn number(n: &serde_json::Number) -> String {
        let f = n.as_f64().unwrap_or(0.0);
        if f.fract() == 0.0 {
            if (-9.223_372_036_854_776e18..9.223_372_036_854_776e18).contains(&f) {
                return (f as i64).to_string();
            }
            if (0.0..1.844_674_407_370_955_2e19).contains(&f) {
                return (f as u64).to_string();
            }
        }
        go_format_g(f)
    }

    /// Go's `strconv.FormatFloat(f, 'g', -1, 64)`: the shortest digits that round-trip, in
    /// `%e` form when the decimal exponent is < -4 or >= 6 (Go decides with precision 6 for
    /// the shortest form), the exponent with a sign and at least two digits.
    pub(super) fn go_format_g(f: f64) -> String {
        if f.is_nan() {
            return ".nan".into();
        }
        if f.is_infinite() {
            return if f > 0.0 { ".inf" } else { "-.inf" }.into();
        }
        let sci = format!("{:e}", f.abs());
        let (mant, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
        let exp: i32 = exp.parse().unwrap_or(0);
        let digits: String = mant.chars().filter(|c| *c != '.').collect();
        let sign = if f.is_sign_negative() && f != 0.0 {
            "-"
        } else {
            ""
        };
        if !(-4..6).contains(&exp) {
            let (first, rest) = digits.split_at(1);
            let frac = if rest.is_empty() {
                String::new()
            } else {
                format!(".{rest}")
            };
            let esign = if exp < 0 { '-' } else { '+' };
            return format!("{sign}{first}{frac}e{esign}{:02}", exp.abs());
        }
        let dp = exp + 1;
        let nd = digits.len() as i32;
        let body = if dp <= 0 {
            format!("0.{}{digits}", "0".repeat((-dp) as usize))
        } else if dp >= nd {
            format!("{digits}{}", "0".repeat((dp - nd) as usize))
        } else {
            format!("{}.{}", &digits[..dp as usize], &digits[dp as usize..])
        };
        format!("{sign}{body}")
    }

    fn is_break(c: char) -> bool {
        matches!(c, '\r' | '\n' | '\u{85}' | '\u{2028}' | '\u{2029}')
    }

    fn is_printable(c: char) -> bool {
        let u = c as u32;
        u == 0x0A
            || (0x20..=0x7E).contains(&u)
            || (0xA0..=0xD7FF).contains(&u)
            || ((0xE000..=0xFFFD).contains(&u) && u != 0xFEFF)
    }

    #[derive(Clone, Copy, PartialEq)]
    enum Style {
        Plain,
        Single,
        Double,
        Literal,
    }

    /// A string as go-yaml v2 writes it (`encoder.stringv` then the emitter's style choice).
    pub(super) fn scalar_str(s: &str, key: bool, block_indent: usize) -> String {
        let can_plain = resolves_to_str(s) && !is_base60_float(s);
        let mut style = if s.contains('\n') {
            Style::Literal
        } else if can_plain {
            Style::Plain
        } else {
            Style::Double
        };
        let a = analyze(s);
        if key && a.multiline {
            style = Style::Double;
        }
        if style == Style::Plain && (!a.block_plain_allowed || (s.is_empty() && key)) {
            style = Style::Single;
        }
        if style == Style::Single && !a.single_quoted_allowed {
            style = Style::Double;
        }
        if style == Style::Literal && (!a.block_allowed || key) {
            style = Style::Double;
        }
        match style {
            Style::Plain => s.to_string(),
            Style::Single => format!("'{}'", s.replace('\'', "''")),
            Style::Double => double_quoted(s),
            Style::Literal => literal(s, block_indent),
        }
    }

    struct Analysis {
        multiline: bool,
        block_plain_allowed: bool,
        single_quoted_allowed: bool,
        block_allowed: bool,
    }

    /// libyaml's `yaml_emitter_analyze_scalar` (block context only).
    fn analyze(s: &str) -> Analysis {
        if s.is_empty() {
            return Analysis {
                multiline: false,
                block_plain_allowed: true,
                single_quoted_allowed: true,
                block_allowed: false,
            };
        }
        let chars: Vec<char> = s.chars().collect();
        let mut block_indicators = s.starts_with("---") || s.starts_with("...");
        let (mut line_breaks, mut special) = (false, false);
        let (mut leading_space, mut leading_break) = (false, false);
        let (mut trailing_space, mut trailing_break) = (false, false);
        let (mut break_space, mut space_break) = (false, false);
        let (mut previous_space, mut previous_break) = (false, false);
        let mut preceded_by_ws = true;
        let n = chars.len();
        for (i, &c) in chars.iter().enumerate() {
            let followed_by_ws = i + 1 >= n || matches!(chars[i + 1], ' ' | '\t');
            if i == 0 {
                match c {
                    '#' | ',' | '[' | ']' | '{' | '}' | '&' | '*' | '!' | '|' | '>' | '\''
                    | '"' | '%' | '@' | '`' => block_indicators = true,
                    '?' | ':' | '-' if followed_by_ws => block_indicators = true,
                    _ => {}
                }
            } else {
                match c {
                    ':' if followed_by_ws => block_indicators = true,
                    '#' if preceded_by_ws => block_indicators = true,
                    _ => {}
                }
            }
            if !is_printable(c) {
                special = true;
            }
            if c == ' ' {
                leading_space |= i == 0;
                trailing_space |= i + 1 == n;
                break_space |= previous_break;
                previous_space = true;
                previous_break = false;
            } else if is_break(c) {
                line_breaks = true;
                leading_break |= i == 0;
                trailing_break |= i + 1 == n;
                space_break |= previous_space;
                previous_space = false;
                previous_break = true;
            } else {
                previous_space = false;
                previous_break = false;
            }
            preceded_by_ws = matches!(c, ' ' | '\t' | '\0') || is_break(c);
        }
        let mut a = Analysis {
            multiline: line_breaks,
            block_plain_allowed: true,
            single_quoted_allowed: true,
            block_allowed: true,
        };
        if leading_space || leading_break || trailing_space || trailing_break {
            a.block_plain_allowed = false;
        }
        if trailing_space {
            a.block_allowed = false;
        }
        if break_space {
            a.block_plain_allowed = false;
            a.single_quoted_allowed = false;
        }
        if space_break || special {
            a.block_plain_allowed = false;
            a.single_quoted_allowed = false;
            a.block_allowed = false;
        }
        if line_breaks || block_indicators {
            a.block_plain_allowed = false;
        }
        a
    }

    fn double_quoted(s: &str) -> String {
        let mut out = String::from("\"");
        for c in s.chars() {
            let u = c as u32;
            if !is_printable(c) || u == 0xFEFF || is_break(c) || c == '"' || c == '\\' {
                out.push('\\');
                match u {
                    0x00 => out.push('0'),
                    0x07 => out.push('a'),
                    0x08 => out.push('b'),
                    0x09 => out.push('t'),
                    0x0A => out.push('n'),
                    0x0B => out.push('v'),
                    0x0C => out.push('f'),
                    0x0D => out.push('r'),
                    0x1B => out.push('e'),
                    0x22 => out.push('"'),
                    0x5C => out.push('\\'),
                    0x85 => out.push('N'),
                    0xA0 => out.push('_'),
                    0x2028 => out.push('L'),
                    0x2029 => out.push('P'),
                    u if u <= 0xFF => out.push_str(&format!("x{u:02X}")),
                    u if u <= 0xFFFF => out.push_str(&format!("u{u:04X}")),
                    u => out.push_str(&format!("U{u:08X}")),
                }
            } else {
                out.push(c);
            }
        }
        out.push('"');
        out
    }

    /// A literal block (`|`, with an indentation hint when the text starts with a space or a
    /// break, and `-`/`+` chomping), its lines at `indent`.
    fn literal(s: &str, indent: usize) -> String {
        let mut out = String::from("|");
        if s.starts_with(' ') || s.starts_with(is_break) {
            out.push('2');
        }
        let chars: Vec<char> = s.chars().collect();
        let n = chars.len();
        if !is_break(chars[n - 1]) {
            out.push('-');
        } else if n == 1 || is_break(chars[n - 2]) {
            out.push('+');
        }
        out.push('\n');
        let mut breaks = true;
        for c in chars {
            if is_break(c) {
                out.push(c);
                breaks = true;
            } else {
                if breaks {
                    out.push_str(&" ".repeat(indent));
                }
                out.push(c);
                breaks = false;
            }
        }
        out
    }

    /// Whether go-yaml v2's `resolve("", s)` keeps `s` a string (else it must be quoted). Only
    /// text starting with a character of go-yaml's resolve table is looked up, so `<<` (the
    /// merge key) stays a plain string.
    fn resolves_to_str(s: &str) -> bool {
        const SPECIAL: &[&str] = &[
            "y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON", "n", "N",
            "no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF", "", "~", "null",
            "Null", "NULL", ".nan", ".NaN", ".NAN", ".inf", ".Inf", ".INF", "+.inf", "+.Inf",
            "+.INF", "-.inf", "-.Inf", "-.INF",
        ];
        if SPECIAL.contains(&s) {
            return false;
        }
        let first = s.as_bytes()[0];
        if first == b'.' {
            return !is_go_float(s);
        }
        if !(first.is_ascii_digit() || first == b'+' || first == b'-') {
            return true;
        }
        if is_timestamp(s) {
            return false;
        }
        let plain: String = s.chars().filter(|c| *c != '_').collect();
        if go_parse_int(&plain) {
            return false;
        }
        if is_yaml_style_float(&plain) {
            return false;
        }
        if let Some(bits) = plain
            .strip_prefix("0b")
            .or_else(|| plain.strip_prefix("-0b"))
            && !bits.is_empty()
            && bits.len() <= 64
            && bits.bytes().all(|b| b == b'0' || b == b'1')
        {
            return false;
        }
        true
    }

    /// Go `strconv.ParseInt(s, 0, 64)` or `ParseUint(s, 0, 64)` succeeds (sign, `0x`/`0o`/
    /// `0b` prefixes, a leading `0` for octal).
    fn go_parse_int(s: &str) -> bool {
        let (neg, body) = match s.as_bytes().first() {
            Some(b'+') => (false, &s[1..]),
            Some(b'-') => (true, &s[1..]),
            _ => (false, s),
        };
        let lower = body.to_ascii_lowercase();
        let (radix, digits) = if let Some(d) = lower.strip_prefix("0x") {
            (16, d.to_string())
        } else if let Some(d) = lower.strip_prefix("0o") {
            (8, d.to_string())
        } else if let Some(d) = lower.strip_prefix("0b") {
            (2, d.to_string())
        } else if lower.len() > 1 && lower.starts_with('0') {
            (8, lower[1..].to_string())
        } else {
            (10, lower.clone())
        };
        if digits.is_empty() {
            return false;
        }
        match u64::from_str_radix(&digits, radix) {
            Ok(v) => !neg || v <= 1 << 63,
            Err(_) => false,
        }
    }

    /// go-yaml's `yamlStyleFloat` (`^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`)
    /// and a finite value.
    fn is_yaml_style_float(s: &str) -> bool {
        let b = s.as_bytes();
        let mut i = 0;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        let int_start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let int_digits = i - int_start;
        if i < b.len() && b[i] == b'.' {
            i += 1;
            let frac_start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            if int_digits == 0 && i == frac_start {
                return false;
            }
        } else if int_digits == 0 {
            return false;
        }
        if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
            i += 1;
            if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
                i += 1;
            }
            let exp_start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            if i == exp_start {
                return false;
            }
        }
        i == b.len() && s.parse::<f64>().is_ok_and(f64::is_finite)
    }

    /// Go `strconv.ParseFloat` for text starting with `.` (`.5`, `.5e3`).
    fn is_go_float(s: &str) -> bool {
        is_yaml_style_float(s)
    }

    /// go-yaml's `isBase60Float`: `^[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?$`.
    fn is_base60_float(s: &str) -> bool {
        let b = s.as_bytes();
        let mut i = 0;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        if i >= b.len() || !b[i].is_ascii_digit() {
            return false;
        }
        i += 1;
        while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'_') {
            i += 1;
        }
        let mut groups = 0;
        while i < b.len() && b[i] == b':' {
            i += 1;
            // [0-5]?[0-9]
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() && i - start < 2 {
                i += 1;
            }
            match i - start {
                1 => {}
                2 if b[start] <= b'5' => {}
                2 => {
                    // backtrack: `[0-5]?` cannot take a digit > 5, so only one digit matched
                    i = start + 1;
                }
                _ => return false,
            }
            groups += 1;
        }
        if groups == 0 {
            return false;
        }
        if i < b.len() && b[i] == b'.' {
            i += 1;
            while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'_') {
                i += 1;
            }
        }
        i == b.len()
    }

    /// go-yaml's timestamp resolution: `YYYY-M-D` optionally followed by `T`/`t`/` ` and a
    /// time (`H:M:S[.frac][Z|±HH:MM]`; no zone after a space).
    fn is_timestamp(s: &str) -> bool {
        let b = s.as_bytes();
        if b.len() < 5 || !b[..4].iter().all(u8::is_ascii_digit) || b[4] != b'-' {
            return false;
        }
        let num = |i: &mut usize, max: usize| -> Option<u32> {
            let start = *i;
            while *i < b.len() && b[*i].is_ascii_digit() && *i - start < max {
                *i += 1;
            }
            if *i == start {
                None
            } else {
                s[start..*i].parse().ok()
            }
        };
        let mut i = 5;
        let Some(month) = num(&mut i, 2) else {
            return false;
        };
        if i >= b.len() || b[i] != b'-' {
            return false;
        }
        i += 1;
        let Some(day) = num(&mut i, 2) else {
            return false;
        };
        let year: i32 = s[..4].parse().unwrap_or(0);
        let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
        let days = [
            31,
            if leap { 29 } else { 28 },
            31,
            30,
            31,
            30,
            31,
            31,
            30,
            31,
            30,
            31,
        ];
        if !(1..=12).contains(&month) || day < 1 || day > days[month as usize - 1] {
            return false;
        }
        if i == b.len() {
            return true;
        }
        let sep = b[i];
        if !matches!(sep, b'T' | b't' | b' ') {
            return false;
        }
        i += 1;
        let (Some(h), true) = (num(&mut i, 2), i < b.len() && b[i] == b':') else {
            return false;
        };
        i += 1;
        let (Some(m), true) = (num(&mut i, 2), i < b.len() && b[i] == b':') else {
            return false;
        };
        i += 1;
        let Some(sec) = num(&mut i, 2) else {
            return false;
        };
        if h > 23 || m > 59 || sec > 59 {
            return false;
        }
        if i < b.len() && b[i] == b'.' {
            let start = i + 1;
            i += 1;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            if i == start || i - start > 9 {
                return false;
            }
        }
        if sep == b' ' {
            return i == b.len();
        }
        match &s[i..] {
            "Z" => true,
            zone => {
                let z = zone.as_bytes();
                z.len() == 6
                    && (z[0] == b'+' || z[0] == b'-')
                    && z[1..3].iter().all(u8::is_ascii_digit)
                    && z[3] == b':'
                    && z[4..6].iter().all(u8::is_ascii_digit)
            }
        }
    }
}

#[cfg(test)]
#[path = "values_tests.rs"]
mod tests;
