//! The dashboard's pages from objects written as YAML: what they must show, in which order,
//! and that hostile names are escaped.

use super::*;

fn at(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn summary(kind: Kind, ns: &str, name: &str, ready: &str, phase: &str) -> Summary {
    Summary {
        kind,
        namespace: ns.into(),
        name: name.into(),
        ready: ready.into(),
        phase: phase.into(),
        weight: (kind == Kind::Canary).then_some(10),
        failed_checks: None,
        revision: String::new(),
        suspended: false,
        last_transition_time: None,
        created: None,
        age: String::new(),
        message: format!("message of {name}"),
    }
}

fn event(name: &str, type_: &str, reason: &str, message: &str, when: &str) -> Event {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": format!("{name}.{reason}.{when}"), "namespace": "apps"},
        "involvedObject": {"apiVersion": "flagger.app/v1beta1", "kind": "Canary", "name": name, "namespace": "apps"},
        "type": type_, "reason": reason, "message": message, "lastTimestamp": when, "count": 1
    }))
    .unwrap()
}

fn canary(name: &str, phase: &str, weight: i32, annotations: &str) -> Canary {
    serde_saphyr::from_str(&format!(
        "apiVersion: flagger.app/v1beta1\nkind: Canary\nmetadata:\n  name: '{name}'\n  namespace: apps\n  annotations: {annotations}\n\
         spec:\n  targetRef: {{apiVersion: apps/v1, kind: Deployment, name: podinfo}}\n  service: {{port: 80}}\n\
         \x20 analysis:\n    webhooks:\n    - {{name: load-test, url: 'http://user:pw@tester/load?token=s3cret&q=<x>'}}\n    - {{name: promotion-gate, type: confirm-promotion, url: http://pennant/gate/check}}\n\
         status:\n  phase: {phase}\n  canaryWeight: {weight}\n  failedChecks: 1\n  conditions:\n  - type: Promoted\n    status: Unknown\n    reason: Progressing\n    message: New revision detected, progressing canary analysis.\n"
    ))
    .unwrap()
}

fn run_events() -> Vec<Event> {
    vec![
        event(
            "podinfo",
            "Normal",
            "Synced",
            "Advance podinfo.apps canary weight 40",
            "2026-12-06T11:00:00Z",
        ),
        event(
            "podinfo",
            "Normal",
            "Synced",
            "New revision detected! Scaling up podinfo.apps",
            "2026-12-06T12:00:00Z",
        ),
        event(
            "podinfo",
            "Normal",
            "Synced",
            "Starting canary analysis for podinfo.apps",
            "2026-12-06T12:00:05Z",
        ),
        event(
            "podinfo",
            "Normal",
            "Synced",
            "Advance podinfo.apps canary weight 10",
            "2026-12-06T12:00:10Z",
        ),
        event(
            "podinfo",
            "Normal",
            "Synced",
            "Advance podinfo.apps canary weight 20",
            "2026-12-06T12:00:20Z",
        ),
        event(
            "podinfo",
            "Warning",
            "Synced",
            "Halt podinfo.apps advancement success rate 80.00% < 99%",
            "2026-12-06T12:00:30Z",
        ),
        event(
            "podinfo",
            "Normal",
            "Synced",
            "Advance podinfo.apps canary weight 30",
            "2026-12-06T12:00:40Z",
        ),
        event(
            "other",
            "Normal",
            "Synced",
            "Advance other.apps canary weight 50",
            "2026-12-06T12:00:41Z",
        ),
    ]
}

