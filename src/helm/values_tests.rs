//! Tables for values composition, Helm's `--set` parser and Flux's config digest. Cases
//! marked "helm" are Helm v4.3.2's `pkg/strvals/parser_test.go`, "flux" are fluxcd/pkg
//! `chartutil/values_test.go` / `digest_test.go`; the other digest vectors were produced with
//! the libraries Flux's `DigestValues` calls (sigs.k8s.io/yaml v1.6.0 `JSONObjectToYAMLObject`,
//! recursive key sort, go.yaml.in/yaml/v2 v2.4.3 `Encoder`, sha256) on the JSON shown.

use serde_json::{Value, json};

use super::strvals::{self, MAX_NESTED_NAME_LEVEL};
use super::*;

fn cm<'a>(name: &'a str) -> ValuesRef<'a> {
    ValuesRef {
        kind: ValuesKind::ConfigMap,
        name,
        values_key: None,
        target_path: None,
        optional: false,
        literal: false,
    }
}

fn secret<'a>(name: &'a str) -> ValuesRef<'a> {
    ValuesRef {
        kind: ValuesKind::Secret,
        ..cm(name)
    }
}

fn parse(line: &str) -> Result<Value, String> {
    strvals::parse(line, false)
        .map(Value::Object)
        .map_err(|e| e.to_string())
}

