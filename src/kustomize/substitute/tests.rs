//! Table tests. The expression cases state the behaviour of Flux's envsubst (`fluxcd/pkg/envsubst`
//! v1.7.1 `TestExpand`/`TestExpandStrict`, examples from the Advanced Bash-Scripting Guide's
//! parameter substitution chapter) and of kustomize-controller's postBuild
//! (`fluxcd/pkg/kustomize` v1.35.6 varsub tests), written down as facts.

use super::*;
use serde_json::json;

/// Variables as `(name, value)` pairs.
type Vars<'a> = &'a [(&'a str, &'a str)];

fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn expressions_expand_as_fluxs_envsubst() {
    let cases: &[(Vars, &str, &str)] = &[
        (&[], "abcdEFGH28ij", "abcdEFGH28ij"),
        (&[("var01", "abcdEFGH28ij")], "${#var01}", "12"),
        (&[("var01", "abcdEFGH28ij")], "${var01^}", "AbcdEFGH28ij"),
        (&[("var01", "abcdEFGH28ij")], "${var01^^}", "ABCDEFGH28IJ"),
        (&[("var01", "ABCDEFGH28IJ")], "${var01,}", "aBCDEFGH28IJ"),
        (&[("var01", "ABCDEFGH28IJ")], "${var01,,}", "abcdefgh28ij"),
        (
            &[("p", "/home/bozo/ideas/thoughts.for.today")],
            "${p:11}",
            "ideas/thoughts.for.today",
        ),
        (
            &[("p", "/home/bozo/ideas/thoughts.for.today")],
            "${p:11:5}",
            "ideas",
        ),
        (&[("p", "abcdef")], "${p:-2}", "abcdef"), // `:-` is a default, not a negative offset
        (&[("p", "abcdef")], "${p:1:-2}", "bcd"),
        (&[("p", "abcdef")], "${p:4:10}", "ef"),
        (&[("p", "abcdef")], "${p:9}", ""),
        (&[("p", "abcdef")], "${p:x}", "abcdef"), // not a number: unchanged
        (&[("var", "abc")], "${var=xyz}", "abc"),
        (&[], "${var=xyz}", "xyz"),
        (&[("var", "")], "${var:=xyz}", "xyz"),
        (&[("var", "")], "${var=xyz}", "xyz"), // `=` also replaces an empty value
        (&[("d", "foo")], "something ${var=${d}}", "something foo"),
        (
            &[("d", "foo1")],
            "foo: ${var=${d}-suffix}",
            "foo: foo1-suffix",
        ),
        (
            &[("d", "foo1")],
            "foo: ${var=prefix${d}-suffix}",
            "foo: prefixfoo1-suffix",
        ),
        (&[], "${var:=xyz}", "xyz"),
        (&[], "${var:-xyz}", "xyz"),
        // `:+` and `:?` parse and act as defaults (not bash's alternate value / error)
        (&[("var", "abc")], "${var:+xyz}", "abc"),
        (&[], "${var:+xyz}", "xyz"),
        (&[], "${var:?xyz}", "xyz"),
        (
            &[("s", "abcABC123ABCabc")],
            "${s/%abc/XYZ}",
            "abcABC123ABCXYZ",
        ),
        (
            &[("s", "abcABC123ABCabc")],
            "${s/#abc/XYZ}",
            "XYZABC123ABCabc",
        ),
        (
            &[("s", "abcABC123ABCabc")],
            "${s/#ABC/XYZ}",
            "abcABC123ABCabc",
        ),
        (
            &[("s", "abcABC123ABCabc")],
            "${s//abc/xyz}",
            "xyzABC123ABCxyz",
        ),
        (
            &[("s", "abcABC123ABCabc")],
            "${s/abc/xyz}",
            "xyzABC123ABCabc",
        ),
        (&[("s", "foo.bar")], "${s/./}", "foobar"),
        (&[("s", "foo/bar")], r"${s/\//-}", "foo-bar"),
        (&[("s", "foo/bar/baz")], r"${s//\//-}", "foo-bar-baz"),
        (&[("f", "bash.string.txt")], "${f#*.}", "string.txt"),
        (&[("f", "path/to/file")], "${f#*/}", "to/file"),
        (&[("f", "/path/to/file")], "${f#*/}", "path/to/file"),
        (&[("f", "bash.string.txt")], "${f##*.}", "txt"),
        (&[("f", "path/to/file")], "${f##*/}", "file"), // `*` matches `/`
        (&[("f", "/path/to/file")], "${f##*/}", "file"),
        (&[("f", "bash.string.txt")], "${f%.*}", "bash.string"),
        (&[("f", "bash.string.txt")], "${f%%.*}", "bash"),
        (&[("f", "v1.2.3")], "${f#v}", "1.2.3"),
        (&[("f", "image:1.0")], "${f%:*}", "image"),
        (&[("f", "a1b2")], "${f#[a-z]}", "1b2"),
        (&[("f", "a1b2")], "${f#[^a-z]}", "a1b2"),
        (
            &[("var01", "abcdEFGH28ij")],
            "${var=${var01^^}}",
            "ABCDEFGH28IJ",
        ),
        // escapes: `$$` is `$` outside expressions; `$var` is text
        (&[("var01", "abcdEFGH28ij")], "$${var01}", "${var01}"),
        (
            &[("var01", "abcdEFGH28ij")],
            "some text ${var01}$${var$${var01}$var01${var01}",
            "some text abcdEFGH28ij${var${var01}$var01abcdEFGH28ij",
        ),
        (
            &[("d", "foo")],
            "something $${var=${d}}",
            "something ${var=foo}",
        ),
        (
            &[("d", "foo")],
            "\\\\something ${var=${d}}",
            "\\\\something foo",
        ),
        (&[("x", "1")], "$$$${x}", "$${x}"),
        (&[("x", "1")], "$$${x}", "$1"),
        (&[("x", "1")], "cost: 5$ $x", "cost: 5$ $x"),
        (&[("x", "1")], "${x}}", "1}"),
        (&[("x", "é")], "${#x}", "2"), // bytes, as Go's len
    ];
    for (vs, input, want) in cases {
        for strict in [false, true] {
            assert_eq!(
                eval(input, &vars(vs), strict).as_deref(),
                Ok(*want),
                "{input} (strict: {strict})"
            );
        }
    }
}