#[test]
fn escaping_covers_markup_and_quotes() {
    assert_eq!(
        esc(r#"<script>alert('x')</script> & "q""#),
        "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
    );
}

#[test]
fn weights_come_from_the_controllers_event_messages() {
    for (m, w) in [
        ("Advance podinfo.test canary weight 25", Some(25)),
        ("Advance podinfo.test primary weight 75", None),
        ("Routing all traffic to canary", Some(100)),
        ("Routing all traffic to primary", Some(0)),
        (
            "Rolling back podinfo.test failed checks threshold reached 2",
            Some(0),
        ),
        ("Canary failed! Scaling down podinfo.test", Some(0)),
        ("Starting canary analysis for podinfo.test", None),
    ] {
        assert_eq!(weight_of(m), w, "{m}");
    }
}

#[test]
fn the_timeline_is_the_current_run_with_weights_in_order() {
    let now = at("2026-12-06T12:01:00Z");
    let rows = events::rows(&run_events(), Some(("Canary", "podinfo")), now);
    let steps = timeline(&rows);
    let weights: Vec<i32> = steps.iter().map(|s| s.weight).collect();
    // the 40 of the previous run and the other Canary's 50 are not in it
    assert_eq!(weights, [0, 0, 10, 20, 20, 30]);
    assert!(steps[4].warning, "the halt is a Warning");
    assert_eq!(steps[2].at, at("2026-12-06T12:00:10Z").as_second());
    assert_eq!(
        run_start("podinfo", &run_events(), now),
        Some(at("2026-12-06T12:00:00Z").as_second())
    );
    assert_eq!(run_start("podinfo", &[], now), None);
}

#[test]
fn the_plot_draws_the_weights_in_order_and_the_success_rates() {
    let now = at("2026-12-06T12:01:00Z");
    let rows = events::rows(&run_events(), Some(("Canary", "podinfo")), now);
    let steps = timeline(&rows);
    let t0 = steps[0].at;
    let series = vec![Series {
        metric: "success rate".into(),
        version: "canary".into(),
        points: vec![(t0 + 10, 100.0), (t0 + 30, 80.0)],
    }];
    let svg = plot_svg(&steps, &series, now.as_second());
    assert!(svg.contains("data-weights=\"0 0 10 20 20 30\""), "{svg}");
    assert!(svg.contains("class=\"sr-canary\""), "{svg}");
    assert!(!svg.contains("sr-primary"), "no primary series given");
    assert!(
        svg.contains(">canary success rate</text>"),
        "a legend: {svg}"
    );
    // the weight line only climbs: its y coordinates never increase (SVG y grows downwards)
    let points = svg
        .split("points=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    let ys: Vec<f64> = points
        .split(' ')
        .map(|p| p.split(',').nth(1).unwrap().parse().unwrap())
        .collect();
    assert!(ys.windows(2).all(|w| w[1] <= w[0]), "{ys:?}");
    assert!(ys.last().unwrap() < ys.first().unwrap(), "{ys:?}");
    let empty = plot_svg(&[], &[], now.as_second());
    assert!(empty.contains("no steps yet"));
}

#[test]
fn the_canary_page_shows_state_steps_metrics_and_events() {
    let now = at("2026-12-06T12:01:00Z");
    let c = canary(
        "podinfo",
        "Progressing",
        30,
        "{gate.pennant.dev/promotion: open}",
    );
    let series = vec![
        Series {
            metric: "success rate".into(),
            version: "canary".into(),
            points: vec![(at("2026-12-06T12:00:19Z").as_second(), 97.5)],
        },
        Series {
            metric: "latency".into(),
            version: "primary".into(),
            points: vec![(at("2026-12-06T12:00:19Z").as_second(), 31.0)],
        },
    ];
    let v = canary_view(&c, &run_events(), series, None, now);
    let html = canary_html(&v);
    assert!(html.contains("<meta name=\"viewport\""));
    assert!(html.contains("<dd id=\"phase\">Progressing</dd>"), "{html}");
    assert!(html.contains("<dd id=\"weight\">30%</dd>"));
    assert!(html.contains("<dd id=\"gate\">open</dd>"));
    assert!(html.contains("<dd id=\"rollback\">closed</dd>"));
    assert!(html.contains("data-poll=\"/ui/api/canaries/apps/podinfo\""));
    // the step at weight 10 ends at 12:00:20: the sample at 12:00:19 is its metrics
    let row10 = html.split("<td class=\"w\">10%</td>").nth(1).unwrap();
    let row10 = row10.split("</tr>").next().unwrap();
    assert!(
        row10.starts_with("<td>97.5%</td><td>–</td><td>–</td><td>31.0 ms</td>"),
        "{row10}"
    );
    // timeline rows in order
    let i10 = html.find("<td class=\"w\">10%</td>").unwrap();
    let i20 = html.find("<td class=\"w\">20%</td>").unwrap();
    let i30 = html.find("<td class=\"w\">30%</td>").unwrap();
    assert!(i10 < i20 && i20 < i30);
    assert!(html.contains("Halt podinfo.apps advancement success rate 80.00% &lt; 99%"));
    assert!(html.contains("no sequential judge"));
    assert!(!html.contains("other.apps"), "another Canary's Events");
    // the hooks, with the last Event that names one (none names the load test)
    assert!(
        html.contains(
            "<td>load-test</td><td>rollout</td><td><code>http://tester/load</code></td><td>–</td>"
        ),
        "{html}"
    );
    assert!(
        !html.contains("s3cret") && !html.contains("pw@"),
        "a hook's credentials stay off the page"
    );
    assert!(html.contains("<td>promotion-gate</td><td>confirm-promotion</td>"));
    // the JSON parts are the same markup
    let live = canary_live(&v);
    assert_eq!(live.text["weight"], "30%");
    assert!(html.contains(&live.html["timeline"]));
}

#[test]
fn a_rolled_back_run_shows_the_failed_step_and_the_reason() {
    let now = at("2026-12-06T12:02:00Z");
    let mut evs = run_events();
    evs.push(event(
        "podinfo",
        "Warning",
        "Synced",
        "Rolling back podinfo.apps failed checks threshold reached 2",
        "2026-12-06T12:00:50Z",
    ));
    evs.push(event(
        "podinfo",
        "Warning",
        "Synced",
        "Canary failed! Scaling down podinfo.apps",
        "2026-12-06T12:00:51Z",
    ));
    let c = canary("podinfo", "Failed", 0, "{}");
    let v = canary_view(
        &c,
        &evs,
        vec![],
        Some("no metrics server configured".into()),
        now,
    );
    let weights: Vec<i32> = v.steps.iter().map(|s| s.weight).collect();
    assert_eq!(weights, [0, 0, 10, 20, 20, 30, 0, 0]);
    let html = canary_html(&v);
    assert!(html.contains("<dd id=\"phase\">Failed</dd>"));
    assert!(
        html.contains("<tr class=\"failing\"><td>12:00:50</td><td class=\"w\">0%</td>"),
        "{html}"
    );
    assert!(html.contains("failed checks threshold reached 2"));
    assert!(html.contains("no metrics server configured"));
}

#[test]
fn a_hook_is_named_as_a_whole_word() {
    assert!(mentions(
        "Halt podinfo.test advancement pre-rollout check gate failed",
        "gate"
    ));
    assert!(!mentions("Halt advancement promotion-gate pending", "gate"));
    assert!(mentions(
        "webhook promotion-gate: 403 Forbidden",
        "promotion-gate"
    ));
    assert!(!mentions("anything", ""));
}

#[test]
fn events_of_one_second_keep_the_order_they_were_written_in() {
    let mut evs = vec![];
    for (msg, micro) in [
        (
            "Canary failed! Scaling down podinfo.apps",
            "2026-12-06T12:00:50.900000Z",
        ),
        (
            "Rolling back podinfo.apps failed checks threshold reached 2",
            "2026-12-06T12:00:50.100000Z",
        ),
        (
            "Halt podinfo.apps advancement success rate 50.00% < 99%",
            "2026-12-06T12:00:50.050000Z",
        ),
    ] {
        let mut e = event("podinfo", "Warning", "Synced", msg, "2026-12-06T12:00:50Z");
        e.event_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
            at(micro),
        ));
        evs.push(e);
    }
    let rows = events::rows(&evs, None, at("2026-12-06T12:01:00Z"));
    let order: Vec<&str> = rows.iter().map(|r| &r.message[..4]).collect();
    assert_eq!(order, ["Halt", "Roll", "Cana"]);
    assert_eq!(rows[0].last_seen.as_deref(), Some("2026-12-06T12:00:50Z"));
}

