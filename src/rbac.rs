//! The Kubernetes permissions pennant needs: the single table the Helm chart's RBAC is checked
//! against (`charts/pennant/templates/rbac.yaml`, `tests/chart.rs`), and the mapping from an API
//! request to the RBAC attributes it is authorized by.
//!
//! Keeping it honest (least privilege, both directions):
//! - `tests/chart.rs` scans `src/` for every typed or dynamic API use (`Api<K>`, `Api::<K>`,
//!   `ApiResource::erase::<K>`, `reflector::store::<K>`, `GroupVersionKind::gvk("g", "v", "K")`,
//!   the leader-election Lease) and fails when a kind is used but absent from this table, or
//!   granted here but used nowhere;
//! - it renders the chart and fails when the chart's rules differ from [`CANARY_RULES`] /
//!   [`LEADER_ELECTION_RULES`];
//! - `tests/e2e_operate.rs` runs a canary with the controller authenticated as the chart's
//!   ServiceAccount, reads every API request the controller made from its own debug log, maps each
//!   with [`request_attributes`] and fails when one is not granted by the chart.

/// One permission: `verbs` on `group`/`resource` (with subresource, e.g. `canaries/status`).
/// `kind` names the Kubernetes kind whose use in `src/` needs the permission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permission {
    /// API group (`""` for the core group).
    pub group: &'static str,
    /// Plural resource, `resource/subresource` for a subresource.
    pub resource: &'static str,
    pub kind: &'static str,
    pub verbs: &'static [&'static str],
    /// Which code needs it.
    pub why: &'static str,
}

const WATCH_AND_APPLY: &[&str] = &["get", "list", "watch", "create", "patch"];

/// The Canary controller's rules, granted in every watched namespace when it is enabled
/// (`--controllers`, the chart's `controllers`): a ClusterRole, or a Role in `--namespace` when
/// set. Each controller has its own table; the chart grants the union of the enabled ones.
///
/// `patch` covers server-side apply; `create` is listed too because an apply that creates an
/// object is authorized as a create as well (kube-apiserver's patch handler).
pub const CANARY_RULES: &[Permission] = &[
    Permission {
        group: "flagger.app",
        resource: "canaries",
        kind: "Canary",
        verbs: &["get", "list", "watch", "patch"],
        why: "the controller's watch; finalizer patches; gate annotations (/gate/*, `pennant gate`)",
    },
    Permission {
        group: "flagger.app",
        resource: "canaries/status",
        kind: "Canary",
        verbs: &["patch"],
        why: "status writes",
    },
    Permission {
        group: "flagger.app",
        resource: "canaries/finalizers",
        kind: "Canary",
        verbs: &["update"],
        why: "objects pennant creates carry `blockOwnerDeletion: true` owner references to their \
              Canary; with the OwnerReferencesPermissionEnforcement admission plugin (OpenShift \
              enables it) that needs update on the owner's finalizers (no request is made)",
    },
    Permission {
        group: "flagger.app",
        resource: "metrictemplates",
        kind: "MetricTemplate",
        verbs: &["get"],
        why: "analysis.metrics[].templateRef",
    },
    Permission {
        group: "flagger.app",
        resource: "alertproviders",
        kind: "AlertProvider",
        verbs: &["get"],
        why: "analysis.alerts[].providerRef",
    },
    Permission {
        group: "apps",
        resource: "deployments",
        kind: "Deployment",
        verbs: WATCH_AND_APPLY,
        why: "targets (watched, scaled) and the -primary Deployments (applied)",
    },
    Permission {
        group: "apps",
        resource: "daemonsets",
        kind: "DaemonSet",
        verbs: WATCH_AND_APPLY,
        why: "DaemonSet targets and their -primary copies",
    },
    Permission {
        group: "",
        resource: "services",
        kind: "Service",
        verbs: WATCH_AND_APPLY,
        why: "apex, -primary and -canary Services",
    },
    Permission {
        group: "",
        resource: "configmaps",
        kind: "ConfigMap",
        verbs: WATCH_AND_APPLY,
        why: "config tracking (metadata watch, reads) and the -primary copies",
    },
    Permission {
        group: "",
        resource: "secrets",
        kind: "Secret",
        verbs: WATCH_AND_APPLY,
        why: "config tracking, -primary copies, provider and alert credentials",
    },
    Permission {
        group: "",
        resource: "events",
        kind: "Event",
        verbs: &["create"],
        why: "Events on Canaries (core/v1, as client-go's recorder: source and lastTimestamp)",
    },
    Permission {
        group: "networking.istio.io",
        resource: "virtualservices",
        kind: "VirtualService",
        verbs: WATCH_AND_APPLY,
        why: "Istio router",
    },
    Permission {
        group: "networking.istio.io",
        resource: "destinationrules",
        kind: "DestinationRule",
        verbs: WATCH_AND_APPLY,
        why: "Istio router",
    },
    Permission {
        group: "networking.k8s.io",
        resource: "ingresses",
        kind: "Ingress",
        verbs: WATCH_AND_APPLY,
        why: "NGINX router (canary Ingress)",
    },
    Permission {
        group: "gateway.networking.k8s.io",
        resource: "httproutes",
        kind: "HTTPRoute",
        verbs: WATCH_AND_APPLY,
        why: "Gateway API router",
    },
    Permission {
        group: "autoscaling",
        resource: "horizontalpodautoscalers",
        kind: "HorizontalPodAutoscaler",
        verbs: WATCH_AND_APPLY,
        why: "autoscalerRef: the -primary HPA",
    },
    Permission {
        group: "",
        resource: "namespaces",
        kind: "Namespace",
        verbs: &["get"],
        why: "the namespace's concurrency limit (annotation \
              canary.pennant.dev/max-concurrent-canaries), read when a Canary asks for a slot; \
              a Role in the namespace grants the GET of the namespace itself",
    },
];

