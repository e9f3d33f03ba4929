{{/*
Chart name, truncated to 63 characters (the DNS label limit of resource names).
*/}}
{{- define "coi-proxy.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full resource name: <release>-<chart>, or <release> when the release name already
contains the chart name. Truncated to 54 characters so that "-headless" still fits in 63.
*/}}
{{- define "coi-proxy.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 54 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 54 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 54 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "coi-proxy.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels on every resource of the release, the helm test pod included.
*/}}
{{- define "coi-proxy.commonLabels" -}}
helm.sh/chart: {{ include "coi-proxy.chart" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: coi-proxy
{{- end }}

{{/*
Labels on the proxy's resources and pods.
*/}}
{{- define "coi-proxy.labels" -}}
{{ include "coi-proxy.commonLabels" . }}
{{ include "coi-proxy.selectorLabels" . }}
app.kubernetes.io/component: gateway
{{- end }}

{{/*
Labels that select the proxy's pods. Never change them: a Deployment's selector is
immutable.
*/}}
{{- define "coi-proxy.selectorLabels" -}}
app.kubernetes.io/name: {{ include "coi-proxy.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The container image: repository:tag, the tag defaulting to the chart's appVersion.
*/}}
{{- define "coi-proxy.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/*
Where the configuration file is mounted; the container's `run --config` and the helm
test's `check --config` both read it.
*/}}
{{- define "coi-proxy.configPath" -}}
/etc/coi-proxy/coi-proxy.yaml
{{- end }}

{{/*
Render-time checks of values the schema cannot relate to each other.
*/}}
{{- define "coi-proxy.validate" -}}
{{- if ne .Values.mode "gateway" }}
{{- fail (printf "mode %q: only gateway is templated; for a sidecar see the comment on `mode` in values.yaml" .Values.mode) }}
{{- end }}
{{- if and .Values.config.tls (not .Values.tls.secretName) }}
{{- fail "config.tls names certificate files: set tls.secretName to the Secret that holds them" }}
{{- end }}
{{- if and .Values.serviceMonitor.enabled (not .Values.headlessService.enabled) }}
{{- fail "serviceMonitor.enabled needs headlessService.enabled: the ServiceMonitor scrapes each replica's admin port through the headless Service" }}
{{- end }}
{{- end }}

{{/*
Volumes shared by the Deployment's pods and the helm test pod: the configuration and the
TLS Secret.
*/}}
{{- define "coi-proxy.volumes" -}}
- name: config
  configMap:
    name: {{ include "coi-proxy.fullname" . }}
{{- if .Values.tls.secretName }}
- name: tls
  secret:
    secretName: {{ .Values.tls.secretName }}
    defaultMode: 0440
{{- end }}
{{- with .Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
The matching volume mounts. The configuration is mounted by subPath (a file next to the
TLS directory); subPath mounts do not follow ConfigMap updates, which is fine because a
changed configuration rolls the pods (checksum/config annotation).
*/}}
{{- define "coi-proxy.volumeMounts" -}}
- name: config
  mountPath: {{ include "coi-proxy.configPath" . }}
  subPath: coi-proxy.yaml
  readOnly: true
{{- if .Values.tls.secretName }}
- name: tls
  mountPath: {{ .Values.tls.mountPath }}
  readOnly: true
{{- end }}
{{- with .Values.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end }}
