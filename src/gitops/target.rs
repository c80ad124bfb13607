//! Where a GitOps object (Kustomization, HelmRelease) acts: the cluster and the identity of
//! Flux's impersonation (`fluxcd/pkg/runtime/client`'s `Impersonator`, helm-controller's
//! `buildRESTClientGetter`), shared by the kustomize and helm controllers.
//!
//! - no `spec.kubeConfig`, no service account: the controller's own client;
//! - `spec.serviceAccountName` (else the controller's `--default-service-account`): the
//!   controller's client config impersonating `system:serviceaccount:<object namespace>:<name>`;
//! - `spec.kubeConfig.secretRef`: a client built from the kubeconfig in that Secret (key
//!   `secretRef.key`, else `value`, else `value.yaml`; the Secret is read in the object's
//!   namespace on the local cluster), impersonating the service account as above when one is
//!   set (on the remote cluster, as Flux).
//!
//! The kubeconfig is sanitised as Flux's `KubeConfig()`: only the current context counts, and
//! its user's own impersonation (`as`, `as-groups`) is dropped. Where Flux silently drops a field
//! (which then fails later in an obscure way), pennant refuses the kubeconfig and names the
//! field: file references (`certificate-authority`, `client-certificate`, `client-key`,
//! `tokenFile`: never files of the controller's file system), `auth-provider`, `exec` (unless
//! `--insecure-kubeconfig-exec`) and `insecure-skip-tls-verify` (unless
//! `--insecure-kubeconfig-tls`). Requests time out after 30 s (Flux's default). The sanitised
//! kubeconfig is kept with the client ([`Cluster::kubeconfig`]) for a CLI that needs one (the
//! `helm` CLI, [`kubeconfig_yaml`]).
//!
//! Clients are cached by (Secret uid, resourceVersion, key, impersonated user), so a reconcile
//! reuses the client (and what the controller built on it, e.g. a discovery cache) until the
//! Secret changes. A new remote client is probed once (`GET /version`) so an unreachable server
//! names the Secret.
//!
//! Errors carry the reason and message of the controller the object belongs to ([`Flavour`]):
//! kustomize-controller's `ReconciliationFailed` (`unable to read KubeConfig secret '<ns>/<name>'
//! error: ...`, `KubeConfig secret '<ns>/<name>' does not contain a 'value' key with a
//! kubeconfig`) or helm-controller's `RESTClientError` (`could not get KubeConfig secret
//! '<ns>/<name>': ...`, `KubeConfig secret '<ns>/<name>' does not contain a 'value' or
//! 'value.yaml' key with data`); they never carry the Secret's content.
//! `spec.kubeConfig.configMapRef` (Flux 2.6 workload identity) is not implemented:
//! `UnsupportedField`, nothing applied or released.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, ResourceExt};

use crate::api::kustomization::KubeConfigReference;
use crate::gitops::conditions::reasons;

/// Flux's `--default-service-account` and `--insecure-kubeconfig-*` flags.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Impersonated when an object sets no `spec.serviceAccountName`.
    pub default_service_account: Option<String>,
    /// Allow `users[].user.exec` in kubeconfigs (runs a command of the controller's image).
    pub insecure_exec: bool,
    /// Allow `clusters[].cluster.insecure-skip-tls-verify` in kubeconfigs.
    pub insecure_tls: bool,
}

/// Whose wording the errors have: Flux's kustomize-controller or helm-controller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavour {
    Kustomize,
    Helm,
}

/// What of an object decides its target (the fields Kustomization and HelmRelease share).
#[derive(Clone, Copy, Debug)]
pub struct TargetSpec<'a> {
    /// The object's namespace: where the kubeConfig Secret is read, and the namespace of the
    /// impersonated service account.
    pub namespace: &'a str,
    /// `spec.kubeConfig`.
    pub kube_config: Option<&'a KubeConfigReference>,
    /// `spec.serviceAccountName` (empty: unset).
    pub service_account_name: Option<&'a str>,
}