#[test]
fn strvals_parse_set_table_from_helm() {
    // (line, Some(expected) | None for an error)
    let cases: Vec<(&str, Option<Value>)> = vec![
        (
            "name1=null,f=false,t=true",
            Some(json!({"name1": null, "f": false, "t": true})),
        ),
        ("name1=value1", Some(json!({"name1": "value1"}))),
        (
            "name1=value1,name2=value2",
            Some(json!({"name1": "value1", "name2": "value2"})),
        ),
        (
            "name1=value1,name2=value2,",
            Some(json!({"name1": "value1", "name2": "value2"})),
        ),
        ("name1=value1,,,,name2=value2,", None),
        (
            "name1=,name2=value2",
            Some(json!({"name1": "", "name2": "value2"})),
        ),
        (
            "leading_zeros=00009",
            Some(json!({"leading_zeros": "00009"})),
        ),
        ("zero_int=0", Some(json!({"zero_int": 0}))),
        ("long_int=1234567890", Some(json!({"long_int": 1234567890}))),
        ("boolean=true", Some(json!({"boolean": true}))),
        ("is_null=null", Some(json!({"is_null": null}))),
        ("name1,name2=", None),
        ("name1,name2=value2", None),
        ("name1,name2=value2\\", None),
        ("name1,name2", None),
        (
            "name1=one\\,two,name2=three\\,four",
            Some(json!({"name1": "one,two", "name2": "three,four"})),
        ),
        (
            "name1=one\\=two,name2=three\\=four",
            Some(json!({"name1": "one=two", "name2": "three=four"})),
        ),
        (
            "name1=one two three,name2=three two one",
            Some(json!({"name1": "one two three", "name2": "three two one"})),
        ),
        (
            "outer.inner=value",
            Some(json!({"outer": {"inner": "value"}})),
        ),
        (
            "outer.middle.inner=value",
            Some(json!({"outer": {"middle": {"inner": "value"}}})),
        ),
        (
            "outer.inner1=value,outer.inner2=value2",
            Some(json!({"outer": {"inner1": "value", "inner2": "value2"}})),
        ),
        (
            "outer.inner1=value,outer.middle.inner=value",
            Some(json!({"outer": {"inner1": "value", "middle": {"inner": "value"}}})),
        ),
        ("name1.name2", None),
        ("name1.name2,name1.name3", None),
        ("name1.name2=", Some(json!({"name1": {"name2": ""}}))),
        ("name1.=name2", None),
        ("name1.,name2", None),
        (
            "name1={value1,value2}",
            Some(json!({"name1": ["value1", "value2"]})),
        ),
        (
            "name1={value1,value2},name2={value1,value2}",
            Some(json!({"name1": ["value1", "value2"], "name2": ["value1", "value2"]})),
        ),
        ("name1={1021,902}", Some(json!({"name1": [1021, 902]}))),
        (
            "name1.name2={value1,value2}",
            Some(json!({"name1": {"name2": ["value1", "value2"]}})),
        ),
        ("name1={1021,902", None),
        ("list[0]=foo", Some(json!({"list": ["foo"]}))),
        ("list[0].foo=bar", Some(json!({"list": [{"foo": "bar"}]}))),
        (
            "list[0].foo=bar,list[0].hello=world",
            Some(json!({"list": [{"foo": "bar", "hello": "world"}]})),
        ),
        ("list[0].foo=bar,list[-30].hello=world", None),
        (
            "list[0]=foo,list[1]=bar",
            Some(json!({"list": ["foo", "bar"]})),
        ),
        (
            "list[0]=foo,list[1]=bar,",
            Some(json!({"list": ["foo", "bar"]})),
        ),
        (
            "list[0]=foo,list[3]=bar",
            Some(json!({"list": ["foo", null, null, "bar"]})),
        ),
        ("list[0]=foo,list[-20]=bar", None),
        ("illegal[0]name.foo=bar", None),
        ("noval[0]", Some(json!({"noval": []}))),
        ("noval[0]=", Some(json!({"noval": [""]}))),
        ("nested[0][0]=1", Some(json!({"nested": [[1]]}))),
        ("nested[1][1]=1", Some(json!({"nested": [null, [null, 1]]}))),
        (
            "name1.name2[0].foo=bar,name1.name2[1].foo=bar",
            Some(json!({"name1": {"name2": [{"foo": "bar"}, {"foo": "bar"}]}})),
        ),
        (
            "name1.name2[1].foo=bar,name1.name2[0].foo=bar",
            Some(json!({"name1": {"name2": [{"foo": "bar"}, {"foo": "bar"}]}})),
        ),
        (
            "name1.name2[1].foo=bar",
            Some(json!({"name1": {"name2": [null, {"foo": "bar"}]}})),
        ),
        ("]={}].", None),
        // typedVal beyond Helm's table: case-insensitive keywords (Go's EqualFold, including
        // U+017F folding to 's'), signs, int64 range, floats stay strings.
        (
            "a=TRUE,b=False,c=NuLL,d=fal\u{17F}e",
            Some(json!({"a": true, "b": false, "c": null, "d": false})),
        ),
        ("a=-5,b=+7,c=-0", Some(json!({"a": -5, "b": 7, "c": 0}))),
        (
            "a=9223372036854775807,b=9223372036854775808",
            Some(json!({"a": 9223372036854775807i64, "b": "9223372036854775808"})),
        ),
        (
            "a=1.5,b=1e3,c=0x10",
            Some(json!({"a": "1.5", "b": "1e3", "c": "0x10"})),
        ),
        // An index that never closes ends the line quietly (Helm wraps io.EOF).
        ("name[1", Some(json!({}))),
        (
            "kubernetes\\.io/role=master",
            Some(json!({"kubernetes.io/role": "master"})),
        ),
    ];
    for (line, want) in cases {
        let got = parse(line);
        match want {
            Some(want) => assert_eq!(got, Ok(want), "{line}"),
            None => assert!(got.is_err(), "{line}: expected an error, got {got:?}"),
        }
    }
}

#[test]
fn strvals_parse_string_table_from_helm() {
    for (line, want) in [
        (
            "long_int_string=1234567890",
            json!({"long_int_string": "1234567890"}),
        ),
        ("boolean=true", json!({"boolean": "true"})),
        ("is_null=null", json!({"is_null": "null"})),
        ("zero=0", json!({"zero": "0"})),
        ("l={1,true}", json!({"l": ["1", "true"]})),
    ] {
        assert_eq!(
            strvals::parse(line, true).map(Value::Object),
            Ok(want),
            "{line}"
        );
    }
}

