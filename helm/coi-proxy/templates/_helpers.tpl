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
{{- /* Sections the chart renders itself: in `config` they would bypass the ports and,
for the secrets, land in a ConfigMap. */}}
{{- range $key, $value := dict "submission" "submission" "delivery" "delivery" "mailbox_writer" "mailboxWriter" "peer" "peer" }}
{{- if hasKey $.Values.config $key }}
{{- fail (printf "config.%s: set it through the chart's `%s` values, not in `config` (they also open the ports and keep secrets out of ConfigMaps)" $key $value) }}
{{- end }}
{{- end }}
{{- with get .Values.config "coi" }}
{{- $configCoi := . }}
{{- range $key := list "server" "tokens" }}
{{- if hasKey $configCoi $key }}
{{- fail (printf "config.coi.%s: set it through the chart's `coi.%s` value, not in `config` (token secrets must not land in a ConfigMap)" $key $key) }}
{{- end }}
{{- end }}
{{- end }}
{{- $tokens := .Values.coi.tokens }}
{{- if .Values.existingSecret }}
{{- if or $tokens.temporarySecrets $tokens.permanentSecrets .Values.mailboxWriter.masterPassword }}
{{- fail "existingSecret is set, so the configuration file comes from that Secret: leave coi.tokens.temporarySecrets, coi.tokens.permanentSecrets and mailboxWriter.masterPassword empty (they would be ignored)" }}
{{- end }}
{{- else }}
{{- if .Values.submission.enabled }}
{{- if not .Values.submission.hostname }}
{{- fail "submission.enabled needs submission.hostname (the name in the greeting and the EHLO to Postfix)" }}
{{- end }}
{{- if not (and .Values.submission.upstream .Values.submission.upstream.address) }}
{{- fail "submission.enabled needs submission.upstream.address (Postfix's submission listener for the proxy)" }}
{{- end }}
{{- end }}
{{- if .Values.delivery.enabled }}
{{- if not .Values.delivery.hostname }}
{{- fail "delivery.enabled needs delivery.hostname (the name in the greeting and the LHLO to Dovecot)" }}
{{- end }}
{{- if not (and .Values.delivery.upstream .Values.delivery.upstream.address) }}
{{- fail "delivery.enabled needs delivery.upstream.address (Dovecot's LMTP service)" }}
{{- end }}
{{- end }}
{{- if and .Values.mailboxWriter.enabled (not .Values.mailboxWriter.masterPassword) }}
{{- fail "mailboxWriter.enabled needs mailboxWriter.masterPassword (or the whole configuration in existingSecret)" }}
{{- end }}
{{- if and .Values.peer.enabled (not .Values.mailboxWriter.enabled) }}
{{- fail "peer.enabled needs mailboxWriter.enabled: messages that arrive over peer links are stored, and Contacts read, through the mailbox writer" }}
{{- end }}
{{- end }}
{{- if .Values.peer.enabled }}
{{- if not .Values.peer.tls.secretName }}
{{- fail "peer.enabled needs peer.tls.secretName: the kubernetes.io/tls Secret with this domain's peer certificate (valid for the mail domains) and key" }}
{{- end }}
{{- if not .Values.peer.ca.configMapName }}
{{- fail "peer.enabled needs peer.ca.configMapName: the ConfigMap with the CA certificate(s) that sign the peers' certificates (no system roots are trusted)" }}
{{- end }}
{{- /* Two volumes on one path: the pod would not start. */}}
{{- $mounts := dict "peer.tls.mountPath" .Values.peer.tls.mountPath "peer.ca.mountPath" .Values.peer.ca.mountPath "delivery.spool.mountPath" .Values.delivery.spool.mountPath }}
{{- if .Values.tls.secretName }}
{{- $_ := set $mounts "tls.mountPath" .Values.tls.mountPath }}
{{- end }}
{{- $seen := dict }}
{{- range $value, $path := $mounts }}
{{- if hasKey $seen $path }}
{{- fail (printf "%s and %s are both %s: give each volume its own mount path" (get $seen $path) $value $path) }}
{{- end }}
{{- $_ := set $seen $path $value }}
{{- end }}
{{- end }}
{{- if and .Values.submission.enabled (not (or .Values.submission.starttls.enabled .Values.submission.implicit.enabled)) }}
{{- fail "submission.enabled needs submission.starttls.enabled or submission.implicit.enabled" }}
{{- end }}
{{- /* Container port names and numbers are unique in a pod. */}}
{{- $taken := dict "admin" (int .Values.admin.port) }}
{{- range .Values.service.ports }}
{{- $_ := set $taken .name (int .targetPort) }}
{{- end }}
{{- $added := include "coi-proxy.submissionListeners" . | fromYamlArray }}
{{- if .Values.delivery.enabled }}
{{- $added = append $added (dict "name" "lmtp" "targetPort" .Values.delivery.port) }}
{{- end }}
{{- range $added }}
{{- $name := .name }}
{{- $port := int .targetPort }}
{{- if hasKey $taken $name }}
{{- fail (printf "port name %q is used twice: remove it from service.ports (the chart adds it)" $name) }}
{{- end }}
{{- range $other, $otherPort := $taken }}
{{- if eq $port $otherPort }}
{{- fail (printf "container port %d of %q is also the port of %q" $port $name $other) }}
{{- end }}
{{- end }}
{{- $_ := set $taken $name $port }}
{{- end }}
{{- /* The peer link is UDP: its number may be a TCP port's, not a UDP port's. */}}
{{- if .Values.peer.enabled }}
{{- if hasKey $taken "coi-link" }}
{{- fail "port name \"coi-link\" is used twice: remove it from service.ports (peer.enabled adds it)" }}
{{- end }}
{{- range .Values.service.ports }}
{{- if and (eq (.protocol | default "TCP") "UDP") (eq (int .targetPort) (int $.Values.peer.port)) }}
{{- fail (printf "container port %d/UDP of \"coi-link\" (peer.port) is also the port of %q" (int $.Values.peer.port) .name) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Where the configuration file comes from:
  existing   the Secret named by `existingSecret` (the chart renders no configuration);
  secret     rendered into a Secret, because it holds a secret: a token secret
             (coi.tokens) or the master password (mailboxWriter);
  configmap  rendered into a ConfigMap: it holds no secret.
*/}}
{{- define "coi-proxy.configSource" -}}
{{- if .Values.existingSecret -}}
existing
{{- else if or .Values.coi.tokens.temporarySecrets .Values.coi.tokens.permanentSecrets .Values.mailboxWriter.enabled -}}
secret
{{- else -}}
configmap
{{- end -}}
{{- end }}

