//! The post-renderer of a HelmRelease, in Flux's order (flux.md §2.5): (1) the user's kustomize
//! post-renderers (`patches` with targets, `images`), each applied with the real `kustomize`
//! CLI; (2) `commonMetadata` labels and annotations; (3) the origin labels
//! `helm.toolkit.fluxcd.io/name` and `helm.toolkit.fluxcd.io/namespace`, always, winning key
//! collisions.
//!
//! Helm 4 runs post-renderers as **plugins**, not executables: `--post-renderer NAME` names a
//! plugin of type `postrenderer/v1` found under `$HELM_PLUGINS` (by default
//! `$HELM_DATA_HOME/plugins`), a directory holding a `plugin.yaml` (`apiVersion: v1`, `type:
//! postrenderer/v1`, `runtime: subprocess`, `runtimeConfig.platformCommand[].command/args`).
//! Helm pipes the rendered manifests to the command's stdin, appends each
//! `--post-renderer-args` value to its arguments and reads stdout; it keeps the command's stderr
//! to itself ("plugin ... exited with error"), so this post-renderer also writes its error to
//! `--error-file` for the engine to report. [`write_plugin`] installs the plugin that runs the
//! hidden `pennant helm-post-render --config FILE` subcommand, which calls [`run`].
//!
//! [`common_metadata`] and [`origin_labels`] are PURE; [`kustomize`] runs the CLI.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::api::helm_release::PostRenderer;
use crate::api::kustomization::CommonMetadata;

/// The plugin's name (`--post-renderer pennant-post-render`).
pub const PLUGIN_NAME: &str = "pennant-post-render";

/// The origin labels (Flux's `helm.toolkit.fluxcd.io/name|namespace`).
pub const ORIGIN_NAME_LABEL: &str = "helm.toolkit.fluxcd.io/name";
pub const ORIGIN_NAMESPACE_LABEL: &str = "helm.toolkit.fluxcd.io/namespace";

/// One kustomize post-renderer (`spec.postRenderers[].kustomize`). `target` and `images`
/// entries are kustomize's own fields (Flux's API uses the same names), passed through.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KustomizePostRenderer {
    #[serde(default)]
    pub patches: Vec<Patch>,
    /// `{name, newName, newTag, digest}`.
    #[serde(default)]
    pub images: Vec<Value>,
}

/// A strategic-merge or JSON6902 patch with an optional target selector
/// (`{group, version, kind, name, namespace, labelSelector, annotationSelector}`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Patch {
    pub patch: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Value>,
}

/// What one post-render run does (the engine writes it to a 0600 file for the plugin).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PostRenderConfig {
    /// `spec.postRenderers[].kustomize`, in order.
    #[serde(default)]
    pub kustomize: Vec<KustomizePostRenderer>,
    /// `spec.commonMetadata.labels`.
    #[serde(default)]
    pub common_labels: BTreeMap<String, String>,
    /// `spec.commonMetadata.annotations`.
    #[serde(default)]
    pub common_annotations: BTreeMap<String, String>,
    /// The HelmRelease's name and namespace, for the origin labels.
    pub origin_name: String,
    pub origin_namespace: String,
    /// The `kustomize` binary; empty: `$PENNANT_KUSTOMIZE`, else `kustomize` on `PATH`.
    #[serde(default)]
    pub kustomize_binary: String,
    /// pennant: fields the Canary controller owns, with their live values, applied last
    /// ([`keep_fields`]).
    #[serde(default)]
    pub keep: Vec<KeptField>,
    /// The release namespace (of rendered objects without one), for [`keep_fields`].
    #[serde(default)]
    pub release_namespace: String,
}

/// A field of a release object that pennant's Canary controller owns
/// ([`crate::apply::ownership`]: the replicas of a target it parked at zero, the apex Service's
/// selector and ports, ...) and its value in the cluster, `None` when the live object lacks it.
/// The post-render gives the rendered object that value, so an install or upgrade neither
/// undoes the Canary's change nor, under Helm 4's server-side apply, fails on a field-manager
/// conflict with `pennant` (found by tests/e2e_helm_canary.rs: "conflict with \"pennant\":
/// .spec.replicas"). A changed pod template still reaches the target, and the Canary controller
/// runs the new revision.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeptField {
    /// Empty for the core group.
    pub group: String,
    pub kind: String,
    /// The object's namespace (a rendered object without one is in the release namespace).
    pub namespace: String,
    pub name: String,
    /// JSON Pointer (RFC 6901) into the object.
    pub pointer: String,
    pub value: Option<Value>,
}

