//! A chart factory for HelmRelease tests: `helm create`-style charts written in the test, with
//! knobs for what the tests need to go wrong (a hook Job that fails, a test hook, a template
//! that does not render, a schema, pods that never get Ready), packaged by the real
//! `helm package` and published to the test Helm repository ([`HelmRepo`]) or pushed with the
//! real `helm push` to an OCI registry. Works with Helm 3 and Helm 4 (only `package`, `push`,
//! `repo index`, `template`, `pull`, `install`, `test` are used).
//!
//! ```ignore
//! let repo = HelmRepo::start(None);
//! let chart = ChartSpec::new("app", "1.0.0").pre_upgrade_hook(Hook::Fails).test_hook(Hook::Succeeds);
//! chart.publish(&repo);                                   // app-1.0.0.tgz in repo's index.yaml
//! let oci = chart.push_oci(&repo.work, &registry_addr(), &format!("{ns}/charts")); // oci://…/app
//! ```
//!
//! **Jobs on this cluster (kwok, `e2e/cluster`).** Pods are never run: kwok's stages move them.
//! A pod owned by a Job goes Pending → Running → Succeeded (exit 0) within a second, so a hook
//! Job *completes* by itself; there is no way to make its container fail. A Job that must
//! *fail* is made unschedulable (a `nodeSelector` no node has, so kwok never sees its pod) with
//! `backoffLimit: 0` and `activeDeadlineSeconds: 1`: the Job controller marks it
//! `Failed=True, reason DeadlineExceeded` about a second after it starts, and Helm reports the
//! hook as failed (no waiting for Helm's timeout). Pods of a Deployment get Ready unless
//! annotated `e2e.pennant.dev/never-ready: "true"` ([`ChartSpec::never_ready`], or the value
//! `neverReady: true`), which keeps them Running with Ready=False, so `helm --wait` times out.
//!
//! Every knob is also a value, so a test can flip it per release without a new chart version:
//! `hooks.preInstall.fail`, `hooks.preUpgrade.fail`, `hooks.test.fail`, `failRender`,
//! `neverReady`, `replicaCount`, `image.repository`, `image.tag`, `message`.

use std::path::{Path, PathBuf};

use super::helmrepo::{HelmRepo, helm_in};
use super::run;

/// The annotation `e2e/cluster`'s kwok stages read: pods carrying it never get Ready.
pub const NEVER_READY_ANNOTATION: &str = "e2e.pennant.dev/never-ready";

/// The message of the template that fails to render ([`ChartSpec::broken_template`]).
pub const RENDER_FAILURE_MESSAGE: &str = "pennant test chart: rendering fails on purpose";

/// Whether a hook Job completes or fails (see the module docs for how, under kwok).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    Succeeds,
    Fails,
}

/// What chart to make. [`ChartSpec::new`] gives a chart like `helm create`'s, trimmed: a
/// Deployment (`<release>`, `replicaCount` pods of `image`), a Service and a ConfigMap
/// (`<release>-values`, data `message` and `chartVersion`, to see which values and version
/// a release has), no hooks.
#[derive(Clone, Debug)]
pub struct ChartSpec {
    pub name: String,
    pub version: String,
    /// Default: the version.
    pub app_version: String,
    /// `repository:tag` of the Deployment's container. Default `ghcr.io/stefanprodan/podinfo:6.5.0`
    /// (never pulled: kwok runs no containers).
    pub image: String,
    /// `replicaCount`'s default. Default 1.
    pub replicas: u32,
    /// Write `values.schema.json` (types of `replicaCount`, `image`, `message`; no unknown
    /// top-level keys besides the chart's own).
    pub schema: bool,
    pub pre_install_hook: Option<Hook>,
    pub pre_upgrade_hook: Option<Hook>,
    /// A `helm.sh/hook: test` Job, run by `helm test` (and a HelmRelease's `test.enable`).
    pub test_hook: Option<Hook>,
    /// A `post-upgrade` hook (a ConfigMap, `<release>-post-upgrade`): helm, not pennant, waits
    /// for such a chart's objects (`pennant::helm::engine::waits_itself`).
    pub post_upgrade_hook: bool,
    /// `failRender`'s default: when true a template calls `fail` with
    /// [`RENDER_FAILURE_MESSAGE`], so install/upgrade/template fail before touching the cluster.
    pub broken_template: bool,
    /// `neverReady`'s default: the Deployment's pods carry [`NEVER_READY_ANNOTATION`].
    pub never_ready: bool,
    /// `message`'s default (in the ConfigMap). Default `hello`.
    pub message: String,
}

impl ChartSpec {
    pub fn new(name: &str, version: &str) -> ChartSpec {
        ChartSpec {
            name: name.into(),
            version: version.into(),
            app_version: version.into(),
            image: "ghcr.io/stefanprodan/podinfo:6.5.0".into(),
            replicas: 1,
            schema: false,
            pre_install_hook: None,
            pre_upgrade_hook: None,
            test_hook: None,
            post_upgrade_hook: false,
            broken_template: false,
            never_ready: false,
            message: "hello".into(),
        }
    }

