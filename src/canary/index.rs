//! Indexes from the objects Canaries refer to, to those Canaries (linkerd2 policy-controller
//! style): plain data fed by the watch events of the Canaries and of the workloads (Deployments,
//! DaemonSets), read by the controller's mappers (which Canaries a changed Deployment,
//! DaemonSet, HPA, routing object, ConfigMap or Secret reconciles) and by the claim check of
//! `observe` (who else writes what this Canary writes). No I/O: a lookup costs the size of its
//! answer, not a scan of every Canary and a clone of every target's pod spec.
//!
//! The index follows what the reflector stores hold: an `Apply` (re)indexes an object, a
//! `Delete` drops it, and a relist (`Init` … `InitApply` … `InitDone`) drops, at `InitDone`,
//! whatever was not listed again (deleted while the watch was down).

use std::collections::{BTreeSet, HashMap, HashSet};

use k8s_openapi::api::core::v1::PodSpec;
use kube::runtime::watcher::Event;

use super::tracker;
use crate::api::Canary;

/// A Canary: its namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CanaryKey {
    pub namespace: String,
    pub name: String,
}

impl CanaryKey {
    /// The key of `c`; `None` without a namespace or a name (never from a watch).
    pub fn of(c: &Canary) -> Option<Self> {
        Some(Self {
            namespace: c.metadata.namespace.clone()?,
            name: c.metadata.name.clone()?,
        })
    }
}

/// A workload whose pod template is scanned for ConfigMaps and Secrets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WorkloadKind {
    Deployment,
    DaemonSet,
}

/// A workload: namespace, kind, name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Workload {
    pub namespace: String,
    pub kind: WorkloadKind,
    pub name: String,
}

/// A config object a pod template may reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ConfigKind {
    ConfigMap,
    Secret,
}

/// An object two Canaries of one namespace must not both write (see
/// `observe::shared_object`): the target, the apex Service (and its routes), the NGINX canary
/// Ingress cloned from `ingressRef`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Claim {
    /// `targetRef` kind and name.
    Target { kind: String, name: String },
    /// The apex name (`service.name`, else the target's name).
    Apex(String),
    /// The `ingressRef` name.
    CanaryIngress(String),
}

/// One thing a Canary refers to: a key of the index.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Ref {
    /// An object whose change reconciles the Canary: `Deployment` target and `-primary` (for
    /// any target kind, as the Deployment watch always did), `DaemonSet` target and `-primary`
    /// (DaemonSet targets), `HorizontalPodAutoscaler` of `autoscalerRef` and its `-primary`,
    /// the user's `Ingress` of `ingressRef`.
    Object {
        namespace: String,
        kind: String,
        name: String,
    },
    /// A routing object of any kind named after the apex (a route pennant takes over).
    Route { namespace: String, name: String },
    /// A routing object whose owner references carry this uid (the Canary's).
    Owner { namespace: String, uid: String },
    /// The target workload, whose pod template's ConfigMaps and Secrets reconcile the Canary
    /// (a `DaemonSet` for DaemonSet targets, else a `Deployment`).
    PodsOf(Workload),
    /// An object the Canary writes; of several claimants the oldest valid one wins.
    Claim { namespace: String, claim: Claim },
}