#[test]
fn strict_mode_fails_on_undefined_variables_without_a_default() {
    let not_set = |n: &str| Err(EnvsubstError::NotSet(n.into()));
    let cases: &[(Vars, &str, Result<&str, EnvsubstError>)] = &[
        (&[("foo", "bar")], "${foo}", Ok("bar")),
        (&[("foo", "")], "${foo}", Ok("")), // defined as empty is defined
        (&[], "${missing}", not_set("missing")),
        (&[("foo", "bar")], "${missing:=default}", Ok("default")),
        (&[], "${#missing}", not_set("missing")),
        (&[], "${missing^}", not_set("missing")),
        (&[], "${missing^^}", not_set("missing")),
        (&[], "${missing,}", not_set("missing")),
        (&[], "${missing,,}", not_set("missing")),
        (&[], "${missing:0}", not_set("missing")),
        (&[], "${missing:0:10}", not_set("missing")),
        (&[], "${missing/pattern/replacement}", not_set("missing")),
        (&[], "${missing//pattern/replacement}", not_set("missing")),
        (&[], "${missing/#pattern/replacement}", not_set("missing")),
        (&[], "${missing/%pattern/replacement}", not_set("missing")),
        (&[], "${missing#pattern}", not_set("missing")),
        (&[], "${missing##pattern}", not_set("missing")),
        (&[], "${missing%pattern}", not_set("missing")),
        (&[], "${missing%%pattern}", not_set("missing")),
        (&[], "${missing:-fallback}", Ok("fallback")),
        (&[], "${missing:=assigned}", Ok("assigned")),
        (&[], "${missing=assigned}", Ok("assigned")),
        // the default is evaluated first, used or not
        (&[("set", "x")], "${set:=${inner}}", not_set("inner")),
        (&[], "a ${first} ${second}", not_set("first")),
    ];
    for (vs, input, want) in cases {
        let got = eval(input, &vars(vs), true);
        assert_eq!(got, want.clone().map(String::from), "{input}");
    }
    // not strict: an undefined variable reads as ""
    assert_eq!(eval("[${missing}]", &vars(&[]), false).as_deref(), Ok("[]"));
    assert_eq!(eval("${#missing}", &vars(&[]), false).as_deref(), Ok("0"));
    assert_eq!(
        EnvsubstError::NotSet("region".into()).to_string(),
        r#"variable not set (strict mode): "region""#
    );
}