/// The source controller's rules (Flux's GitRepository, OCIRepository, HelmRepository and
/// HelmChart, `source.toolkit.fluxcd.io`), granted like [`CANARY_RULES`] when it is enabled.
/// Leader election uses [`LEADER_ELECTION_RULES`], shared by every controller. Not registered
/// in `cmd::controller::BUILT` until the controller exists (the chart grants only built ones).
pub const SOURCE_RULES: &[Permission] = &[
    Permission {
        group: "source.toolkit.fluxcd.io",
        resource: "gitrepositories",
        kind: "GitRepository",
        verbs: &["get", "list", "watch", "patch"],
        why: "the controller's watch, `include` lookups, finalizer patches",
    },
    Permission {
        group: "source.toolkit.fluxcd.io",
        resource: "gitrepositories/status",
        kind: "GitRepository",
        verbs: &["patch"],
        why: "status writes",
    },
    Permission {
        group: "source.toolkit.fluxcd.io",
        resource: "gitrepositories/finalizers",
        kind: "GitRepository",
        verbs: &["update"],
        why: "the `finalizers.fluxcd.io` finalizer under the OwnerReferencesPermissionEnforcement \
              admission plugin (no request is made)",
    },
    Permission {
        group: "source.toolkit.fluxcd.io",
        resource: "ocirepositories",
        kind: "OCIRepository",
        verbs: &["get", "list", "watch", "patch"],
        why: "the controller's watch, finalizer patches",
    },
    Permission {
        group: "source.toolkit.fluxcd.io",
        resource: "ocirepositories/status",
        kind: "OCIRepository",
        verbs: &["patch"],
        why: "status writes",
    },
    Permission {
        group: "source.toolkit.fluxcd.io",
        resource: "ocirepositories/finalizers",
        kind: "OCIRepository",
        verbs: &["update"],
        why: "the `finalizers.fluxcd.io` finalizer (OwnerReferencesPermissionEnforcement)",
    },
    Permission {
        group: "source.toolkit.fluxcd.io",
        resource: "helmrepositories",
        kind: "HelmRepository",
        verbs: &["get", "list", "watch", "patch"],
        why: "the controller's watch, HelmChart sources, finalizer patches",
    },
    Permission {
        group: "source.toolkit.fluxcd.io",
        resource: "helmrepositories/status",
        kind: "HelmRepository",
        verbs: &["patch"],
        why: "status writes",
    },
    Permission {
        group: "source.toolkit.fluxcd.io",
        resource: "helmrepositories/finalizers",
        kind: "HelmRepository",
        verbs: &["update"],
        why: "the `finalizers.fluxcd.io` finalizer (OwnerReferencesPermissionEnforcement)",
    },
    Permission {
        group: "source.toolkit.fluxcd.io",
        resource: "helmcharts",
        kind: "HelmChart",
        verbs: &["get", "list", "watch", "patch"],
        why: "the controller's watch, finalizer patches",
    },
    Permission {
        group: "source.toolkit.fluxcd.io",
        resource: "helmcharts/status",
        kind: "HelmChart",
        verbs: &["patch"],
        why: "status writes",
    },
    Permission {
        group: "source.toolkit.fluxcd.io",
        resource: "helmcharts/finalizers",
        kind: "HelmChart",
        verbs: &["update"],
        why: "the `finalizers.fluxcd.io` finalizer (OwnerReferencesPermissionEnforcement)",
    },
    Permission {
        group: "source.toolkit.fluxcd.io",
        resource: "externalartifacts",
        kind: "ExternalArtifact",
        verbs: &["get", "list", "watch", "create", "patch", "delete"],
        why: "the ArtifactGenerators' output (server-side apply), its garbage collection, \
              ExternalArtifacts as generator sources",
    },
    Permission {
        group: "source.toolkit.fluxcd.io",
        resource: "externalartifacts/status",
        kind: "ExternalArtifact",
        verbs: &["patch"],
        why: "the generated artifact's status",
    },
    Permission {
        group: "source.extensions.fluxcd.io",
        resource: "artifactgenerators",
        kind: "ArtifactGenerator",
        verbs: &["get", "list", "watch", "patch"],
        why: "the controller's watch, finalizer patches",
    },
    Permission {
        group: "source.extensions.fluxcd.io",
        resource: "artifactgenerators/status",
        kind: "ArtifactGenerator",
        verbs: &["patch"],
        why: "status writes",
    },
    Permission {
        group: "source.extensions.fluxcd.io",
        resource: "artifactgenerators/finalizers",
        kind: "ArtifactGenerator",
        verbs: &["update"],
        why: "the `source.extensions.fluxcd.io/finalizer` finalizer (OwnerReferencesPermissionEnforcement)",
    },
    Permission {
        group: "",
        resource: "secrets",
        kind: "Secret",
        verbs: &["get", "list", "watch"],
        why: "secretRef, certSecretRef, proxySecretRef, verify.secretRef (read, watched for changes)",
    },
    Permission {
        group: "",
        resource: "configmaps",
        kind: "ConfigMap",
        verbs: &["get", "list", "watch"],
        why: "CA bundles and other referenced ConfigMaps (read, watched for changes)",
    },
    Permission {
        group: "",
        resource: "events",
        kind: "Event",
        verbs: &["create", "patch"],
        why: "Events on sources (`NewArtifact`, failures), patched when repeated",
    },
];