#[test]
fn strvals_parse_into_existing_values_from_helm() {
    // (existing, first line, second line, expected)
    let cases = [
        (
            json!({"outer": {"inner1": "overwrite", "inner2": "value2"}}),
            "outer.inner1=value1,outer.inner3=value3,outer.inner4=4",
            "",
            json!({"outer": {"inner1": "value1", "inner2": "value2", "inner3": "value3", "inner4": 4}}),
        ),
        (
            json!({}),
            "listOuter[0][0].type=listValue",
            "listOuter[0][0].status=alive",
            json!({"listOuter": [[{"type": "listValue", "status": "alive"}]]}),
        ),
        (
            json!({}),
            "listOuter[0][0].type=listValue",
            "listOuter[1][0].status=alive",
            json!({"listOuter": [[{"type": "listValue"}], [{"status": "alive"}]]}),
        ),
        (
            json!({"listOuter": [[[{"exited": "old"}]]]}),
            "listOuter[0][1][0].type=listValue",
            "listOuter[0][0][1].status=alive",
            json!({"listOuter": [[[{"exited": "old"}, {"status": "alive"}], [{"type": "listValue"}]]]}),
        ),
        // A list index over a shorter existing list pads it; a map in a list slot is extended.
        (
            json!({"l": ["a", {"k": 1}]}),
            "l[3]=d,l[1].j=2",
            "",
            json!({"l": ["a", {"k": 1, "j": 2}, null, "d"]}),
        ),
    ];
    for (existing, first, second, want) in cases {
        let Value::Object(mut got) = existing else {
            unreachable!()
        };
        strvals::parse_into(first, &mut got, false).unwrap();
        if !second.is_empty() {
            strvals::parse_into(second, &mut got, false).unwrap();
        }
        assert_eq!(Value::Object(got), want, "{first} {second}");
    }
}

#[test]
fn strvals_error_messages_are_helms() {
    for (line, want) in [
        ("a,b=c", "key \"a\" has no value (cannot end with ,)"),
        ("a.b", "key \"b\" has no value"),
        ("a.=b", "key map \"a\" has no value"),
        ("a={x,y", "list must terminate with '}'"),
        (
            "a[x]=1",
            "error parsing index: strconv.Atoi: parsing \"x\": invalid syntax",
        ),
        ("a[-1]=1", "negative -1 index not allowed"),
        (
            "a[65537]=1",
            "index of 65537 is greater than maximum supported index of 65536",
        ),
        ("a[0]b=1", "unexpected data at end of array index: ['b']"),
        (
            "a[0]bc=1",
            "unexpected data at end of array index: ['b' 'c']",
        ),
        ("x={a,b}c", "key \"c\" has no value"),
    ] {
        assert_eq!(parse(line), Err(want.to_string()), "{line}");
    }
    let deep = (1..=MAX_NESTED_NAME_LEVEL + 2)
        .map(|i| format!("name{i}"))
        .collect::<Vec<_>>()
        .join(".");
    assert_eq!(
        parse(&format!("{deep}=value")),
        Err("value name nested level is greater than maximum supported nested level of 30".into())
    );
    // Helm panics (and recovers) walking through a value of another type.
    let mut m = json!({"a": "text", "l": 3}).as_object().unwrap().clone();
    let e = strvals::parse_into("a.b=1", &mut m, false).unwrap_err();
    assert_eq!(
        e.to_string(),
        "unable to parse key: interface conversion: interface {} is string, not map[string]interface {}"
    );
    let e = strvals::parse_into("l[0]=1", &mut m, false).unwrap_err();
    assert!(e.to_string().ends_with("not []interface {}"), "{e}");
    // Redacted: no text from the line.
    let e = strvals::parse("secret-value,other", false).unwrap_err();
    assert!(e.to_string().contains("secret-value"));
    assert!(
        !e.describe(true).contains("secret-value"),
        "{}",
        e.describe(true)
    );
}

