//! The property/fuzz campaign (issue 17, "Faults"): generated inputs through the parts of
//! pennant that read what users (or a hostile repository) write, asserting that nothing panics
//! and that the archive extractor never writes outside its target directory.
//!
//! Targets (one test each, so they run in parallel): Canary validation and the pure `decide`
//! (`canary_validate_and_decide`), the envsubst engine (`envsubst`), the YAML manifest and
//! values readers (`yaml_readers`), the SOPS reader (`sops_reader`), and the tar extractor
//! (`archive_extractor`). Inputs come from a seeded generator: structure-aware mutations of real
//! seeds (the repository's example Canaries, documents encrypted by the real `sops` CLI in
//! `tests/fixtures/fuzz/`) and hand-built hostile tar headers. Every case's seed is printed
//! when it fails, so `PENNANT_FUZZ_SEED=<seed> PENNANT_FUZZ_CASES=1` replays it.
//!
//! `PENNANT_FUZZ_CASES` is the total over the targets (default 6 000: CI's budget, the whole
//! file well under a minute in a debug build); `e2e/fuzz` runs the million-input campaign in
//! release mode. Each target prints its cases, inputs per second and outcome counts.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// The generator

/// SplitMix64: small, fast, and every case reproducible from one `u64`.
#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
}

/// The total case count (`PENNANT_FUZZ_CASES`) times this target's share.
fn cases(share_percent: u64) -> u64 {
    let total: u64 = std::env::var("PENNANT_FUZZ_CASES")
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(6_000);
    (total * share_percent / 100).max(1)
}

