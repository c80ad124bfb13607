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
