//! The Helm chart (`charts/pennant`): lint, CRDs and version in step with the crate, RBAC equal
//! to the permissions table in `src/rbac.rs` (which a scan of `src/` keeps complete and minimal),
//! and every rendering accepted by the real apiserver (server-side dry-run).
//!
//! Uses the `helm` built by `e2e/cluster build` (`e2e/cluster env` exports `PENNANT_HELM`).

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use pennant::cmd::controller::{BUILT, NOT_BUILT};
use pennant::rbac::{LEADER_ELECTION_RULES, Permission, UI_RULES};
use serde_json::Value;
use support::*;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn chart() -> String {
    root().join("charts/pennant").to_string_lossy().into_owned()
}

/// `helm template <release> charts/pennant -n <ns> --set ...` (CRDs included), as documents.
fn render(release: &str, ns: &str, set: &[&str]) -> (String, Vec<Value>) {
    let mut cmd = Command::new(helm());
    cmd.args([
        "template",
        release,
        &chart(),
        "--namespace",
        ns,
        "--include-crds",
    ]);
    for s in set {
        cmd.args(["--set", s]);
    }
    let text = run(&mut cmd);
    let docs = yaml_docs(&text);
    (text, docs)
}

/// Equal sets, or a panic naming what only one side has.
fn assert_same(chart: &BTreeSet<Triple>, code: &BTreeSet<Triple>, what: &str) {
    let extra: Vec<_> = chart.difference(code).collect();
    let missing: Vec<_> = code.difference(chart).collect();
    assert!(
        extra.is_empty() && missing.is_empty(),
        "{what}: granted by the chart only: {extra:?}; in src/rbac.rs only: {missing:?}"
    );
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
}

type Triple = (String, String, String);

fn triples(rules: &[Permission]) -> BTreeSet<Triple> {
    rules
        .iter()
        .flat_map(|p| {
            p.verbs
                .iter()
                .map(|v| (p.group.to_string(), p.resource.to_string(), v.to_string()))
        })
        .collect()
}

/// The (group, resource, verb) triples a rendered Role/ClusterRole grants.
fn granted(role: &Value) -> BTreeSet<Triple> {
    let strs = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .map(|s| s.as_str().expect("string").to_string())
            .collect()
    };
    let mut out = BTreeSet::new();
    for rule in role["rules"].as_array().expect("rules") {
        for g in strs(&rule["apiGroups"]) {
            for r in strs(&rule["resources"]) {
                for v in strs(&rule["verbs"]) {
                    assert!(g != "*" && r != "*" && v != "*", "wildcard in {rule}");
                    out.insert((g.clone(), r.clone(), v));
                }
            }
        }
    }
    out
}