fn base_seed() -> u64 {
    std::env::var("PENNANT_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5EED_2026)
}

/// Runs `one` for this target's cases, each with its own seed; a panic names the seed. Prints
/// the figures `e2e/fuzz` collects: `fuzz <target> cases=N secs=S rate=R/s <outcome>=<count>...`.
fn campaign(target: &str, share_percent: u64, mut one: impl FnMut(&mut Rng) -> &'static str) {
    let n = cases(share_percent);
    let base = base_seed();
    let single = std::env::var("PENNANT_FUZZ_CASES").is_ok_and(|v| v == "1");
    let mut outcomes: BTreeMap<&'static str, u64> = BTreeMap::new();
    let start = Instant::now();
    for i in 0..n {
        // one case per seed: `PENNANT_FUZZ_SEED=<seed> PENNANT_FUZZ_CASES=1` replays it
        let seed = if single {
            base
        } else {
            Rng(base ^ (i.wrapping_mul(0x2545_F491_4F6C_DD1D)) ^ hash(target)).next()
        };
        let mut rng = Rng(seed);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| one(&mut rng)));
        match r {
            Ok(o) => *outcomes.entry(o).or_default() += 1,
            Err(_) => panic!(
                "fuzz {target}: case {i} panicked; replay with PENNANT_FUZZ_SEED={seed} \
                 PENNANT_FUZZ_CASES=1 cargo test --test fuzz_campaign {target}"
            ),
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let counts: Vec<String> = outcomes.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!(
        "fuzz {target} cases={n} secs={secs:.2} rate={:.0}/s {}",
        n as f64 / secs.max(1e-9),
        counts.join(" ")
    );
}

fn hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Strings a generator reaches for: empty, huge, odd unicode, numbers in words, durations.
const STRINGS: &[&str] = &[
    "",
    " ",
    "0",
    "-1",
    "1s",
    "0s",
    "-5s",
    "1m",
    "1h",
    "1.5m",
    "30s",
    "100000000000h",
    "9223372036854775807s",
    "1e400s",
    "NaN",
    "inf",
    "podinfo",
    "podinfo.test",
    "istio",
    "kubernetes",
    "gatewayapi:v1",
    "nginx",
    "request-success-rate",
    "request-duration",
    "pre-rollout",
    "confirm-rollout",
    "confirm-promotion",
    "rollout",
    "post-rollout",
    "rollback",
    "event",
    "confirm-traffic-increase",
    "Progressing",
    "Initialized",
    "Initializing",
    "Succeeded",
    "Failed",
    "Promoting",
    "Finalising",
    "Waiting",
    "WaitingPromotion",
    "Terminating",
    "Terminated",
    "http://127.0.0.1:9/",
    "http://[::1",
    "1970-01-01T00:00:00Z",
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59Z",
    "2026-12-06T13:00:00Z",
    "${VAR}",
    "é😀\u{202e}",
    "a\u{0}b",
    "apps/v1",
    "Deployment",
    "DaemonSet",
    "Service",
    "x-canary",
    "^(a|b)$",
    "(",
    "*",
];

const INTS: &[i64] = &[
    0,
    1,
    -1,
    2,
    5,
    10,
    50,
    99,
    100,
    101,
    255,
    1000,
    65535,
    65536,
    i32::MAX as i64,
    i32::MIN as i64,
    i32::MAX as i64 + 1,
    i64::MAX,
    i64::MIN,
];

fn random_scalar(rng: &mut Rng) -> Value {
    match rng.below(7) {
        0 => json!(*rng.pick(INTS)),
        1 => json!(rng.next() as i64 % 1000),
        2 => json!(*rng.pick(&[0.5, -0.0, 1e308, -1e308, 99.999, 1e-300, 100.0001])),
        3 => json!(rng.chance(50)),
        4 => Value::Null,
        5 => {
            let s = *rng.pick(STRINGS);
            if rng.chance(10) {
                json!(s.repeat(1 + rng.below(2000)))
            } else {
                json!(s)
            }
        }
        _ => json!(format!(
            "{}{}",
            rng.below(100_000),
            rng.pick(&["s", "m", "h", "ms", ""])
        )),
    }
}

/// A value like `v` (same JSON type, mostly) or a wild one.
fn like(rng: &mut Rng, v: &Value) -> Value {
    if rng.chance(8) {
        return random_scalar(rng);
    }
    match v {
        Value::Number(_) => json!(*rng.pick(INTS)),
        Value::Bool(b) => json!(!b),
        Value::String(_) => json!(*rng.pick(STRINGS)),
        _ => random_scalar(rng),
    }
}

/// One structural mutation somewhere in `v`.
fn mutate(rng: &mut Rng, v: &mut Value, keys: &[&str], depth: usize) {
    // the root stays an object: a mutation that replaces a whole document says little
    let descend = depth == 0 || (depth < 8 && rng.chance(70));
    match v {
        Value::Object(m) if !m.is_empty() && descend => {
            let k = m
                .keys()
                .nth(rng.below(m.len()))
                .cloned()
                .unwrap_or_default();
            if let Some(child) = m.get_mut(&k) {
                mutate(rng, child, keys, depth + 1);
            }
        }
        Value::Array(a) if !a.is_empty() && descend => {
            let i = rng.below(a.len());
            mutate(rng, &mut a[i], keys, depth + 1);
        }
        Value::Object(m) => match rng.below(4) {
            0 if !m.is_empty() => {
                let k = m
                    .keys()
                    .nth(rng.below(m.len()))
                    .cloned()
                    .unwrap_or_default();
                m.remove(&k);
            }
            1 => {
                let k = rng.pick(keys).to_string();
                let val = if rng.chance(30) {
                    json!({ *rng.pick(keys): random_scalar(rng) })
                } else if rng.chance(20) {
                    json!([random_scalar(rng), { *rng.pick(keys): random_scalar(rng) }])
                } else {
                    random_scalar(rng)
                };
                m.insert(k, val);
            }
            2 if !m.is_empty() => {
                let k = m
                    .keys()
                    .nth(rng.below(m.len()))
                    .cloned()
                    .unwrap_or_default();
                let old = m[&k].clone();
                m.insert(k, like(rng, &old));
            }
            _ => *v = random_scalar(rng),
        },
        Value::Array(a) => match rng.below(3) {
            0 if !a.is_empty() => {
                let i = rng.below(a.len());
                let dup = a[i].clone();
                for _ in 0..1 + rng.below(3) {
                    a.push(dup.clone());
                }
            }
            1 if !a.is_empty() => {
                a.remove(rng.below(a.len()));
            }
            _ => a.push(random_scalar(rng)),
        },
        other => *other = like(rng, other),
    }
}

// ---------------------------------------------------------------------------------------------
// Canary validation and decide

const CANARY_KEYS: &[&str] = &[
    "interval",
    "threshold",
    "maxWeight",
    "stepWeight",
    "stepWeights",
    "stepWeightPromotion",
    "iterations",
    "match",
    "mirror",
    "mirrorWeight",
    "primaryReadyThreshold",
    "canaryReadyThreshold",
    "sessionAffinity",
    "cookieName",
    "maxAge",
    "metrics",
    "webhooks",
    "alerts",
    "progressDeadlineSeconds",
    "skipAnalysis",
    "suspend",
    "provider",
    "service",
    "port",
    "targetPort",
    "portDiscovery",
    "gateways",
    "hosts",
    "autoscalerRef",
    "targetRef",
    "ingressRef",
    "revertOnDeletion",
    "analysis",
    "thresholdRange",
    "min",
    "max",
    "templateRef",
    "name",
    "kind",
    "apiVersion",
    "type",
    "url",
    "timeout",
    "metadata",
    "phase",
    "canaryWeight",
    "failedChecks",
    "iterations",
    "lastTransitionTime",
    "lastAppliedSpec",
    "lastPromotedSpec",
    "conditions",
    "unreadySince",
    "trackedConfigs",
    "primaryScaledUp",
    "retries",
    "headers",
    "exact",
    "regex",
    "prefix",
    "sourceLabels",
    "primaryScalerReplicas",
    "minReplicas",
    "maxReplicas",
    "judge",
    "rewrite",
    "uri",
    "corsPolicy",
    "trafficPolicy",
    "appProtocol",
    "delegation",
    "apex",
    "canary",
    "primary",
];

fn canary_seeds() -> Vec<Value> {
    let mut files = vec![
        root().join("tests/fixtures/pennant/canary-every-field.yaml"),
        root().join("tests/fixtures/pennant/canary-knative.yaml"),
        root().join("tests/fixtures/flagger/artifacts_examples_istio-abtest.yaml"),
        root().join("tests/fixtures/flagger/artifacts_examples_istio-canary.yaml"),
    ];
    for dir in [
        "examples/istio",
        "examples/kubernetes",
        "examples/nginx",
        "examples/gatewayapi",
    ] {
        if let Ok(rd) = std::fs::read_dir(root().join(dir)) {
            files.extend(rd.flatten().map(|e| e.path()));
        }
    }
    let mut out = vec![];
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        let Ok(docs) = serde_saphyr::from_multiple::<Value>(&text) else {
            continue;
        };
        out.extend(docs.into_iter().filter(|d| d["kind"] == "Canary"));
    }
    assert!(out.len() >= 4, "Canary seeds: {}", out.len());
    out
}