/// A client for one cluster and identity, from which a controller builds its own target value.
#[derive(Clone)]
pub struct Cluster {
    /// A remote one answers within 30 s or fails (Flux's request timeout): a watch through it
    /// idle that long ends and must be restarted (kube's `watcher` does).
    pub client: Client,
    /// The sanitised kubeconfig of a remote cluster (its current context only, no
    /// impersonation of its own); `None`: the controller's own cluster.
    pub kubeconfig: Option<Kubeconfig>,
    /// The impersonated user (`system:serviceaccount:<ns>:<name>`), already applied to `client`.
    pub user: Option<String>,
}

/// Request timeout of a kubeconfig's client (Flux's `KubeConfigOptions.Timeout`, 30 s).
const TIMEOUT: Duration = Duration::from_secs(30);
/// Clients kept at most; the cache is emptied beyond (each holds a connection pool).
const MAX_CACHED: usize = 64;

/// Why no target: Flux's reason and a message without secret content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetError {
    pub reason: &'static str,
    pub message: String,
    /// Only a spec change can help (`Stalled`).
    pub terminal: bool,
    /// The Secret is gone or the target cannot exist (`configMapRef`): on deletion prune or
    /// uninstall is skipped, as Flux's `CanImpersonate` for a deleted account and
    /// helm-controller's uninstall without its kubeconfig Secret.
    pub gone: bool,
}

/// helm-controller's reason of a client that cannot be built (`RESTClientError`).
pub const REST_CLIENT_ERROR: &str = "RESTClientError";

fn failed(flavour: Flavour, message: impl Into<String>) -> TargetError {
    TargetError {
        reason: match flavour {
            Flavour::Kustomize => reasons::RECONCILIATION_FAILED,
            Flavour::Helm => REST_CLIENT_ERROR,
        },
        message: message.into(),
        terminal: false,
        gone: false,
    }
}

/// Reason of a `spec.kubeConfig.configMapRef` (not implemented, nothing applied).
pub const UNSUPPORTED_FIELD: &str = "UnsupportedField";
/// Its message for a Kustomization.
pub const CONFIG_MAP_REF_REFUSED: &str = "spec.kubeConfig.configMapRef is not supported yet: \
    nothing is applied (pennant will not apply to the local cluster instead)";
/// Its message for a HelmRelease.
pub const CONFIG_MAP_REF_REFUSED_HELM: &str = "spec.kubeConfig.configMapRef is not supported \
    yet: nothing is released (pennant will not release to the local cluster instead)";

/// The refusal of `spec.kubeConfig.configMapRef` (a `kubeConfig` without `secretRef`), in the
/// wording of `flavour`, or `None`. PURE.
pub fn refused(
    kube_config: Option<&KubeConfigReference>,
    flavour: Flavour,
) -> Option<&'static str> {
    let kc = kube_config?;
    kc.secret_ref.is_none().then_some(match flavour {
        Flavour::Kustomize => CONFIG_MAP_REF_REFUSED,
        Flavour::Helm => CONFIG_MAP_REF_REFUSED_HELM,
    })
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    Local {
        user: String,
    },
    Secret {
        uid: String,
        version: String,
        /// `secretRef.key` (another key is another kubeconfig)
        key: Option<String>,
        user: Option<String>,
    },
}

/// What a controller keeps per target (e.g. a client and a server-side applier with its
/// discovery cache), built once per [`Cluster`].
type Make<T> = Box<dyn Fn(Cluster) -> T + Send + Sync>;

/// The targets of all objects of one controller: the controller's own, and cached
/// impersonating or remote ones.
pub struct Targets<T> {
    local: T,
    local_client: Client,
    options: Options,
    flavour: Flavour,
    make: Make<T>,
    /// The controller's client config (impersonation clones it), inferred on first use.
    base: tokio::sync::OnceCell<kube::Config>,
    cache: Mutex<HashMap<Key, T>>,
}