    pub fn app_version(mut self, v: &str) -> Self {
        self.app_version = v.into();
        self
    }
    pub fn image(mut self, image: &str) -> Self {
        self.image = image.into();
        self
    }
    pub fn replicas(mut self, n: u32) -> Self {
        self.replicas = n;
        self
    }
    pub fn schema(mut self) -> Self {
        self.schema = true;
        self
    }
    pub fn pre_install_hook(mut self, h: Hook) -> Self {
        self.pre_install_hook = Some(h);
        self
    }
    pub fn pre_upgrade_hook(mut self, h: Hook) -> Self {
        self.pre_upgrade_hook = Some(h);
        self
    }
    pub fn test_hook(mut self, h: Hook) -> Self {
        self.test_hook = Some(h);
        self
    }
    pub fn post_upgrade_hook(mut self) -> Self {
        self.post_upgrade_hook = true;
        self
    }
    pub fn broken_template(mut self) -> Self {
        self.broken_template = true;
        self
    }
    pub fn never_ready(mut self) -> Self {
        self.never_ready = true;
        self
    }
    pub fn message(mut self, m: &str) -> Self {
        self.message = m.into();
        self
    }

    /// Write the chart's sources into `<parent>/<name>-<version>/` (replacing what was there);
    /// returns that directory.
    pub fn write(&self, parent: &Path) -> PathBuf {
        let dir = parent.join(format!("{}-{}", self.name, self.version));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("templates/tests")).unwrap();
        let w = |rel: &str, text: String| std::fs::write(dir.join(rel), text).unwrap();
        w(
            "Chart.yaml",
            format!(
                "apiVersion: v2\nname: {}\ndescription: test chart made by tests/support/charts.rs\n\
                 type: application\nversion: {}\nappVersion: \"{}\"\n",
                self.name, self.version, self.app_version
            ),
        );
        let (repository, tag) = self
            .image
            .rsplit_once(':')
            .filter(|(_, t)| !t.contains('/'))
            .unwrap_or((self.image.as_str(), ""));
        let fails = |h: Option<Hook>| h == Some(Hook::Fails);
        w(
            "values.yaml",
            format!(
                "replicaCount: {}\nimage:\n  repository: {repository}\n  tag: \"{tag}\"\n\
                 message: {:?}\nneverReady: {}\nfailRender: {}\nhooks:\n  preInstall:\n    fail: {}\n\
                 \x20 preUpgrade:\n    fail: {}\n  test:\n    fail: {}\n",
                self.replicas,
                self.message,
                self.never_ready,
                self.broken_template,
                fails(self.pre_install_hook),
                fails(self.pre_upgrade_hook),
                fails(self.test_hook),
            ),
        );
        w("templates/_helpers.tpl", HELPERS.into());
        w("templates/deployment.yaml", DEPLOYMENT.into());
        w("templates/service.yaml", SERVICE.into());
        w("templates/configmap.yaml", CONFIGMAP.into());
        w(
            "templates/NOTES.txt",
            "{{ .Release.Name }} installed.\n".into(),
        );
        // always there: it fails only when `failRender` is true (the knob is a value too)
        w(
            "templates/broken.yaml",
            BROKEN.replace("MESSAGE", RENDER_FAILURE_MESSAGE),
        );
        if self.pre_install_hook.is_some() {
            w(
                "templates/hook-pre-install.yaml",
                hook_job("pre-install", "preInstall"),
            );
        }
        if self.pre_upgrade_hook.is_some() {
            w(
                "templates/hook-pre-upgrade.yaml",
                hook_job("pre-upgrade", "preUpgrade"),
            );
        }
        if self.test_hook.is_some() {
            w("templates/tests/test-job.yaml", hook_job("test", "test"));
        }
        if self.post_upgrade_hook {
            w(
                "templates/hook-post-upgrade.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-post-upgrade\n  annotations:\n    helm.sh/hook: post-upgrade\n    helm.sh/hook-delete-policy: before-hook-creation\ndata:\n  chartVersion: {{ .Chart.Version | quote }}\n".into(),
            );
        }
        if self.schema {
            w("values.schema.json", SCHEMA.into());
        }
        dir
    }

    /// Write the sources under `work/charts` and `helm package` them into `dest`; returns the
    /// `.tgz` (`<name>-<version>.tgz`).
    pub fn package(&self, work: &Path, dest: &Path) -> PathBuf {
        let src = self.write(&work.join("charts"));
        std::fs::create_dir_all(dest).unwrap();
        run(helm_in(work)
            .arg("package")
            .arg(&src)
            .arg("--destination")
            .arg(dest));
        let tgz = dest.join(format!("{}-{}.tgz", self.name, self.version));
        assert!(tgz.is_file(), "helm package made no {}", tgz.display());
        tgz
    }

    /// Package into `repo` and re-index it (the chart is then in `repo.url`'s `index.yaml`);
    /// returns the `.tgz`.
    pub fn publish(&self, repo: &HelmRepo) -> PathBuf {
        let src = self.write(&repo.work.join("charts"));
        repo.add_chart_dir(&src);
        repo.dir.join(format!("{}-{}.tgz", self.name, self.version))
    }

    /// Package (in `work`) and `helm push --plain-http` to `oci://<addr>/<path>`: the chart is
    /// then `oci://<addr>/<path>/<name>:<version>`, which is returned without the tag (an
    /// OCIRepository's `url`, or `helm pull`'s argument with `--version`).
    pub fn push_oci(&self, work: &Path, addr: &str, path: &str) -> String {
        let tgz = self.package(work, &work.join("oci-packages"));
        let base = format!("oci://{addr}/{}", path.trim_matches('/'));
        run(helm_in(work)
            .arg("push")
            .arg(&tgz)
            .arg(&base)
            .arg("--plain-http"));
        format!("{base}/{}", self.name)
    }
}