/// The kustomize controller's own rules (Flux's Kustomization, `kustomize.toolkit.fluxcd.io`,
/// and the sources it reads). The objects a Kustomization applies and prunes are of any kind:
/// Flux binds its kustomize-controller to `cluster-admin`, and so does the chart with the
/// kustomize controller enabled (`rbac.kustomizeClusterAdmin`, default true: a binding to the
/// built-in ClusterRole, no wildcard rule of pennant's own). With it off an operator grants the
/// kinds its Kustomizations apply, or Kustomizations set `spec.serviceAccountName` (or the
/// controller `--default-service-account`) and the controller impersonates a tenant's account,
/// which needs `impersonate` on ServiceAccounts (granted here, as Flux's chart).
pub const KUSTOMIZE_RULES: &[Permission] = &[
    Permission {
        group: "kustomize.toolkit.fluxcd.io",
        resource: "kustomizations",
        kind: "Kustomization",
        verbs: &["get", "list", "watch", "patch"],
        why: "the controller's watch, finalizer patches",
    },
    Permission {
        group: "kustomize.toolkit.fluxcd.io",
        resource: "kustomizations/status",
        kind: "Kustomization",
        verbs: &["patch"],
        why: "status: conditions, inventory, revisions, history",
    },
    Permission {
        group: "kustomize.toolkit.fluxcd.io",
        resource: "kustomizations/finalizers",
        kind: "Kustomization",
        verbs: &["update"],
        why: "finalizers.fluxcd.io (OwnerReferencesPermissionEnforcement)",
    },
    Permission {
        group: "source.toolkit.fluxcd.io",
        resource: "gitrepositories",
        kind: "GitRepository",
        verbs: &["get", "list", "watch"],
        why: "spec.sourceRef: the artifact, watched for new revisions",
    },
    Permission {
        group: "source.toolkit.fluxcd.io",
        resource: "ocirepositories",
        kind: "OCIRepository",
        verbs: &["get", "list", "watch"],
        why: "spec.sourceRef: the artifact, watched for new revisions",
    },
    Permission {
        group: "source.toolkit.fluxcd.io",
        resource: "externalartifacts",
        kind: "ExternalArtifact",
        verbs: &["get", "list", "watch"],
        why: "spec.sourceRef: the artifact, watched for new revisions",
    },
    Permission {
        group: "helm.toolkit.fluxcd.io",
        resource: "helmreleases",
        kind: "HelmRelease",
        verbs: &["get", "list", "watch"],
        why: "spec.dependsOn[].kind: HelmRelease (pennant extension): read, watched while \
              waited for",
    },
    Permission {
        group: "flagger.app",
        resource: "canaries",
        kind: "Canary",
        verbs: &["get", "list", "watch"],
        why: "revision-aware readiness (pennant): the Canaries of applied workloads, watched \
              while they analyse an applied revision",
    },
    Permission {
        group: "apps",
        resource: "deployments",
        kind: "Deployment",
        verbs: &["get"],
        why: "revision-aware readiness: the applied pod template of a Canary's target",
    },
    Permission {
        group: "apps",
        resource: "daemonsets",
        kind: "DaemonSet",
        verbs: &["get"],
        why: "revision-aware readiness: the applied pod template of a Canary's target",
    },
    Permission {
        group: "",
        resource: "configmaps",
        kind: "ConfigMap",
        verbs: &["get"],
        why: "postBuild.substituteFrom",
    },
    Permission {
        group: "",
        resource: "secrets",
        kind: "Secret",
        verbs: &["get"],
        why: "postBuild.substituteFrom, decryption keys, spec.kubeConfig.secretRef",
    },
    Permission {
        group: "",
        resource: "serviceaccounts",
        kind: "ServiceAccount",
        verbs: &["get", "impersonate"],
        why: "spec.serviceAccountName: apply, prune and health checks as that account; get: \
              it still exists before pruning on deletion",
    },
    Permission {
        group: "",
        resource: "events",
        kind: "Event",
        verbs: &["create", "patch"],
        why: "Events on Kustomizations (change sets, failures)",
    },
];

