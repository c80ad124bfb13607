{{/* Name of the chart, overridable. */}}
{{- define "pennant.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: the release name, with the chart name appended unless the release name has it. */}}
{{- define "pennant.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "pennant.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "pennant.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "pennant.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pennant.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "pennant.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "pennant.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "pennant.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "pennant.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Secret holding the notifier URLs (made by the chart unless existingSecret is set). */}}
{{- define "pennant.notifySecret" -}}
{{- default (printf "%s-notify" (include "pennant.fullname" .)) .Values.existingSecret }}
{{- end }}

{{- define "pennant.hasNotifySecret" -}}
{{- if or .Values.existingSecret .Values.slack.url .Values.slack.token .Values.msteams.url .Values.eventWebhook }}true{{ end }}
{{- end }}

{{/* The enabled controllers, comma-separated; fails on a name this chart does not know. */}}
{{- define "pennant.controllers" -}}
{{- $known := list "canary" "source" "kustomize" "helm" "notification" }}
{{- if not .Values.controllers }}
{{- fail "controllers: name at least one controller (known: canary, source, kustomize, helm, notification)" }}
{{- end }}
{{- range .Values.controllers }}
{{- if not (has . $known) }}
{{- fail (printf "controllers: unknown controller %q (known: %s)" . (join ", " $known)) }}
{{- end }}
{{- end }}
{{- join "," .Values.controllers }}
{{- end }}

{{/* The artifact address written in status.artifact.url (--storage-adv-addr): the Service's DNS
name and port, as Flux's source-controller.$(RUNTIME_NAMESPACE).svc.cluster.local. */}}
{{- define "pennant.storageAdvAddr" -}}
{{- if .Values.storage.advertisedAddress }}{{ .Values.storage.advertisedAddress }}
{{- else }}{{ include "pennant.fullname" . }}.{{ .Release.Namespace }}.svc.cluster.local.:{{ .Values.port }}
{{- end }}
{{- end }}

{{/* A shard's name from `shards`, checked: a DNS label of at most 40 characters (it ends the
Deployment's, Service's and Lease's names and is the value of sharding.fluxcd.io/key). */}}
{{- define "pennant.shardName" -}}
{{- if not (regexMatch "^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$" (toString .)) }}
{{- fail (printf "shards: %q is not a shard name (lower-case letters, digits and '-', at most 40)" (toString .)) }}
{{- end }}
{{- . }}
{{- end }}

{{/* Name of the main instance's objects (shard "") or a shard's: <fullname>-<shard>. Takes
(dict "root" . "shard" name). */}}
{{- define "pennant.shardFullname" -}}
{{- if .shard }}
{{- printf "%s-%s" (include "pennant.fullname" .root) .shard | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- include "pennant.fullname" .root }}
{{- end }}
{{- end }}

{{/* Pod labels a Deployment and its Service select: a shard's carry its own instance label, so
the main Deployment's (immutable) selector and Service never match a shard's pods. */}}
{{- define "pennant.shardSelectorLabels" -}}
{{- if .shard }}
app.kubernetes.io/name: {{ include "pennant.name" .root }}
app.kubernetes.io/instance: {{ printf "%s-%s" .root.Release.Name .shard | trunc 63 | trimSuffix "-" }}
pennant.dev/shard: {{ .shard }}
{{- else }}
{{- include "pennant.selectorLabels" .root }}
{{- end }}
{{- end }}

{{/* --watch-label-selector: a shard takes the objects labelled sharding.fluxcd.io/key=<shard>;
the main instance watchLabelSelector, or, when there are shards, the objects without the label
(Flux's sharding convention). */}}
{{- define "pennant.shardSelector" -}}
{{- if .shard }}sharding.fluxcd.io/key={{ .shard }}
{{- else if .root.Values.watchLabelSelector }}{{ .root.Values.watchLabelSelector }}
{{- else if .root.Values.shards }}!sharding.fluxcd.io/key
{{- end }}
{{- end }}

{{/* --storage-adv-addr of the main instance (pennant.storageAdvAddr) or of a shard (its own
Service: each shard serves its own artifacts). */}}
{{- define "pennant.shardStorageAdvAddr" -}}
{{- if .shard }}{{ include "pennant.shardFullname" . }}.{{ .root.Release.Namespace }}.svc.cluster.local.:{{ .root.Values.port }}
{{- else }}{{ include "pennant.storageAdvAddr" .root }}
{{- end }}
{{- end }}
