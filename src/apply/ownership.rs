//! Which fields the Canary controller owns, per object, so the appliers (HelmRelease drift
//! detection, Kustomization apply) never revert them (issue 16, "One owner per field"; the
//! fights of flagger#1407 and flagger#1121, where Flux put back the Service selector and the
//! replicas Flagger had changed). PURE: computed from the Canary objects alone.
//!
//! An owned field is a JSON Pointer (RFC 6901) into one object ([`ObjectId`]); [`WHOLE`] (`""`)
//! is the whole object. Per Canary in namespace `ns` (apex = `service.name`, else the target's
//! name), following what `canary::execute` writes:
//!
//! - always, the objects pennant generates for the Canary (controller reference to it): the
//!   `<target>-primary` workload, the `<apex>-primary` and `<apex>-canary` Services, the
//!   `<autoscaler>-primary` autoscaler, the `-primary` copies of the tracked ConfigMaps and
//!   Secrets (`status.trackedConfigs`), the router's generated objects (Istio DestinationRules
//!   `<apex>-primary|canary`, the NGINX `<ingressRef>-canary` Ingress): [`WHOLE`];
//! - once the Canary has a phase (it initialises the target, then parks it at zero between
//!   runs and scales it up for a run): the target Deployment's `/spec/replicas`, or a target
//!   DaemonSet's `flagger.app/scale-to-zero` node selector; the apex Service, which it takes
//!   over from the user and points at the primary: `/spec/selector`, `/spec/ports`,
//!   `/spec/trafficDistribution` (when the Canary sets it) and the annotations it writes there
//!   (the Flux opt-outs Flagger adds, its own records, `service.apex.annotations`); the routing
//!   object it may take over (Istio VirtualService or Gateway API HTTPRoute `<apex>`): `/spec`
//!   and the same annotations. The targets of `spec` and of `status.targetRef` (a target
//!   changed mid-run) both count, and so do the routers of `spec.provider` and of
//!   `status.routingProvider`.
//!
//! Nothing else of the target or the apex Service is owned: the user's other edits are still
//! drift.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::inventory::ObjectId;
use crate::api::meta::{FLUX_DISABLED_ANNOTATIONS, ORIGINAL_CONFIGURATION};
use crate::api::{Canary, TargetReference};

/// The pointer of a whole object.
pub const WHOLE: &str = "";
/// Annotation holding the digest of the object pennant last applied (the Canary controller's
/// `APPLIED_ANNOTATION`; a test in `canary::execute` keeps the two equal).
pub const APPLIED_ANNOTATION: &str = "pennant.dev/applied";
/// The node selector key that parks a DaemonSet target at zero (Flagger's).
pub const SCALE_TO_ZERO_NODE_SELECTOR: &str = "flagger.app/scale-to-zero";

/// The fields one object has owned, and by whom.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OwnedFields {
    /// JSON Pointers; [`WHOLE`] for the whole object.
    pub paths: BTreeSet<String>,
    /// `Canary/<namespace>/<name>` of each owner.
    pub owners: BTreeSet<String>,
}

/// The fields owned by the Canary controller, per object.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ownership {
    objects: BTreeMap<ObjectId, OwnedFields>,
}

