{{/* Chart name, overridable with nameOverride. */}}
{{- define "tenantplane.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Resource name prefix: fullnameOverride, else release-chart (just release when it already holds the chart name). */}}
{{- define "tenantplane.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* chart-version label value. */}}
{{- define "tenantplane.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every resource. */}}
{{- define "tenantplane.labels" -}}
helm.sh/chart: {{ include "tenantplane.chart" . }}
{{ include "tenantplane.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Labels that select the release's pods. */}}
{{- define "tenantplane.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tenantplane.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The container image. */}}
{{- define "tenantplane.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
Fails rendering with one clear line when a required value is missing or wrong.
Every template that needs configuration includes it.
*/}}
{{- define "tenantplane.validate" -}}
{{- if not (or .Values.database.url .Values.database.existingSecret) }}
{{- fail "tenantplane: set database.url (a postgres:// URL of the control database) or database.existingSecret (a Secret holding it under database.existingSecretKey)" }}
{{- end }}
{{- if and .Values.database.url (not .Values.database.existingSecret) (not (regexMatch "^postgres(ql)?://" .Values.database.url)) }}
{{- fail "tenantplane: database.url must be a postgres:// URL" }}
{{- end }}
{{- if not (or .Values.secretKey .Values.secretKeyExistingSecret.name) }}
{{- fail "tenantplane: set secretKey (the JWT key ring, at least 32 bytes, e.g. from `openssl rand -base64 48`) or secretKeyExistingSecret.name (a Secret holding it under secretKeyExistingSecret.key)" }}
{{- end }}
{{- if not (has .Values.config.searchStrategy (list "shared" "per-tenant")) }}
{{- fail (printf "tenantplane: config.searchStrategy must be shared or per-tenant, not %q" .Values.config.searchStrategy) }}
{{- end }}
{{- if not (has .Values.config.logLevel (list "debug" "info" "warn" "error")) }}
{{- fail (printf "tenantplane: config.logLevel must be debug, info, warn or error, not %q" .Values.config.logLevel) }}
{{- end }}
{{- if ge (int .Values.config.shutdownDelaySeconds) (int .Values.config.shutdownGraceSeconds) }}
{{- fail (printf "tenantplane: config.shutdownDelaySeconds (%v) must be less than config.shutdownGraceSeconds (%v)" .Values.config.shutdownDelaySeconds .Values.config.shutdownGraceSeconds) }}
{{- end }}
{{- range .Values.shards }}
{{- if not (and (kindIs "map" .) (get . "name") (get . "url")) }}
{{- fail "tenantplane: every entry of shards needs a name and a url" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Non-secret environment, as YAML key: "value" lines (the ConfigMap's data). */}}
{{- define "tenantplane.configEnv" -}}
TENANTPLANE_BASE_DOMAIN: {{ .Values.config.baseDomain | lower | quote }}
TENANTPLANE_LISTEN: ":8000"
TENANTPLANE_METRICS_LISTEN: {{ printf ":%v" .Values.metrics.port | quote }}
TENANTPLANE_SHUTDOWN_GRACE: {{ printf "%vs" .Values.config.shutdownGraceSeconds | quote }}
TENANTPLANE_SHUTDOWN_DELAY: {{ printf "%vs" .Values.config.shutdownDelaySeconds | quote }}
LOG_LEVEL: {{ .Values.config.logLevel | quote }}
TENANTPLANE_SEARCH_STRATEGY: {{ .Values.config.searchStrategy | quote }}
TENANTPLANE_MAX_POOLS: {{ .Values.config.maxPools | toString | quote }}
TENANTPLANE_CONN_BUDGET: {{ .Values.config.connBudget | toString | quote }}
TENANTPLANE_TENANT_CONNS: {{ .Values.config.tenantConns | toString | quote }}
TENANTPLANE_POOL_GROUP_CONNS: {{ .Values.config.poolGroupConns | toString | quote }}
TENANTPLANE_POOL_STATEMENTS: {{ .Values.config.poolStatements | toString | quote }}
TENANTPLANE_ACCESS_TTL: {{ .Values.config.accessTTL | toString | quote }}
TENANTPLANE_REFRESH_TTL: {{ .Values.config.refreshTTL | toString | quote }}
TENANTPLANE_DELETE_GRACE: {{ .Values.config.deleteGrace | toString | quote }}
TENANTPLANE_SET_LOCAL: {{ .Values.config.setLocal | toString | quote }}
TENANTPLANE_WARM_POOL: {{ .Values.config.warmPool | toString | quote }}
{{- end }}

{{/*
Secret environment kept in a chart-managed Secret, as YAML key: "value" lines; empty
when every secret comes from existing Secrets and nothing optional is set.
*/}}
{{- define "tenantplane.secretEnv" -}}
{{- if and .Values.database.url (not .Values.database.existingSecret) }}
DATABASE_URL: {{ .Values.database.url | quote }}
{{- end }}
{{- if and .Values.secretKey (not .Values.secretKeyExistingSecret.name) }}
TENANTPLANE_SECRET_KEY: {{ .Values.secretKey | quote }}
{{- end }}
{{- with .Values.redis.url }}
REDIS_URL: {{ . | quote }}
{{- end }}
{{- with .Values.opensearch.url }}
OPENSEARCH_URL: {{ . | quote }}
{{- end }}
{{- with .Values.shards }}
{{- $entries := list }}
{{- range . }}
{{- $entries = append $entries (printf "%s=%s" .name .url) }}
{{- end }}
TENANTPLANE_SHARDS: {{ join "," $entries | quote }}
{{- end }}
{{- end }}

{{/* Secret env entries read from existing Secrets (a container's env list items). */}}
{{- define "tenantplane.existingSecretEnv" -}}
{{- with .Values.database.existingSecret }}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.database.existingSecretKey }}
{{- end }}
{{- with .Values.secretKeyExistingSecret.name }}
- name: TENANTPLANE_SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.secretKeyExistingSecret.key }}
{{- end }}
{{- end }}

{{/* Pod-level settings shared by the Deployments and the Job. */}}
{{- define "tenantplane.podSpecCommon" -}}
{{- with .Values.serviceAccountName }}
serviceAccountName: {{ . }}
{{- end }}
automountServiceAccountToken: false
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- end }}

{{/* One container of the migration Job; takes a dict of root, name, fullname, secretData, command. */}}
{{- define "tenantplane.migrateContainer" }}
- name: {{ .name }}
  image: {{ include "tenantplane.image" .root }}
  imagePullPolicy: {{ .root.Values.image.pullPolicy }}
  command:
    {{- toYaml .command | nindent 4 }}
  {{- if .secretData }}
  envFrom:
    - secretRef:
        name: {{ .fullname }}-migrate
  {{- end }}
  env:
    {{- range $k, $v := include "tenantplane.configEnv" .root | fromYaml }}
    - name: {{ $k }}
      value: {{ $v | quote }}
    {{- end }}
    {{- with include "tenantplane.existingSecretEnv" .root | trim }}
    {{- . | nindent 4 }}
    {{- end }}
  resources:
    {{- toYaml .root.Values.migrations.resources | nindent 4 }}
  securityContext:
    {{- toYaml .root.Values.securityContext | nindent 4 }}
  volumeMounts:
    - name: tmp
      mountPath: /tmp
{{- end }}