/// The helm controller's rules (`--controllers helm`), granted like [`KUSTOMIZE_RULES`]. A
/// HelmRelease installs charts of arbitrary kinds, so the chart also binds the controller to
/// `cluster-admin` (`rbac.helmClusterAdmin`, default true), as Flux binds its helm-controller;
/// these rules are what it needs besides the release's own objects.
pub const HELM_RULES: &[Permission] = &[
    Permission {
        group: "helm.toolkit.fluxcd.io",
        resource: "helmreleases",
        kind: "HelmRelease",
        verbs: &["get", "list", "watch", "patch"],
        why: "the controller's watch, finalizer patches, dependsOn",
    },
    Permission {
        group: "helm.toolkit.fluxcd.io",
        resource: "helmreleases/status",
        kind: "HelmRelease",
        verbs: &["patch"],
        why: "status: conditions, history, counters, lastAttempted*",
    },
    Permission {
        group: "helm.toolkit.fluxcd.io",
        resource: "helmreleases/finalizers",
        kind: "HelmRelease",
        verbs: &["update"],
        why: "finalizers.fluxcd.io (OwnerReferencesPermissionEnforcement)",
    },
    Permission {
        group: "source.toolkit.fluxcd.io",
        resource: "helmcharts",
        kind: "HelmChart",
        verbs: &["get", "list", "watch", "create", "patch", "delete"],
        why: "spec.chart: the generated HelmChart (server-side apply, deleted with the release \
              or when chartRef replaces it); chartRef: the artifact, watched for new revisions",
    },
    Permission {
        group: "source.toolkit.fluxcd.io",
        resource: "ocirepositories",
        kind: "OCIRepository",
        verbs: &["get", "list", "watch"],
        why: "spec.chartRef: the artifact, watched for new revisions",
    },
    Permission {
        group: "source.toolkit.fluxcd.io",
        resource: "externalartifacts",
        kind: "ExternalArtifact",
        verbs: &["get", "list", "watch"],
        why: "spec.chartRef: the artifact, watched for new revisions",
    },
    Permission {
        group: "kustomize.toolkit.fluxcd.io",
        resource: "kustomizations",
        kind: "Kustomization",
        verbs: &["get", "list", "watch"],
        why: "spec.dependsOn[].kind: Kustomization (pennant extension)",
    },
    Permission {
        group: "flagger.app",
        resource: "canaries",
        kind: "Canary",
        verbs: &["get", "list", "watch"],
        why: "the fields Canaries own (kept by drift detection and upgrades) and \
              revision-aware readiness: watched while they analyse a released revision",
    },
    Permission {
        group: "apps",
        resource: "deployments",
        kind: "Deployment",
        verbs: &["get"],
        why: "revision-aware readiness: the released pod template of a Canary's target",
    },
    Permission {
        group: "apps",
        resource: "daemonsets",
        kind: "DaemonSet",
        verbs: &["get"],
        why: "revision-aware readiness: the released pod template of a Canary's target",
    },
    Permission {
        group: "",
        resource: "configmaps",
        kind: "ConfigMap",
        verbs: &["get", "list", "watch"],
        why: "spec.valuesFrom; list/watch: those labelled reconcile.fluxcd.io/watch=Enabled",
    },
    Permission {
        group: "",
        resource: "secrets",
        kind: "Secret",
        verbs: &["get", "list", "watch"],
        why: "spec.valuesFrom, spec.kubeConfig.secretRef; list: Helm release storage \
              (sh.helm.release.v1.*) read natively; watch: valuesFrom Secrets labelled \
              reconcile.fluxcd.io/watch=Enabled",
    },
    Permission {
        group: "",
        resource: "serviceaccounts",
        kind: "ServiceAccount",
        verbs: &["get", "impersonate"],
        why: "spec.serviceAccountName: Helm actions as that account",
    },
    Permission {
        group: "",
        resource: "events",
        kind: "Event",
        verbs: &["create", "patch"],
        why: "Events on HelmReleases (actions, failures, remediation)",
    },
];