fn random_status(rng: &mut Rng) -> Value {
    let phase = *rng.pick(&[
        "",
        "Initializing",
        "Initialized",
        "Waiting",
        "Progressing",
        "WaitingPromotion",
        "Promoting",
        "Finalising",
        "Succeeded",
        "Failed",
        "Terminating",
        "Terminated",
    ]);
    let ts = *rng.pick(&[
        "2026-12-06T13:00:00Z",
        "2026-12-06T12:59:00Z",
        "1970-01-01T00:00:00Z",
        "0001-01-01T00:00:00Z",
        "9999-12-31T23:59:59Z",
        "2026-12-06T13:00:00.999999999Z",
    ]);
    let mut s = json!({
        "phase": phase,
        "canaryWeight": *rng.pick(INTS) as i32,
        "failedChecks": *rng.pick(INTS) as i32,
        "iterations": *rng.pick(INTS) as i32,
        "lastTransitionTime": ts,
        "lastAppliedSpec": rng.pick(&["rev-1", "rev-2", ""]).to_string(),
        "lastPromotedSpec": rng.pick(&["rev-1", "rev-2", ""]).to_string(),
        "conditions": [{
            "type": "Promoted",
            "status": rng.pick(&["True", "False", "Unknown"]).to_string(),
            "reason": rng.pick(&["Initialized", "Progressing", "Succeeded", "Failed"]).to_string(),
            "message": "",
            "lastUpdateTime": ts,
            "lastTransitionTime": ts,
        }],
    });
    for _ in 0..rng.below(3) {
        mutate(rng, &mut s, CANARY_KEYS, 0);
    }
    s
}

fn readiness(rng: &mut Rng) -> pennant::canary::machine::Readiness {
    use pennant::canary::machine::Readiness;
    match rng.below(3) {
        0 => Readiness::Ready,
        1 => Readiness::NotReady("rolling".into()),
        _ => Readiness::Failed("ProgressDeadlineExceeded".into()),
    }
}

fn observed(rng: &mut Rng, canary: &pennant::api::Canary) -> pennant::canary::machine::Observed {
    use k8s_openapi::jiff::Timestamp;
    use pennant::canary::machine::{Observed, PrimaryState, Probes, TargetState};
    let now = match rng.below(10) {
        0 => Timestamp::MIN,
        1 => Timestamp::MAX,
        2 => Timestamp::UNIX_EPOCH,
        _ => Timestamp::from_second(1_796_562_000 + rng.below(100_000) as i64 - 50_000)
            .expect("in range"),
    };
    let rev = rng.pick(&["rev-1", "rev-2", "rev-3"]).to_string();
    let provider = pennant::canary::validate::provider(&canary.spec, "kubernetes");
    Observed {
        now,
        target: rng.chance(90).then(|| TargetState {
            revision: rev,
            configs: if rng.chance(20) {
                [("configmap/x".to_string(), "abc".to_string())].into()
            } else {
                BTreeMap::new()
            },
            readiness: readiness(rng),
            scale_up_replicas: *rng.pick(&[0, 1, 2, -1, i32::MAX]),
            ready_replicas: *rng.pick(&[0, 1, 3, -1, i32::MAX]),
        }),
        primary: rng.chance(80).then(|| PrimaryState {
            readiness: readiness(rng),
            revision_id: rng
                .chance(70)
                .then(|| rng.pick(&["rev-1", "rev-2", ""]).to_string()),
            replicas: rng.chance(80).then(|| *rng.pick(&[0, 1, 2, i32::MAX, -3])),
        }),
        probes: Probes::default(),
        invalid: pennant::canary::validate::invalid(&canary.spec, provider),
        unsupported: pennant::canary::validate::unsupported(&canary.spec, provider),
        target_matches_primary: *rng.pick(&[None, Some(true), Some(false)]),
        routes_pending: rng.chance(10).then(|| "HTTPRoute not accepted".to_string()),
        concurrency: vec![],
    }
}

fn one_canary(rng: &mut Rng, seeds: &[Value]) -> &'static str {
    use pennant::analysis::{MetricCheck, MetricOutcome};
    use pennant::canary::machine::{Probe, Step, decide, routes_for};
    use pennant::webhook::HookVerdict;
    let mut doc = rng.pick(seeds).clone();
    if rng.chance(80) {
        doc["status"] = random_status(rng);
    }
    for _ in 0..1 + rng.below(4) {
        mutate(rng, &mut doc, CANARY_KEYS, 0);
    }
    let canary = match serde_json::from_value::<pennant::api::Canary>(doc) {
        Ok(c) => c,
        Err(e) => {
            if std::env::var("FUZZ_DEBUG").is_ok() {
                eprintln!("REJECTED {e}");
            }
            return "rejected_by_schema";
        }
    };
    let provider = pennant::canary::validate::provider(&canary.spec, "istio").to_string();
    let _ = pennant::canary::validate::invalid(&canary.spec, &provider);
    let _ = pennant::canary::validate::unsupported(&canary.spec, &provider);
    let _ = pennant::canary::validate::provider_fields(&canary.spec);
    let _ = pennant::canary::validate::hpa_ref(&canary.spec);
    let mut obs = observed(rng, &canary);
    let invalid = !obs.invalid.is_empty();
    for _ in 0..8 {
        match decide(&canary, &obs) {
            Step::Done(d) => {
                // the weights written always split 100
                let w = routes_for(&d.status, canary.spec.analysis());
                assert_eq!(w.primary + w.canary, 100, "{w:?}");
                return if invalid {
                    "decided_invalid"
                } else {
                    "decided"
                };
            }
            Step::Need(Probe::Hooks(k)) => {
                obs.probes.hooks.insert(
                    k,
                    HookVerdict {
                        pass: rng.chance(70),
                        message: "fuzz".into(),
                    },
                );
            }
            Step::Need(Probe::Metrics) => {
                let names: Vec<String> = canary
                    .spec
                    .analysis()
                    .map(|a| a.metrics.iter().map(|m| m.name.clone()).collect())
                    .unwrap_or_default();
                obs.probes.metrics = Some(
                    names
                        .into_iter()
                        .map(|name| MetricCheck {
                            name,
                            outcome: match rng.below(4) {
                                0 => MetricOutcome::Pass(*rng.pick(&[99.0, 0.0, -1.0, 1e308])),
                                1 => MetricOutcome::OutOfRange(f64::NAN, "bad".into()),
                                2 => MetricOutcome::NoValues("none".into()),
                                _ => MetricOutcome::Error("down".into()),
                            },
                        })
                        .collect(),
                );
            }
            Step::Need(Probe::CountSignals) => {
                obs.probes.count_signals = Some(if rng.chance(50) {
                    Ok(Vec::new())
                } else {
                    Err("fuzz: invalid declaration".into())
                });
            }
            Step::Need(Probe::Judge) => return "needs_judge",
        }
    }
    "probe_loop"
}