{{/*
The enabled submission listeners as a YAML list of {name, tls, port, targetPort,
nodePort}, in this order: submission (STARTTLS) and submissions (implicit TLS). "[]" when
submission is off. The config, the container ports and the Services all come from it.
*/}}
{{- define "coi-proxy.submissionListeners" -}}
{{- $listeners := list }}
{{- if .Values.submission.enabled }}
{{- range $name, $tls := dict "submission" "starttls" "submissions" "implicit" }}
{{- $listener := get $.Values.submission $tls }}
{{- if $listener.enabled }}
{{- $listeners = append $listeners (dict "name" $name "tls" $tls "port" $listener.port "targetPort" $listener.targetPort "nodePort" $listener.nodePort) }}
{{- end }}
{{- end }}
{{- end }}
{{- toYaml $listeners }}
{{- end }}

{{/*
The configuration file: `config` with the sections rendered from `coi`, `submission`,
`delivery`, `mailboxWriter` and `peer`. With none of them on it is `config` verbatim. Holds
secrets as soon as coi.tokens or mailboxWriter do: render it only into a Secret
(coi-proxy.configSource).
*/}}
{{- define "coi-proxy.config" -}}
{{- $config := deepCopy .Values.config }}
{{- $coi := deepCopy (get .Values.config "coi" | default dict) }}
{{- with .Values.coi.server }}
{{- $_ := set $coi "server" . }}
{{- end }}
{{- $tokens := dict }}
{{- with .Values.coi.tokens.temporarySecrets }}
{{- $_ := set $tokens "temporary_secrets" . }}
{{- end }}
{{- with .Values.coi.tokens.permanentSecrets }}
{{- $_ := set $tokens "permanent_secrets" . }}
{{- end }}
{{- with .Values.coi.tokens.temporaryValidity }}
{{- $_ := set $tokens "temporary_validity" . }}
{{- end }}
{{- if $tokens }}
{{- $_ := set $coi "tokens" $tokens }}
{{- end }}
{{- if $coi }}
{{- $_ := set $config "coi" $coi }}
{{- end }}
{{- if .Values.submission.enabled }}
{{- $submission := .Values.submission }}
{{- $listeners := list }}
{{- range (include "coi-proxy.submissionListeners" . | fromYamlArray) }}
{{- $listeners = append $listeners (dict "name" .name "address" (printf "%s:%d" $submission.bindAddress (int .targetPort)) "tls" .tls) }}
{{- end }}
{{- $section := dict "listeners" $listeners "upstream" $submission.upstream "hostname" $submission.hostname }}
{{- with $submission.senderDomains }}
{{- $_ := set $section "sender_domains" . }}
{{- end }}
{{- with $submission.limits }}
{{- $_ := set $section "limits" . }}
{{- end }}
{{- with $submission.timeouts }}
{{- $_ := set $section "timeouts" . }}
{{- end }}
{{- $_ := set $config "submission" $section }}
{{- end }}
{{- if .Values.delivery.enabled }}
{{- $delivery := .Values.delivery }}
{{- $section := dict "address" (printf "%s:%d" $delivery.bindAddress (int $delivery.port)) "upstream" $delivery.upstream "hostname" $delivery.hostname "user_name" $delivery.userName "spool_directory" $delivery.spool.mountPath }}
{{- with $delivery.limits }}
{{- $_ := set $section "limits" . }}
{{- end }}
{{- with $delivery.timeouts }}
{{- $_ := set $section "timeouts" . }}
{{- end }}
{{- $_ := set $config "delivery" $section }}
{{- end }}
{{- if .Values.mailboxWriter.enabled }}
{{- $writer := .Values.mailboxWriter }}
{{- $_ := set $config "mailbox_writer" (dict "master_user" $writer.masterUser "master_password" $writer.masterPassword "max_connections" $writer.maxConnections "max_idle_per_user" $writer.maxIdlePerUser) }}
{{- end }}
{{- if .Values.peer.enabled }}
{{- $peer := .Values.peer }}
{{- $section := dict "address" (printf "%s:%d" $peer.bindAddress (int $peer.port)) "certificate" (printf "%s/tls.crt" $peer.tls.mountPath) "private_key" (printf "%s/tls.key" $peer.tls.mountPath) "ca_file" (include "coi-proxy.peerCaFile" .) }}
{{- with $peer.deliveryTimeout }}
{{- $_ := set $section "delivery_timeout" . }}
{{- end }}
{{- with $peer.maxMessageBytes }}
{{- $_ := set $section "max_message_bytes" . }}
{{- end }}
{{- with $peer.routes }}
{{- $_ := set $section "routes" . }}
{{- end }}
{{- with $peer.dns }}
{{- $_ := set $section "dns" . }}
{{- end }}
{{- $_ := set $config "peer" $section }}
{{- end }}
{{- toYaml $config }}
{{- end }}