const REQUEST_RECONCILE: &[&str] = &["get", "list", "patch"];
const REQUEST_RECONCILE_WHY: &str = "Receiver webhooks: the `reconcile.fluxcd.io/requestedAt` \
    merge patch (get: a resource with a CEL filter; list: name `*` with matchLabels); Alert \
    spec.eventSources[].matchLabels: the labels of the event's object (get)";

/// The notification controller's rules: the caches of Alerts and Providers, the Receivers'
/// watch and status, the Providers' and Receivers' Secrets (read; a Receiver's token Secret's
/// metadata watched), Events on Alerts and Receivers, reading the labels of the objects events
/// are about (`matchLabels`) and the reconcile requests a verified webhook writes on the kinds
/// pennant serves.
pub const NOTIFICATION_RULES: &[Permission] = &[
    Permission {
        group: "notification.toolkit.fluxcd.io",
        resource: "alerts",
        kind: "Alert",
        verbs: &["get", "list", "watch"],
        why: "the controller's cache: Alerts matched against every event",
    },
    Permission {
        group: "notification.toolkit.fluxcd.io",
        resource: "providers",
        kind: "Provider",
        verbs: &["get", "list", "watch"],
        why: "the controller's cache: the Providers of matching Alerts",
    },
    Permission {
        group: "notification.toolkit.fluxcd.io",
        resource: "receivers",
        kind: "Receiver",
        verbs: &["get", "list", "watch"],
        why: "the controller's watch; the webhook handler finds the Receiver by its path",
    },
    Permission {
        group: "notification.toolkit.fluxcd.io",
        resource: "receivers/status",
        kind: "Receiver",
        verbs: &["patch"],
        why: "status: webhookPath, conditions",
    },
    Permission {
        group: "",
        resource: "secrets",
        kind: "Secret",
        verbs: &["get", "list", "watch"],
        why: "Provider spec.secretRef (address, token, headers); Receiver spec.secretRef: the \
            token (read), a change re-reads it (metadata watch)",
    },
    Permission {
        group: "",
        resource: "events",
        kind: "Event",
        verbs: &["create"],
        why: "Warning Events on Alerts (failed deliveries, invalid configuration); Events on \
            Receivers",
    },
    Permission {
        group: "source.toolkit.fluxcd.io",
        resource: "gitrepositories",
        kind: "GitRepository",
        verbs: REQUEST_RECONCILE,
        why: REQUEST_RECONCILE_WHY,
    },
    Permission {
        group: "source.toolkit.fluxcd.io",
        resource: "ocirepositories",
        kind: "OCIRepository",
        verbs: REQUEST_RECONCILE,
        why: REQUEST_RECONCILE_WHY,
    },
    Permission {
        group: "source.toolkit.fluxcd.io",
        resource: "helmrepositories",
        kind: "HelmRepository",
        verbs: REQUEST_RECONCILE,
        why: REQUEST_RECONCILE_WHY,
    },
    Permission {
        group: "source.toolkit.fluxcd.io",
        resource: "helmcharts",
        kind: "HelmChart",
        verbs: REQUEST_RECONCILE,
        why: REQUEST_RECONCILE_WHY,
    },
    Permission {
        group: "kustomize.toolkit.fluxcd.io",
        resource: "kustomizations",
        kind: "Kustomization",
        verbs: REQUEST_RECONCILE,
        why: REQUEST_RECONCILE_WHY,
    },
    Permission {
        group: "helm.toolkit.fluxcd.io",
        resource: "helmreleases",
        kind: "HelmRelease",
        verbs: REQUEST_RECONCILE,
        why: REQUEST_RECONCILE_WHY,
    },
    Permission {
        group: "source.extensions.fluxcd.io",
        resource: "artifactgenerators",
        kind: "ArtifactGenerator",
        verbs: REQUEST_RECONCILE,
        why: REQUEST_RECONCILE_WHY,
    },
    Permission {
        group: "flagger.app",
        resource: "canaries",
        kind: "Canary",
        verbs: &["get"],
        why: "Alert spec.eventSources[].matchLabels: the labels of the event's object",
    },
];