#[test]
fn replace_path_value_table_from_flux() {
    // (path, content, literal, Some(expected) | None for an error)
    let cases: Vec<(&str, &str, bool, Option<Value>)> = vec![
        (
            "outer.inner",
            "value",
            false,
            Some(json!({"outer": {"inner": "value"}})),
        ),
        (
            "name",
            "{a,b,c}",
            false,
            Some(json!({"name": ["a", "b", "c"]})),
        ),
        (
            "name",
            "value1\\,value2",
            false,
            Some(json!({"name": "value1,value2"})),
        ),
        (
            "merge.at.specific.path",
            "true",
            false,
            Some(json!({"merge": {"at": {"specific": {"path": true}}}})),
        ),
        (
            "merge.at.specific.path",
            "\"true\"",
            false,
            Some(json!({"merge": {"at": {"specific": {"path": "true"}}}})),
        ),
        (
            "merge.at[2]",
            "value",
            false,
            Some(json!({"merge": {"at": [null, null, "value"]}})),
        ),
        (
            "nodeSelector.kubernetes\\.io/role",
            "master",
            false,
            Some(json!({"nodeSelector": {"kubernetes.io/role": "master"}})),
        ),
        ("port", "'8080'", false, Some(json!({"port": "8080"}))),
        ("port", "8080", false, Some(json!({"port": 8080}))),
        ("empty", "", false, Some(json!({"empty": ""}))),
        // flux2#2625: commas and colons are --set syntax without `literal`.
        (
            "kafka.brokers",
            "kafka01.net:9092,kafka02.net:9092,kafka03.net:9092",
            false,
            None,
        ),
        ("application\\.yml", "endpoints: [a,b,c]", false, None),
        // literal (Flux's ReplacePathLiteralValue)
        (
            "outer.inner",
            "value",
            true,
            Some(json!({"outer": {"inner": "value"}})),
        ),
        ("name", "a,b,c", true, Some(json!({"name": "a,b,c"}))),
        ("name", "{a,b,c}", true, Some(json!({"name": "{a,b,c}"}))),
        (
            "name",
            "foo=bar=baz",
            true,
            Some(json!({"name": "foo=bar=baz"})),
        ),
        (
            "config",
            "endpoints: [a, b, c]",
            true,
            Some(json!({"config": "endpoints: [a, b, c]"})),
        ),
        (
            "externalConfig.application\\.yml.content",
            "server:\n  port: 8080\n  include: [ \"prometheus\", \"health\" ]\n",
            true,
            Some(json!({"externalConfig": {"application.yml": {
                "content": "server:\n  port: 8080\n  include: [ \"prometheus\", \"health\" ]\n"}}})),
        ),
        (
            "externalConfig.application\\.conf.content",
            "kafka {\n  bootstrap = \"b-1:9098,b-2:9098\"\n}\n",
            true,
            Some(json!({"externalConfig": {"application.conf": {
                "content": "kafka {\n  bootstrap = \"b-1:9098,b-2:9098\"\n}\n"}}})),
        ),
        (
            "subnet_ids",
            "[\"a\",\"b\",\"c\"]",
            true,
            Some(json!({"subnet_ids": "[\"a\",\"b\",\"c\"]"})),
        ),
        (
            "feature.enabled",
            "true",
            true,
            Some(json!({"feature": {"enabled": "true"}})),
        ),
        (
            "path",
            "back\\slash",
            true,
            Some(json!({"path": "back\\slash"})),
        ),
        (
            "kafka.brokers",
            "kafka01.net:9092,kafka02.net:9092,kafka03.net:9092",
            true,
            Some(
                json!({"kafka": {"brokers": "kafka01.net:9092,kafka02.net:9092,kafka03.net:9092"}}),
            ),
        ),
    ];
    for (path, content, literal, want) in cases {
        let mut m = serde_json::Map::new();
        let got = replace_path_value(&mut m, path, content, literal).map(|()| Value::Object(m));
        match want {
            Some(want) => assert_eq!(got, Ok(want), "{path}={content:?} literal={literal}"),
            None => assert!(got.is_err(), "{path}={content:?}: expected an error"),
        }
    }
}