/// Every reference of `c`, sorted and without duplicates.
pub fn refs(c: &Canary) -> Vec<Ref> {
    let Some(ns) = c.metadata.namespace.as_deref() else {
        return vec![];
    };
    let spec = &c.spec;
    let object = |kind: &str, name: &str| Ref::Object {
        namespace: ns.into(),
        kind: kind.into(),
        name: name.into(),
    };
    let target = &spec.target_ref.name;
    let primary = format!("{target}-primary");
    let daemon_set = spec.target_ref.kind == "DaemonSet";
    let mut out = vec![object("Deployment", target), object("Deployment", &primary)];
    if daemon_set {
        out.push(object("DaemonSet", target));
        out.push(object("DaemonSet", &primary));
    }
    if let Some(a) = &spec.autoscaler_ref {
        out.push(object("HorizontalPodAutoscaler", &a.name));
        out.push(object(
            "HorizontalPodAutoscaler",
            &format!("{}-primary", a.name),
        ));
    }
    if let Some(i) = &spec.ingress_ref {
        out.push(object("Ingress", &i.name));
    }
    out.push(Ref::Route {
        namespace: ns.into(),
        name: spec.apex_name().into(),
    });
    if let Some(uid) = &c.metadata.uid {
        out.push(Ref::Owner {
            namespace: ns.into(),
            uid: uid.clone(),
        });
    }
    out.push(Ref::PodsOf(Workload {
        namespace: ns.into(),
        kind: if daemon_set {
            WorkloadKind::DaemonSet
        } else {
            WorkloadKind::Deployment
        },
        name: target.clone(),
    }));
    for claim in claims(c) {
        out.push(Ref::Claim {
            namespace: ns.into(),
            claim,
        });
    }
    out.sort();
    out.dedup();
    out
}

/// What `c` claims to write (see [`Claim`]).
pub fn claims(c: &Canary) -> Vec<Claim> {
    let spec = &c.spec;
    let mut out = vec![
        Claim::Target {
            kind: spec.target_ref.kind.clone(),
            name: spec.target_ref.name.clone(),
        },
        Claim::Apex(spec.apex_name().into()),
    ];
    if let Some(i) = &spec.ingress_ref {
        out.push(Claim::CanaryIngress(i.name.clone()));
    }
    out
}

/// The index. Fed by [`Index::canary_event`] and [`Index::workload_event`] (or the
/// `apply_*`/`delete_*` they call), read by the lookups.
#[derive(Debug, Default)]
pub struct Index {
    /// Each indexed Canary's references, to drop them when it changes or goes.
    canaries: HashMap<CanaryKey, Vec<Ref>>,
    by_ref: HashMap<Ref, BTreeSet<CanaryKey>>,
    /// Each workload's referenced ConfigMaps and Secrets (workloads referencing none are left out).
    configs: HashMap<Workload, Vec<(ConfigKind, String)>>,
    /// (namespace, kind, name) of a ConfigMap or Secret → the workloads referencing it.
    by_config: HashMap<(String, ConfigKind, String), BTreeSet<Workload>>,
    /// Canaries listed since the Canary watch (re)started; `None` outside a relist.
    relisted_canaries: Option<HashSet<CanaryKey>>,
    /// Workloads listed since their watch (re)started, per kind.
    relisted_workloads: HashMap<WorkloadKind, HashSet<Workload>>,
}

impl Index {
    /// Index `c`, replacing what was indexed for its key before (a changed `targetRef` drops
    /// the old target's entries).
    pub fn apply_canary(&mut self, c: &Canary) {
        let Some(key) = CanaryKey::of(c) else { return };
        self.delete_canary(&key);
        let refs = refs(c);
        for r in &refs {
            self.by_ref
                .entry(r.clone())
                .or_default()
                .insert(key.clone());
        }
        self.canaries.insert(key, refs);
    }

    /// Forget the Canary `key`.
    pub fn delete_canary(&mut self, key: &CanaryKey) {
        for r in self.canaries.remove(key).unwrap_or_default() {
            if let Some(set) = self.by_ref.get_mut(&r) {
                set.remove(key);
                if set.is_empty() {
                    self.by_ref.remove(&r);
                }
            }
        }
    }

    /// Index the ConfigMaps and Secrets `pod` (the workload's pod template, if any) references
    /// (`tracker::config_refs`), replacing the workload's previous ones.
    pub fn apply_workload(&mut self, w: Workload, pod: Option<&PodSpec>) {
        self.delete_workload(&w);
        let Some(pod) = pod else { return };
        let r = tracker::config_refs(pod);
        let configs: Vec<(ConfigKind, String)> = r
            .config_maps
            .into_keys()
            .map(|n| (ConfigKind::ConfigMap, n))
            .chain(r.secrets.into_keys().map(|n| (ConfigKind::Secret, n)))
            .collect();
        if configs.is_empty() {
            return;
        }
        for (kind, name) in &configs {
            self.by_config
                .entry((w.namespace.clone(), *kind, name.clone()))
                .or_default()
                .insert(w.clone());
        }
        self.configs.insert(w, configs);
    }