/// Give every rendered object named by a [`KeptField`] the kept value (or remove the field
/// when `value` is `None`); `release_namespace` is the namespace of objects without one. PURE.
pub fn keep_fields(objects: &mut [Value], keep: &[KeptField], release_namespace: &str) {
    use crate::apply::ownership::{remove_pointer, set_pointer};
    for o in objects.iter_mut() {
        let api_version = o["apiVersion"].as_str().unwrap_or_default();
        let group = api_version
            .rsplit_once('/')
            .map_or("", |(g, _)| g)
            .to_string();
        let kind = o["kind"].as_str().unwrap_or_default().to_string();
        let name = o["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let namespace = o["metadata"]["namespace"]
            .as_str()
            .filter(|n| !n.is_empty())
            .unwrap_or(release_namespace)
            .to_string();
        for k in keep.iter().filter(|k| {
            k.group == group && k.kind == kind && k.name == name && k.namespace == namespace
        }) {
            match &k.value {
                Some(v) => {
                    set_pointer(o, &k.pointer, v.clone());
                }
                None => remove_pointer(o, &k.pointer),
            }
        }
    }
}

/// A post-render that failed; the message names the stage.
#[derive(Debug, thiserror::Error)]
#[error("post-render failed: {0}")]
pub struct PostRenderError(pub String);

/// The `kustomize` binary: `$PENNANT_KUSTOMIZE` (set by `e2e/cluster env` and the image), else
/// `kustomize` on `PATH` (as the Kustomization controller finds it).
pub fn kustomize_binary() -> PathBuf {
    std::env::var_os("PENNANT_KUSTOMIZE")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from("kustomize"), PathBuf::from)
}

/// Parse a multi-document YAML stream into objects (empty documents dropped).
pub fn parse_manifests(text: &str) -> Result<Vec<Value>, PostRenderError> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(text)
        .map_err(|e| PostRenderError(format!("rendered manifests are not YAML: {e}")))?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

/// Objects as a YAML stream of JSON documents (`---` before each): valid YAML that no parser
/// reads differently (a YAML 1.1 parser, as Go's, would read a plain `yes` or `on` as a bool).
pub fn write_manifests(objects: &[Value]) -> Result<String, PostRenderError> {
    let mut out = String::new();
    for o in objects {
        out.push_str("---\n");
        out.push_str(&serde_json::to_string(o).map_err(|e| PostRenderError(format!("JSON: {e}")))?);
        out.push('\n');
    }
    Ok(out)
}

fn merge_map(obj: &mut Value, field: &str, entries: &BTreeMap<String, String>, win: bool) {
    if entries.is_empty() || !obj.is_object() {
        return;
    }
    let meta = &mut obj["metadata"];
    if !meta.is_object() {
        *meta = json!({});
    }
    let map = &mut meta[field];
    if !map.is_object() {
        *map = json!({});
    }
    if let Value::Object(m) = map {
        for (k, v) in entries {
            if win || !m.contains_key(k) {
                m.insert(k.clone(), json!(v));
            }
        }
    }
}

/// Stamp `commonMetadata` on every object: labels and annotations set, overriding the chart's
/// values for the same keys (Flux's `CommonRenderer` sets them over the object's).
pub fn common_metadata(
    objects: &mut [Value],
    labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
) {
    for o in objects {
        merge_map(o, "labels", labels, true);
        merge_map(o, "annotations", annotations, true);
    }
}

/// Stamp the origin labels on every object; they win any collision.
pub fn origin_labels(objects: &mut [Value], name: &str, namespace: &str) {
    let labels = BTreeMap::from([
        (ORIGIN_NAME_LABEL.to_string(), name.to_string()),
        (ORIGIN_NAMESPACE_LABEL.to_string(), namespace.to_string()),
    ]);
    for o in objects {
        merge_map(o, "labels", &labels, true);
    }
}