fn with_key<'a>(mut r: ValuesRef<'a>, key: &'a str) -> ValuesRef<'a> {
    r.values_key = Some(key);
    r
}

fn at<'a>(mut r: ValuesRef<'a>, path: &'a str) -> ValuesRef<'a> {
    r.target_path = Some(path);
    r
}

fn optional(mut r: ValuesRef<'_>) -> ValuesRef<'_> {
    r.optional = true;
    r
}

/// (name, entries, inline values, expected values)
type ComposeCase<'a> = (
    &'a str,
    Vec<(ValuesRef<'a>, Content<'a>)>,
    Option<Value>,
    Value,
);

#[test]
fn compose_table() {
    use Content::*;
    let inline_list = json!({"nested": {"configuration": ["list", "item", "option"]}});
    let other = json!({"other": "values"});
    let cases: Vec<ComposeCase> = vec![
        (
            "flux: merges",
            vec![
                (
                    cm("values"),
                    Data("flat: value\nnested:\n  configuration: value\n"),
                ),
                (
                    secret("values"),
                    Data("flat:\n  nested: value\nnested: value\n"),
                ),
            ],
            Some(other.clone()),
            json!({"flat": {"nested": "value"}, "nested": "value", "other": "values"}),
        ),
        (
            "flux: with target path",
            vec![(
                at(
                    with_key(secret("values"), "single"),
                    "merge.at.specific.path",
                ),
                Data("value"),
            )],
            None,
            json!({"merge": {"at": {"specific": {"path": "value"}}}}),
        ),
        (
            "flux: target path precedence over all",
            vec![
                (
                    at(with_key(secret("values"), "key"), "nested.configuration[0]"),
                    Data("value"),
                ),
                (
                    cm("values"),
                    Data("flat: value\nnested:\n  configuration:\n  - one\n  - two\n  - three\n"),
                ),
            ],
            Some(inline_list.clone()),
            json!({"flat": "value", "nested": {"configuration": ["value", "item", "option"]}}),
        ),
        (
            "flux: target path for string type array item",
            vec![
                (
                    cm("values"),
                    Data(
                        "flat: value\nnested:\n  configuration:\n  - list\n  - item\n  - option\n",
                    ),
                ),
                (at(secret("values"), "nested.configuration[1]"), Data("foo")),
            ],
            Some(other.clone()),
            json!({"flat": "value", "nested": {"configuration": ["list", "foo", "option"]}, "other": "values"}),
        ),
        (
            "flux: optional missing secret and config map",
            vec![
                (optional(secret("missing")), ObjectNotFound),
                (optional(cm("missing")), ObjectNotFound),
            ],
            None,
            json!({}),
        ),
        (
            "optional missing key",
            vec![(optional(with_key(cm("values"), "nope")), KeyNotFound)],
            Some(json!({"a": 1})),
            json!({"a": 1}),
        ),
        (
            "flux: literal without targetPath is a root YAML merge",
            vec![(
                ValuesRef {
                    literal: true,
                    ..cm("values")
                },
                Data("flat: value\n"),
            )],
            None,
            json!({"flat": "value"}),
        ),
        (
            // flux2#4799: two keys of the same ConfigMap, the later one wins.
            "flux2#4799 later key of the same ConfigMap wins",
            vec![
                (
                    with_key(cm("devops"), "app-global.yaml"),
                    Data("replicas: 1\nimage: {tag: v1, repo: r}\n"),
                ),
                (
                    optional(with_key(cm("devops"), "my-api-v1.yaml")),
                    Data("replicas: 3\nimage: {tag: v2}\n"),
                ),
            ],
            None,
            json!({"replicas": 3, "image": {"tag": "v2", "repo": "r"}}),
        ),
        (
            "inline values override valuesFrom; lists replace",
            vec![(cm("v"), Data("a: 1\nl: [1, 2, 3]\nm: {x: 1, y: 2}\n"))],
            Some(json!({"a": 2, "l": [9], "m": {"y": 3}})),
            json!({"a": 2, "l": [9], "m": {"x": 1, "y": 3}}),
        ),
        (
            "documented: a top-level targetPath beats inline values (Flux lets inline win)",
            vec![(at(with_key(secret("s"), "tag"), "tag"), Data("v2"))],
            Some(json!({"tag": "v1"})),
            json!({"tag": "v2"}),
        ),
        (
            "documented: a targetPath beats a later plain entry too",
            vec![
                (at(with_key(secret("s"), "tag"), "image.tag"), Data("v2")),
                (cm("v"), Data("image: {tag: v3, repo: r}\n")),
            ],
            None,
            json!({"image": {"tag": "v2", "repo": "r"}}),
        ),
        (
            "targetPath entries apply in order",
            vec![
                (at(with_key(cm("a"), "x"), "p"), Data("first")),
                (at(with_key(cm("b"), "x"), "p"), Data("second")),
            ],
            None,
            json!({"p": "second"}),
        ),
        (
            "empty document, null document and comments are empty maps",
            vec![
                (cm("a"), Data("")),
                (cm("b"), Data("null\n")),
                (cm("c"), Data("# nothing\n")),
            ],
            None,
            json!({}),
        ),
        (
            "YAML 1.1 scalars as Helm reads them",
            vec![(
                cm("v"),
                Data("enabled: yes\nmode: 0644\nname: 'yes'\nratio: 1.5\n"),
            )],
            None,
            json!({"enabled": true, "mode": 420, "name": "yes", "ratio": 1.5}),
        ),
        (
            "only the first document counts",
            vec![(cm("v"), Data("a: 1\n---\nb: 2\n"))],
            None,
            json!({"a": 1}),
        ),
        (
            "non-object inline values are none",
            vec![],
            Some(json!([1, 2])),
            json!({}),
        ),
    ];
    for (name, entries, inline, want) in cases {
        let got = compose("ns", &entries, inline.as_ref());
        assert_eq!(got, Ok(want), "{name}");
    }
}