impl Ownership {
    /// The fields the Canary controller owns for `canaries` (see the module doc);
    /// `default_provider` is the controller's default mesh provider (`-mesh-provider`), used
    /// for a Canary without `spec.provider` and `status.routingProvider`.
    pub fn of_canaries<'a>(
        canaries: impl IntoIterator<Item = &'a Canary>,
        default_provider: &str,
    ) -> Ownership {
        let mut out = Ownership::default();
        for c in canaries {
            let owner = format!(
                "Canary/{}/{}",
                c.metadata.namespace.as_deref().unwrap_or_default(),
                c.metadata.name.as_deref().unwrap_or_default()
            );
            for (id, path) in owned_by_canary(c, default_provider) {
                out.add(id, &path, &owner);
            }
        }
        out
    }

    /// Record that `owner` owns `path` of `id`.
    pub fn add(&mut self, id: ObjectId, path: &str, owner: &str) {
        let e = self.objects.entry(id).or_default();
        e.paths.insert(path.to_string());
        e.owners.insert(owner.to_string());
    }

    /// The owned fields of `id`, if any.
    pub fn get(&self, id: &ObjectId) -> Option<&OwnedFields> {
        self.objects.get(id)
    }

    /// The owned pointers of `id` (empty when none).
    pub fn paths(&self, id: &ObjectId) -> Vec<String> {
        self.get(id)
            .map(|o| o.paths.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// True when the whole object `id` is owned.
    pub fn owns_whole(&self, id: &ObjectId) -> bool {
        self.get(id).is_some_and(|o| o.paths.contains(WHOLE))
    }

    /// True when `pointer` of `id` is owned: equal to an owned pointer or below one.
    pub fn owns(&self, id: &ObjectId, pointer: &str) -> bool {
        self.get(id)
            .is_some_and(|o| o.paths.iter().any(|p| pointer_within(pointer, p)))
    }

    /// Every object with owned fields.
    pub fn iter(&self) -> impl Iterator<Item = (&ObjectId, &OwnedFields)> {
        self.objects.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }
}

/// True when `pointer` is `base` or lies below it (`/spec/selector/app` within `/spec/selector`;
/// everything within [`WHOLE`]).
pub fn pointer_within(pointer: &str, base: &str) -> bool {
    base.is_empty()
        || pointer == base
        || pointer
            .strip_prefix(base)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Escape one key for a JSON Pointer (`~` → `~0`, `/` → `~1`).
pub fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// The pointer of the annotation `key` (`/metadata/annotations/<escaped key>`).
pub fn annotation_pointer(key: &str) -> String {
    format!("/metadata/annotations/{}", escape(key))
}

/// API group of an `apiVersion` (`apps/v1` → `apps`, `v1` → ``), `default` when absent.
fn group_of(api_version: Option<&str>, default: &str) -> String {
    match api_version {
        Some(av) if !av.is_empty() => av.rsplit_once('/').map(|(g, _)| g).unwrap_or("").into(),
        _ => default.into(),
    }
}

/// Every `(object, pointer)` the Canary controller owns for one Canary (see the module doc).
pub fn owned_by_canary(canary: &Canary, default_provider: &str) -> Vec<(ObjectId, String)> {
    let ns = canary.metadata.namespace.clone().unwrap_or_default();
    let spec = &canary.spec;
    let status = canary.status.as_ref();
    let started = status.is_some_and(|s| s.phase.is_some());
    let apex = spec.apex_name().to_string();
    let id = |group: &str, kind: &str, name: &str| ObjectId {
        namespace: ns.clone(),
        name: name.to_string(),
        group: group.to_string(),
        kind: kind.to_string(),
    };
    let mut out: Vec<(ObjectId, String)> = vec![];

    let mut targets: Vec<&TargetReference> = vec![&spec.target_ref];
    if let Some(old) = status.and_then(|s| s.target_ref.as_ref())
        && (old.kind != spec.target_ref.kind || old.name != spec.target_ref.name)
    {
        targets.push(old);
    }
    for t in targets {
        let group = group_of(t.api_version.as_deref(), "apps");
        out.push((
            id(&group, &t.kind, &format!("{}-primary", t.name)),
            WHOLE.into(),
        ));
        if started {
            match t.kind.as_str() {
                "Deployment" => out.push((id(&group, &t.kind, &t.name), "/spec/replicas".into())),
                "DaemonSet" => out.push((
                    id(&group, &t.kind, &t.name),
                    format!(
                        "/spec/template/spec/nodeSelector/{}",
                        escape(SCALE_TO_ZERO_NODE_SELECTOR)
                    ),
                )),
                _ => {}
            }
        }
    }

    if let Some(a) = &spec.autoscaler_ref {
        let group = group_of(a.api_version.as_deref(), "autoscaling");
        out.push((
            id(&group, &a.kind, &format!("{}-primary", a.name)),
            WHOLE.into(),
        ));
    }
    for role in ["primary", "canary"] {
        out.push((id("", "Service", &format!("{apex}-{role}")), WHOLE.into()));
    }
    for key in status
        .and_then(|s| s.tracked_configs.as_ref())
        .into_iter()
        .flat_map(|t| t.keys())
    {
        let copy = match key.split_once('/') {
            Some(("configmap", name)) => id("", "ConfigMap", &format!("{name}-primary")),
            Some(("secret", name)) => id("", "Secret", &format!("{name}-primary")),
            _ => continue,
        };
        out.push((copy, WHOLE.into()));
    }

    // Annotations pennant writes on an object it takes over.
    let mut taken_annotations: Vec<String> = FLUX_DISABLED_ANNOTATIONS
        .iter()
        .map(|(k, _)| annotation_pointer(k))
        .chain([
            annotation_pointer(APPLIED_ANNOTATION),
            annotation_pointer(ORIGINAL_CONFIGURATION),
        ])
        .collect();
    if started {
        let svc = id("", "Service", &apex);
        let mut paths = vec!["/spec/selector".to_string(), "/spec/ports".to_string()];
        if spec
            .service
            .traffic_distribution
            .as_deref()
            .is_some_and(|t| !t.is_empty())
        {
            paths.push("/spec/trafficDistribution".into());
        }
        let custom = spec
            .service
            .apex
            .iter()
            .flat_map(|m| m.annotations.keys())
            .map(|k| annotation_pointer(k));
        paths.extend(taken_annotations.iter().cloned().chain(custom));
        out.extend(paths.into_iter().map(|p| (svc.clone(), p)));
    }

    let mut providers: Vec<&str> = vec![
        spec.provider
            .as_deref()
            .filter(|p| !p.is_empty())
            .unwrap_or(default_provider),
    ];
    if let Some(p) = status
        .and_then(|s| s.routing_provider.as_deref())
        .filter(|p| !p.is_empty())
        && !providers.contains(&p)
    {
        providers.push(p);
    }
    taken_annotations.push("/spec".into());
    for provider in providers {
        let taken_over = match provider {
            "istio" => {
                for role in ["primary", "canary"] {
                    out.push((
                        id(
                            "networking.istio.io",
                            "DestinationRule",
                            &format!("{apex}-{role}"),
                        ),
                        WHOLE.into(),
                    ));
                }
                Some(id("networking.istio.io", "VirtualService", &apex))
            }
            "nginx" => {
                if let Some(r) = &spec.ingress_ref {
                    out.push((
                        id(
                            "networking.k8s.io",
                            "Ingress",
                            &format!("{}-canary", r.name),
                        ),
                        WHOLE.into(),
                    ));
                }
                None
            }
            p if p.starts_with("gatewayapi") => {
                Some(id("gateway.networking.k8s.io", "HTTPRoute", &apex))
            }
            _ => None,
        };
        if let Some(route) = taken_over.filter(|_| started) {
            out.extend(taken_annotations.iter().map(|p| (route.clone(), p.clone())));
        }
    }
    out
}

/// Split a JSON Pointer into its unescaped tokens (`/a~1b/0` → `["a/b", "0"]`); `None` for a
/// pointer that is neither empty nor starts with `/`.
pub fn tokens(pointer: &str) -> Option<Vec<String>> {
    if pointer.is_empty() {
        return Some(vec![]);
    }
    let rest = pointer.strip_prefix('/')?;
    Some(
        rest.split('/')
            .map(|t| t.replace("~1", "/").replace("~0", "~"))
            .collect(),
    )
}

/// Remove the value at `pointer` from `obj` (no-op when absent; [`WHOLE`] empties the object
/// to `null`). Array elements are addressed by index.
pub fn remove_pointer(obj: &mut Value, pointer: &str) {
    let Some(tokens) = tokens(pointer) else {
        return;
    };
    let Some((last, parents)) = tokens.split_last() else {
        *obj = Value::Null;
        return;
    };
    let mut cur = obj;
    for t in parents {
        cur = match cur {
            Value::Object(m) => match m.get_mut(t) {
                Some(v) => v,
                None => return,
            },
            Value::Array(a) => match t.parse::<usize>().ok().and_then(|i| a.get_mut(i)) {
                Some(v) => v,
                None => return,
            },
            _ => return,
        };
    }
    match cur {
        Value::Object(m) => {
            m.remove(last);
        }
        Value::Array(a) => {
            if let Ok(i) = last.parse::<usize>()
                && i < a.len()
            {
                a.remove(i);
            }
        }
        _ => {}
    }
}

/// Set the value at `pointer` in `obj`, creating the objects on the way (an array index must
/// exist). Returns false when the pointer cannot be set.
pub fn set_pointer(obj: &mut Value, pointer: &str, value: Value) -> bool {
    let Some(tokens) = tokens(pointer) else {
        return false;
    };
    let Some((last, parents)) = tokens.split_last() else {
        *obj = value;
        return true;
    };
    let mut cur = obj;
    for t in parents {
        if cur.is_null() {
            *cur = Value::Object(Default::default());
        }
        cur = match cur {
            Value::Object(m) => m
                .entry(t.clone())
                .or_insert(Value::Object(Default::default())),
            Value::Array(a) => match t.parse::<usize>().ok().and_then(|i| a.get_mut(i)) {
                Some(v) => v,
                None => return false,
            },
            _ => return false,
        };
    }
    if cur.is_null() {
        *cur = Value::Object(Default::default());
    }
    match cur {
        Value::Object(m) => {
            m.insert(last.clone(), value);
            true
        }
        Value::Array(a) => match last.parse::<usize>() {
            Ok(i) if i < a.len() => {
                a[i] = value;
                true
            }
            _ => false,
        },
        _ => false,
    }
}

/// `obj` without the values at `paths` (the comparison of an applier leaves out what another
/// owner manages).
pub fn without_paths(obj: &Value, paths: &[String]) -> Value {
    let mut o = obj.clone();
    for p in paths {
        remove_pointer(&mut o, p);
    }
    o
}

/// `desired` with the values at `paths` taken from `live` (removed where `live` has none), so
/// an apply of it writes what the other owner has set there instead of reverting it.
pub fn carry_over(desired: &Value, live: &Value, paths: &[String]) -> Value {
    let mut d = desired.clone();
    for p in paths.iter().filter(|p| !p.is_empty()) {
        match live.pointer(p) {
            Some(v) => {
                set_pointer(&mut d, p, v.clone());
            }
            None => remove_pointer(&mut d, p),
        }
    }
    d
}

/// The objects an applier is about to apply, each with the fields the Canary controller owns
/// carried over from its live copy ([`carry_over`]; `live` by id, an object absent there is
/// kept as built), so that an apply writes what the Canary set instead of reverting it (the
/// Kustomization's half of "one owner per field"; HelmRelease drift detection has its own).
/// Objects owned whole are left as built (pennant generates them; one in Git is the user's
/// mistake, and the apply says so). PURE.
pub fn keep_owned(
    objects: Vec<Value>,
    owned: &Ownership,
    live: &BTreeMap<ObjectId, Value>,
) -> Vec<Value> {
    objects
        .into_iter()
        .map(|o| {
            let id = ObjectId::of(&o);
            match live.get(&id) {
                Some(l) if !owned.owns_whole(&id) => carry_over(&o, l, &owned.paths(&id)),
                _ => o,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::fixtures::flagger_istio_canary;
    use crate::api::{CanaryPhase, CanaryStatus};
    use serde_json::json;

    fn oid(group: &str, kind: &str, name: &str) -> ObjectId {
        ObjectId {
            namespace: "test".into(),
            name: name.into(),
            group: group.into(),
            kind: kind.into(),
        }
    }

    fn started(mut c: Canary, phase: CanaryPhase) -> Canary {
        c.status = Some(CanaryStatus {
            phase: Some(phase),
            ..Default::default()
        });
        c
    }

    /// (case, canary, object, pointer, owned)
    #[test]
    fn owned_fields_per_phase_and_provider() {
        let fresh = flagger_istio_canary();
        let running = started(fresh.clone(), CanaryPhase::Succeeded);
        let mut tracked = running.clone();
        tracked.status.as_mut().unwrap().tracked_configs = Some(BTreeMap::from([
            ("secret/podinfo-secret".to_string(), "x".to_string()),
            ("configmap/podinfo-cm".to_string(), "y".to_string()),
        ]));
        let mut gw = running.clone();
        gw.spec.provider = Some("gatewayapi:v1".into());
        let mut moved = gw.clone();
        moved.status.as_mut().unwrap().routing_provider = Some("istio".into());
        let mut ds = running.clone();
        ds.spec.target_ref.kind = "DaemonSet".into();
        let mut retargeted = running.clone();
        retargeted.spec.target_ref.name = "podinfo-v2".into();
        retargeted.status.as_mut().unwrap().target_ref = Some(fresh.spec.target_ref.clone());
        let mut nginx = running.clone();
        nginx.spec.provider = Some("nginx".into());
        nginx.spec.ingress_ref = Some(
            serde_json::from_value(
                json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "name": "web"}),
            )
            .unwrap(),
        );
        let mut apex_named = running.clone();
        apex_named.spec.service.name = Some("front".into());
        let initializing = started(fresh.clone(), CanaryPhase::Initializing);
        let deploy = oid("apps", "Deployment", "podinfo");
        let apex = oid("", "Service", "podinfo");
        #[rustfmt::skip]
        let cases: Vec<(&str, &Canary, ObjectId, &str, bool)> = vec![
            ("generated primary, before any phase", &fresh, oid("apps", "Deployment", "podinfo-primary"),
                "/spec", true),
            ("target replicas wait for a phase", &fresh, deploy.clone(), "/spec/replicas", false),
            ("apex selector waits for a phase", &fresh, apex.clone(), "/spec/selector", false),
            ("target replicas once started", &running, deploy.clone(), "/spec/replicas", true),
            ("initializing counts as started", &initializing, deploy.clone(), "/spec/replicas", true),
            ("target image is the user's", &running, deploy.clone(), "/spec/template/spec/containers/0/image", false),
            ("target labels are the user's", &running, deploy.clone(), "/metadata/labels/app", false),
            ("apex selector", &running, apex.clone(), "/spec/selector/app", true),
            ("apex ports", &running, apex.clone(), "/spec/ports/0/targetPort", true),
            ("apex type is the user's", &running, apex.clone(), "/spec/type", false),
            ("apex labels are the user's", &running, apex.clone(), "/metadata/labels/app", false),
            ("apex drift opt-out Flagger adds", &running, apex.clone(), "/metadata/annotations/helm.toolkit.fluxcd.io~1driftDetection", true),
            ("apex original-configuration record", &running, apex.clone(), "/metadata/annotations/flagger.kubernetes.io~1original-configuration", true),
            ("apex user annotation", &running, apex.clone(), "/metadata/annotations/team", false),
            ("-primary Service", &fresh, oid("", "Service", "podinfo-primary"),
                "", true),
            ("-canary Service", &fresh, oid("", "Service", "podinfo-canary"),
                "/spec/selector", true),
            ("primary HPA", &fresh, oid("autoscaling", "HorizontalPodAutoscaler", "podinfo-primary"),
                "", true),
            ("target HPA is the user's", &running, oid("autoscaling", "HorizontalPodAutoscaler", "podinfo"),
                "/spec/minReplicas", false),
            ("tracked Secret copy", &tracked, oid("", "Secret", "podinfo-secret-primary"),
                "/data", true),
            ("tracked ConfigMap copy", &tracked, oid("", "ConfigMap", "podinfo-cm-primary"),
                "/data", true),
            ("tracked Secret itself is the user's", &tracked, oid("", "Secret", "podinfo-secret"),
                "/data", false),
            ("istio DestinationRule", &fresh, oid("networking.istio.io", "DestinationRule", "podinfo-canary"),
                "", true),
            ("istio VirtualService spec once started", &running, oid("networking.istio.io", "VirtualService", "podinfo"),
                "/spec/http", true),
            ("istio VirtualService labels are the user's", &running, oid("networking.istio.io", "VirtualService", "podinfo"),
                "/metadata/labels/x", false),
            ("gateway HTTPRoute spec", &gw, oid("gateway.networking.k8s.io", "HTTPRoute", "podinfo"),
                "/spec/rules", true),
            ("gateway: no VirtualService", &gw, oid("networking.istio.io", "VirtualService", "podinfo"),
                "/spec", false),
            ("old router still owned while moving", &moved, oid("networking.istio.io", "VirtualService", "podinfo"),
                "/spec", true),
            ("DaemonSet parked by node selector", &ds, oid("apps", "DaemonSet", "podinfo"),
                "/spec/template/spec/nodeSelector/flagger.app~1scale-to-zero", true),
            ("DaemonSet other node selectors", &ds, oid("apps", "DaemonSet", "podinfo"),
                "/spec/template/spec/nodeSelector/disk", false),
            ("DaemonSet has no replicas to own", &ds, oid("apps", "DaemonSet", "podinfo"),
                "/spec/replicas", false),
            ("new target", &retargeted, oid("apps", "Deployment", "podinfo-v2"),
                "/spec/replicas", true),
            ("old target while retargeting", &retargeted, deploy.clone(), "/spec/replicas", true),
            ("nginx canary Ingress", &nginx, oid("networking.k8s.io", "Ingress", "web-canary"),
                "", true),
            ("nginx user Ingress", &nginx, oid("networking.k8s.io", "Ingress", "web"),
                "/spec", false),
            ("service.name names the apex", &apex_named, oid("", "Service", "front"),
                "/spec/selector", true),
            ("service.name: target name is no apex", &apex_named, apex.clone(), "/spec/selector", false),
            ("other namespace", &running, ObjectId { namespace: "prod".into(), ..deploy.clone() }, "/spec/replicas", false),
        ];
        for (case, canary, id, pointer, want) in cases {
            let o = Ownership::of_canaries([canary], "kubernetes");
            assert_eq!(o.owns(&id, pointer), want, "{case}: {id:?} {pointer}");
        }
    }

    #[test]
    fn an_apply_keeps_what_the_canary_owns_and_nothing_else() {
        let owned = Ownership::of_canaries(
            [&started(flagger_istio_canary(), CanaryPhase::Succeeded)],
            "istio",
        );
        let deploy = |replicas: i64, image: &str| {
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "podinfo", "namespace": "test"},
                "spec": {"replicas": replicas, "template": {"spec": {"containers": [
                    {"name": "podinfod", "image": image}]}}}})
        };
        let config = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "podinfo-config", "namespace": "test"}, "data": {"k": "v"}});
        let primary = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "podinfo-primary", "namespace": "test"}, "spec": {"replicas": 2}});
        let live = BTreeMap::from([
            (oid("apps", "Deployment", "podinfo"), deploy(0, "podinfo:1")),
            (
                oid("", "ConfigMap", "podinfo-config"),
                json!({"data": {"k": "old"}}),
            ),
            (
                oid("apps", "Deployment", "podinfo-primary"),
                json!({"spec": {"replicas": 5}}),
            ),
        ]);
        let built = vec![deploy(2, "podinfo:2"), config.clone(), primary.clone()];
        let kept = keep_owned(built, &owned, &live);
        // the target parked at zero stays parked; its new image (a new revision) is applied
        assert_eq!(kept[0], deploy(0, "podinfo:2"));
        // not owned, or owned whole (generated, never in Git): as built
        assert_eq!(kept[1], config);
        assert_eq!(kept[2], primary);
        // a target not in the cluster yet is created as built
        let fresh = keep_owned(vec![deploy(2, "podinfo:2")], &owned, &BTreeMap::new());
        assert_eq!(fresh[0], deploy(2, "podinfo:2"));
        // before the Canary has a phase nothing of the target is owned
        let new = Ownership::of_canaries([&flagger_istio_canary()], "istio");
        let kept = keep_owned(vec![deploy(2, "podinfo:2")], &new, &live);
        assert_eq!(kept[0], deploy(2, "podinfo:2"));
    }

    #[test]
    fn owners_are_named_and_merged() {
        let a = started(flagger_istio_canary(), CanaryPhase::Progressing);
        let mut b = a.clone();
        b.metadata.name = Some("other".into());
        let o = Ownership::of_canaries([&a, &b], "kubernetes");
        let f = o.get(&oid("apps", "Deployment", "podinfo")).unwrap();
        assert_eq!(
            f.owners.iter().map(String::as_str).collect::<Vec<_>>(),
            ["Canary/test/other", "Canary/test/podinfo"]
        );
        assert_eq!(
            f.paths.iter().map(String::as_str).collect::<Vec<_>>(),
            ["/spec/replicas"]
        );
        assert!(o.owns_whole(&oid("", "Service", "podinfo-primary")));
        assert!(!o.owns_whole(&oid("", "Service", "podinfo")));
        assert!(Ownership::default().is_empty());
    }

    #[test]
    fn pointers_within_escape_remove_set_and_carry_over() {
        for (p, base, want) in [
            ("/spec/selector/app", "/spec/selector", true),
            ("/spec/selector", "/spec/selector", true),
            ("/spec/selectorX", "/spec/selector", false),
            ("/spec", "/spec/selector", false),
            ("/anything", "", true),
        ] {
            assert_eq!(pointer_within(p, base), want, "{p} in {base}");
        }
        assert_eq!(escape("a/b~c"), "a~1b~0c");
        assert_eq!(tokens("/a~1b/0").unwrap(), ["a/b", "0"]);
        assert_eq!(tokens("nope"), None);

        let live = json!({"metadata": {"annotations": {"x/y": "1", "k": "v"}},
            "spec": {"replicas": 0, "ports": [{"port": 1}, {"port": 2}]}});
        let mut o = live.clone();
        remove_pointer(&mut o, "/metadata/annotations/x~1y");
        remove_pointer(&mut o, "/spec/ports/0");
        remove_pointer(&mut o, "/spec/missing/deeper");
        assert_eq!(
            o,
            json!({"metadata": {"annotations": {"k": "v"}}, "spec": {"replicas": 0, "ports": [{"port": 2}]}})
        );
        let mut s = json!({});
        assert!(set_pointer(&mut s, "/spec/selector/app", json!("x")));
        assert!(!set_pointer(&mut s, "/spec/selector/app/deeper", json!(1)));
        assert!(!set_pointer(&mut json!({"a": []}), "/a/3", json!(1)));
        assert_eq!(s, json!({"spec": {"selector": {"app": "x"}}}));

        // carry over: the live value where there is one, the field dropped where there is none
        let desired =
            json!({"spec": {"replicas": 2, "selector": {"app": "podinfo"}, "image": "v2"}});
        let live = json!({"spec": {"replicas": 0, "image": "v1"}});
        let paths = vec!["/spec/replicas".to_string(), "/spec/selector".to_string()];
        assert_eq!(
            carry_over(&desired, &live, &paths),
            json!({"spec": {"replicas": 0, "image": "v2"}})
        );
        assert_eq!(
            without_paths(&desired, &paths),
            json!({"spec": {"image": "v2"}})
        );
    }
}