/// The user impersonated for an object of `namespace`: `system:serviceaccount:<ns>:<name>` of
/// its `service_account_name`, else of the default service account, else none (an empty name
/// is unset). PURE.
pub fn impersonated_user(
    namespace: &str,
    service_account_name: Option<&str>,
    default: Option<&str>,
) -> Option<String> {
    let name = service_account_name
        .filter(|n| !n.is_empty())
        .or(default.filter(|n| !n.is_empty()))?;
    Some(format!("system:serviceaccount:{namespace}:{name}"))
}
/// `config` acting as `user` only (Flux replaces the whole impersonation config: no groups,
/// uid or extra of the original kept). PURE.
pub fn impersonate(mut config: kube::Config, user: Option<&str>) -> kube::Config {
    if let Some(user) = user {
        config.auth_info.impersonate = Some(user.to_string());
        config.auth_info.impersonate_groups = None;
        config.auth_info.impersonate_uid = None;
        config.auth_info.impersonate_user_extra = None;
    }
    config
}

/// The kubeconfig bytes of the Secret `secret` (`<ns>/<name>`, for messages): `key` when set,
/// else `value`, else `value.yaml`, with the messages of `flavour`'s controller. PURE.
pub fn kubeconfig_bytes<'a>(
    secret: &str,
    data: &'a BTreeMap<String, ByteString>,
    key: Option<&str>,
    flavour: Flavour,
) -> Result<&'a [u8], String> {
    match (key.filter(|k| !k.is_empty()), flavour) {
        (Some(key), Flavour::Kustomize) => data.get(key).map(|b| b.0.as_slice()).ok_or_else(|| {
            format!("KubeConfig secret '{secret}' does not contain a '{key}' key with a kubeconfig")
        }),
        (Some(key), Flavour::Helm) => data.get(key).map(|b| b.0.as_slice()).ok_or_else(|| {
            format!("KubeConfig secret '{secret}' does not contain a '{key}' key with data")
        }),
        (None, _) => data
            .get("value")
            .or_else(|| data.get("value.yaml"))
            .map(|b| b.0.as_slice())
            .ok_or_else(|| match flavour {
                Flavour::Kustomize => format!(
                    "KubeConfig secret '{secret}' does not contain a 'value' key with a kubeconfig"
                ),
                Flavour::Helm => format!(
                    "KubeConfig secret '{secret}' does not contain a 'value' or 'value.yaml' key \
                     with data"
                ),
            }),
    }
}

/// `kubeconfig` as a YAML document for a CLI's `--kubeconfig` (JSON, which YAML reads), with
/// `apiVersion: v1` and `kind: Config`. It holds the credentials: write it to a 0600 file
/// only. PURE.
pub fn kubeconfig_yaml(kubeconfig: &Kubeconfig) -> String {
    let mut kc = kubeconfig.clone();
    kc.api_version = Some("v1".into());
    kc.kind = Some("Config".into());
    serde_json::to_string(&kc).unwrap_or_default()
}

/// `text` with every quoted part (`"..."`, `'...'`) replaced by `"…"`: parser errors quote the
/// offending value, which may be key material. PURE.
fn redact_quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut quote = None;
    for c in text.chars() {
        match quote {
            None if c == '"' || c == '\'' => {
                quote = Some(c);
                out.push_str("\"…\"");
            }
            None => out.push(c),
            Some(q) if c == q => quote = None,
            Some(_) => {}
        }
    }
    out
}