/// The dashboard's rules (`--ui`, the chart's `ui.enabled`), granted by a ClusterRole of their
/// own: the two reviews are cluster-scoped, so even a controller scoped to one namespace needs
/// them cluster-wide. The dashboard's reads otherwise use the enabled controllers' rules (a kind
/// no enabled controller may list is named on the overview as not listable).
pub const UI_RULES: &[Permission] = &[
    Permission {
        group: "authentication.k8s.io",
        resource: "tokenreviews",
        kind: "TokenReview",
        verbs: &["create"],
        why: "the dashboard's actions: who the caller's bearer token belongs to (ui::auth)",
    },
    Permission {
        group: "authorization.k8s.io",
        resource: "subjectaccessreviews",
        kind: "SubjectAccessReview",
        verbs: &["create"],
        why: "the dashboard's actions: whether that user may patch the object (ui::auth)",
    },
    Permission {
        group: "",
        resource: "events",
        kind: "Event",
        verbs: &["list"],
        why: "the dashboard's pages list the Events of a Canary, Kustomization or HelmRelease",
    },
];

/// Granted in the leader-election namespace only (a Role), when leader election is on.
pub const LEADER_ELECTION_RULES: &[Permission] = &[Permission {
    group: "coordination.k8s.io",
    resource: "leases",
    kind: "Lease",
    verbs: &["get", "create", "patch"],
    why: "leader election (kube-lease-manager: get, create when missing, apply/merge patches)",
}];

/// The RBAC attributes of one API request: `(group, resource[/subresource], verb)`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestAttributes {
    pub group: String,
    pub resource: String,
    pub verb: String,
}