    /// Forget the workload `w`.
    pub fn delete_workload(&mut self, w: &Workload) {
        for (kind, name) in self.configs.remove(w).unwrap_or_default() {
            let k = (w.namespace.clone(), kind, name);
            if let Some(set) = self.by_config.get_mut(&k) {
                set.remove(w);
                if set.is_empty() {
                    self.by_config.remove(&k);
                }
            }
        }
    }

    /// Follow one event of the Canary watch.
    pub fn canary_event(&mut self, e: &Event<Canary>) {
        match e {
            Event::Apply(c) => self.apply_canary(c),
            Event::Delete(c) => {
                if let Some(key) = CanaryKey::of(c) {
                    self.delete_canary(&key);
                }
            }
            Event::Init => self.relisted_canaries = Some(HashSet::new()),
            Event::InitApply(c) => {
                self.apply_canary(c);
                if let (Some(seen), Some(key)) = (&mut self.relisted_canaries, CanaryKey::of(c)) {
                    seen.insert(key);
                }
            }
            Event::InitDone => {
                if let Some(seen) = self.relisted_canaries.take() {
                    let gone: Vec<CanaryKey> = self
                        .canaries
                        .keys()
                        .filter(|k| !seen.contains(*k))
                        .cloned()
                        .collect();
                    for k in gone {
                        self.delete_canary(&k);
                    }
                }
            }
        }
    }

    /// Follow one event of a workload watch of `kind`; `pod` reads an object's pod template.
    pub fn workload_event<K: kube::Resource>(
        &mut self,
        kind: WorkloadKind,
        e: &Event<K>,
        pod: impl Fn(&K) -> Option<&PodSpec>,
    ) {
        let workload = |o: &K| {
            Some(Workload {
                namespace: o.meta().namespace.clone()?,
                kind,
                name: o.meta().name.clone()?,
            })
        };
        match e {
            Event::Apply(o) => {
                if let Some(w) = workload(o) {
                    self.apply_workload(w, pod(o));
                }
            }
            Event::Delete(o) => {
                if let Some(w) = workload(o) {
                    self.delete_workload(&w);
                }
            }
            Event::Init => {
                self.relisted_workloads.insert(kind, HashSet::new());
            }
            Event::InitApply(o) => {
                if let Some(w) = workload(o) {
                    if let Some(seen) = self.relisted_workloads.get_mut(&kind) {
                        seen.insert(w.clone());
                    }
                    self.apply_workload(w, pod(o));
                }
            }
            Event::InitDone => {
                if let Some(seen) = self.relisted_workloads.remove(&kind) {
                    let gone: Vec<Workload> = self
                        .configs
                        .keys()
                        .filter(|w| w.kind == kind && !seen.contains(*w))
                        .cloned()
                        .collect();
                    for w in gone {
                        self.delete_workload(&w);
                    }
                }
            }
        }
    }

    /// The Canaries referring to `r`.
    pub fn canaries_for(&self, r: &Ref) -> impl Iterator<Item = &CanaryKey> {
        self.by_ref.get(r).into_iter().flatten()
    }

    /// The Canaries a changed object of `kind` (`Deployment`, `DaemonSet`,
    /// `HorizontalPodAutoscaler`) reconciles.
    pub fn for_object(&self, kind: &str, namespace: &str, name: &str) -> Vec<CanaryKey> {
        self.canaries_for(&Ref::Object {
            namespace: namespace.into(),
            kind: kind.into(),
            name: name.into(),
        })
        .cloned()
        .collect()
    }