#[test]
fn canary_validate_and_decide() {
    let seeds = canary_seeds();
    campaign("canary_validate_and_decide", 30, |rng| {
        one_canary(rng, &seeds)
    });
}

// ---------------------------------------------------------------------------------------------
// envsubst

const ENVSUBST_TOKENS: &[&str] = &[
    "${",
    "}",
    "$",
    "$$",
    "{",
    ":",
    "-",
    "=",
    "+",
    "?",
    ":-",
    ":=",
    ":+",
    ":?",
    "#",
    "##",
    "%",
    "%%",
    "/",
    "//",
    "^",
    "^^",
    ",",
    ",,",
    "VAR",
    "X",
    "_",
    "1",
    "a",
    " ",
    "\n",
    "\\",
    "\"",
    "'",
    "é",
    "😀",
    "\u{0}",
    "${VAR}",
    "${VAR:-def}",
    "${VAR:0:2}",
    "${VAR:-1}",
    "${VAR: -1}",
    "${#VAR}",
    "${VAR/a/b}",
    "${VAR//a/b}",
    "${VAR^^}",
    "${VAR,,}",
    "${VAR:=x}",
    "${ VAR }",
    "${VAR:-${X}}",
    "${1}",
    "$VAR",
    "${VAR:99999999999999999999}",
    "${VAR:-9223372036854775808}",
    "${VAR:2:-1}",
    "${VAR#*}",
    "${VAR%%*}",
    "${VAR/#a/b}",
    "${VAR/%a/b}",
    "${!VAR}",
    "${VAR[0]}",
];

fn envsubst_text(rng: &mut Rng) -> String {
    let mut s = String::new();
    if rng.chance(3) {
        // deep nesting
        let depth = 1 + rng.below(300);
        for _ in 0..depth {
            s.push_str("${VAR:-");
        }
        s.push('x');
        for _ in 0..depth {
            s.push('}');
        }
        return s;
    }
    for _ in 0..1 + rng.below(24) {
        let t: &&str = rng.pick(ENVSUBST_TOKENS);
        s.push_str(t);
    }
    s
}

fn one_envsubst(rng: &mut Rng) -> &'static str {
    use pennant::kustomize::substitute::{Options, eval, substitute_object};
    let text = envsubst_text(rng);
    let mut vars = BTreeMap::new();
    for name in ["VAR", "X", "_", "1", "bad-name"] {
        if rng.chance(60) {
            let v = if rng.chance(50) {
                rng.pick(ENVSUBST_TOKENS).to_string()
            } else {
                rng.pick(STRINGS).to_string()
            };
            vars.insert(name.to_string(), v);
        }
    }
    let strict = rng.chance(50);
    let out = eval(&text, &vars, strict);
    if !text.contains('$') {
        assert_eq!(out.as_deref().ok(), Some(text.as_str()), "no $: unchanged");
    }
    let obj = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"},
                     "data": {"k": text.clone(), "n": [text.clone(), 1, null]}});
    let _ = substitute_object(
        &obj,
        &vars,
        Options {
            strict,
            always: rng.chance(50),
        },
    );
    if out.is_ok() { "ok" } else { "error" }
}

#[test]
fn envsubst() {
    campaign("envsubst", 25, one_envsubst);
}

// ---------------------------------------------------------------------------------------------
// YAML readers

const YAML_SEEDS: &[&str] = &[
    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\ndata:\n  k: v\n",
    "---\napiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  ports: [{port: 80}]\n---\n",
    "a: &x {b: 1}\nc: *x\nd:\n  <<: *x\n  e: 2\n",
    "k: !!binary aGVsbG8=\nn: 0644\ny: yes\no: on\nf: .inf\nz: ~\n",
    "a: |\n  line\n  two\nb: >-\n  folded\n  text\n",
    "- 1\n- [2, 3]\n- {a: b}\n",
    "%YAML 1.2\n---\n!tag {a: 1}\n...\n",
    "a: \"esc \\u00e9 \\x41\"\nb: 'single ''q'''\n",
    "? complex key\n: value\n",
    "a: 1\na: 2\n",
];