/// The `kustomization.yaml` of one kustomize post-renderer over `resources.yaml`. PURE.
pub fn kustomization(k: &KustomizePostRenderer) -> Value {
    let mut kz = json!({
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": ["resources.yaml"],
    });
    if !k.patches.is_empty() {
        kz["patches"] = serde_json::to_value(&k.patches).unwrap_or_default();
    }
    if !k.images.is_empty() {
        kz["images"] = Value::Array(k.images.clone());
    }
    kz
}

/// Apply one kustomize post-renderer to `objects` with the real `kustomize build` in a scratch
/// directory (environment cleared but `PATH`, as the Kustomization controller runs it).
pub fn kustomize(
    objects: &[Value],
    k: &KustomizePostRenderer,
    binary: &Path,
) -> Result<Vec<Value>, PostRenderError> {
    let io = |e: std::io::Error| PostRenderError(format!("kustomize scratch: {e}"));
    let dir = tempfile::Builder::new()
        .prefix("pennant-postrender-")
        .tempdir()
        .map_err(io)?;
    std::fs::write(dir.path().join("resources.yaml"), write_manifests(objects)?).map_err(io)?;
    let kz = serde_saphyr::to_string(&kustomization(k))
        .map_err(|e| PostRenderError(format!("kustomization: {e}")))?;
    std::fs::write(dir.path().join("kustomization.yaml"), kz).map_err(io)?;
    let mut cmd = Command::new(binary);
    cmd.arg("build").arg(dir.path()).env_clear();
    cmd.env("HOME", dir.path());
    if let Some(path) = std::env::var_os("PATH") {
        cmd.env("PATH", path);
    }
    let out = cmd
        .output()
        .map_err(|e| PostRenderError(format!("running {}: {e}", binary.display())))?;
    if !out.status.success() {
        return Err(PostRenderError(format!(
            "kustomize: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    parse_manifests(&String::from_utf8_lossy(&out.stdout))
}

/// The whole post-render of `rendered` (Helm's manifests) by `config`, in Flux's order.
pub fn run(rendered: &str, config: &PostRenderConfig) -> Result<String, PostRenderError> {
    let mut objects = parse_manifests(rendered)?;
    let binary = if config.kustomize_binary.is_empty() {
        kustomize_binary()
    } else {
        PathBuf::from(&config.kustomize_binary)
    };
    for k in &config.kustomize {
        objects = kustomize(&objects, k, &binary)?;
    }
    common_metadata(
        &mut objects,
        &config.common_labels,
        &config.common_annotations,
    );
    origin_labels(&mut objects, &config.origin_name, &config.origin_namespace);
    keep_fields(&mut objects, &config.keep, &config.release_namespace);
    write_manifests(&objects)
}

/// The `plugin.yaml` of the post-renderer plugin that runs `exe helm-post-render`. PURE.
/// Helm splits `command` on spaces, so a path with a space runs through `/usr/bin/env`.
pub fn plugin_yaml(exe: &Path) -> String {
    let exe = exe.to_string_lossy();
    let (command, args) = if exe.contains(' ') {
        ("/usr/bin/env".to_string(), json!([exe, "helm-post-render"]))
    } else {
        (exe.to_string(), json!(["helm-post-render"]))
    };
    let v = json!({
        "apiVersion": "v1",
        "name": PLUGIN_NAME,
        "type": "postrenderer/v1",
        "runtime": "subprocess",
        "version": "1.0.0",
        "runtimeConfig": {
            "platformCommand": [{
                "command": command,
                "args": args,
            }],
        },
    });
    serde_saphyr::to_string(&v).unwrap_or_default()
}

/// Install the plugin under `plugins_dir` (`<plugins_dir>/pennant-post-render/plugin.yaml`),
/// running `exe` (normally the current pennant executable).
pub fn write_plugin(plugins_dir: &Path, exe: &Path) -> std::io::Result<()> {
    let dir = plugins_dir.join(PLUGIN_NAME);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("plugin.yaml"), plugin_yaml(exe))
}

// ---------------------------------------------------------------------------------------------
// Digests of the post-render inputs (`status.observedPostRenderersDigest`,
// `status.observedCommonMetadataDigest`)

/// `sha256:<hex>` of `spec.postRenderers` as Go's `encoding/json` Encoder writes Flux's
/// `[]v2.PostRenderer` (fields in Flux's declaration order, `omitempty` honoured, HTML
/// characters escaped, one trailing newline): byte-identical to helm-controller's
/// `postrender.Digest(digest.Canonical, …)`, so a HelmRelease moved from Flux keeps its observed
/// digest. `None` for no post-renderers (Flux leaves the field empty for a nil list). PURE.
pub fn post_renderers_digest(renderers: &[PostRenderer]) -> Option<String> {
    if renderers.is_empty() {
        return None;
    }
    let mut out = String::from("[");
    for (i, r) in renderers.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let mut o = GoObject::new(&mut out);
        if let Some(k) = &r.kustomize {
            o.key("kustomize");
            let mut ko = GoObject::new(o.out);
            if !k.patches.is_empty() {
                ko.key("patches");
                go_array(ko.out, &k.patches, |out, p| {
                    let mut po = GoObject::new(out);
                    po.string("patch", &p.patch);
                    if let Some(t) = &p.target {
                        po.key("target");
                        let mut so = GoObject::new(po.out);
                        for (name, v) in [
                            ("group", &t.group),
                            ("version", &t.version),
                            ("kind", &t.kind),
                            ("namespace", &t.namespace),
                            ("name", &t.name),
                            ("annotationSelector", &t.annotation_selector),
                            ("labelSelector", &t.label_selector),
                        ] {
                            so.omitempty(name, v.as_deref());
                        }
                        so.end();
                    }
                    po.end();
                });
            }
            if !k.images.is_empty() {
                ko.key("images");
                go_array(ko.out, &k.images, |out, img| {
                    let mut io = GoObject::new(out);
                    io.string("name", &img.name);
                    io.omitempty("newName", img.new_name.as_deref());
                    io.omitempty("newTag", img.new_tag.as_deref());
                    io.omitempty("digest", img.digest.as_deref());
                    io.end();
                });
            }
            ko.end();
        }
        o.end();
    }
    out.push(']');
    Some(sha256_line(out))
}

/// `sha256:<hex>` of `spec.commonMetadata` as Go's JSON Encoder writes Flux's
/// `*v2.CommonMetadata` (map keys sorted, empty maps omitted): helm-controller's
/// `postrender.CommonMetadataDigest`. `None` when the field is absent. PURE.
pub fn common_metadata_digest(meta: Option<&CommonMetadata>) -> Option<String> {
    let meta = meta?;
    let mut out = String::new();
    let mut o = GoObject::new(&mut out);
    for (name, map) in [("annotations", &meta.annotations), ("labels", &meta.labels)] {
        if !map.is_empty() {
            o.key(name);
            let mut mo = GoObject::new(o.out);
            for (k, v) in map {
                mo.string(k, v);
            }
            mo.end();
        }
    }
    o.end();
    Some(sha256_line(out))
}

/// A JSON object being written field by field.
struct GoObject<'a> {
    out: &'a mut String,
    first: bool,
}

impl<'a> GoObject<'a> {
    fn new(out: &'a mut String) -> Self {
        out.push('{');
        GoObject { out, first: true }
    }
    fn key(&mut self, k: &str) {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        go_string(self.out, k);
        self.out.push(':');
    }
    fn string(&mut self, k: &str, v: &str) {
        self.key(k);
        go_string(self.out, v);
    }
    fn omitempty(&mut self, k: &str, v: Option<&str>) {
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            self.string(k, v);
        }
    }
    fn end(self) {
        self.out.push('}');
    }
}