#[test]
fn compose_errors_are_fluxs_messages() {
    use Content::*;
    let cases: Vec<(Vec<(ValuesRef, Content)>, &str)> = vec![
        (
            vec![(secret("missing"), ObjectNotFound)],
            "could not resolve Secret chart values reference 'ns/missing' with key 'values.yaml': secrets \"missing\" not found",
        ),
        (
            vec![(cm("missing"), ObjectNotFound)],
            "could not resolve ConfigMap chart values reference 'ns/missing' with key 'values.yaml': configmaps \"missing\" not found",
        ),
        (
            vec![(with_key(secret("values"), "nonexisting"), KeyNotFound)],
            "could not resolve Secret chart values reference 'ns/values' with key 'nonexisting': key not found",
        ),
        (
            vec![(with_key(cm("values"), "nonexisting"), KeyNotFound)],
            "could not resolve ConfigMap chart values reference 'ns/values' with key 'nonexisting': key not found",
        ),
        (
            vec![(cm("values"), Data("\ninvalid"))],
            "could not resolve ConfigMap chart values reference 'ns/values' with key 'values.yaml': failed to read values data: a YAML mapping is required, got a string",
        ),
        (
            vec![(cm("values"), Data("- a\n- b\n"))],
            "could not resolve ConfigMap chart values reference 'ns/values' with key 'values.yaml': failed to read values data: a YAML mapping is required, got a list",
        ),
        (
            vec![(
                at(with_key(secret("kafka"), "brokers"), "kafka.brokers"),
                Data("k1.net:9092,k2.net:9092"),
            )],
            "could not resolve Secret chart values reference 'ns/kafka' with key 'brokers': key has no value",
        ),
        (
            vec![(
                at(with_key(cm("kafka"), "brokers"), "kafka.brokers"),
                Data("k1.net:9092,k2.net:9092"),
            )],
            "could not resolve ConfigMap chart values reference 'ns/kafka' with key 'brokers': key \"net:9092\" has no value",
        ),
        (
            vec![(cm("bin"), NotUtf8)],
            "could not resolve ConfigMap chart values reference 'ns/bin' with key 'values.yaml': failed to read values data: not valid UTF-8",
        ),
        (
            // The first failing entry in list order is reported.
            vec![(cm("a"), Data("x: [")), (cm("b"), ObjectNotFound)],
            "could not resolve ConfigMap chart values reference 'ns/a' with key 'values.yaml': failed to read values data:",
        ),
    ];
    for (entries, want) in cases {
        let got = compose("ns", &entries, None).unwrap_err().to_string();
        assert!(got.starts_with(want), "got  {got}\nwant {want}");
    }
    // Optional does not cover content that cannot be parsed, and says "optional".
    let e = compose("ns", &[(optional(cm("v")), Data("a: [1"))], None).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("could not resolve optional ConfigMap chart values reference 'ns/v'"),
        "{e}"
    );
    // A Secret's YAML error names the position, never the content.
    let e = compose(
        "ns",
        &[(secret("s"), Data("password: hunter2\n  bad: [indent"))],
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(!e.contains("hunter2") && !e.contains("indent"), "{e}");
    assert!(e.contains("invalid YAML at line"), "{e}");
}