const YAML_TOKENS: &[&str] = &[
    "\n",
    " ",
    "  ",
    ":",
    ": ",
    "- ",
    "-",
    "---\n",
    "...\n",
    "&a ",
    "*a",
    "<<: ",
    "!!str ",
    "!!map ",
    "!!binary ",
    "!local ",
    "{",
    "}",
    "[",
    "]",
    ",",
    "\"",
    "'",
    "|",
    ">",
    "#",
    "?",
    "%",
    "@",
    "`",
    "\t",
    "\u{feff}",
    "\u{0}",
    "é",
    "😀",
    "0x1F",
    "0o17",
    "1e999",
    "-.inf",
    ".nan",
    "null",
    "~",
    "true",
    "yes",
    "2026-12-06",
    "a",
    "key",
    "value",
    "\\",
];

fn yaml_text(rng: &mut Rng) -> String {
    let mut s: Vec<u8> = if rng.below(500) == 0 {
        // alias expansion ("billion laughs"), a few levels: bounded by serde-saphyr's budget
        // (1 000 000 replayed events by default), so it costs up to a second in a debug build
        let levels = 1 + rng.below(7);
        let mut t = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..=levels {
            let refs = vec![format!("*a{}", i - 1); 10].join(", ");
            t.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
        }
        t.into_bytes()
    } else if rng.chance(4) {
        // deep nesting
        let d = 1 + rng.below(2000);
        let open = if rng.chance(50) { "[" } else { "{a: " };
        let close = if open == "[" { "]" } else { "}" };
        format!("{}1{}", open.repeat(d), close.repeat(d)).into_bytes()
    } else {
        rng.pick(YAML_SEEDS).as_bytes().to_vec()
    };
    for _ in 0..rng.below(8) {
        let at = rng.below(s.len() + 1);
        match rng.below(4) {
            0 => {
                let t = rng.pick(YAML_TOKENS).as_bytes();
                s.splice(at..at, t.iter().copied());
            }
            1 if at < s.len() => {
                s.remove(at);
            }
            2 if at < s.len() => s[at] = rng.next() as u8,
            _ => {
                let other = rng.pick(YAML_SEEDS).as_bytes();
                s.splice(at..at, other.iter().copied());
            }
        }
    }
    String::from_utf8_lossy(&s).into_owned()
}

fn one_yaml(rng: &mut Rng) -> &'static str {
    let text = yaml_text(rng);
    let t0 = Instant::now();

    let plain = serde_saphyr::from_multiple::<Value>(&text);
    let _ = pennant::helm::postrender::parse_manifests(&text);
    let mut options = serde_saphyr::Options::default();
    options.legacy_octal_numbers = true;
    options.with_snippet = false;
    let _ = serde_saphyr::from_multiple_with_options::<Value>(&text, options);
    let _ = serde_saphyr::from_str::<pennant::api::Canary>(&text);
    let _ = serde_saphyr::from_str::<pennant::api::kustomization::Kustomization>(&text);
    let _ = serde_saphyr::from_str::<pennant::api::helm_release::HelmRelease>(&text);
    if std::env::var("FUZZ_DEBUG").is_ok() && t0.elapsed().as_millis() > 20 {
        eprintln!(
            "SLOW {:?} {}",
            t0.elapsed(),
            text.chars().take(120).collect::<String>()
        );
    }
    if plain.is_ok() { "parsed" } else { "error" }
}

#[test]
fn yaml_readers() {
    campaign("yaml_readers", 12, one_yaml);
}

// ---------------------------------------------------------------------------------------------
// SOPS reader

fn one_sops(
    rng: &mut Rng,
    seeds: &[(Vec<u8>, pennant::kustomize::decrypt::Format)],
    keys: &pennant::kustomize::decrypt::Keys,
) -> &'static str {
    use pennant::kustomize::decrypt::{Format, decrypt_document, decrypt_object};
    let (seed, format) = rng.pick(seeds);
    let mut doc = seed.clone();
    if rng.chance(50) && *format != Format::Dotenv {
        // structural: mutate the parsed document, print it back
        let parsed: Result<Value, _> = match format {
            Format::Json => serde_json::from_slice(&doc).map_err(|e| e.to_string()),
            _ => serde_saphyr::from_str(&String::from_utf8_lossy(&doc)).map_err(|e| e.to_string()),
        };
        if let Ok(mut v) = parsed {
            const SOPS_KEYS: &[&str] = &[
                "sops",
                "mac",
                "age",
                "enc",
                "recipient",
                "lastmodified",
                "encrypted_regex",
                "encrypted_suffix",
                "unencrypted_suffix",
                "mac_only_encrypted",
                "version",
                "data",
                "stringData",
                "kms",
                "pgp",
                "hc_vault",
                "azure_kv",
                "gcp_kms",
                "shamir_threshold",
                "key_groups",
                "encrypted_comment_regex",
            ];
            for _ in 0..1 + rng.below(4) {
                mutate(rng, &mut v, SOPS_KEYS, 0);
            }
            if rng.chance(50)
                && let Some(data) = v.get_mut("data").and_then(Value::as_object_mut)
            {
                // reuse a real ciphertext leaf in another place
                data.insert(
                    "x".into(),
                    json!(
                        "ENC[AES256_GCM,data:TMLYWYXi9yo=,iv:rjD4HL63dzhTr48aeXqP6fohzNEg2EHGB8xlWB7i+/4=,tag:GP6Js1hrsJYF8lNyBbbjFw==,type:str]"
                    ),
                );
            }
            let _ = decrypt_object(&v, keys);
            doc = serde_json::to_vec(&v).unwrap_or_default();
        }
    } else {
        for _ in 0..1 + rng.below(6) {
            let at = rng.below(doc.len() + 1);
            match rng.below(4) {
                0 if at < doc.len() => doc[at] = rng.next() as u8,
                1 if at < doc.len() => {
                    doc.remove(at);
                }
                2 => {
                    const TOKENS: &[&[u8]] = &[
                        b"ENC[",
                        b"]",
                        b",type:int]",
                        b",type:bytes]",
                        b"data:",
                        b"iv:",
                        b"tag:",
                        b"=",
                        b"\n",
                        b"sops_",
                        b"#",
                    ];
                    let t = *rng.pick(TOKENS);
                    doc.splice(at..at, t.iter().copied());
                }
                _ => doc.truncate(at),
            }
        }
    }
    let _ = Format::detect(&doc);
    let mut ok = false;
    for (input, output) in [
        (*format, *format),
        (*format, Format::Json),
        (Format::Yaml, Format::Yaml),
        (Format::Binary, Format::Binary),
    ] {
        if let Ok(plain) = decrypt_document(&doc, input, output, keys, rng.chance(80)) {
            ok = true;
            let _ = plain;
        }
    }
    if ok { "decrypted" } else { "refused" }
}

