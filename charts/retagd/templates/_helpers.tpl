{{/*
Names, labels and the pieces every template shares. retagd's configuration is assembled here:
the user's `config` with the chart-owned keys (listen address, state directory, secret file
paths) merged over it.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "retagd.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The full name of every object: fullnameOverride, else release-chart (or the release name
when it already contains the chart name). Truncated to 63 characters for DNS names. */}}
{{- define "retagd.fullname" -}}
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

{{/* helm.sh/chart: name-version. */}}
{{- define "retagd.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The labels of every object. */}}
{{- define "retagd.labels" -}}
helm.sh/chart: {{ include "retagd.chart" . }}
{{ include "retagd.selectorLabels" . }}
app.kubernetes.io/version: {{ include "retagd.imageTag" . | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: retagd
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The labels that select the pod (never change them after install). */}}
{{- define "retagd.selectorLabels" -}}
app.kubernetes.io/name: {{ include "retagd.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The ServiceAccount the pod runs as. */}}
{{- define "retagd.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "retagd.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "retagd.imageTag" -}}
{{- default .Chart.AppVersion .Values.image.tag }}
{{- end }}

{{/* repository:tag, or repository@digest when a digest is given. */}}
{{- define "retagd.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (include "retagd.imageTag" .) }}
{{- end }}
{{- end }}

{{/* The container port: retagd listens on 0.0.0.0:9090 in the pod. */}}
{{- define "retagd.containerPort" -}}9090{{- end }}

{{/* Where the pieces are mounted. */}}
{{- define "retagd.configDir" -}}/etc/retagd{{- end }}
{{- define "retagd.stateDir" -}}/var/lib/retagd{{- end }}
{{- define "retagd.secretsDir" -}}/var/run/secrets/retagd{{- end }}
{{- define "retagd.dockerConfigDir" -}}{{ include "retagd.secretsDir" . }}/docker{{- end }}
{{- define "retagd.apiTokenFile" -}}{{ include "retagd.secretsDir" . }}/api-token/token{{- end }}
{{- define "retagd.webhookSecretFile" -}}{{ include "retagd.secretsDir" . }}/webhook/secret{{- end }}

{{/* The key of the configuration in its ConfigMap; its extension tells retagd the format. */}}
{{- define "retagd.configKey" -}}
{{- if .Values.existingConfigMap.name }}
{{- .Values.existingConfigMap.key }}
{{- else -}}
retagd.yaml
{{- end }}
{{- end }}

{{- define "retagd.configMapName" -}}
{{- default (include "retagd.fullname" .) .Values.existingConfigMap.name }}
{{- end }}

{{/* The registries that take their credentials from the dockerconfigjson Secret, as a JSON
list: the ones named in dockerConfigRegistries, else (with `config`) every registry without
credentials of its own. */}}
{{- define "retagd.dockerConfigRegistries" -}}
{{- $names := list }}
{{- if .Values.registryCredentials.existingDockerConfigSecret }}
{{- $registries := (.Values.config | default dict).registries | default dict }}
{{- if .Values.registryCredentials.dockerConfigRegistries }}
{{- range .Values.registryCredentials.dockerConfigRegistries }}
{{- if and (not $.Values.existingConfigMap.name) (not (hasKey $registries .)) }}
{{- fail (printf "registryCredentials.dockerConfigRegistries: %q is not a registry of config.registries (registries: %s)" . (keys $registries | sortAlpha | join ", ")) }}
{{- end }}
{{- if hasKey $.Values.registryCredentials.passwordSecrets . }}
{{- fail (printf "registryCredentials: registry %q has both a password Secret and the docker config; give it one of them" .) }}
{{- end }}
{{- $names = append $names . }}
{{- end }}
{{- else if not .Values.existingConfigMap.name }}
{{- range $name, $registry := $registries }}
{{- $registry = $registry | default dict }}
{{- if not (or $registry.username $registry.docker_config $registry.password_file (hasKey $.Values.registryCredentials.passwordSecrets $name)) }}
{{- $names = append $names $name }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- toJson $names }}
{{- end }}

{{/* retagd's configuration file: `config` with the chart-owned keys merged over it. */}}
{{- define "retagd.config" -}}
{{- $cfg := deepCopy (.Values.config | default dict) }}
{{- $server := get $cfg "server" | default dict }}
{{- $_ := set $server "listen" (printf "0.0.0.0:%s" (include "retagd.containerPort" .)) }}
{{- $_ = set $server "state_dir" (include "retagd.stateDir" .) }}
{{- if .Values.apiToken.existingSecret }}
{{- $_ = set $server "api_token_file" (include "retagd.apiTokenFile" .) }}
{{- end }}
{{- if .Values.approvers }}
{{- $approvers := get $server "approvers" | default list }}
{{- range $i, $a := .Values.approvers }}
{{- $approvers = append $approvers (dict "name" $a.name "token_file" (printf "%s/approvers/%d/token" (include "retagd.secretsDir" $) $i)) }}
{{- end }}
{{- $_ = set $server "approvers" $approvers }}
{{- end }}
{{- $_ = set $cfg "server" $server }}
{{- if .Values.webhooks.existingSecret }}
{{- $webhooks := get $cfg "webhooks" | default dict }}
{{- $_ = set $webhooks "secret_file" (include "retagd.webhookSecretFile" .) }}
{{- $_ = set $cfg "webhooks" $webhooks }}
{{- end }}
{{- $registries := get $cfg "registries" | default dict }}
{{- range $name, $secret := .Values.registryCredentials.passwordSecrets }}
{{- if not (hasKey $registries $name) }}
{{- fail (printf "registryCredentials.passwordSecrets.%s: no such registry in config.registries (registries: %s)" $name (keys $registries | sortAlpha | join ", ")) }}
{{- end }}
{{- $registry := get $registries $name | default dict }}
{{- if not $registry.username }}
{{- fail (printf "registryCredentials.passwordSecrets.%s: config.registries.%s needs a username to go with the password" $name $name) }}
{{- end }}
{{- $_ = set $registry "password_file" (printf "%s/registries/%s/password" (include "retagd.secretsDir" $) $name) }}
{{- $_ = set $registries $name $registry }}
{{- end }}
{{- range (include "retagd.dockerConfigRegistries" . | fromJsonArray) }}
{{- $registry := get $registries . | default dict }}
{{- if $registry.username }}
{{- fail (printf "registryCredentials.dockerConfigRegistries: config.registries.%s sets a username; a registry takes username + password or the docker config, not both" .) }}
{{- end }}
{{- $_ = set $registry "docker_config" (printf "%s/config.json" (include "retagd.dockerConfigDir" $)) }}
{{- $_ = set $registries . $registry }}
{{- end }}
{{- $_ = set $cfg "registries" $registries }}
{{- if .Values.notifications }}
{{- $notifications := get $cfg "notifications" | default list }}
{{- range $i, $n := .Values.notifications }}
{{- $entry := dict "url_file" (printf "%s/notifications/%d/url" (include "retagd.secretsDir" $) $i) }}
{{- with $n.format }}{{ $_ = set $entry "format" . }}{{ end }}
{{- with $n.events }}{{ $_ = set $entry "events" . }}{{ end }}
{{- $notifications = append $notifications $entry }}
{{- end }}
{{- $_ = set $cfg "notifications" $notifications }}
{{- end }}
{{- toYaml $cfg }}
{{- end }}

{{/* Environment overrides for an existing ConfigMap: the chart-owned keys it cannot write into
the file. RETAGD_* names are lower-cased by retagd, and `__` separates levels, so only registry
names of lower-case letters, digits, `-` and `_` can be addressed this way. */}}
{{- define "retagd.envOverrides" -}}
- name: RETAGD_SERVER__LISTEN
  value: {{ printf "0.0.0.0:%s" (include "retagd.containerPort" .) | quote }}
- name: RETAGD_SERVER__STATE_DIR
  value: {{ include "retagd.stateDir" . | quote }}
{{- if .Values.apiToken.existingSecret }}
- name: RETAGD_SERVER__API_TOKEN_FILE
  value: {{ include "retagd.apiTokenFile" . | quote }}
{{- end }}
{{- if .Values.webhooks.existingSecret }}
- name: RETAGD_WEBHOOKS__SECRET_FILE
  value: {{ include "retagd.webhookSecretFile" . | quote }}
{{- end }}
{{- range $name, $_ := .Values.registryCredentials.passwordSecrets }}
{{- include "retagd.envRegistryName" $name }}
- name: {{ printf "RETAGD_REGISTRIES__%s__PASSWORD_FILE" (upper $name) }}
  value: {{ printf "%s/registries/%s/password" (include "retagd.secretsDir" $) $name | quote }}
{{- end }}
{{- range (include "retagd.dockerConfigRegistries" . | fromJsonArray) }}
{{- include "retagd.envRegistryName" . }}
- name: {{ printf "RETAGD_REGISTRIES__%s__DOCKER_CONFIG" (upper .) }}
  value: {{ printf "%s/config.json" (include "retagd.dockerConfigDir" $) | quote }}
{{- end }}
{{- end }}

{{- define "retagd.envRegistryName" -}}
{{- if not (regexMatch "^[a-z0-9]([a-z0-9-]|_[a-z0-9-])*$" .) }}
{{- fail (printf "registry %q: with existingConfigMap the chart sets credential paths through RETAGD_REGISTRIES__NAME__* variables, which only reach names of lower-case letters, digits, '-' and single '_'; write its password_file / docker_config in the ConfigMap instead" .) }}
{{- end }}
{{- end }}

{{/* A humantime duration (`30s`, `5m`, `1h30m`, `2 hours`) in whole seconds. */}}
{{- define "retagd.seconds" -}}
{{- $text := . | toString | trim }}
{{- $units := dict "ms" 0 "msec" 0 "s" 1 "sec" 1 "secs" 1 "second" 1 "seconds" 1 "m" 60 "min" 60 "mins" 60 "minute" 60 "minutes" 60 "h" 3600 "hr" 3600 "hrs" 3600 "hour" 3600 "hours" 3600 "d" 86400 "day" 86400 "days" 86400 "w" 604800 "week" 604800 "weeks" 604800 }}
{{- $parts := regexFindAll "[0-9]+ *[a-z]+" $text -1 }}
{{- if or (not $parts) (ne (join "" $parts | nospace) ($text | nospace)) }}
{{- fail (printf "cannot read the duration %q (write e.g. 30s, 5m, 1h30m)" $text) }}
{{- end }}
{{- $total := 0 }}
{{- range $parts }}
{{- $number := regexFind "^[0-9]+" . }}
{{- $unit := trimPrefix $number . | trim }}
{{- if not (hasKey $units $unit) }}
{{- fail (printf "cannot read the duration %q: unknown unit %q (write e.g. 30s, 5m, 1h30m)" $text $unit) }}
{{- end }}
{{- $total = add $total (mul (atoi $number) (get $units $unit)) }}
{{- end }}
{{- $total }}
{{- end }}

{{/* The interval the not-reconciled alert measures in: the value, else the longest interval
of the configuration. */}}
{{- define "retagd.alertIntervalSeconds" -}}
{{- $rule := .Values.prometheusRule.notReconciled }}
{{- if $rule.interval }}
{{- include "retagd.seconds" $rule.interval }}
{{- else if .Values.existingConfigMap.name -}}
60
{{- else }}
{{- $cfg := .Values.config | default dict }}
{{- $longest := include "retagd.seconds" (($cfg.defaults | default dict).interval | default "1m") | int }}
{{- range $cfg.pipelines }}
{{- with .interval }}
{{- $longest = max $longest (include "retagd.seconds" . | int) }}
{{- end }}
{{- end }}
{{- $longest }}
{{- end }}
{{- end }}

{{/* The daemon's environment, shared with the check-config init container. */}}
{{- define "retagd.env" -}}
env:
  - name: RETAGD_LOG
    value: {{ .Values.logLevel | quote }}
  {{- if .Values.registryCredentials.existingDockerConfigSecret }}
  - name: DOCKER_CONFIG
    value: {{ include "retagd.dockerConfigDir" . | quote }}
  {{- end }}
  {{- if .Values.existingConfigMap.name }}
  {{- include "retagd.envOverrides" . | nindent 2 }}
  {{- end }}
  {{- with .Values.extraEnv }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}

{{/* The daemon's mounts (configuration, state, every Secret), shared with check-config. */}}
{{- define "retagd.volumeMounts" -}}
volumeMounts:
  - name: config
    mountPath: {{ include "retagd.configDir" . }}
    readOnly: true
  - name: state
    mountPath: {{ include "retagd.stateDir" . }}
  - name: tmp
    mountPath: /tmp
  {{- if .Values.registryCredentials.existingDockerConfigSecret }}
  - name: docker-config
    mountPath: {{ include "retagd.dockerConfigDir" . }}
    readOnly: true
  {{- end }}
  {{- $i := 0 }}
  {{- range $name, $_ := .Values.registryCredentials.passwordSecrets }}
  - name: {{ printf "registry-password-%d" $i }}
    mountPath: {{ printf "%s/registries/%s" (include "retagd.secretsDir" $) $name }}
    readOnly: true
  {{- $i = add1 $i }}
  {{- end }}
  {{- if .Values.apiToken.existingSecret }}
  - name: api-token
    mountPath: {{ include "retagd.apiTokenFile" . | dir }}
    readOnly: true
  {{- end }}
  {{- range $i, $_ := .Values.approvers }}
  - name: {{ printf "approver-token-%d" $i }}
    mountPath: {{ printf "%s/approvers/%d" (include "retagd.secretsDir" $) $i }}
    readOnly: true
  {{- end }}
  {{- if .Values.webhooks.existingSecret }}
  - name: webhook-secret
    mountPath: {{ include "retagd.webhookSecretFile" . | dir }}
    readOnly: true
  {{- end }}
  {{- range $i, $_ := .Values.notifications }}
  - name: {{ printf "notification-url-%d" $i }}
    mountPath: {{ printf "%s/notifications/%d" (include "retagd.secretsDir" $) $i }}
    readOnly: true
  {{- end }}
  {{- with .Values.extraVolumeMounts }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}
