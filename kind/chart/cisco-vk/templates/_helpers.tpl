{{/* Chart name and release-scoped names. */}}
{{- define "cisco-vk.fullname" -}}
{{- printf "%s-cisco-vk" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "cisco-vk.serviceAccountName" -}}
{{- if .Values.serviceAccount.name -}}
{{- .Values.serviceAccount.name -}}
{{- else -}}
{{- include "cisco-vk.fullname" . -}}
{{- end -}}
{{- end -}}

{{- define "cisco-vk.labels" -}}
app.kubernetes.io/name: cvk-controller
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: cisco-vk
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "cisco-vk.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Either mutation gate on: an old and a new pod must never overlap. */}}
{{- define "cisco-vk.mutating" -}}
{{- if or .Values.gnoi.enableWriteClass .Values.gnoi.enableSoftwareUpgrade -}}true{{- end -}}
{{- end -}}

{{/*
The specification's gnoi.* values as the environment variables of every
controller pod. Booleans render as "1" only when set, so an unset value
leaves the controller's default (off) in place.
*/}}
{{- define "cisco-vk.gnoiEnv" -}}
{{- if .Values.gnoi.insecure }}
- name: CISCO_VK_GNOI_INSECURE
  value: "1"
{{- end }}
{{- if .Values.gnoi.port }}
{{- $port := int .Values.gnoi.port }}
{{- if or (lt $port 1) (gt $port 65535) }}
{{- fail (printf "gnoi.port: %v is not a TCP port (1-65535)" .Values.gnoi.port) }}
{{- end }}
- name: CISCO_VK_GNOI_PORT
  value: {{ $port | quote }}
{{- end }}
{{- if .Values.gnoi.disabled }}
- name: CISCO_VK_GNOI_DISABLED
  value: "1"
{{- end }}
{{- if .Values.gnoi.enableSoftwareUpgrade }}
- name: CISCO_VK_ENABLE_IOSXE_SOFTWARE_UPGRADE
  value: "1"
{{- end }}
{{- if .Values.gnoi.enableWriteClass }}
- name: CISCO_VK_ENABLE_WRITE_CLASS_GNOI
  value: "1"
{{- end }}
{{- with .Values.gnoi.softwareUpgrade.maxImageBytes }}
{{- /* int64: YAML/JSON numbers arrive as float64 and would print as 1.073741824e+09. */}}
{{- $max := int64 . }}
{{- if le $max 0 }}
{{- fail (printf "gnoi.softwareUpgrade.maxImageBytes: %v is not a positive byte count" .) }}
{{- end }}
- name: CISCO_VK_UPGRADE_MAX_IMAGE_BYTES
  value: {{ $max | toString | quote }}
{{- end }}
{{- with .Values.opsPolicy.configDiffAllowedNamespaces }}
- name: CVK_OPS_CONFIGDIFF_ALLOWED_NAMESPACES
  value: {{ join "," . | quote }}
{{- end }}
{{- $cliTimeout := int64 .Values.cli.commandTimeoutSeconds }}
{{- if le $cliTimeout 0 }}
{{- fail (printf "cli.commandTimeoutSeconds: %v is not a positive number of seconds" .Values.cli.commandTimeoutSeconds) }}
{{- end }}
- name: CVK_CLI_COMMAND_TIMEOUT_SECONDS
  value: {{ $cliTimeout | toString | quote }}
{{- with .Values.leaseNamespace }}
- name: CONFIG_LEASE_NAMESPACE
  value: {{ . | quote }}
{{- end }}
- name: LOG_LEVEL
  value: {{ .Values.manager.logLevel | quote }}
- name: CVK_LOG_FORMAT
  value: {{ .Values.manager.logFormat | quote }}
- name: CVK_METRICS_BIND_ADDRESS
  value: {{ include "cisco-vk.bindAddress" .Values.manager.metricsBindAddress | quote }}
- name: CVK_HEALTH_PROBE_BIND_ADDRESS
  value: {{ include "cisco-vk.bindAddress" .Values.manager.healthProbeBindAddress | quote }}
- name: CVK_DEVICE_PROBE_INTERVAL_SECONDS
  value: {{ .Values.manager.probeIntervalSeconds | int64 | toString | quote }}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* ":8080" (the upstream spelling) becomes "0.0.0.0:8080". */}}
{{- define "cisco-vk.bindAddress" -}}
{{- if hasPrefix ":" . -}}0.0.0.0{{ . }}{{- else -}}{{ . }}{{- end -}}
{{- end -}}

{{- define "cisco-vk.port" -}}
{{- . | splitList ":" | last -}}
{{- end -}}

{{/* The pod spec shared by the central and the per-device Deployments. */}}
{{- define "cisco-vk.podSpec" -}}
{{- $root := .root -}}
serviceAccountName: {{ include "cisco-vk.serviceAccountName" $root }}
{{- with $root.Values.imagePullSecrets }}
imagePullSecrets:
{{ toYaml . }}
{{- end }}
securityContext:
{{ toYaml $root.Values.podSecurityContext | indent 2 }}
containers:
  - name: controller
    image: {{ include "cisco-vk.image" $root | quote }}
    imagePullPolicy: {{ $root.Values.image.pullPolicy }}
    args:
{{ toYaml .args | indent 6 }}
    env:
{{- include "cisco-vk.gnoiEnv" $root | nindent 6 }}
{{- range $k, $v := .env }}
      - name: {{ $k }}
        value: {{ $v | quote }}
{{- end }}
    ports:
      - name: metrics
        containerPort: {{ include "cisco-vk.port" $root.Values.manager.metricsBindAddress }}
      - name: health
        containerPort: {{ include "cisco-vk.port" $root.Values.manager.healthProbeBindAddress }}
    livenessProbe:
      httpGet:
        path: /healthz
        port: health
      periodSeconds: 20
    readinessProbe:
      httpGet:
        path: /readyz
        port: health
      periodSeconds: 5
    resources:
{{ toYaml $root.Values.resources | indent 6 }}
    securityContext:
{{ toYaml $root.Values.securityContext | indent 6 }}
    volumeMounts:
      - name: tmp
        mountPath: /tmp
volumes:
  - name: tmp
    emptyDir: {}
{{- with $root.Values.nodeSelector }}
nodeSelector:
{{ toYaml . | indent 2 }}
{{- end }}
{{- with $root.Values.tolerations }}
tolerations:
{{ toYaml . | indent 2 }}
{{- end }}
{{- with $root.Values.affinity }}
affinity:
{{ toYaml . | indent 2 }}
{{- end }}
{{- end -}}