{{/*
Where the peer CA file is mounted: config peer.ca_file.
*/}}
{{- define "coi-proxy.peerCaFile" -}}
{{- printf "%s/%s" .Values.peer.ca.mountPath .Values.peer.ca.key }}
{{- end }}

{{/*
Whether the spool emptyDir is mounted: the delivery hook spools there
(delivery.spool_directory), and so do the peer links (the delivery hook's directory, or
without it TMPDIR, which the Deployment points there).
*/}}
{{- define "coi-proxy.spool" -}}
{{- if or .Values.delivery.enabled .Values.peer.enabled -}}
true
{{- end -}}
{{- end }}

{{/*
Volumes shared by the Deployment's pods and the helm test pod: the configuration (a
ConfigMap, or a Secret when it holds secrets: coi-proxy.configSource), the TLS Secret,
the spool of the delivery hook and the peer links, and the peer links' certificate and
CA.
*/}}
{{- define "coi-proxy.volumes" -}}
{{- $source := include "coi-proxy.configSource" . -}}
- name: config
{{- if eq $source "configmap" }}
  configMap:
    name: {{ include "coi-proxy.fullname" . }}
{{- else }}
  secret:
    {{- if eq $source "existing" }}
    secretName: {{ .Values.existingSecret }}
    {{- else }}
    secretName: {{ include "coi-proxy.fullname" . }}
    {{- end }}
    defaultMode: 0440
{{- end }}
{{- if .Values.tls.secretName }}
- name: tls
  secret:
    secretName: {{ .Values.tls.secretName }}
    defaultMode: 0440
{{- end }}
{{- if include "coi-proxy.spool" . }}
- name: spool
  {{- with .Values.delivery.spool.sizeLimit }}
  emptyDir:
    sizeLimit: {{ . }}
  {{- else }}
  emptyDir: {}
  {{- end }}
{{- end }}
{{- if .Values.peer.enabled }}
- name: peer-tls
  secret:
    secretName: {{ .Values.peer.tls.secretName }}
    defaultMode: 0440
- name: peer-ca
  configMap:
    name: {{ .Values.peer.ca.configMapName }}
    items:
      - key: {{ .Values.peer.ca.key | quote }}
        path: {{ .Values.peer.ca.key | quote }}
{{- end }}
{{- with .Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
The matching volume mounts. The configuration is mounted by subPath (a file next to the
TLS directory); subPath mounts do not follow ConfigMap or Secret updates, which is fine
because a changed configuration rolls the pods (checksum/config annotation; with
existingSecret, roll them yourself).
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
{{- if include "coi-proxy.spool" . }}
- name: spool
  mountPath: {{ .Values.delivery.spool.mountPath }}
{{- end }}
{{- if .Values.peer.enabled }}
- name: peer-tls
  mountPath: {{ .Values.peer.tls.mountPath }}
  readOnly: true
- name: peer-ca
  mountPath: {{ .Values.peer.ca.mountPath }}
  readOnly: true
{{- end }}
{{- with .Values.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end }}