/// Parse and sanitise a kubeconfig (see the module docs): the kubeconfig restricted to its
/// current context, or why it is refused. Errors never quote the kubeconfig's values. PURE.
pub fn parse_kubeconfig(bytes: &[u8], options: &Options) -> Result<Kubeconfig, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "the kubeconfig is not UTF-8 text")?;
    let kc = Kubeconfig::from_yaml(text)
        .map_err(|e| format!("invalid kubeconfig: {}", redact_quoted(&e.to_string())))?;
    let current = kc
        .current_context
        .clone()
        .filter(|c| !c.is_empty())
        .ok_or("invalid kubeconfig: no current-context")?;
    let context = kc
        .contexts
        .iter()
        .find(|c| c.name == current)
        .and_then(|c| c.context.clone())
        .ok_or_else(|| format!("invalid kubeconfig: context '{current}' not found"))?;
    let cluster = kc
        .clusters
        .iter()
        .find(|c| c.name == context.cluster)
        .cloned()
        .ok_or_else(|| {
            format!(
                "invalid kubeconfig: cluster '{}' not found",
                context.cluster
            )
        })?;
    let c = cluster.cluster.as_ref();
    if c.and_then(|c| c.server.as_deref())
        .is_none_or(str::is_empty)
    {
        return Err(format!(
            "invalid kubeconfig: cluster '{}' has no server",
            cluster.name
        ));
    }
    let user = match context.user.as_deref().filter(|u| !u.is_empty()) {
        Some(u) => Some(
            kc.auth_infos
                .iter()
                .find(|a| a.name == u)
                .cloned()
                .ok_or_else(|| format!("invalid kubeconfig: user '{u}' not found"))?,
        ),
        None => None,
    };
    let mut refused = vec![];
    if let Some(c) = c {
        if c.certificate_authority.is_some() {
            refused.push("certificate-authority (a file; use certificate-authority-data)");
        }
        if c.insecure_skip_tls_verify == Some(true) && !options.insecure_tls {
            refused.push("insecure-skip-tls-verify (allowed with --insecure-kubeconfig-tls)");
        }
    }
    if let Some(a) = user.as_ref().and_then(|u| u.auth_info.as_ref()) {
        if a.client_certificate.is_some() {
            refused.push("client-certificate (a file; use client-certificate-data)");
        }
        if a.client_key.is_some() {
            refused.push("client-key (a file; use client-key-data)");
        }
        if a.token_file.is_some() {
            refused.push("tokenFile (a file; use token)");
        }
        if a.auth_provider.is_some() {
            refused.push("auth-provider (not supported, as Flux)");
        }
        if a.exec.is_some() && !options.insecure_exec {
            refused.push("exec (allowed with --insecure-kubeconfig-exec)");
        }
    }
    if !refused.is_empty() {
        return Err(format!(
            "kubeconfig refused: {} of the current context",
            refused.join(", ")
        ));
    }
    let mut context_entry = kc
        .contexts
        .into_iter()
        .find(|c| c.name == current)
        .expect("found above");
    if let Some(ctx) = context_entry.context.as_mut() {
        // objects without a namespace are cluster-scoped or defaulted by the build
        ctx.namespace = None;
    }
    // the kubeconfig's own `as`/`as-groups` never count (Flux copies no impersonation): only
    // the object's service account is impersonated
    let mut user = user;
    if let Some(a) = user.as_mut().and_then(|u| u.auth_info.as_mut()) {
        a.impersonate = None;
        a.impersonate_groups = None;
        a.impersonate_uid = None;
        a.impersonate_user_extra = None;
    }
    Ok(Kubeconfig {
        clusters: vec![cluster],
        auth_infos: user.into_iter().collect(),
        contexts: vec![context_entry],
        current_context: Some(current),
        ..Default::default()
    })
}

impl<T: Clone> Targets<T> {
    /// The controller's own `client`, with `options`; the errors in `flavour`'s wording; `make`
    /// builds what the controller keeps per cluster (called once per cached client).
    pub fn new(
        client: Client,
        options: Options,
        flavour: Flavour,
        make: impl Fn(Cluster) -> T + Send + Sync + 'static,
    ) -> Self {
        let local = make(Cluster {
            client: client.clone(),
            kubeconfig: None,
            user: None,
        });
        Targets {
            local,
            local_client: client,
            options,
            flavour,
            make: Box::new(make),
            base: tokio::sync::OnceCell::new(),
            cache: Mutex::default(),
        }
    }

    /// The options the targets were built with.
    pub fn options(&self) -> &Options {
        &self.options
    }

    /// The user impersonated for `spec` (its service account, else the default one). PURE.
    pub fn user_of(&self, spec: &TargetSpec<'_>) -> Option<String> {
        impersonated_user(
            spec.namespace,
            spec.service_account_name,
            self.options.default_service_account.as_deref(),
        )
    }

    fn cached(&self, key: &Key) -> Option<T> {
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
    }