    /// The Canaries a changed routing object reconciles: those owning it (`owners`: the uids
    /// of its owner references), the one whose apex it is named after, and for an `Ingress`
    /// those whose `ingressRef` names it.
    pub fn for_route(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
        owners: &[String],
    ) -> Vec<CanaryKey> {
        let mut out = BTreeSet::new();
        out.extend(self.canaries_for(&Ref::Route {
            namespace: namespace.into(),
            name: name.into(),
        }));
        for uid in owners {
            out.extend(self.canaries_for(&Ref::Owner {
                namespace: namespace.into(),
                uid: uid.clone(),
            }));
        }
        if kind == "Ingress" {
            out.extend(self.canaries_for(&Ref::Object {
                namespace: namespace.into(),
                kind: kind.into(),
                name: name.into(),
            }));
        }
        out.into_iter().cloned().collect()
    }

    /// The Canaries whose target's pod template references this ConfigMap or Secret.
    pub fn for_config(&self, kind: ConfigKind, namespace: &str, name: &str) -> Vec<CanaryKey> {
        let key = (namespace.to_string(), kind, name.to_string());
        let mut out = BTreeSet::new();
        for w in self.by_config.get(&key).into_iter().flatten() {
            out.extend(self.canaries_for(&Ref::PodsOf(w.clone())));
        }
        out.into_iter().cloned().collect()
    }

    /// The other Canaries of `c`'s namespace that claim something `c` claims (by `c`'s own
    /// spec, which may be newer than the indexed one). Sorted by key; `c` itself excluded.
    pub fn claimants(&self, c: &Canary) -> Vec<CanaryKey> {
        let (Some(me), Some(ns)) = (CanaryKey::of(c), c.metadata.namespace.as_deref()) else {
            return vec![];
        };
        let mut out = BTreeSet::new();
        for claim in claims(c) {
            out.extend(self.canaries_for(&Ref::Claim {
                namespace: ns.into(),
                claim,
            }));
        }
        out.into_iter().filter(|k| **k != me).cloned().collect()
    }

    /// How many Canaries are indexed.
    pub fn len(&self) -> usize {
        self.canaries.len()
    }

    /// Whether no Canary is indexed.
    pub fn is_empty(&self) -> bool {
        self.canaries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};