fn go_array<T>(out: &mut String, items: &[T], mut each: impl FnMut(&mut String, &T)) {
    out.push('[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        each(out, item);
    }
    out.push(']');
}

/// A string as Go's `encoding/json` writes it with HTML escaping on (its Encoder's default):
/// `<`, `>`, `&`, U+2028 and U+2029 as `\u` escapes, `\b \f \n \r \t` short, other control
/// characters `\u00xx`.
fn go_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `sha256:<hex>` of `json` plus the newline Go's Encoder ends every value with.
fn sha256_line(mut json: String) -> String {
    use sha2::{Digest, Sha256};
    json.push('\n');
    let sum = Sha256::digest(json.as_bytes());
    let hex: String = sum.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Vectors from Go: Flux's `[]v2.PostRenderer` / `*v2.CommonMetadata` (helm-controller/api
    /// v1.6.4) decoded from the same JSON and written by `json.NewEncoder` + sha256 (Flux's
    /// `postrender.Digest` / `CommonMetadataDigest`).
    #[test]
    fn post_render_digests_match_flux_byte_for_byte() {
        let spec = |j: &str| -> (Vec<PostRenderer>, Option<CommonMetadata>) {
            let v: Value = serde_json::from_str(j).unwrap();
            (
                serde_json::from_value(v["postRenderers"].clone()).unwrap(),
                serde_json::from_value(v["commonMetadata"].clone()).unwrap(),
            )
        };
        let (pr, cm) = spec(
            r#"{"postRenderers":[{"kustomize":{"patches":[{"patch":"- op: add\n  path: /a\n  value: \"<x & y>\"\t\u0001\u2028","target":{"kind":"Deployment","name":"web","labelSelector":"a=b","annotationSelector":"c","group":"apps","version":"v1","namespace":"n"}}],"images":[{"name":"nginx","newTag":"1.2"}]}},{}],"commonMetadata":{"labels":{"z":"1","a":"<2>"},"annotations":{"k":"v"}}}"#,
        );
        assert_eq!(
            post_renderers_digest(&pr).as_deref(),
            Some("sha256:3ddba88d7fd612354045dcdee9543ba48d9eb3114d271e5b5a63ef9604c44dc3")
        );
        assert_eq!(
            common_metadata_digest(cm.as_ref()).as_deref(),
            Some("sha256:007e72975ee3c55c229d3d0b56a6d892d2e2b21987acc44ec7795f82fb900ba2")
        );
        let (pr, cm) = spec(
            r#"{"postRenderers":[{"kustomize":{"images":[{"name":"a","newName":"b","digest":"sha256:00"}]}}],"commonMetadata":{}}"#,
        );
        assert_eq!(
            post_renderers_digest(&pr).as_deref(),
            Some("sha256:b4e4258c8545ca4d32a554d924fc0e215e2b08f867a762492f39861157cc35be")
        );
        assert_eq!(
            common_metadata_digest(cm.as_ref()).as_deref(),
            Some("sha256:ca3d163bab055381827226140568f3bef7eaac187cebd76878e0b63e9e442356")
        );
        assert_eq!(post_renderers_digest(&[]), None);
        assert_eq!(common_metadata_digest(None), None);
    }

    fn objs() -> Vec<Value> {
        parse_manifests(
            "---\n# Source: demo/templates/cm.yaml\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  labels:\n    team: chart\n    helm.toolkit.fluxcd.io/name: spoofed\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: b\n  annotations:\n    postrenderer.helm.sh/postrender-filename: demo/templates/svc.yaml\n",
        )
        .unwrap()
    }

    #[test]
    fn kept_fields_take_their_live_value_or_go() {
        let mut objects = parse_manifests(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 2\n  template: {}\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: other\nspec:\n  selector:\n    app: web\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  selector:\n    app: web\n  trafficDistribution: PreferClose\n",
        )
        .unwrap();
        let keep =
            |group: &str, kind: &str, ns: &str, pointer: &str, value: Option<Value>| KeptField {
                group: group.into(),
                kind: kind.into(),
                namespace: ns.into(),
                name: "web".into(),
                pointer: pointer.into(),
                value,
            };
        keep_fields(
            &mut objects,
            &[
                keep(
                    "apps",
                    "Deployment",
                    "apps",
                    "/spec/replicas",
                    Some(json!(0)),
                ),
                keep(
                    "",
                    "Service",
                    "apps",
                    "/spec/selector",
                    Some(json!({"app": "web-primary"})),
                ),
                keep("", "Service", "apps", "/spec/trafficDistribution", None),
                // another namespace's, another group's: not these objects
                keep("", "Deployment", "apps", "/spec/paused", Some(json!(true))),
                keep(
                    "apps",
                    "Deployment",
                    "elsewhere",
                    "/spec/replicas",
                    Some(json!(9)),
                ),
            ],
            "apps",
        );
        assert_eq!(objects[0]["spec"], json!({"replicas": 0, "template": {}}));
        assert_eq!(
            objects[1]["spec"]["selector"],
            json!({"app": "web"}),
            "namespace other"
        );
        assert_eq!(
            objects[2]["spec"],
            json!({"selector": {"app": "web-primary"}})
        );
    }

    #[test]
    fn common_metadata_then_origin_labels_win() {
        let mut o = objs();
        let labels = BTreeMap::from([
            ("team".to_string(), "platform".to_string()),
            (ORIGIN_NAME_LABEL.to_string(), "user".to_string()),
        ]);
        let ann = BTreeMap::from([("owner".to_string(), "ops".to_string())]);
        common_metadata(&mut o, &labels, &ann);
        origin_labels(&mut o, "web", "apps");
        for obj in &o {
            let l = &obj["metadata"]["labels"];
            assert_eq!(
                l[ORIGIN_NAME_LABEL], "web",
                "origin wins over chart and commonMetadata"
            );
            assert_eq!(l[ORIGIN_NAMESPACE_LABEL], "apps");
            assert_eq!(l["team"], "platform");
            assert_eq!(obj["metadata"]["annotations"]["owner"], "ops");
        }
        assert_eq!(
            o[1]["metadata"]["annotations"]["postrenderer.helm.sh/postrender-filename"],
            "demo/templates/svc.yaml",
            "Helm's file-name annotation survives"
        );
    }

    #[test]
    fn empty_metadata_leaves_objects_alone() {
        let mut o = objs();
        let before = o.clone();
        common_metadata(&mut o, &BTreeMap::new(), &BTreeMap::new());
        assert_eq!(o, before);
    }

    #[test]
    fn manifests_round_trip() {
        let o = objs();
        assert_eq!(o.len(), 2);
        assert_eq!(parse_manifests(&write_manifests(&o).unwrap()).unwrap(), o);
        let tricky =
            vec![json!({"metadata": {"labels": {"a": "yes", "b": "on", "c": "1.0", "d": "null"}}})];
        let text = write_manifests(&tricky).unwrap();
        assert!(text.contains(r#""a":"yes""#), "strings stay quoted: {text}");
        assert_eq!(parse_manifests(&text).unwrap(), tricky);
    }

    #[test]
    fn kustomization_carries_patches_targets_and_images() {
        let k = KustomizePostRenderer {
            patches: vec![Patch {
                patch: "- op: add\n  path: /metadata/labels/x\n  value: y\n".into(),
                target: Some(json!({"kind": "Deployment", "labelSelector": "app=web"})),
            }],
            images: vec![json!({"name": "nginx", "newTag": "1.27"})],
        };
        let kz = kustomization(&k);
        assert_eq!(kz["resources"], json!(["resources.yaml"]));
        assert_eq!(kz["patches"][0]["target"]["labelSelector"], "app=web");
        assert_eq!(kz["images"][0]["newTag"], "1.27");
        let plain = kustomization(&KustomizePostRenderer::default());
        assert!(plain.get("patches").is_none() && plain.get("images").is_none());
    }

    #[test]
    fn plugin_yaml_is_a_v1_postrenderer_running_pennant() {
        let y: Value =
            serde_saphyr::from_str(&plugin_yaml(Path::new("/opt/my dir/pennant"))).unwrap();
        assert_eq!(y["apiVersion"], "v1");
        assert_eq!(y["type"], "postrenderer/v1");
        assert_eq!(y["runtime"], "subprocess");
        let cmd = &y["runtimeConfig"]["platformCommand"][0];
        assert!(!cmd["command"].as_str().unwrap().contains(' '));
        assert_eq!(
            cmd["args"],
            json!(["/opt/my dir/pennant", "helm-post-render"])
        );
        let y: Value = serde_saphyr::from_str(&plugin_yaml(Path::new("/bin/pennant"))).unwrap();
        let cmd = &y["runtimeConfig"]["platformCommand"][0];
        assert_eq!(cmd["command"], "/bin/pennant");
        assert_eq!(cmd["args"], json!(["helm-post-render"]));
    }

    #[test]
    fn config_reads_flux_field_names() {
        let c: PostRenderConfig = serde_json::from_value(json!({
            "kustomize": [{"patches": [{"patch": "p", "target": {"kind": "Service"}}],
                           "images": [{"name": "a", "newName": "b"}]}],
            "commonLabels": {"a": "b"},
            "originName": "web", "originNamespace": "apps",
        }))
        .unwrap();
        assert_eq!(
            c.kustomize[0].patches[0].target,
            Some(json!({"kind": "Service"}))
        );
        assert_eq!(c.common_labels["a"], "b");
        assert_eq!(c.origin_namespace, "apps");
    }
}