#[test]
fn the_judge_report_is_shown_when_in_status() {
    let mut c = canary("podinfo", "Progressing", 20, "{}");
    c.status.as_mut().unwrap().judge = Some(crate::api::JudgeStatus {
        verdict: Some("CONTINUE".into()),
        message: Some("errors: 3/1000 vs 2/4000, e=1.4 < 20".into()),
        steps: vec![crate::api::StepCounts {
            weight: 10,
            canary: crate::api::VersionCounts {
                requests: 1000,
                errors: 3,
                ..Default::default()
            },
            primary: crate::api::VersionCounts {
                requests: 4000,
                errors: 2,
                ..Default::default()
            },
        }],
        ..Default::default()
    });
    let v = canary_view(&c, &[], vec![], None, at("2026-12-06T12:00:00Z"));
    let html = canary_html(&v);
    assert!(
        html.contains("errors: 3/1000 vs 2/4000, e=1.4 &lt; 20"),
        "{html}"
    );
    assert!(html.contains("<td>1</td><td>10%</td><td>1000</td><td>3</td><td>4000</td><td>2</td>"));
}

/// Break-it finding: with the judge on and refusing a count MetricTemplate, `status.judge` is
/// empty and the page said "no sequential judge on this Canary".
#[test]
fn a_judge_that_is_not_ready_says_why_and_one_not_started_says_it_is_on() {
    let mut c = canary(
        "podinfo",
        "Progressing",
        0,
        "{judge.pennant.dev/mode: sequential}",
    );
    let v = canary_view(&c, &[], vec![], None, at("2026-12-06T12:00:00Z"));
    assert_eq!(
        v.judge,
        Some((
            "WAITING".into(),
            "the judge is on; no step judged yet".into()
        ))
    );
    c.status
        .as_mut()
        .unwrap()
        .conditions
        .push(crate::api::Condition {
            type_: "JudgeReady".into(),
            status: "False".into(),
            reason: Some("InvalidCountSignal".into()),
            message: Some(
                "MetricTemplate apps/jobs: judge.pennant.dev/bad: not a series selector".into(),
            ),
            ..Default::default()
        });
    let html = canary_html(&canary_view(
        &c,
        &[],
        vec![],
        None,
        at("2026-12-06T12:00:00Z"),
    ));
    assert!(html.contains("NOT READY"), "{html}");
    assert!(
        html.contains("judge.pennant.dev/bad: not a series selector"),
        "{html}"
    );
    assert!(!html.contains("no sequential judge"), "{html}");
    let off = canary("podinfo", "Progressing", 0, "{}");
    let v = canary_view(&off, &[], vec![], None, at("2026-12-06T12:00:00Z"));
    assert_eq!(v.judge, None);
}