/// The image (`Dockerfile`) carries the CLIs the GitOps controllers run, at the versions the
/// tests run (`e2e/cluster`'s `HELM_V` and `KUSTOMIZE_V`), and puts them next to pennant.
#[test]
fn image_carries_helm_and_kustomize_at_the_tested_versions() {
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let cluster = std::fs::read_to_string(root().join("e2e/cluster")).unwrap();
    for (arg, var) in [
        ("HELM_VERSION", "HELM_V"),
        ("KUSTOMIZE_VERSION", "KUSTOMIZE_V"),
    ] {
        let tested = cluster
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{var}=${{{arg}:-")))
            .and_then(|rest| rest.split('}').next())
            .unwrap_or_else(|| panic!("{var} not found in e2e/cluster"));
        assert!(
            dockerfile.contains(&format!("ARG {arg}={tested}\n")),
            "Dockerfile's {arg} is not the tested {tested}"
        );
    }
    assert!(dockerfile.contains("COPY --from=tools /out/helm /out/kustomize /usr/local/bin/"));
}

#[test]
fn app_version_is_the_crate_version() {
    let text = std::fs::read_to_string(root().join("charts/pennant/Chart.yaml")).unwrap();
    let chart: Value = serde_saphyr::from_str(&text).unwrap();
    assert_eq!(chart["appVersion"], env!("CARGO_PKG_VERSION"));
    assert_eq!(chart["version"], env!("CARGO_PKG_VERSION"));
}

/// The chart ships `crds/pennant.yaml` byte for byte (`PENNANT_UPDATE_CRDS=1` copies it over).
#[test]
fn chart_crds_are_the_generated_crds() {
    let generated = pennant::api::crds::to_yaml();
    let path = root().join("charts/pennant/crds/pennant.yaml");
    if std::env::var_os("PENNANT_UPDATE_CRDS").is_some_and(|v| !v.is_empty() && v != "0") {
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    let shipped = std::fs::read_to_string(&path).unwrap();
    assert!(
        shipped == generated,
        "{} differs from the CRDs the types generate; regenerate with \
         `PENNANT_UPDATE_CRDS=1 cargo test --test crds --test chart`",
        path.display()
    );
}

#[test]
fn helm_lint_passes_with_defaults_and_every_option() {
    let mut plain = Command::new(helm());
    plain.args(["lint", "--strict", &chart()]);
    run(&mut plain);
    let mut all = Command::new(helm());
    all.args(["lint", "--strict", &chart(), "--set"]).arg(
        "serviceMonitor.enabled=true,podDisruptionBudget.enabled=true,\
         leaderElection.enabled=true,replicaCount=2,namespace=apps,slack.url=https://hooks.example/x,\
         msteams.url=https://teams.example/y,eventWebhook=http://events/z,watchLabelSelector=sharding.fluxcd.io/key=shard1,\
         shards={shard1,shard2},ui.enabled=true",
    );
    run(&mut all);
}

#[test]
fn more_than_one_replica_needs_leader_election() {
    let out = Command::new(helm())
        .args(["template", "x", &chart(), "--set", "replicaCount=2"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("leaderElection.enabled"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The union of the rules of the controllers named.
fn rules_of(names: &[&str]) -> BTreeSet<Triple> {
    BUILT
        .iter()
        .filter(|e| names.contains(&e.name))
        .flat_map(|e| triples(e.rules))
        .collect()
}

/// The chart grants exactly the table in `src/rbac.rs`: cluster-wide by default, as a Role in
/// the watched namespace with `namespace=...`, plus the Lease Role with leader election.
#[test]
fn chart_rbac_is_the_code_table() {
    let every: Vec<&str> = BUILT.iter().map(|e| e.name).collect();
    let want = rules_of(&every);
    let (_, docs) = render("p", "ops", &[]);
    let role = find(&docs, "ClusterRole", "p-pennant").expect("ClusterRole");
    assert_same(
        &granted(role),
        &want,
        "ClusterRole vs the rules of every built controller",
    );
    let binding = find(&docs, "ClusterRoleBinding", "p-pennant").expect("binding");
    assert_eq!(binding["subjects"][0]["name"], "p-pennant");
    assert_eq!(binding["subjects"][0]["namespace"], "ops");
    assert!(
        !docs.iter().any(|d| d["kind"] == "Role"),
        "no Lease Role without leader election"
    );

    let (_, docs) = render(
        "p",
        "ops",
        &["namespace=apps", "leaderElection.enabled=true"],
    );
    assert!(!docs.iter().any(|d| d["kind"] == "ClusterRole"));
    let role = find(&docs, "Role", "p-pennant").expect("Role");
    assert_eq!(role["metadata"]["namespace"], "apps");
    assert_same(
        &granted(role),
        &want,
        "Role vs the rules of every built controller",
    );
    let lease = find(&docs, "Role", "p-pennant-leader-election").expect("lease Role");
    assert_eq!(lease["metadata"]["namespace"], "ops");
    assert_same(
        &granted(lease),
        &triples(LEADER_ELECTION_RULES),
        "lease Role vs LEADER_ELECTION_RULES",
    );
    let args =
        find(&docs, "Deployment", "p-pennant").unwrap()["spec"]["template"]["spec"]["containers"]
            [0]["args"]
            .clone();
    for a in [
        "--namespace=apps",
        "--leader-election",
        "--leader-election-namespace=ops",
    ] {
        assert!(
            args.as_array().unwrap().iter().any(|x| x == a),
            "{a} in {args}"
        );
    }
}

/// The chart's `controllers` list picks the controllers the process runs (`--controllers`) and
/// the rules it is granted: for every non-empty set of built controllers, the rendered rules are
/// the union of those controllers' rules. Names the build lacks fail the render, as the binary.
#[test]
fn rendered_rules_follow_the_enabled_controllers() {
    let every: Vec<&str> = BUILT.iter().map(|e| e.name).collect();
    let (_, docs) = render("p", "ops", &[]);
    let args = |docs: &[Value]| -> Vec<String> {
        find(docs, "Deployment", "p-pennant").unwrap()["spec"]["template"]["spec"]["containers"][0]
            ["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect()
    };
    assert!(
        args(&docs).contains(&format!("--controllers={}", every.join(","))),
        "the chart's default is every controller the build has: {:?}",
        args(&docs)
    );
    for mask in 1..(1u32 << every.len()) {
        let set: Vec<&str> = (0..every.len())
            .filter(|i| mask & (1 << i) != 0)
            .map(|i| every[i])
            .collect();
        let value = format!("controllers={{{}}}", set.join(","));
        for scoped in [vec![value.as_str()], vec![value.as_str(), "namespace=apps"]] {
            let (_, docs) = render("p", "ops", &scoped);
            let role = find(&docs, "ClusterRole", "p-pennant")
                .or_else(|| find(&docs, "Role", "p-pennant"))
                .expect("role");
            assert_same(
                &granted(role),
                &rules_of(&set),
                &format!("rules of {set:?}"),
            );
            // the only grants beyond the code's tables: cluster-admin for the kustomize and
            // helm controllers
            let mut admins = vec![];
            if set.contains(&"kustomize") {
                admins.push("p-pennant-kustomize".to_string());
            }
            if set.contains(&"helm") {
                admins.push("p-pennant-helm".to_string());
            }
            assert_eq!(
                admin_bindings(&docs),
                admins,
                "cluster-admin bindings of {set:?}"
            );
            let flag = args(&docs)
                .into_iter()
                .find_map(|a| a.strip_prefix("--controllers=").map(String::from))
                .expect("--controllers");
            let selected: Vec<&str> = pennant::cmd::controller::select(&flag)
                .unwrap()
                .iter()
                .map(|e| e.name)
                .collect();
            assert_eq!(selected, set);
        }
    }
    for bad in NOT_BUILT.iter().chain(&["nope"]) {
        let out = Command::new(helm())
            .args(["template", "x", &chart(), "--set"])
            .arg(format!("controllers={{{bad}}}"))
            .output()
            .unwrap();
        assert!(!out.status.success(), "controllers={{{bad}}} rendered");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("unknown controller"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The names of the rendered bindings whose role is not the chart's own: each must be the
/// built-in `cluster-admin` ClusterRole (anything else fails here).
fn admin_bindings(docs: &[Value]) -> Vec<String> {
    docs.iter()
        .filter(|d| d["kind"] == "ClusterRoleBinding" || d["kind"] == "RoleBinding")
        .filter(|d| {
            let role = d["roleRef"]["name"].as_str().unwrap();
            !docs.iter().any(|r| {
                (r["kind"] == "ClusterRole" || r["kind"] == "Role")
                    && r["metadata"]["name"] == role
                    && r["kind"] == d["roleRef"]["kind"]
            })
        })
        .map(|d| {
            assert_eq!(d["roleRef"]["kind"], "ClusterRole", "{d}");
            assert_eq!(d["roleRef"]["name"], "cluster-admin", "{d}");
            d["metadata"]["name"].as_str().unwrap().to_string()
        })
        .collect()
}

/// The dashboard is off by default; `ui.enabled=true` passes `--ui` and grants exactly
/// `UI_RULES` by a ClusterRole of its own, cluster-wide even when the controller is scoped (the
/// reviews are cluster-scoped).
#[test]
fn the_dashboard_is_off_by_default_and_brings_its_reviews() {
    let args = |docs: &[Value]| -> Vec<String> {
        let d = docs
            .iter()
            .find(|d| d["kind"] == "Deployment")
            .expect("Deployment");
        d["spec"]["template"]["spec"]["containers"][0]["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect()
    };
    let (_, docs) = render("p", "ops", &[]);
    assert!(!args(&docs).contains(&"--ui".to_string()));
    assert!(find(&docs, "ClusterRole", "p-pennant-ui").is_none());
    for set in [
        vec!["ui.enabled=true"],
        vec!["ui.enabled=true", "namespace=apps"],
    ] {
        let (_, docs) = render("p", "ops", &set);
        assert!(args(&docs).contains(&"--ui".to_string()), "{set:?}");
        let role = find(&docs, "ClusterRole", "p-pennant-ui").expect("the dashboard's ClusterRole");
        assert_same(
            &granted(role),
            &triples(UI_RULES),
            "ClusterRole p-pennant-ui vs UI_RULES",
        );
        let b = find(&docs, "ClusterRoleBinding", "p-pennant-ui").expect("its binding");
        assert_eq!(b["roleRef"]["name"], "p-pennant-ui");
        assert_eq!(b["subjects"][0]["name"], "p-pennant");
        assert_eq!(b["subjects"][0]["namespace"], "ops");
    }
}

/// A Kustomization applies arbitrary kinds, so the kustomize controller is bound to
/// `cluster-admin` as Flux's is (a RoleBinding when namespace-scoped); with
/// `rbac.kustomizeClusterAdmin=false` the chart grants only the code's rules.
#[test]
fn kustomize_is_cluster_admin_unless_turned_off() {
    let (_, docs) = render("p", "ops", &["controllers={canary,source,kustomize}"]);
    assert_eq!(admin_bindings(&docs), vec!["p-pennant-kustomize"]);
    let b = find(&docs, "ClusterRoleBinding", "p-pennant-kustomize").unwrap();
    assert_eq!(b["subjects"][0]["name"], "p-pennant");
    assert_eq!(b["subjects"][0]["namespace"], "ops");
    let (_, docs) = render("p", "ops", &["namespace=apps"]);
    let b = find(&docs, "RoleBinding", "p-pennant-kustomize").expect("scoped binding");
    assert_eq!(b["metadata"]["namespace"], "apps");
    let (_, docs) = render(
        "p",
        "ops",
        &[
            "rbac.kustomizeClusterAdmin=false",
            "rbac.helmClusterAdmin=false",
        ],
    );
    assert!(admin_bindings(&docs).is_empty());
    let (_, docs) = render("p", "ops", &["rbac.kustomizeClusterAdmin=false"]);
    assert_eq!(admin_bindings(&docs), vec!["p-pennant-helm"]);
    let (_, docs) = render("p", "ops", &["rbac.create=false"]);
    assert!(admin_bindings(&docs).is_empty());
}

/// `flux uninstall` deletes every object labelled `app.kubernetes.io/part-of=flux`: nothing the
/// chart renders and nothing `src/` writes carries that label.
#[test]
fn nothing_of_pennant_is_labelled_part_of_flux() {
    fn labelled_flux(v: &Value, at: &str, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    if k == "app.kubernetes.io/part-of" && x.as_str() == Some("flux") {
                        out.push(at.to_string());
                    }
                    labelled_flux(x, &format!("{at}.{k}"), out);
                }
            }
            Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    labelled_flux(x, &format!("{at}[{i}]"), out);
                }
            }
            _ => {}
        }
    }
    let mut found = vec![];
    for set in [
        vec![],
        vec![
            "namespace=apps",
            "leaderElection.enabled=true",
            "serviceMonitor.enabled=true",
            "podDisruptionBudget.enabled=true",
            "slack.url=https://hooks.example/x",
        ],
    ] {
        let (text, docs) = render("p", "ops", &set);
        for d in &docs {
            labelled_flux(
                d,
                &format!("{}/{}", d["kind"], d["metadata"]["name"]),
                &mut found,
            );
        }
        assert!(!text.contains("part-of: flux"), "{text}");
    }
    // the planted case is found
    let mut planted = vec![];
    labelled_flux(
        &serde_json::json!({"metadata": {"labels": {"app.kubernetes.io/part-of": "flux"}}}),
        "x",
        &mut planted,
    );
    assert_eq!(planted, ["x.metadata.labels"]);
    // any label or selector the code writes: a line naming `part-of` and `flux`
    for (file, text) in source_files(&root().join("src")) {
        for (n, line) in text.lines().enumerate() {
            if line.contains("part-of") && line.contains("flux") {
                found.push(format!("{file}:{}: {line}", n + 1));
            }
        }
    }
    assert!(
        found.is_empty(),
        "app.kubernetes.io/part-of=flux (flux uninstall deletes what carries it): {found:#?}"
    );
}

/// Every `.rs` file under `dir`, as (path relative to the crate, text).
fn source_files(dir: &Path) -> Vec<(String, String)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let mut files = vec![];
    walk(dir, &mut files);
    files
        .into_iter()
        .map(|f| {
            let text = std::fs::read_to_string(&f).unwrap();
            (f.strip_prefix(root()).unwrap().display().to_string(), text)
        })
        .collect()
}

/// The Deployment's args are flags the binary accepts, with the values the chart was given.
#[test]
fn deployment_args_parse_as_the_binarys_flags() {
    use clap::Parser;
    use pennant::cmd::{Cli, Command as Cmd};
    for set in [
        vec![],
        vec![
            "leaderElection.enabled=true",
            "namespace=apps",
            "clusterName=prod",
            "slack.channel=ops",
            "kubeconfigQPS=20",
            r"log.level=info\,pennant=debug",
            "watchLabelSelector=!sharding.fluxcd.io/key",
            "kustomize.defaultServiceAccount=tenant",
            "helm.maxProcesses=2",
            "canaryConcurrent=64",
            "ui.enabled=true",
        ],
    ] {
        let (_, docs) = render("p", "ops", &set);
        let d = find(&docs, "Deployment", "p-pennant").expect("Deployment");
        let c = &d["spec"]["template"]["spec"]["containers"][0];
        let mut argv = vec!["pennant".to_string()];
        argv.extend(
            c["args"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap().to_string()),
        );
        let cli = Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
        let Cmd::Controller(args) = cli.command else {
            panic!("{argv:?}")
        };
        assert_eq!(args.listen, "0.0.0.0:8080");
        assert_eq!(args.log_format, "json");
        assert_eq!(
            args.controllers,
            "canary,source,kustomize,helm,notification"
        );
        let tenant = if set.is_empty() { "" } else { "tenant" };
        assert_eq!(args.default_service_account, tenant);
        let helm_processes = if set.is_empty() { 4 } else { 2 };
        assert_eq!(args.helm_max_processes, helm_processes);
        let canary_concurrent = if set.is_empty() { 0 } else { 64 };
        assert_eq!(args.canary_concurrent, canary_concurrent);
        // the source controller's storage: an emptyDir, served through the Service's name
        assert_eq!(args.storage_path, "/data");
        assert_eq!(
            args.storage_adv_addr,
            "p-pennant.ops.svc.cluster.local.:8080"
        );
        assert_eq!(
            (args.artifact_retention_ttl, args.artifact_retention_records),
            (60, 2)
        );
        let mounts: Vec<&str> = c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["mountPath"].as_str().unwrap())
            .collect();
        assert_eq!(mounts, ["/data", "/tmp"], "writable with a read-only root");
        assert!(d["spec"]["template"]["spec"]["volumes"][0]["emptyDir"].is_object());
        if set.is_empty() {
            assert_eq!(args.watch_label_selector, "");
            assert_eq!(args.namespace, "");
            assert!(!args.leader_election);
            assert_eq!(args.kubeconfig_burst, 250);
        } else {
            assert_eq!(args.namespace, "apps");
            assert!(args.leader_election);
            assert_eq!(args.leader_election_namespace, "ops");
            assert_eq!(args.leader_election_lease_duration, 15);
            assert_eq!(args.cluster_name, "prod");
            assert_eq!(args.slack_channel.as_deref(), Some("ops"));
            assert_eq!(args.kubeconfig_qps, 20.0);
            assert_eq!(args.log_level, "info,pennant=debug");
            assert_eq!(args.watch_label_selector, "!sharding.fluxcd.io/key");
        }
        let probe = |p: &str| c[p]["httpGet"]["path"].as_str().unwrap().to_string();
        assert_eq!(
            (probe("livenessProbe"), probe("readinessProbe")),
            ("/healthz".into(), "/readyz".into())
        );
        assert_eq!(
            d["spec"]["template"]["spec"]["securityContext"]["runAsUser"],
            65532
        );
        assert_eq!(
            c["env"][0]["name"], "POD_NAME",
            "leader identity and Event instance"
        );
    }
}

/// `shards: [shard1, shard2]`: one Deployment, Service, artifact address and Lease per shard,
/// each watching its `sharding.fluxcd.io/key`, the main one the objects without the label; no
/// Service (or Deployment) selects another's pods.
#[test]
fn shards_get_their_own_deployment_service_lease_and_artifact_address() {
    use clap::Parser;
    use pennant::cmd::controller::shard_lease_name;
    use pennant::cmd::{Cli, Command as Cmd};
    let (_, docs) = render(
        "p",
        "ops",
        &["shards={shard1,shard2}", "leaderElection.enabled=true"],
    );
    let mut leases = BTreeSet::new();
    let mut addrs = BTreeSet::new();
    let mut pod_labels = vec![];
    for (name, shard) in [
        ("p-pennant", None),
        ("p-pennant-shard1", Some("shard1")),
        ("p-pennant-shard2", Some("shard2")),
    ] {
        let d = find(&docs, "Deployment", name).unwrap_or_else(|| panic!("Deployment {name}"));
        let c = &d["spec"]["template"]["spec"]["containers"][0];
        let mut argv = vec!["pennant".to_string()];
        argv.extend(
            c["args"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap().to_string()),
        );
        let Cmd::Controller(args) = Cli::try_parse_from(&argv).unwrap().command else {
            panic!("{argv:?}")
        };
        let want = match shard {
            Some(s) => format!("sharding.fluxcd.io/key={s}"),
            None => "!sharding.fluxcd.io/key".into(),
        };
        assert_eq!(args.watch_label_selector, want, "{name}");
        assert_eq!(
            args.storage_adv_addr,
            format!("{name}.ops.svc.cluster.local.:8080"),
            "{name}: artifacts served by its own Service"
        );
        assert!(args.leader_election);
        leases.insert(shard_lease_name(
            &args.leader_election_lease_name,
            Some(&args.watch_label_selector),
        ));
        addrs.insert(args.storage_adv_addr.clone());
        let svc = find(&docs, "Service", name).unwrap_or_else(|| panic!("Service {name}"));
        let labels = &d["spec"]["template"]["metadata"]["labels"];
        let sel = &d["spec"]["selector"]["matchLabels"];
        assert_eq!(
            &svc["spec"]["selector"], sel,
            "{name}: Service selects its pods"
        );
        for (k, v) in sel.as_object().unwrap() {
            assert_eq!(&labels[k], v, "{name}: its own pods match");
        }
        pod_labels.push((name, sel.clone(), labels.clone()));
    }
    assert!(
        leases.contains("pennant-leader-election-shard1"),
        "{leases:?}"
    );
    assert_eq!(leases.len(), 3, "one Lease each: {leases:?}");
    assert_eq!(addrs.len(), 3);
    // no selector matches another Deployment's pods
    for (a, sel, _) in &pod_labels {
        for (b, _, labels) in &pod_labels {
            let matches = sel
                .as_object()
                .unwrap()
                .iter()
                .all(|(k, v)| &labels[k] == v);
            assert_eq!(matches, a == b, "{a}'s selector vs {b}'s pods");
        }
    }
    // one set of RBAC for all
    assert!(find(&docs, "ServiceAccount", "p-pennant").is_some());
    assert!(find(&docs, "ServiceAccount", "p-pennant-shard1").is_none());
    // a name that cannot be a label value and a DNS label fails the rendering
    let out = Command::new(helm())
        .args(["template", "x", &chart(), "--set", "shards={Shard_1}"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a shard name"));
    // without shards, the main instance watches everything, as before
    let (_, docs) = render("p", "ops", &[]);
    assert_eq!(docs.iter().filter(|d| d["kind"] == "Deployment").count(), 1);
}

/// A kind used by the code, where (file:line).
fn kinds_used_in_src() -> Vec<(String, String)> {
    let mut used = vec![];
    for (rel, text) in source_files(&root().join("src")) {
        for (n, line) in text.lines().enumerate() {
            let at = format!("{rel}:{}", n + 1);
            if line.trim_start().starts_with("//") {
                continue;
            }
            for kind in kinds_in_line(line) {
                used.push((kind, at.clone()));
            }
        }
    }
    used
}

/// Kinds named by API uses on one line: the type argument of `Api<..>`, `Api::<..>`,
/// `api::<..>`, `erase::<..>`, `store::<..>` (unwrapping `PartialObjectMeta<..>`), the kind
/// literal of `gvk("group", "version", "Kind")`, and `LeaseManagerBuilder` (a Lease).
fn kinds_in_line(line: &str) -> Vec<String> {
    let mut out = vec![];
    for pat in ["Api<", "Api::<", "api::<", "erase::<", "store::<"] {
        let mut rest = line;
        while let Some(i) = rest.find(pat) {
            rest = &rest[i + pat.len()..];
            let ty: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':' || *c == '<')
                .collect();
            let ty = ty.trim_start_matches("PartialObjectMeta<");
            let name = ty
                .rsplit("::")
                .next()
                .unwrap_or_default()
                .trim_end_matches('<');
            // generic parameters (`Api<K>`) and the dynamic type (its kind comes from a gvk
            // literal or a router's `resources()`) name no kind
            if name.len() > 1 && name != "DynamicObject" {
                out.push(name.to_string());
            }
        }
    }
    let mut rest = line;
    while let Some(i) = rest.find("gvk(") {
        rest = &rest[i + 4..];
        let args: Vec<&str> = rest.split(')').next().unwrap_or("").split(',').collect();
        if let [_, _, kind] = args.as_slice() {
            let kind = kind.trim();
            if kind.starts_with('"') {
                out.push(kind.trim_matches('"').to_string());
            }
        }
    }
    if line.contains("LeaseManagerBuilder::new") {
        out.push("Lease".into());
    }
    out
}

/// Kinds granted ahead of the code that will use them (issue 13: the source kinds after
/// GitRepository). Remove a kind from here when the code uses it; the test says so.
const GRANTED_AHEAD: &[&str] = &[];

/// Derived from the code: every kind `src/` calls the API for is in the table, and every kind
/// in the table is called somewhere (least privilege).
#[test]
fn every_api_use_in_src_is_granted_and_every_grant_is_used() {
    assert_eq!(
        kinds_in_line(
            "let a: Api<PartialObjectMeta<k8s_openapi::api::core::v1::Secret>> = api::<Deployment>(&c); Api<K>"
        ),
        ["Secret", "Deployment"]
    );
    assert_eq!(
        kinds_in_line(r#"GroupVersionKind::gvk("networking.istio.io", "v1", "VirtualService")"#),
        ["VirtualService"]
    );
    assert!(kinds_in_line("GroupVersionKind::gvk(group, version, kind)").is_empty());

    let used = kinds_used_in_src();
    let table: BTreeSet<&str> = BUILT
        .iter()
        .flat_map(|e| e.rules)
        .chain(LEADER_ELECTION_RULES)
        .chain(UI_RULES)
        .map(|p| p.kind)
        .collect();
    let ungranted: Vec<_> = used
        .iter()
        .filter(|(k, _)| !table.contains(k.as_str()))
        .collect();
    assert!(
        ungranted.is_empty(),
        "API uses of kinds not in src/rbac.rs (add a Permission and the rule in \
         charts/pennant/templates/rbac.yaml): {ungranted:?}"
    );
    let used_kinds: BTreeSet<&str> = used.iter().map(|(k, _)| k.as_str()).collect();
    for k in GRANTED_AHEAD {
        assert!(
            !used_kinds.contains(k),
            "{k} is used now: remove it from GRANTED_AHEAD in tests/chart.rs"
        );
    }
    let unused: Vec<_> = table
        .iter()
        .filter(|k| !used_kinds.contains(*k) && !GRANTED_AHEAD.contains(k))
        .collect();
    assert!(
        unused.is_empty(),
        "granted in src/rbac.rs but used nowhere in src/ (remove them): {unused:?}"
    );
}

/// Every rendering, applied with `kubectl apply --dry-run=server` against the local cluster.
/// (The ServiceMonitor needs the Prometheus Operator's CRDs, which the local cluster lacks: it is
/// checked by `helm lint` and rendered, not dry-run.)
#[tokio::test]
async fn rendered_chart_passes_server_side_dry_run() {
    let client = client().await;
    let ns = TestNs::new(&client, "chart-dry-run", 0).await;
    let scoped = format!("namespace={}", ns.name);
    for set in [
        vec![],
        vec![
            scoped.as_str(),
            "leaderElection.enabled=true",
            "replicaCount=2",
            "podDisruptionBudget.enabled=true",
            "slack.url=https://hooks.example/x",
            "msteams.url=https://teams.example/y",
            "ui.enabled=true",
        ],
        vec![
            "existingSecret=mine",
            "service.enabled=false",
            "rbac.create=false",
        ],
        vec!["shards={a,b}", "leaderElection.enabled=true"],
    ] {
        let (text, docs) = render(&format!("dry{}", set.len()), &ns.name, &set);
        let out = server_dry_run(&text);
        let kinds: BTreeSet<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
        for k in &kinds {
            assert!(
                out.to_lowercase().contains(&k.to_lowercase()),
                "{k} not in kubectl's answer:\n{out}"
            );
        }
        assert!(kinds.contains("Deployment") && kinds.contains("CustomResourceDefinition"));
    }
    let (_, docs) = render("sm", &ns.name, &["serviceMonitor.enabled=true"]);
    let sm = find(&docs, "ServiceMonitor", "sm-pennant").expect("ServiceMonitor");
    assert_eq!(sm["spec"]["endpoints"][0]["port"], "http");
    ns.cleanup().await;
}