#[test]
fn malformed_expressions_are_fluxs_parse_errors() {
    let cases = [
        ("${my-var}", "missing closing brace"), // flux2 #1003
        ("${var-default}", "missing closing brace"),
        ("${var", "missing closing brace"),
        ("${}", "unable to parse variable name"),
        ("${ var}", "unable to parse variable name"),
        ("${var:=x", "unable to parse substitution within function"),
        ("${var:}", "unable to parse substitution within function"),
        ("${var#}", "unable to parse substitution within function"),
        ("${var/abc}", "bad substitution"),
        ("${#}", "bad substitution"),
        ("${var^x}", "bad substitution"),
        ("${var:1:2", "bad substitution"),
        ("${var:", "bad substitution"),
    ];
    for (input, msg) in cases {
        let got = eval(input, &vars(&[("var", "v")]), false);
        assert_eq!(got, Err(EnvsubstError::Parse(msg)), "{input}");
    }
}

fn deployment() -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "app", "namespace": "apps",
                     "labels": {"environment": "${cluster_env:=dev}", "region": "${cluster_region}"}},
        "spec": {
            "replicas": "${replicas:=1}",
            "template": {"metadata": {"annotations": {
                "prometheus.io/scrape": "${prometheus_scrape:=false}",
                "prometheus.io/port": "${prometheus_port}"}},
                "spec": {"containers": [{"name": "nginx", "image": "${image}"}]}},
        },
    })
}

/// kustomize-controller's `kustomization_varsub` fixture: inline variables win over the
/// ConfigMap; quoted values stay strings; the opted-out ConfigMap is untouched.
#[test]
fn objects_are_substituted_as_flux_does() {
    let from_cm = vars(&[
        ("prometheus_scrape", "\"true\""),
        ("prometheus_port", "\"9797\""),
        ("image", "nginx:1.21.4"),
        ("cluster_env", "from-configmap"),
    ]);
    let inline = vars(&[
        ("cluster_env", "prod"),
        ("cluster_region", "eu-central-1"),
        ("replicas", "3"),
    ]);
    let vs = merge_variables([&from_cm], &inline);
    let out = substitute_object(&deployment(), &vs, Options::default()).unwrap();
    assert_eq!(
        out["metadata"]["labels"],
        json!({"environment": "prod", "region": "eu-central-1"})
    );
    assert_eq!(
        out["spec"]["replicas"],
        json!(3),
        "an unquoted number is re-read as an integer"
    );
    let a = &out["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(
        a["prometheus.io/scrape"],
        json!("true"),
        "the quote trick keeps a string"
    );
    assert_eq!(a["prometheus.io/port"], json!("9797"));
    assert_eq!(
        out["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1.21.4"
    );

    let mut cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "app-vars", "labels": {SUBSTITUTE_ANNOTATION: "disabled",
                                                     "environment": "${cluster_env:=dev}"}},
        "data": {"port": "${prometheus_port}", "missing": "${nothing}"}});
    assert_eq!(
        substitute_object(&cm, &vs, Options::default()),
        Ok(cm.clone())
    );
    cm["metadata"]["annotations"] = json!({SUBSTITUTE_ANNOTATION: "disabled"});
    cm["metadata"]["labels"]
        .as_object_mut()
        .unwrap()
        .remove(SUBSTITUTE_ANNOTATION);
    assert_eq!(
        substitute_object(&cm, &vs, Options::default()),
        Ok(cm.clone())
    );
}