/// The RBAC attributes kube-apiserver authorizes `method` on `url` with (the path, optionally
/// with a query string; a full URL is accepted too). `None` for non-resource URLs (`/version`,
/// `/api`, discovery).
///
/// Follows the apiserver's request-info rules: `GET` of a named object is `get`, of a collection
/// `list`, with `watch=true` (or `watch=1`) `watch`; `POST` `create`; `PUT` `update`; `PATCH`
/// `patch`; `DELETE` `delete` (of a collection `deletecollection`).
pub fn request_attributes(method: &str, url: &str) -> Option<RequestAttributes> {
    let path_and_query = match url.find("://") {
        Some(i) => url[i + 3..].find('/').map_or("/", |j| &url[i + 3 + j..]),
        None => url,
    };
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    // /api/v1/... or /apis/<group>/<version>/...
    let (group, rest) = match parts.as_slice() {
        ["api", _version, rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => return None,
    };
    // [namespaces/<ns>/]<resource>[/<name>[/<subresource>]]; `namespaces/<ns>` alone is the
    // namespace object itself.
    let rest = match rest {
        ["namespaces", _ns, tail @ ..] if !tail.is_empty() => tail,
        r => r,
    };
    let (resource, named) = match rest {
        [] => return None,
        [resource] => (resource.to_string(), false),
        [resource, _name] => (resource.to_string(), true),
        [resource, _name, sub, ..] => (format!("{resource}/{sub}"), true),
    };
    let watch = query
        .split('&')
        .any(|kv| kv == "watch=true" || kv == "watch=1");
    let verb = match (method.to_ascii_uppercase().as_str(), named) {
        ("GET", _) if watch => "watch",
        ("GET", true) => "get",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => return None,
    };
    Some(RequestAttributes {
        group: group.to_string(),
        resource,
        verb: verb.to_string(),
    })
}

/// True when one of `rules` grants `attrs`.
pub fn allows(rules: &[Permission], attrs: &RequestAttributes) -> bool {
    rules.iter().any(|p| {
        p.group == attrs.group
            && p.resource == attrs.resource
            && p.verbs.contains(&attrs.verb.as_str())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What an ArtifactGenerator reconcile does: its watch, finalizer and status patches; the
    /// ExternalArtifacts' server-side apply, status patch and garbage collection (DELETE); and
    /// nothing on the sources it reads but GET/watch.
    #[test]
    fn source_rules_cover_an_artifact_generator_reconcile() {
        let ag = "/apis/source.extensions.fluxcd.io/v1beta1/namespaces/ns/artifactgenerators";
        let ea = "/apis/source.toolkit.fluxcd.io/v1/namespaces/ns/externalartifacts";
        for (method, url) in [
            ("GET", format!("{ag}?watch=true")),
            ("PATCH", format!("{ag}/g")),
            ("PATCH", format!("{ag}/g/status")),
            ("GET", format!("{ea}?watch=true")),
            ("GET", format!("{ea}/a")),
            ("PATCH", format!("{ea}/a")),
            ("PATCH", format!("{ea}/a/status")),
            ("DELETE", format!("{ea}/a")),
        ] {
            let a = request_attributes(method, &url).expect(&url);
            assert!(allows(SOURCE_RULES, &a), "{method} {url}: {a:?}");
        }
        let delete = request_attributes("DELETE", &format!("{ag}/g")).unwrap();
        assert!(
            !allows(SOURCE_RULES, &delete),
            "generators are never deleted"
        );
    }

    /// What `flux reconcile source git` and a source reconcile do, allowed by [`SOURCE_RULES`]:
    /// watch, finalizer and annotation patches, status patches, Secret reads, Events.
    #[test]
    fn source_rules_cover_a_source_reconcile() {
        for plural in [
            "gitrepositories",
            "ocirepositories",
            "helmrepositories",
            "helmcharts",
        ] {
            let base = format!("/apis/source.toolkit.fluxcd.io/v1/namespaces/ns/{plural}");
            for (method, url) in [
                ("GET", format!("{base}?watch=true")),
                ("PATCH", format!("{base}/x")),
                ("PATCH", format!("{base}/x/status")),
            ] {
                let a = request_attributes(method, &url).expect(&url);
                assert!(allows(SOURCE_RULES, &a), "{method} {url}: {a:?}");
            }
            let delete = request_attributes("DELETE", &format!("{base}/x")).unwrap();
            assert!(
                !allows(SOURCE_RULES, &delete),
                "a source controller deletes no source"
            );
        }
        for (method, url) in [
            ("GET", "/api/v1/namespaces/ns/secrets/auth"),
            ("GET", "/api/v1/namespaces/ns/secrets?watch=1"),
            ("POST", "/api/v1/namespaces/ns/events"),
            ("PATCH", "/api/v1/namespaces/ns/events/e"),
        ] {
            assert!(
                allows(SOURCE_RULES, &request_attributes(method, url).unwrap()),
                "{url}"
            );
        }
        let write = request_attributes("PATCH", "/api/v1/namespaces/ns/secrets/auth").unwrap();
        assert!(!allows(SOURCE_RULES, &write), "Secrets are read only");
    }

    fn attrs(method: &str, url: &str) -> (String, String, String) {
        let a = request_attributes(method, url).expect(url);
        (a.group, a.resource, a.verb)
    }

    fn t(g: &str, r: &str, v: &str) -> (String, String, String) {
        (g.into(), r.into(), v.into())
    }

    #[test]
    fn request_urls_map_to_rbac_attributes() {
        assert_eq!(
            attrs(
                "GET",
                "/apis/flagger.app/v1beta1/namespaces/t/canaries?&watch=true&timeoutSeconds=290"
            ),
            t("flagger.app", "canaries", "watch")
        );
        assert_eq!(
            attrs(
                "GET",
                "https://127.0.0.1:16443/api/v1/namespaces/t/services?"
            ),
            t("", "services", "list")
        );
        assert_eq!(
            attrs("GET", "/api/v1/services?limit=1"),
            t("", "services", "list")
        );
        assert_eq!(
            attrs("GET", "/api/v1/namespaces/t/configmaps/app"),
            t("", "configmaps", "get")
        );
        assert_eq!(
            attrs(
                "PATCH",
                "/apis/flagger.app/v1beta1/namespaces/t/canaries/podinfo/status"
            ),
            t("flagger.app", "canaries/status", "patch")
        );
        assert_eq!(
            attrs(
                "PATCH",
                "/apis/apps/v1/namespaces/t/deployments/podinfo-primary?&fieldManager=pennant&force=true"
            ),
            t("apps", "deployments", "patch")
        );
        assert_eq!(
            attrs("POST", "/apis/events.k8s.io/v1/namespaces/t/events?"),
            t("events.k8s.io", "events", "create")
        );
        assert_eq!(
            attrs("PUT", "/api/v1/namespaces/t/secrets/x"),
            t("", "secrets", "update")
        );
        assert_eq!(
            attrs("DELETE", "/api/v1/namespaces/t/secrets"),
            t("", "secrets", "deletecollection")
        );
        assert_eq!(
            attrs("GET", "/api/v1/namespaces/t"),
            t("", "namespaces", "get"),
            "a namespace object"
        );
        assert_eq!(request_attributes("GET", "/version"), None);
        assert_eq!(request_attributes("GET", "/apis"), None);
    }

    #[test]
    fn allows_matches_group_resource_and_verb() {
        let a = request_attributes("PATCH", "/apis/apps/v1/namespaces/t/deployments/x").unwrap();
        assert!(allows(CANARY_RULES, &a));
        let a = request_attributes("DELETE", "/apis/apps/v1/namespaces/t/deployments/x").unwrap();
        assert!(!allows(CANARY_RULES, &a), "pennant never deletes");
        let a = request_attributes("GET", "/apis/extensions/v1beta1/namespaces/t/deployments/x")
            .unwrap();
        assert!(!allows(CANARY_RULES, &a), "group matters");
    }

    #[test]
    fn every_permission_names_a_known_verb_once() {
        const VERBS: [&str; 8] = [
            "get",
            "list",
            "watch",
            "create",
            "update",
            "patch",
            "delete",
            "deletecollection",
        ];
        for p in CANARY_RULES.iter().chain(LEADER_ELECTION_RULES) {
            for (i, v) in p.verbs.iter().enumerate() {
                assert!(VERBS.contains(v), "{p:?}");
                assert!(!p.verbs[..i].contains(v), "duplicate verb in {p:?}");
            }
        }
    }
}
