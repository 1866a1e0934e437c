{{/* A Celery worker Deployment: (dict "root" $ "component" "worker"|"beat" "values" ... "replicas" n "beat" bool). */}}
{{- define "flyswatter.workerDeployment" -}}
{{- $root := .root -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "flyswatter.fullname" $root }}-{{ .component }}
  labels:
    {{- include "flyswatter.labels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ .component }}
spec:
  replicas: {{ .replicas }}
  selector:
    matchLabels:
      {{- include "flyswatter.componentLabels" (dict "root" $root "component" .component) | nindent 6 }}
  {{- if .beat }}
  # Never two beats at once, not even during a rollout: the old pod stops before the new starts.
  strategy:
    type: Recreate
  {{- end }}
  template:
    metadata:
      labels:
        {{- include "flyswatter.componentLabels" (dict "root" $root "component" .component) | nindent 8 }}
        # The workers' metrics Service selects worker and beat pods alike.
        flyswatter.io/celery: "true"
      annotations:
        checksum/settings: {{ include (print $root.Template.BasePath "/configmap.yaml") $root | sha256sum }}
    spec:
      {{- include "flyswatter.podSpec" $root | nindent 6 }}
      {{- with include "flyswatter.scheduling" .values }}{{ . | trim | nindent 6 }}{{ end }}
      terminationGracePeriodSeconds: {{ .values.terminationGracePeriodSeconds }}
      containers:
        - name: {{ .component }}
          image: {{ include "flyswatter.image" $root }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          command:
            - flyswatter
            - worker
            {{- if .beat }}
            - --beat
            {{- end }}
            - --concurrency
            - {{ .values.concurrency | quote }}
          ports:
            - name: metrics
              containerPort: 9808
              protocol: TCP
          {{- include "flyswatter.env" $root | nindent 10 }}
          {{- include "flyswatter.volumeMounts" $root | nindent 10 }}
          securityContext:
            {{- toYaml $root.Values.securityContext | nindent 12 }}
          resources:
            {{- toYaml .values.resources | nindent 12 }}
          # The worker's own probe: its main process answers and it holds a broker connection.
          startupProbe:
            httpGet: {path: /healthz, port: metrics}
            periodSeconds: 2
            failureThreshold: 30
          livenessProbe:
            httpGet: {path: /healthz, port: metrics}
            periodSeconds: 15
            timeoutSeconds: 3
            failureThreshold: 4
      {{- include "flyswatter.volumes" $root | nindent 6 }}
{{- end -}}