#[test]
fn plain_values_are_retyped_as_yaml_and_quoted_ones_are_not() {
    let cases = [
        ("${v}", "42", json!(42)),
        ("${v}", "4.5", json!(4.5)),
        ("${v}", "on", json!(true)), // YAML 1.1, as Flux's parser
        ("${v}", "No", json!(false)),
        ("${v}", "", Value::Null),
        ("${v}", "'007'", json!("007")),
        ("${v}", "[a, b]", json!(["a", "b"])),
        ("x-${v}", "1", json!("x-1")),
        ("${v}", "text", json!("text")),
        // written quoted by Flux's YAML writer: stays a string
        ("'${v}'", "42", json!("'42'")),
        ("{${v}}", "42", json!("{42}")),
        ("a\n${v}", "42", json!("a\n42")),
        (" ${v}", "42", json!(" 42")),
    ];
    for (input, value, want) in cases {
        let obj = json!({"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"name": "c"}, "data": {"k": input}});
        let out = substitute_object(&obj, &vars(&[("v", value)]), Options::default()).unwrap();
        assert_eq!(out["data"]["k"], want, "{input:?} with v={value:?}");
    }
    let obj = json!({"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"name": "c"}, "data": {"k": "${v}"}});
    let err = substitute_object(&obj, &vars(&[("v", "a: b")]), Options::default()).unwrap_err();
    assert!(matches!(err.kind, SubstituteErrorKind::Yaml(_)), "{err}");
}

#[test]
fn with_variables_needs_a_variable_and_always_does_not() {
    let obj = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
                     "data": {"env": "${cluster_env:=dev}", "region": "${cluster_region:=eu-central-1}"}});
    let none = BTreeMap::new();
    // WithVariables and no variable (e.g. an empty ConfigMap): untouched, no strict error
    assert_eq!(
        substitute_object(&obj, &none, Options::default()),
        Ok(obj.clone())
    );
    let always = Options {
        strict: true,
        always: true,
    };
    let out = substitute_object(&obj, &none, always).unwrap();
    assert_eq!(out["data"], json!({"env": "dev", "region": "eu-central-1"}));
    // keys are substituted too
    let keyed = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
                       "data": {"${k}": "v"}});
    let out = substitute_object(&keyed, &vars(&[("k", "key")]), Options::default()).unwrap();
    assert_eq!(out["data"], json!({"key": "v"}));
}

#[test]
fn errors_name_the_object_and_the_variable_as_flux() {
    let vs = vars(&[("cluster_env", "prod")]);
    let err = substitute_object(&deployment(), &vs, Options::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "post build failed for 'Deployment.v1.apps/app': envsubst error: variable substitution \
         failed: variable not set (strict mode): \"cluster_region\""
    );
    // not strict: undefined variables read as "" (a plain "" is null)
    let lax = Options {
        strict: false,
        always: false,
    };
    let out = substitute_object(&deployment(), &vs, lax).unwrap();
    assert_eq!(out["metadata"]["labels"]["region"], Value::Null);

    let bad = vars(&[("kubelet-identity-client-id", "x"), ("ok", "y")]);
    let err = substitute_object(&deployment(), &bad, Options::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "post build failed for 'Deployment.v1.apps/app': envsubst error: \
         'kubelet-identity-client-id' var name is invalid, must match \
         '^[_[:alpha:]][_[:alpha:][:digit:]]*$'"
    );
    for (name, ok) in [
        ("_x", true),
        ("X1", true),
        ("1x", false),
        ("é", false),
        ("a.b", false),
    ] {
        let r = substitute_object(
            &deployment(),
            &vars(&[(name, "v")]),
            Options {
                strict: false,
                always: false,
            },
        );
        assert_eq!(r.is_ok(), ok, "{name}");
    }
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "${my-var}"}});
    let err = substitute_object(&cm, &vs, Options::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "post build failed for 'ConfigMap.v1.[noGrp]/c': envsubst error: variable substitution \
         failed: missing closing brace"
    );
}

#[test]
fn merge_order_is_sources_in_order_then_inline_and_newlines_go() {
    let a = vars(&[("x", "from-a"), ("y", "from-a"), ("z", "line1\nline2\n")]);
    let b = vars(&[("x", "from-b")]);
    let inline = vars(&[("y", "inline")]);
    let merged = merge_variables([&a, &b], &inline);
    assert_eq!(
        merged,
        vars(&[("x", "from-b"), ("y", "inline"), ("z", "line1line2")])
    );
}