#[test]
fn config_digest_matches_fluxs_vectors() {
    let empty = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    assert_eq!(config_digest(&json!({})), empty, "flux: empty");
    assert_eq!(config_digest(&Value::Null), empty, "flux: nil");
    let cases = [
        (
            // flux: "value map" (and "in different order": keys are sorted)
            json!({"replicas": 3, "image": {"tag": "latest", "repository": "nginx"},
                   "ports": [{"protocol": "TCP", "port": 8080}, {"port": 9090, "protocol": "UDP"}]}),
            "sha256:fcdc2b0de1581a3633ada4afee3f918f6eaa5b5ab38c3fef03d5b48d3f85d9f6",
        ),
        (
            // flux: "values map with numeric keys"
            json!({"replicas": 3, "test": {"632bd80235a05f4192aefade": "value1",
                   "632bd80ddf416cf32fd50679": "value2", "632bd817c559818a52307da2": "value3",
                   "632bd82398e71231a98004b6": "value4"}}),
            "sha256:8a980fcbeadd6f05818f07e8aec14070c22250ca3d96af1fcd5f93b3e85b4d70",
        ),
        (
            // quoting: strings that would resolve to another type, indicators, spaces
            json!({"a":"yes","b":"1","c":"","d":"null","e":"~","f":"1.5","g":"0x1F",
                   "h":"2024-01-02","i":"1:20","j":"true","k":"-","l":"- x","m":"#x","n":"a#b",
                   "o":"a #b","p":"a: b","q":"a:b","r":" lead","s":"trail ","t":"it's","u":"@x",
                   "v":"%x","w":"<<","x":".inf","y":"1_000","z":"0b101"}),
            "sha256:93f940e6817b7f4461339e9224ed97be77ebab8f11aa1c9d1f904f1ca23c670f",
        ),
        (
            // literal blocks: chomping, indentation hints, in lists and nested maps
            json!({"multi":"line1\nline2","trail":"line1\nline2\n","two":"a\n\n","lead":"\nx",
                   "sp":" a\nb","list":["a\nb","c"],"nested":{"k":"x\ny\n"}}),
            "sha256:0e5d68e3776cf9bd89c16bc4155c41ef7e10ec362df95aa982f98c26ebdf47c3",
        ),
        (
            // numbers (float64 as in Flux), booleans, null
            json!({"float":1.5,"big":1e21,"small":0.00001,"neg":-2.5,"int":42,"negint":-7,
                   "zero":0,"exp":123456789.5,"t":true,"f":false,"n":null}),
            "sha256:312eb07c690fd44407e47678146a6d24674702f819819922d1155b4b3ee3ba6f",
        ),
        (
            // empty collections, nested lists, escapes in double quotes, unicode
            json!({"empty":{},"emptyl":[],"deep":[[1,2],[{"a":1,"b":[]}]],"uni":"héllo",
                   "tab":"a\tb","quote":"say \"hi\"","bs":"a\\b","ctl":"\u{1}"}),
            "sha256:8dea4a1bf258af73967807c3263e441072f325b57f93e5c3c10c4486d8154b82",
        ),
        (
            // keys: quoted when they resolve to another type or are empty
            json!({"key with space":1,"1":"num key","true":"bool key","k:v":"x","-d":1,
                   "":"empty key"}),
            "sha256:79ca430c9f9ce62e8ef12a67841e2ad57d45b105e92bddaac786a0f354305ca7",
        ),
        (
            // deeper indentation of literal blocks, astral characters, float formatting,
            // integers beyond 2^53 (float64 in Flux), base-60 and timestamp look-alikes
            json!({"a":{"l":["x\ny",["p\nq"]],"m":[{"k":"v\nw"}]},"e":"😀",
                   "f":[0.1,100000.5,1234567.5,0.0001,1.5e-7,-0.5,12345678901234567890u64,1e300],
                   "g":"x\n ","h":"a \nb","i":"1:20:30.5","j":"1:70","k":"2024-1-2T3:04:05Z",
                   "l":"2024-13-01","m":"0o17","n2":"+12","o":"1e3","p":"12e","q":"-.5","r":"0x",
                   "t":"\u{a0}x","u":"x\u{feff}"}),
            "sha256:f127d43ceeff3bcd4ad42a62e0786ef3e9f2311c0f94df52a2b01e668b3ce335",
        ),
    ];
    for (values, want) in cases {
        assert_eq!(config_digest(&values), want, "{}", digest_yaml(&values));
    }
}