#[test]
fn sops_reader() {
    use pennant::kustomize::decrypt::{Format, Keys};
    let dir = root().join("tests/fixtures/fuzz");
    let key = std::fs::read_to_string(dir.join("fuzz.agekey")).unwrap();
    let keys = Keys::from_age_text(&key).unwrap();
    let seeds: Vec<(Vec<u8>, Format)> = [
        ("enc.yaml", Format::Yaml),
        ("enc.json", Format::Json),
        ("enc.env", Format::Dotenv),
    ]
    .into_iter()
    .map(|(f, fmt)| (std::fs::read(dir.join(f)).unwrap(), fmt))
    .collect();
    // the seeds are real: each decrypts as it is
    for (doc, fmt) in &seeds {
        pennant::kustomize::decrypt::decrypt_document(doc, *fmt, *fmt, &keys, true)
            .unwrap_or_else(|e| panic!("{fmt}: {e}"));
    }
    campaign("sops_reader", 10, |rng| {
        if rng.chance(3) {
            let mut k = key.clone().into_bytes();
            let at = rng.below(k.len());
            k[at] = rng.next() as u8;
            let _ = Keys::from_age_text(&String::from_utf8_lossy(&k));
        }
        one_sops(rng, &seeds, &keys)
    });
}

// ---------------------------------------------------------------------------------------------
// The archive extractor

/// The magic fields tried: POSIX ustar, GNU, none (V7).
const MAGICS: &[&[u8]] = &[b"ustar\x0000", b"ustar  \0", b"\0\0\0\0\0\0\0\0"];

/// One raw 512-byte tar header.
struct Header {
    name: Vec<u8>,
    mode: Vec<u8>,
    size: Vec<u8>,
    kind: u8,
    link: Vec<u8>,
    magic: &'static [u8],
    prefix: Vec<u8>,
    good_checksum: bool,
}

impl Header {
    fn bytes(&self) -> [u8; 512] {
        let mut h = [0u8; 512];
        let put = |h: &mut [u8; 512], at: usize, len: usize, v: &[u8]| {
            let n = v.len().min(len);
            h[at..at + n].copy_from_slice(&v[..n]);
        };
        put(&mut h, 0, 100, &self.name);
        put(&mut h, 100, 8, &self.mode);
        put(&mut h, 108, 8, b"0001750\0");
        put(&mut h, 116, 8, b"0001750\0");
        put(&mut h, 124, 12, &self.size);
        put(&mut h, 136, 12, b"14735073000\0");
        h[156] = self.kind;
        put(&mut h, 157, 100, &self.link);
        put(&mut h, 257, 8, self.magic);
        put(&mut h, 345, 155, &self.prefix);
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| b as u32).sum();
        let field = if self.good_checksum {
            format!("{sum:06o}\0 ")
        } else {
            "000000\0 ".to_string()
        };
        h[148..156].copy_from_slice(field.as_bytes());
        h
    }
}

const TAR_NAMES: &[&str] = &[
    "a.yaml",
    "dir/",
    "dir/b.yaml",
    "./c.yaml",
    ".",
    "./",
    "",
    "../escape",
    "../../escape",
    "a/../../escape",
    "/abs",
    "/etc/passwd",
    "//double",
    "dir/./../x",
    "evil/through-link",
    "evil",
    "link",
    "link/x",
    "é/😀",
    "a\\..\\..\\win",
    "con",
    "x/",
    "x",
    "x/y",
];

fn octal(n: u64, width: usize) -> Vec<u8> {
    let mut v = format!("{n:0w$o}", w = width - 1).into_bytes();
    v.push(0);
    v
}

