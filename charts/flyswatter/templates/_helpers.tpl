{{/* The release's base name: "<release>-flyswatter", or the release name when it says flyswatter already. */}}
{{- define "flyswatter.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "flyswatter.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{ include "flyswatter.selectorLabels" . }}
{{- end -}}

{{/* Selector labels of one component: call with (dict "root" $ "component" "api"). */}}
{{- define "flyswatter.componentLabels" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "flyswatter.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "flyswatter.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/* A variable read from the existing Secret: (dict "root" $ "name" "FLYSWATTER_X" "key" "k" "optional" bool). */}}
{{- define "flyswatter.secretEnv" -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ required "existingSecret names the Secret holding the database URL and the other secrets" .root.Values.existingSecret }}
      key: {{ .key }}
      optional: {{ .optional }}
{{- end -}}

{{/* Every secret setting, from the existing Secret (never from values). */}}
{{- define "flyswatter.secretEnvs" -}}
{{- $keys := .Values.secretKeys -}}
{{ include "flyswatter.secretEnv" (dict "root" . "name" "FLYSWATTER_DATABASE_URL" "key" $keys.databaseUrl "optional" false) }}
{{ include "flyswatter.secretEnv" (dict "root" . "name" "FLYSWATTER_REDIS_URL" "key" $keys.redisUrl "optional" false) }}
{{ include "flyswatter.secretEnv" (dict "root" . "name" "FLYSWATTER_CURSOR_SECRET" "key" $keys.cursorSecret "optional" false) }}
{{ include "flyswatter.secretEnv" (dict "root" . "name" "FLYSWATTER_WEBHOOK_SECRET_KEYS" "key" $keys.webhookSecretKeys "optional" false) }}
{{ include "flyswatter.secretEnv" (dict "root" . "name" "FLYSWATTER_S3_ACCESS_KEY_ID" "key" $keys.s3AccessKeyId "optional" true) }}
{{ include "flyswatter.secretEnv" (dict "root" . "name" "FLYSWATTER_S3_SECRET_ACCESS_KEY" "key" $keys.s3SecretAccessKey "optional" true) }}
{{ include "flyswatter.secretEnv" (dict "root" . "name" "FLYSWATTER_SENTRY_DSN" "key" $keys.sentryDsn "optional" true) }}
{{- end -}}

{{/* Environment of the API, worker and beat containers: settings, secrets, writable paths. */}}
{{- define "flyswatter.env" -}}
envFrom:
  - configMapRef:
      name: {{ include "flyswatter.fullname" . }}-settings
env:
{{ include "flyswatter.secretEnvs" . | indent 2 }}
  - name: PROMETHEUS_MULTIPROC_DIR
    value: /run/prometheus-multiproc
  # matplotlib (report charts) caches fonts in its config directory: on the writable /tmp.
  - name: MPLCONFIGDIR
    value: /tmp/matplotlib
{{- end -}}

{{- define "flyswatter.volumeMounts" -}}
volumeMounts:
  - name: prometheus-multiproc
    mountPath: /run/prometheus-multiproc
  - name: tmp
    mountPath: /tmp
{{- end -}}

{{/* The read-only root filesystem leaves these two writable: the metrics samples in memory, and /tmp. */}}
{{- define "flyswatter.volumes" -}}
volumes:
  - name: prometheus-multiproc
    emptyDir:
      medium: Memory
      sizeLimit: {{ .Values.metricsVolume.sizeLimit }}
  - name: tmp
    emptyDir:
      sizeLimit: {{ .Values.tmpVolume.sizeLimit }}
{{- end -}}

{{/* Pod-level settings every pod of the chart shares. */}}
{{- define "flyswatter.podSpec" -}}
automountServiceAccountToken: false
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* The Deployment's scheduling fields: call with the component's values. */}}
{{- define "flyswatter.scheduling" -}}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