    fn remember(&self, key: Key, target: &T) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Key::Secret { uid, version, .. } = &key {
            // an older version of the same Secret is dead
            cache.retain(|k, _| !matches!(k, Key::Secret { uid: u, version: v, .. } if u == uid && v != version));
        }
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(key, target.clone());
    }

    /// The target of `spec` (see the module docs). The Secret and service account are read on
    /// the local cluster.
    pub async fn target(&self, spec: &TargetSpec<'_>) -> Result<T, TargetError> {
        let flavour = self.flavour;
        let user = self.user_of(spec);
        let ns = spec.namespace;
        let Some(kc) = spec.kube_config else {
            let Some(user) = user else {
                return Ok(self.local.clone());
            };
            let key = Key::Local { user: user.clone() };
            if let Some(t) = self.cached(&key) {
                return Ok(t);
            }
            let base = self
                .base
                .get_or_try_init(kube::Config::infer)
                .await
                .map_err(|e| failed(flavour, format!("failed to build kube client: {e}")))?;
            let client = Client::try_from(impersonate(base.clone(), Some(&user)))
                .map_err(|e| failed(flavour, format!("failed to build kube client: {e}")))?;
            let target = (self.make)(Cluster {
                client,
                kubeconfig: None,
                user: Some(user),
            });
            self.remember(key, &target);
            return Ok(target);
        };
        let Some(r) = &kc.secret_ref else {
            return Err(TargetError {
                reason: UNSUPPORTED_FIELD,
                message: refused(Some(kc), flavour).unwrap_or_default().into(),
                terminal: true,
                gone: true,
            });
        };
        let secret_name = format!("{ns}/{}", r.name);
        let secret = Api::<Secret>::namespaced(self.local_client.clone(), ns)
            .get(&r.name)
            .await
            .map_err(|e| {
                let gone = matches!(&e, kube::Error::Api(s) if s.code == 404);
                let cause = match e {
                    kube::Error::Api(s) => s.message,
                    e => e.to_string(),
                };
                let message = match flavour {
                    Flavour::Kustomize => {
                        format!("unable to read KubeConfig secret '{secret_name}' error: {cause}")
                    }
                    Flavour::Helm => {
                        format!("could not get KubeConfig secret '{secret_name}': {cause}")
                    }
                };
                TargetError {
                    gone,
                    ..failed(flavour, message)
                }
            })?;
        let key = Key::Secret {
            uid: secret.uid().unwrap_or_default(),
            version: secret.resource_version().unwrap_or_default(),
            key: r.key.clone().filter(|k| !k.is_empty()),
            user: user.clone(),
        };
        if let Some(t) = self.cached(&key) {
            return Ok(t);
        }
        let data = secret.data.unwrap_or_default();
        let bytes = kubeconfig_bytes(&secret_name, &data, r.key.as_deref(), flavour)
            .map_err(|m| failed(flavour, m))?;
        let in_secret = |m: String| {
            failed(
                flavour,
                match flavour {
                    Flavour::Kustomize => format!("KubeConfig secret '{secret_name}': {m}"),
                    Flavour::Helm => {
                        format!("failed to load KubeConfig from secret '{secret_name}': {m}")
                    }
                },
            )
        };
        let kubeconfig = parse_kubeconfig(bytes, &self.options).map_err(in_secret)?;
        let server = kubeconfig.clusters[0]
            .cluster
            .as_ref()
            .and_then(|c| c.server.clone())
            .unwrap_or_default();
        let mut config =
            kube::Config::from_custom_kubeconfig(kubeconfig.clone(), &KubeConfigOptions::default())
                .await
                .map_err(|e| in_secret(redact_quoted(&e.to_string())))?;
        config.connect_timeout = Some(Duration::from_secs(10));
        config.read_timeout = Some(TIMEOUT);
        config.reset_reader_on_write = true;
        let client = Client::try_from(impersonate(config, user.as_deref()))
            .map_err(|e| in_secret(format!("failed to build kube client: {e}")))?;
        client.apiserver_version().await.map_err(|e| {
            failed(
                flavour,
                format!(
                    "unable to reach the cluster {server} of KubeConfig secret '{secret_name}': {}",
                    crate::util::chain(&e)
                ),
            )
        })?;
        tracing::debug!(secret = %secret_name, %server, "kube client built from a KubeConfig secret");
        let target = (self.make)(Cluster {
            client,
            kubeconfig: Some(kubeconfig),
            user,
        });
        self.remember(key, &target);
        Ok(target)
    }

    /// Whether the impersonated service account of `spec` exists in its namespace (Flux's
    /// `CanImpersonate`, checked before pruning or uninstalling on deletion). Without
    /// impersonation, or with `spec.kubeConfig` (the account lives on the remote cluster),
    /// always true.
    pub async fn can_impersonate(&self, spec: &TargetSpec<'_>) -> bool {
        let default = self.options.default_service_account.as_deref();
        if spec.kube_config.is_some() || self.user_of(spec).is_none() {
            return true;
        }
        let name = spec
            .service_account_name
            .filter(|n| !n.is_empty())
            .or(default)
            .unwrap_or_default();
        Api::<ServiceAccount>::namespaced(self.local_client.clone(), spec.namespace)
            .get_opt(name)
            .await
            .is_ok_and(|sa| sa.is_some())
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::kustomization::SecretKeyReference;
    use crate::api::source::LocalObjectReference;

    const KUBECONFIG: &str = "apiVersion: v1\nkind: Config\nclusters:\n- name: remote\n  cluster:\n    server: https://127.0.0.1:6443\n    certificate-authority-data: Q0E=\nusers:\n- name: admin\n  user:\n    client-certificate-data: Q0VSVA==\n    client-key-data: S0VZ\n- name: other\n  user:\n    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: steal\ncontexts:\n- name: main\n  context: {cluster: remote, user: admin, namespace: apps}\n- name: side\n  context: {cluster: remote, user: other}\ncurrent-context: main\n";

    /// A new resourceVersion of a Secret replaces its cached client; other Secrets, other keys
    /// and the local impersonating clients stay.
    #[tokio::test]
    async fn a_changed_secret_evicts_its_old_client_only() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client =
            Client::try_from(kube::Config::new("https://127.0.0.1:1".parse().unwrap())).unwrap();
        let targets = Targets::new(
            client.clone(),
            Options::default(),
            Flavour::Kustomize,
            |c: Cluster| c.user,
        );
        let secret = |uid: &str, version: &str, key: Option<&str>| Key::Secret {
            uid: uid.into(),
            version: version.into(),
            key: key.map(Into::into),
            user: None,
        };
        let local = Key::Local {
            user: "system:serviceaccount:apps:deployer".into(),
        };
        let t = targets.local.clone();
        for k in [
            secret("a", "1", None),
            secret("a", "1", Some("other")),
            secret("b", "1", None),
            local.clone(),
        ] {
            targets.remember(k, &t);
        }
        targets.remember(secret("a", "2", None), &t);
        assert!(targets.cached(&secret("a", "1", None)).is_none(), "evicted");
        assert!(targets.cached(&secret("a", "1", Some("other"))).is_none());
        assert!(targets.cached(&secret("a", "2", None)).is_some());
        assert!(targets.cached(&secret("b", "1", None)).is_some());
        assert!(targets.cached(&local).is_some());
    }

    #[test]
    fn the_service_account_of_the_spec_wins_over_the_default() {
        let user = |sa: Option<&str>, default: Option<&str>| impersonated_user("apps", sa, default);
        assert_eq!(user(None, None), None);
        assert_eq!(user(Some(""), Some("")), None);
        assert_eq!(
            user(None, Some("flux-default")).as_deref(),
            Some("system:serviceaccount:apps:flux-default")
        );
        assert_eq!(
            user(Some("deployer"), Some("flux-default")).as_deref(),
            Some("system:serviceaccount:apps:deployer")
        );
        assert_eq!(
            user(Some(""), Some("flux-default")).as_deref(),
            Some("system:serviceaccount:apps:flux-default"),
            "an empty name is unset"
        );
    }

    #[test]
    fn impersonation_replaces_the_whole_identity() {
        let mut c = kube::Config::new("https://127.0.0.1:6443".parse().unwrap());
        c.auth_info.impersonate = Some("someone".into());
        c.auth_info.impersonate_groups = Some(vec!["system:masters".into()]);
        let same = impersonate(c.clone(), None);
        assert_eq!(same.auth_info.impersonate.as_deref(), Some("someone"));
        let sa = impersonate(c, Some("system:serviceaccount:apps:deployer"));
        assert_eq!(
            sa.auth_info.impersonate.as_deref(),
            Some("system:serviceaccount:apps:deployer")
        );
        assert_eq!(
            sa.auth_info.impersonate_groups, None,
            "no group escalates it"
        );
    }

    #[test]
    fn the_kubeconfig_key_defaults_to_value_then_value_yaml() {
        let d = |keys: &[(&str, &str)]| -> BTreeMap<String, ByteString> {
            keys.iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                .collect()
        };
        let both = d(&[("value", "a"), ("value.yaml", "b")]);
        let yaml = d(&[("value.yaml", "b")]);
        let other = d(&[("other", "x")]);
        for f in [Flavour::Kustomize, Flavour::Helm] {
            assert_eq!(kubeconfig_bytes("ns/kc", &both, None, f), Ok(&b"a"[..]));
            assert_eq!(kubeconfig_bytes("ns/kc", &both, Some(""), f), Ok(&b"a"[..]));
            assert_eq!(kubeconfig_bytes("ns/kc", &yaml, None, f), Ok(&b"b"[..]));
            assert_eq!(
                kubeconfig_bytes("ns/kc", &other, Some("other"), f),
                Ok(&b"x"[..])
            );
        }
        // each controller's own wording (kustomize-controller, helm-controller's ConfigFromSecret)
        let cases = [
            (
                &yaml,
                Some("config"),
                Flavour::Kustomize,
                "KubeConfig secret 'ns/kc' does not contain a 'config' key with a kubeconfig",
            ),
            (
                &other,
                None,
                Flavour::Kustomize,
                "KubeConfig secret 'ns/kc' does not contain a 'value' key with a kubeconfig",
            ),
            (
                &yaml,
                Some("config"),
                Flavour::Helm,
                "KubeConfig secret 'ns/kc' does not contain a 'config' key with data",
            ),
            (
                &other,
                None,
                Flavour::Helm,
                "KubeConfig secret 'ns/kc' does not contain a 'value' or 'value.yaml' key with data",
            ),
        ];
        for (data, key, flavour, message) in cases {
            assert_eq!(
                kubeconfig_bytes("ns/kc", data, key, flavour),
                Err(message.to_string()),
                "{flavour:?} {key:?}"
            );
        }
    }

    /// The sanitised kubeconfig written for a CLI reads back to the same cluster, user and
    /// credentials, with only the current context.
    #[test]
    fn the_sanitised_kubeconfig_serialises_for_a_cli() {
        let kc = parse_kubeconfig(KUBECONFIG.as_bytes(), &Options::default()).unwrap();
        let text = kubeconfig_yaml(&kc);
        let back = Kubeconfig::from_yaml(&text).unwrap();
        assert_eq!(back.api_version.as_deref(), Some("v1"));
        assert_eq!(back.kind.as_deref(), Some("Config"));
        assert_eq!(back.current_context.as_deref(), Some("main"));
        assert_eq!(
            back.clusters[0].cluster.as_ref().unwrap().server.as_deref(),
            Some("https://127.0.0.1:6443")
        );
        let user = back.auth_infos[0].auth_info.as_ref().unwrap();
        assert_eq!(user.client_certificate_data.as_deref(), Some("Q0VSVA=="));
        assert!(user.client_key_data.is_some());
        assert!(text.contains("\"S0VZ\""), "the key is kept for the CLI");
        assert!(!text.contains("steal"), "the unused user is gone: {text}");
    }

    #[test]
    fn a_config_map_ref_is_refused_in_each_controllers_words() {
        let secret = KubeConfigReference {
            secret_ref: Some(SecretKeyReference {
                name: "kc".into(),
                key: None,
            }),
            ..Default::default()
        };
        let identity = KubeConfigReference {
            config_map_ref: Some(LocalObjectReference { name: "wi".into() }),
            ..Default::default()
        };
        assert_eq!(refused(None, Flavour::Helm), None);
        assert_eq!(refused(Some(&secret), Flavour::Helm), None);
        assert_eq!(
            refused(Some(&identity), Flavour::Kustomize),
            Some(CONFIG_MAP_REF_REFUSED)
        );
        assert!(
            refused(Some(&identity), Flavour::Helm)
                .unwrap()
                .contains("nothing is released")
        );
    }

    #[test]
    fn a_kubeconfig_keeps_only_its_current_context() {
        let kc = parse_kubeconfig(KUBECONFIG.as_bytes(), &Options::default()).unwrap();
        assert_eq!(kc.current_context.as_deref(), Some("main"));
        assert_eq!(kc.clusters.len(), 1);
        let users: Vec<_> = kc.auth_infos.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(
            users,
            ["admin"],
            "the unused exec user is dropped, not refused"
        );
        let as_admin = KUBECONFIG.replace(
            "    client-key-data: S0VZ\n",
            "    client-key-data: S0VZ\n    as: system:admin\n    as-groups: [system:masters]\n",
        );
        let kc = parse_kubeconfig(as_admin.as_bytes(), &Options::default()).unwrap();
        let user = kc.auth_infos[0].auth_info.as_ref().unwrap();
        assert_eq!(
            (
                user.impersonate.as_deref(),
                user.impersonate_groups.as_ref()
            ),
            (None, None),
            "the kubeconfig's own impersonation is dropped, as Flux"
        );
        assert_eq!(
            kc.contexts[0].context.as_ref().unwrap().namespace,
            None,
            "the context namespace plays no part"
        );
    }

    #[test]
    fn plugins_files_and_insecure_tls_are_refused_by_name() {
        let o = Options::default();
        let refused = |yaml: String, o: &Options| parse_kubeconfig(yaml.as_bytes(), o).unwrap_err();
        let exec = KUBECONFIG.replace("current-context: main", "current-context: side");
        let m = refused(exec.clone(), &o);
        assert_eq!(
            m,
            "kubeconfig refused: exec (allowed with --insecure-kubeconfig-exec) of the current context"
        );
        let allowed = Options {
            insecure_exec: true,
            ..Default::default()
        };
        assert!(parse_kubeconfig(exec.as_bytes(), &allowed).is_ok());
        let files = KUBECONFIG
            .replace(
                "certificate-authority-data: Q0E=",
                "certificate-authority: /etc/ca.crt",
            )
            .replace("client-key-data: S0VZ", "client-key: /var/run/key");
        let m = refused(files, &o);
        assert!(m.contains("certificate-authority (a file"), "{m}");
        assert!(m.contains("client-key (a file"), "{m}");
        assert!(!m.contains("/var/run/key"), "{m}");
        let insecure = KUBECONFIG.replace(
            "    server: https://127.0.0.1:6443\n",
            "    server: https://127.0.0.1:6443\n    insecure-skip-tls-verify: true\n",
        );
        assert!(refused(insecure.clone(), &o).contains("--insecure-kubeconfig-tls"));
        let tls = Options {
            insecure_tls: true,
            ..Default::default()
        };
        assert!(parse_kubeconfig(insecure.as_bytes(), &tls).is_ok());
        let provider = KUBECONFIG.replace(
            "    client-key-data: S0VZ\n",
            "    client-key-data: S0VZ\n    auth-provider:\n      name: oidc\n",
        );
        assert!(refused(provider, &o).contains("auth-provider"));
    }

    #[test]
    fn broken_kubeconfigs_are_named_without_their_content() {
        let o = Options::default();
        let no_ctx = KUBECONFIG.replace("current-context: main\n", "");
        assert_eq!(
            parse_kubeconfig(no_ctx.as_bytes(), &o).unwrap_err(),
            "invalid kubeconfig: no current-context"
        );
        let no_server = KUBECONFIG.replace("    server: https://127.0.0.1:6443\n", "");
        assert_eq!(
            parse_kubeconfig(no_server.as_bytes(), &o).unwrap_err(),
            "invalid kubeconfig: cluster 'remote' has no server"
        );
        let garbage = "clusters: [{name: x, cluster: {server: [\"s3cr3t-token\"]}}]";
        let m = parse_kubeconfig(garbage.as_bytes(), &o).unwrap_err();
        assert!(m.starts_with("invalid kubeconfig"), "{m}");
        assert!(!m.contains("s3cr3t"), "{m}");
        assert_eq!(
            parse_kubeconfig(&[0xff, 0xfe], &o).unwrap_err(),
            "the kubeconfig is not UTF-8 text"
        );
        assert_eq!(
            redact_quoted(r#"bad "key" here 'x'"#),
            "bad \"…\" here \"…\""
        );
    }
}