/// A well-formed file or directory entry (most archives are mostly benign).
fn benign_entry(rng: &mut Rng, out: &mut Vec<u8>) {
    let dir = rng.chance(30);
    let name = format!(
        "{}{}{}",
        rng.pick(&["", "./", "app/", "app/sub/"]),
        rng.pick(&["a", "b.yaml", "c.txt", "x"]),
        if dir { "/" } else { "" }
    );
    let payload: Vec<u8> = if dir {
        vec![]
    } else {
        (0..rng.below(2000)).map(|i| (i % 251) as u8).collect()
    };
    let h = Header {
        name: name.into_bytes(),
        mode: if dir {
            b"0000755\0".to_vec()
        } else {
            b"0000644\0".to_vec()
        },
        size: octal(payload.len() as u64, 12),
        kind: if dir { b'5' } else { b'0' },
        link: vec![],
        magic: b"ustar\x0000",
        prefix: vec![],
        good_checksum: true,
    };
    out.extend_from_slice(&h.bytes());
    out.extend_from_slice(&payload);
    out.extend(std::iter::repeat_n(0u8, (512 - payload.len() % 512) % 512));
}

fn tar_entry(rng: &mut Rng, out: &mut Vec<u8>) {
    if rng.chance(60) {
        return benign_entry(rng, out);
    }
    let mut name = rng.pick(TAR_NAMES).as_bytes().to_vec();
    if rng.chance(10) {
        name = format!("{}/f", "d".repeat(1 + rng.below(300))).into_bytes();
    }
    if rng.chance(3) {
        name.insert(rng.below(name.len() + 1), 0);
    }
    let kind = *rng.pick(b"000\x0055213467LKxgSVMDZ");
    let payload: Vec<u8> = match kind {
        b'x' | b'g' => {
            let rec = |k: &str, v: &str| {
                let body = format!(" {k}={v}\n");
                let mut len = body.len() + 1;
                if (len + format!("{len}").len() - 1).to_string().len() > format!("{len}").len() {
                    len += 1;
                }
                format!("{}{}", len + format!("{len}").len() - 1, body)
            };
            let key = *rng.pick(&["path", "linkpath", "size", "uid", "mtime", "GNU.sparse.map"]);
            let val = match key {
                "size" => rng
                    .pick(&["1", "999999999999999999999", "-1", "x"])
                    .to_string(),
                _ => rng.pick(TAR_NAMES).to_string(),
            };
            let mut r = rec(key, &val).into_bytes();
            if rng.chance(20) {
                r = b"99999 path=x\n".to_vec();
            }
            r
        }
        b'L' | b'K' => {
            let mut v = rng.pick(TAR_NAMES).as_bytes().to_vec();
            if rng.chance(30) {
                v = format!("{}/long", "l".repeat(200 + rng.below(200))).into_bytes();
            }
            v.push(0);
            v
        }
        b'5' | b'2' | b'1' => vec![],
        _ => {
            let n = *rng.pick(&[0usize, 1, 10, 511, 512, 513, 4096, 70_000]);
            (0..n).map(|i| (i % 251) as u8).collect()
        }
    };
    let size_field = match rng.below(10) {
        0 => octal(u32::MAX as u64 * 2, 12), // a lie: huge
        1 => b"77777777777\0".to_vec(),      // the largest octal
        2 => {
            let mut v = vec![0x80u8; 12]; // base-256, huge
            v[1..].fill(0xff);
            v
        }
        3 => b"-1\0".to_vec(),
        4 => b"zzzz\0".to_vec(),
        5 => octal(payload.len().saturating_sub(1) as u64, 12), // a smaller lie
        _ => octal(payload.len() as u64, 12),
    };
    let link = if rng.chance(50) {
        rng.pick(&[
            "/etc/passwd",
            "../../outside",
            "../outside/sentinel",
            "x",
            ".",
            "",
            "a.yaml",
            "/",
        ])
        .as_bytes()
        .to_vec()
    } else {
        vec![]
    };
    const MODES: &[&[u8]] = &[
        b"0000644\0",
        b"0004755\0",
        b"0007777\0",
        b"0000777\0",
        b"9999999\0",
        b"\0",
    ];
    let mode = *rng.pick(MODES);
    let h = Header {
        name,
        mode: mode.to_vec(),
        size: size_field,
        kind,
        link,
        magic: MAGICS[rng.below(MAGICS.len())],
        prefix: if rng.chance(10) {
            rng.pick(&["..", "/", "pre", "../.."]).as_bytes().to_vec()
        } else {
            vec![]
        },
        good_checksum: rng.chance(95),
    };
    out.extend_from_slice(&h.bytes());
    out.extend_from_slice(&payload);
    let pad = (512 - payload.len() % 512) % 512;
    out.extend(std::iter::repeat_n(0u8, pad));
}

fn tar_bytes(rng: &mut Rng) -> Vec<u8> {
    let mut out = vec![];
    for _ in 0..1 + rng.below(8) {
        tar_entry(rng, &mut out);
    }
    if rng.chance(80) {
        out.extend_from_slice(&[0u8; 1024]);
    }
    for _ in 0..rng.below(3) * usize::from(rng.chance(30)) {
        if !out.is_empty() {
            let at = rng.below(out.len());
            out[at] = rng.next() as u8;
        }
    }
    if rng.chance(10) {
        let at = rng.below(out.len() + 1);
        out.truncate(at);
    }
    out
}

/// Every path under `dir`, not following symlinks.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        out.push(p.clone());
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            walk(&p, out);
        }
    }
}

const LIMITS: pennant::source::artifact::UntarLimits = pennant::source::artifact::UntarLimits {
    max_total_size: 256 << 10,
    max_file_size: 64 << 10,
    max_entries: 64,
    skip_links: false,
};