/// `helm template` of the chart at `chart` (a directory, `.tgz` or reference) with extra args
/// (`--set …`, `--version …`); `Ok(manifest)` or `Err(stderr)`.
pub fn helm_template(work: &Path, chart: &str, args: &[&str]) -> Result<String, String> {
    let out = helm_in(work)
        .args(["template", "rel", chart])
        .args(args)
        .output()
        .expect("run helm");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

const HELPERS: &str = r#"{{- define "chart.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}
{{- define "chart.selector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}
"#;

const DEPLOYMENT: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}
  labels:
    {{- include "chart.labels" . | nindent 4 }}
spec:
  replicas: {{ .Values.replicaCount }}
  selector:
    matchLabels:
      {{- include "chart.selector" . | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "chart.selector" . | nindent 8 }}
      {{- if .Values.neverReady }}
      annotations:
        e2e.pennant.dev/never-ready: "true"
      {{- end }}
    spec:
      containers:
      - name: app
        image: "{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}"
        ports:
        - name: http
          containerPort: 9898
"#;

const SERVICE: &str = r#"apiVersion: v1
kind: Service
metadata:
  name: {{ .Release.Name }}
  labels:
    {{- include "chart.labels" . | nindent 4 }}
spec:
  selector:
    {{- include "chart.selector" . | nindent 4 }}
  ports:
  - name: http
    port: 80
    targetPort: http
"#;

const CONFIGMAP: &str = r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-values
  labels:
    {{- include "chart.labels" . | nindent 4 }}
data:
  message: {{ .Values.message | quote }}
  chartVersion: {{ .Chart.Version | quote }}
"#;

const BROKEN: &str = r#"{{- if .Values.failRender }}
{{- fail "MESSAGE" }}
{{- end }}
"#;

/// A hook Job for `event` (`pre-install`, `pre-upgrade`, `test`) that fails when
/// `.Values.hooks.<key>.fail` (unschedulable + 1 s deadline, see the module docs). Kept after it
/// ran (`before-hook-creation` only), so a test can read its status.
fn hook_job(event: &str, key: &str) -> String {
    format!(
        r#"apiVersion: batch/v1
kind: Job
metadata:
  name: {{{{ .Release.Name }}}}-{event}
  labels:
    {{{{- include "chart.labels" . | nindent 4 }}}}
  annotations:
    helm.sh/hook: {event}
    helm.sh/hook-weight: "0"
    helm.sh/hook-delete-policy: before-hook-creation
spec:
  backoffLimit: 0
  {{{{- if .Values.hooks.{key}.fail }}}}
  activeDeadlineSeconds: 1
  {{{{- end }}}}
  template:
    metadata:
      labels:
        app.kubernetes.io/name: {{{{ .Chart.Name }}}}-{event}
    spec:
      restartPolicy: Never
      {{{{- if .Values.hooks.{key}.fail }}}}
      nodeSelector:
        e2e.pennant.dev/no-such-node: "true"
      {{{{- end }}}}
      containers:
      - name: {event}
        image: busybox:1.36
        command: ["sh", "-c", "echo {event} hook of {{{{ .Release.Name }}}}"]
"#
    )
}

const SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft-07/schema#",
  "type": "object",
  "required": ["replicaCount", "image"],
  "properties": {
    "replicaCount": {"type": "integer", "minimum": 0},
    "image": {
      "type": "object",
      "required": ["repository"],
      "properties": {
        "repository": {"type": "string", "minLength": 1},
        "tag": {"type": "string"}
      }
    },
    "message": {"type": "string"},
    "neverReady": {"type": "boolean"},
    "failRender": {"type": "boolean"},
    "hooks": {"type": "object"}
  }
}
"#;