#[test]
fn digest_yaml_is_go_yaml_v2_text() {
    let v = json!({"image": {"repository": "nginx", "tag": "latest"},
                   "ports": [{"port": 8080, "protocol": "TCP"}], "replicas": 3});
    assert_eq!(
        digest_yaml(&v),
        "image:\n  repository: nginx\n  tag: latest\nports:\n- port: 8080\n  protocol: TCP\nreplicas: 3\n"
    );
    let v = json!({"lead": "\nx", "list": ["a\nb", "c"], "two": "a\n\n"});
    assert_eq!(
        digest_yaml(&v),
        "lead: |2-\n\n  x\nlist:\n- |-\n  a\n  b\n- c\ntwo: |+\n  a\n\n"
    );
}

#[test]
fn go_float_formatting() {
    for (f, want) in [
        (1.5, "1.5"),
        (1e21, "1e+21"),
        (0.00001, "1e-05"),
        (123456789.5, "1.234567895e+08"),
        (100000.5, "100000.5"),
        (0.0001, "0.0001"),
        (1.5e-7, "1.5e-07"),
        (-0.5, "-0.5"),
        (1e300, "1e+300"),
    ] {
        assert_eq!(yaml_v2::go_format_g(f), want, "{f}");
    }
}

#[test]
fn values_ref_key_defaults_to_values_yaml() {
    assert_eq!(cm("a").key(), "values.yaml");
    assert_eq!(with_key(cm("a"), "").key(), "values.yaml");
    assert_eq!(with_key(cm("a"), "x.yaml").key(), "x.yaml");
    assert_eq!(ValuesKind::parse("Secret"), Some(ValuesKind::Secret));
    assert_eq!(ValuesKind::parse("Bucket"), None);
}