/// Break-it finding: a Canary that cannot start (`Stalled=True`, e.g. no target) read
/// "waiting to be reconciled" and was not counted as failing.
#[test]
fn a_stalled_canary_is_failing_with_the_stalled_message() {
    let mut c = canary("orphan", "Initializing", 0, "{}");
    let st = c.status.as_mut().unwrap();
    st.conditions.clear();
    st.phase = None;
    st.conditions.push(crate::api::Condition {
        type_: "Stalled".into(),
        status: "True".into(),
        reason: Some("TargetNotFound".into()),
        message: Some("Deployment apps/podinfo not found".into()),
        ..Default::default()
    });
    let s = c.summarize(at("2026-12-06T12:00:00Z"));
    assert_eq!(
        (s.ready.as_str(), s.message.as_str()),
        ("False", "Deployment apps/podinfo not found")
    );
    assert!(is_failing(&s));
    let healthy = canary("podinfo", "Progressing", 20, "{}").summarize(at("2026-12-06T12:00:00Z"));
    assert!(!is_failing(&healthy));
}

#[test]
fn the_overview_lists_failing_objects_first_and_escapes_names() {
    let o = Overview {
        canaries: vec![
            summary(Kind::Canary, "a", "good", "True", "Succeeded"),
            summary(
                Kind::Canary,
                "z",
                "<script>alert(1)</script>",
                "False",
                "Failed",
            ),
            summary(Kind::Canary, "b", "running", "Unknown", "Progressing"),
        ],
        sources: vec![
            SourceRow {
                summary: summary(Kind::GitRepository, "a", "repo", "True", ""),
                size: Some(2048),
            },
            SourceRow {
                summary: summary(Kind::OCIRepository, "b", "broken", "False", ""),
                size: None,
            },
        ],
        appliers: vec![
            summary(Kind::Kustomization, "a", "apps", "True", ""),
            summary(Kind::HelmRelease, "b", "web", "False", ""),
        ],
        errors: vec!["HelmCharts: forbidden".into()],
    };
    let html = overview_html(&o);
    assert!(!html.contains("<script>alert"), "{html}");
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    let pos = |s: &str| html.find(s).unwrap_or_else(|| panic!("{s} not in {html}"));
    assert!(
        pos("&lt;script&gt;alert(1)") < pos(">good<"),
        "failed Canary first"
    );
    assert!(pos(">good<") < pos(">running<"), "then by namespace");
    assert!(pos(">broken<") < pos(">repo<"));
    assert!(pos(">web<") < pos(">apps<"));
    assert!(html.contains("href=\"/ui/helmreleases/b/web\""));
    assert!(html.contains("href=\"/ui/kustomizations/a/apps\""));
    assert!(html.contains("2.0 KiB"));
    assert!(html.contains("HelmCharts: forbidden"));
    assert_eq!(human_size(512), "512 B");
    assert_eq!(human_size(3 * 1024 * 1024 + 200_000), "3.2 MiB");
}