fn one_tar(rng: &mut Rng, sandbox: &Path) -> &'static str {
    use pennant::source::artifact::{untar, untar_gz};
    let dest = sandbox.join("dest");
    let outside = sandbox.join("outside");
    let sentinel = outside.join("sentinel");
    let _ = std::fs::remove_dir_all(&dest);
    std::fs::create_dir_all(&dest).unwrap();
    // a symlink already in the destination, pointing out of it
    let planted = rng.chance(30);
    if planted {
        std::os::unix::fs::symlink("../outside", dest.join("evil")).unwrap();
    }
    let tar = tar_bytes(rng);
    let limits = pennant::source::artifact::UntarLimits {
        skip_links: rng.chance(30),
        ..LIMITS
    };
    let r = if rng.chance(30) {
        let mut gz = flate2::write::GzEncoder::new(vec![], flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        let mut bytes = gz.finish().unwrap();
        if rng.chance(20) && !bytes.is_empty() {
            let at = rng.below(bytes.len());
            bytes[at] ^= 0x55;
        }
        untar_gz(&bytes[..], &dest, &limits)
    } else {
        untar(&tar[..], &dest, &limits)
    };
    // nothing written outside `dest`
    let mut all = vec![];
    walk(sandbox, &mut all);
    for p in &all {
        let inside = p.starts_with(&dest);
        assert!(
            inside || *p == outside || *p == sentinel,
            "written outside the destination: {} ({r:?})",
            p.display()
        );
    }
    assert_eq!(std::fs::read(&sentinel).unwrap(), b"keep", "{r:?}");
    let sm = std::fs::metadata(&sentinel).unwrap();
    assert_eq!(sm.nlink(), 1, "a hard link to a file outside: {r:?}");
    assert_eq!(sm.permissions().mode() & 0o7777, 0o644);
    let mut bytes = 0u64;
    for p in all.iter().filter(|p| p.starts_with(&dest)) {
        let m = std::fs::symlink_metadata(p).unwrap();
        if m.file_type().is_symlink() {
            assert!(
                planted && *p == dest.join("evil"),
                "link created: {}",
                p.display()
            );
            continue;
        }
        let mode = m.permissions().mode();
        assert_eq!(mode & 0o7022, 0, "{:o} on {}", mode, p.display());
        if m.is_file() {
            assert_eq!(m.nlink(), 1, "a hard link: {}", p.display());
            assert!(m.len() <= LIMITS.max_file_size, "{}", p.display());
            bytes += m.len();
        } else {
            assert!(m.is_dir(), "only files and directories: {}", p.display());
        }
    }
    assert!(bytes <= LIMITS.max_total_size);
    match r {
        Ok(_) => "extracted",
        Err(pennant::source::artifact::UntarError::UnsafePath(_)) => "unsafe_path",
        Err(pennant::source::artifact::UntarError::Link(_)) => "link",
        Err(pennant::source::artifact::UntarError::Unsupported { .. }) => "unsupported",
        Err(pennant::source::artifact::UntarError::FileTooLarge { .. })
        | Err(pennant::source::artifact::UntarError::TotalTooLarge { .. })
        | Err(pennant::source::artifact::UntarError::TooManyEntries { .. }) => "over_limit",
        Err(_) => "unreadable",
    }
}

#[test]
fn archive_extractor() {
    let tmp = tempfile::tempdir().unwrap();
    let sandbox = tmp.path().join("sandbox");
    std::fs::create_dir_all(sandbox.join("outside")).unwrap();
    let sentinel = sandbox.join("outside/sentinel");
    std::fs::write(&sentinel, b"keep").unwrap();
    std::fs::set_permissions(&sentinel, std::fs::Permissions::from_mode(0o644)).unwrap();
    campaign("archive_extractor", 23, |rng| one_tar(rng, &sandbox));
}

/// The hostile archives of the campaign's kinds, by hand: each refused, nothing outside.
#[test]
fn hostile_archives_by_hand() {
    use pennant::source::artifact::untar;
    let tmp = tempfile::tempdir().unwrap();
    let sized = |name: &str, kind: u8, link: &str, data: &[u8], size: Vec<u8>| {
        let mut out = Header {
            name: name.as_bytes().to_vec(),
            mode: b"0000644\0".to_vec(),
            size,
            kind,
            link: link.as_bytes().to_vec(),
            magic: b"ustar\x0000",
            prefix: vec![],
            good_checksum: true,
        }
        .bytes()
        .to_vec();
        out.extend_from_slice(data);
        out.extend(std::iter::repeat_n(0u8, (512 - data.len() % 512) % 512));
        out
    };
    let entry = |name: &str, kind: u8, link: &str, data: &[u8]| {
        sized(name, kind, link, data, octal(data.len() as u64, 12))
    };
    for (case, tar) in [
        ("dot-dot", entry("../x", b'0', "", b"x")),
        ("absolute", entry("/tmp/pennant-fuzz-abs", b'0', "", b"x")),
        ("symlink out", entry("l", b'2', "/etc", b"")),
        ("hard link out", entry("h", b'1', "/etc/passwd", b"")),
        ("device", entry("d", b'3', "", b"")),
        (
            "huge size",
            sized("big", b'0', "", b"", b"77777777777\0".to_vec()),
        ),
    ] {
        let dest = tmp.path().join(case.replace(' ', "-"));
        let r = untar(&tar[..], &dest, &LIMITS);
        assert!(r.is_err(), "{case}: {r:?}");
    }
    assert!(!Path::new("/tmp/pennant-fuzz-abs").exists());
    let mut all = vec![];
    walk(tmp.path(), &mut all);
    assert!(all.iter().all(|p| {
        !std::fs::symlink_metadata(p)
            .unwrap()
            .file_type()
            .is_symlink()
    }));
}