    fn canary(ns: &str, name: &str, spec: serde_json::Value) -> Canary {
        let mut v = serde_json::json!({
            "apiVersion": "flagger.app/v1beta1",
            "kind": "Canary",
            "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{name}")},
            "spec": {
                "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                "service": {"port": 80}
            }
        });
        if let serde_json::Value::Object(m) = spec {
            for (k, x) in m {
                v["spec"][k] = x;
            }
        }
        serde_json::from_value(v).unwrap()
    }

    fn key(ns: &str, name: &str) -> CanaryKey {
        CanaryKey {
            namespace: ns.into(),
            name: name.into(),
        }
    }

    fn deployment(ns: &str, name: &str, pod: serde_json::Value) -> Deployment {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": ns},
            "spec": {"selector": {}, "template": {"spec": pod}}
        }))
        .unwrap()
    }

    fn pod_spec(d: &Deployment) -> Option<&PodSpec> {
        d.spec.as_ref()?.template.spec.as_ref()
    }

    fn pod_using(config_map: &str, secret: &str) -> serde_json::Value {
        serde_json::json!({
            "containers": [{"name": "app",
                "envFrom": [{"configMapRef": {"name": config_map}}]}],
            "volumes": [{"name": "s", "secret": {"secretName": secret}}]
        })
    }

    #[test]
    fn a_canary_is_found_by_its_target_primary_hpa_and_routes() {
        let mut ix = Index::default();
        ix.apply_canary(&canary(
            "t",
            "web",
            serde_json::json!({
                "autoscalerRef": {"apiVersion": "autoscaling/v2",
                    "kind": "HorizontalPodAutoscaler", "name": "web-hpa"},
                "ingressRef": {"apiVersion": "networking.k8s.io/v1",
                    "kind": "Ingress", "name": "public"},
                "service": {"port": 80, "name": "front"}
            }),
        ));
        let web = vec![key("t", "web")];
        assert_eq!(ix.for_object("Deployment", "t", "web"), web);
        assert_eq!(ix.for_object("Deployment", "t", "web-primary"), web);
        assert_eq!(ix.for_object("Deployment", "other", "web"), vec![]);
        assert_eq!(
            ix.for_object("DaemonSet", "t", "web"),
            vec![],
            "not a DaemonSet target"
        );
        assert_eq!(
            ix.for_object("HorizontalPodAutoscaler", "t", "web-hpa"),
            web
        );
        assert_eq!(
            ix.for_object("HorizontalPodAutoscaler", "t", "web-hpa-primary"),
            web
        );
        // routes: named after the apex (any kind), owned, or the ingressRef (Ingress only)
        assert_eq!(ix.for_route("VirtualService", "t", "front", &[]), web);
        assert_eq!(ix.for_route("VirtualService", "t", "web", &[]), vec![]);
        assert_eq!(
            ix.for_route("HTTPRoute", "t", "x", &["uid-web".into()]),
            web
        );
        assert_eq!(ix.for_route("Ingress", "t", "public", &[]), web);
        assert_eq!(ix.for_route("HTTPRoute", "t", "public", &[]), vec![]);
        assert_eq!(
            ix.for_route("Ingress", "u", "x", &["uid-web".into()]),
            vec![],
            "owners are looked up in the object's namespace"
        );
    }

    #[test]
    fn daemon_set_targets_are_found_by_both_workload_kinds() {
        let mut ix = Index::default();
        ix.apply_canary(&canary(
            "t",
            "agent",
            serde_json::json!({"targetRef": {"apiVersion": "apps/v1",
                "kind": "DaemonSet", "name": "agent"}}),
        ));
        let agent = vec![key("t", "agent")];
        assert_eq!(ix.for_object("DaemonSet", "t", "agent-primary"), agent);
        // the Deployment watch maps by name whatever the target's kind (as it always did)
        assert_eq!(ix.for_object("Deployment", "t", "agent"), agent);
        // its configs come from the DaemonSet's pod template, not a Deployment's
        let d = deployment("t", "agent", pod_using("cfg", "sec"));
        ix.workload_event(WorkloadKind::Deployment, &Event::Apply(d), pod_spec);
        assert_eq!(ix.for_config(ConfigKind::ConfigMap, "t", "cfg"), vec![]);
        let ds: DaemonSet = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "agent", "namespace": "t"},
            "spec": {"selector": {}, "template": {"spec": pod_using("cfg", "sec")}}
        }))
        .unwrap();
        ix.workload_event(
            WorkloadKind::DaemonSet,
            &Event::Apply(ds),
            |d: &DaemonSet| d.spec.as_ref()?.template.spec.as_ref(),
        );
        assert_eq!(ix.for_config(ConfigKind::ConfigMap, "t", "cfg"), agent);
    }

    #[test]
    fn configs_follow_the_target_workloads_pod_template() {
        let mut ix = Index::default();
        ix.apply_canary(&canary("t", "web", serde_json::json!({})));
        ix.apply_canary(&canary("t", "api", serde_json::json!({})));
        let apply = |ix: &mut Index, d: Deployment| {
            ix.workload_event(WorkloadKind::Deployment, &Event::Apply(d), pod_spec)
        };
        apply(
            &mut ix,
            deployment("t", "web", pod_using("shared", "web-sec")),
        );
        apply(
            &mut ix,
            deployment("t", "api", pod_using("shared", "api-sec")),
        );
        // the primary's references do not count
        apply(&mut ix, deployment("t", "web-primary", pod_using("p", "p")));
        assert_eq!(
            ix.for_config(ConfigKind::ConfigMap, "t", "shared"),
            vec![key("t", "api"), key("t", "web")]
        );
        assert_eq!(
            ix.for_config(ConfigKind::Secret, "t", "web-sec"),
            vec![key("t", "web")]
        );
        assert_eq!(ix.for_config(ConfigKind::Secret, "t", "shared"), vec![]);
        assert_eq!(ix.for_config(ConfigKind::ConfigMap, "u", "shared"), vec![]);
        assert_eq!(ix.for_config(ConfigKind::ConfigMap, "t", "p"), vec![]);
        // the target stops using a ConfigMap: the old entry goes
        apply(&mut ix, deployment("t", "web", pod_using("new", "web-sec")));
        assert_eq!(
            ix.for_config(ConfigKind::ConfigMap, "t", "shared"),
            vec![key("t", "api")]
        );
        assert_eq!(
            ix.for_config(ConfigKind::ConfigMap, "t", "new"),
            vec![key("t", "web")]
        );
        // the workload is deleted
        ix.workload_event(
            WorkloadKind::Deployment,
            &Event::Delete(deployment("t", "api", serde_json::json!({}))),
            pod_spec,
        );
        assert_eq!(ix.for_config(ConfigKind::ConfigMap, "t", "shared"), vec![]);
        // a Canary indexed after its workload finds its configs too
        ix.apply_canary(&canary("t", "late", serde_json::json!({})));
        apply(&mut ix, deployment("t", "late", pod_using("l", "l")));
        ix.apply_canary(&canary(
            "t",
            "late",
            serde_json::json!({"skipAnalysis": true}),
        ));
        assert_eq!(
            ix.for_config(ConfigKind::ConfigMap, "t", "l"),
            vec![key("t", "late")]
        );
    }

    #[test]
    fn a_canary_changing_its_target_drops_the_old_entries() {
        let mut ix = Index::default();
        ix.apply_canary(&canary("t", "web", serde_json::json!({})));
        ix.workload_event(
            WorkloadKind::Deployment,
            &Event::Apply(deployment("t", "web", pod_using("a", "a"))),
            pod_spec,
        );
        ix.workload_event(
            WorkloadKind::Deployment,
            &Event::Apply(deployment("t", "web2", pod_using("b", "b"))),
            pod_spec,
        );
        let before = ix.by_ref.len();
        ix.canary_event(&Event::Apply(canary(
            "t",
            "web",
            serde_json::json!({"targetRef": {"apiVersion": "apps/v1",
                "kind": "Deployment", "name": "web2"}}),
        )));
        assert_eq!(ix.for_object("Deployment", "t", "web"), vec![]);
        assert_eq!(ix.for_object("Deployment", "t", "web-primary"), vec![]);
        assert_eq!(
            ix.for_object("Deployment", "t", "web2"),
            vec![key("t", "web")]
        );
        assert_eq!(ix.for_config(ConfigKind::ConfigMap, "t", "a"), vec![]);
        assert_eq!(
            ix.for_config(ConfigKind::ConfigMap, "t", "b"),
            vec![key("t", "web")]
        );
        // the apex stays the Canary's old name only if service.name says so: here it follows
        assert_eq!(ix.for_route("VirtualService", "t", "web", &[]), vec![]);
        assert_eq!(ix.by_ref.len(), before, "nothing left behind");
        assert_eq!(ix.len(), 1);
    }

    #[test]
    fn deleting_a_canary_leaves_nothing_behind() {
        let mut ix = Index::default();
        ix.apply_canary(&canary("t", "web", serde_json::json!({})));
        ix.apply_canary(&canary("t", "api", serde_json::json!({})));
        ix.canary_event(&Event::Delete(canary("t", "web", serde_json::json!({}))));
        assert_eq!(ix.for_object("Deployment", "t", "web"), vec![]);
        assert_eq!(
            ix.for_object("Deployment", "t", "api"),
            vec![key("t", "api")]
        );
        ix.delete_canary(&key("t", "api"));
        assert!(ix.is_empty());
        assert!(ix.by_ref.is_empty(), "{:?}", ix.by_ref);
    }

    #[test]
    fn a_relist_drops_what_was_deleted_while_the_watch_was_down() {
        let mut ix = Index::default();
        ix.canary_event(&Event::Apply(canary("t", "web", serde_json::json!({}))));
        ix.canary_event(&Event::Apply(canary("t", "gone", serde_json::json!({}))));
        ix.workload_event(
            WorkloadKind::Deployment,
            &Event::Apply(deployment("t", "old", pod_using("c", "s"))),
            pod_spec,
        );
        ix.canary_event(&Event::Init);
        ix.canary_event(&Event::InitApply(canary("t", "web", serde_json::json!({}))));
        // until InitDone, nothing is dropped
        assert_eq!(
            ix.for_object("Deployment", "t", "gone"),
            vec![key("t", "gone")]
        );
        ix.canary_event(&Event::InitDone);
        assert_eq!(ix.for_object("Deployment", "t", "gone"), vec![]);
        assert_eq!(
            ix.for_object("Deployment", "t", "web"),
            vec![key("t", "web")]
        );
        ix.apply_canary(&canary("t", "old", serde_json::json!({})));
        assert_eq!(
            ix.for_config(ConfigKind::Secret, "t", "s"),
            vec![key("t", "old")]
        );
        ix.workload_event::<Deployment>(WorkloadKind::Deployment, &Event::Init, pod_spec);
        // a relist of the other kind does not touch Deployments
        ix.workload_event::<DaemonSet>(WorkloadKind::DaemonSet, &Event::Init, |_| None);
        ix.workload_event::<DaemonSet>(WorkloadKind::DaemonSet, &Event::InitDone, |_| None);
        assert_eq!(
            ix.for_config(ConfigKind::Secret, "t", "s"),
            vec![key("t", "old")]
        );
        ix.workload_event::<Deployment>(WorkloadKind::Deployment, &Event::InitDone, pod_spec);
        assert_eq!(ix.for_config(ConfigKind::Secret, "t", "s"), vec![]);
    }

    #[test]
    fn claimants_share_a_target_an_apex_or_an_ingress() {
        let mut ix = Index::default();
        let ingress = serde_json::json!({"apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress", "name": "public"});
        let a = canary("t", "a", serde_json::json!({"ingressRef": ingress}));
        ix.apply_canary(&a);
        // same target (and so the same apex)
        let b = canary(
            "t",
            "b",
            serde_json::json!({"targetRef": {"apiVersion": "apps/v1",
                "kind": "Deployment", "name": "a"}, "service": {"port": 80, "name": "b"}}),
        );
        ix.apply_canary(&b);
        // the apex of another
        let c = canary(
            "t",
            "c",
            serde_json::json!({"service": {"port": 80, "name": "a"}}),
        );
        ix.apply_canary(&c);
        // the same ingressRef
        let d = canary("t", "d", serde_json::json!({"ingressRef": ingress}));
        ix.apply_canary(&d);
        // nothing shared; and the same names in another namespace
        let e = canary("t", "e", serde_json::json!({}));
        ix.apply_canary(&e);
        ix.apply_canary(&canary("u", "a", serde_json::json!({})));
        assert_eq!(
            ix.claimants(&a),
            vec![key("t", "b"), key("t", "c"), key("t", "d")]
        );
        assert_eq!(ix.claimants(&b), vec![key("t", "a")]);
        assert_eq!(ix.claimants(&e), vec![]);
        // a DaemonSet of the same name is another target
        let f = canary(
            "t",
            "f",
            serde_json::json!({"targetRef": {"apiVersion": "apps/v1",
                "kind": "DaemonSet", "name": "e"}, "service": {"port": 80, "name": "f"}}),
        );
        assert_eq!(ix.claimants(&f), vec![]);
        // the claim check reads the Canary's own (newer) spec
        let a2 = canary(
            "t",
            "a",
            serde_json::json!({"targetRef": {"apiVersion": "apps/v1",
            "kind": "Deployment", "name": "e"}}),
        );
        assert_eq!(ix.claimants(&a2), vec![key("t", "e")]);
        // a claimant that moves away stops claiming
        ix.apply_canary(&canary("t", "b", serde_json::json!({})));
        ix.delete_canary(&key("t", "c"));
        assert_eq!(ix.claimants(&a), vec![key("t", "d")]);
    }
}