#[test]
fn applier_pages_show_the_tree_history_and_canary_gate() {
    let k: Kustomization = serde_saphyr::from_str(
        "apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata: {name: apps, namespace: flux}\n\
         spec: {interval: 1m, prune: true, sourceRef: {kind: GitRepository, name: repo}}\n\
         status:\n  lastAppliedRevision: main@sha1:0123456789abcdef0123456789abcdef01234567\n  rejectedRevision: main@sha1:bad\n\
         \x20 conditions:\n  - {type: Ready, status: Unknown, reason: CanaryProgressing, message: 'Canary apps/podinfo is analysing', lastTransitionTime: '2026-12-06T12:00:00Z'}\n\
         \x20 inventory:\n    entries:\n    - {id: apps_podinfo_apps_Deployment, v: v1}\n    - {id: apps_podinfo_flagger.app_Canary, v: v1beta1}\n    - {id: apps_web_helm.toolkit.fluxcd.io_HelmRelease, v: v2}\n\
         \x20 history:\n  - digest: sha256:abc\n    firstReconciled: '2026-12-06T11:00:00Z'\n    lastReconciled: '2026-12-06T12:00:00Z'\n    lastReconciledDuration: 1.2s\n    lastReconciledStatus: ReconciliationSucceeded\n    totalReconciliations: 3\n    metadata: {revision: main@sha1:0123456789abcdef0123456789abcdef01234567}\n",
    )
    .unwrap();
    let mut known = BTreeMap::new();
    known.insert(
        (Kind::Canary, "apps".into(), "podinfo".into()),
        summary(Kind::Canary, "apps", "podinfo", "Unknown", "Progressing"),
    );
    let mut inventories = BTreeMap::new();
    inventories.insert(
        ("apps".to_string(), "web".to_string()),
        ResourceInventory {
            entries: vec![crate::api::kustomization::ResourceRef {
                id: "apps_web_apps_Deployment".into(),
                v: "v1".into(),
            }],
        },
    );
    let v = kustomization_view(&k, &known, &inventories, &[], at("2026-12-06T12:01:00Z"));
    let html = applier_html(&v);
    assert!(
        html.contains("Canary/apps/podinfo [Progressing weight=10]"),
        "{html}"
    );
    assert!(
        html.contains("<li>HelmRelease/apps/web<ul><li>Deployment/apps/web</li></ul></li>"),
        "{html}"
    );
    assert!(html.contains("<dd id=\"canary-gate\"><span class=\"badge neutral\">CanaryProgressing</span> Canary apps/podinfo is analysing</dd>"));
    assert!(html.contains("<td>main@sha1:01234567</td><td>ReconciliationSucceeded</td><td>3</td>"));
    assert!(html.contains("main@sha1:bad"));
    assert!(html.contains("data-api=\"/ui/api/kustomizations/flux/apps\""));
}
