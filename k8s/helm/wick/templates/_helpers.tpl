{{/* Every object is named wick: the alerts and the KEDA query refer to it by that name. */}}
{{- define "wick.name" -}}wick{{- end }}

{{- define "wick.labels" -}}
app.kubernetes.io/name: wick
app.kubernetes.io/part-of: wick
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{/* The pods' labels: the same as the kustomize base's selectors. */}}
{{- define "wick.selectorLabels" -}}
app.kubernetes.io/name: wick
app.kubernetes.io/component: server
{{- end }}

{{- define "wick.mode" -}}
{{- $mode := index .Values.modes .Values.mode -}}
{{- if not $mode -}}{{- fail (printf "mode must be one of %s" (keys .Values.modes | sortAlpha | join ", ")) -}}{{- end -}}
{{- toYaml $mode -}}
{{- end }}

{{/* The WICK_* knobs: the mode's, then `config`, then WICK_MODEL for a volume-held model. */}}
{{- define "wick.config" -}}
{{- $mode := include "wick.mode" . | fromYaml -}}
{{- $config := merge (deepCopy .Values.config) $mode.config -}}
{{- if ne .Values.model.source "baked" -}}
{{- $_ := set $config "WICK_MODEL" (printf "/models/%s" .Values.model.name) -}}
{{- end -}}
{{- toYaml $config -}}
{{- end }}

{{- define "wick.resources" -}}
{{- $mode := include "wick.mode" . | fromYaml -}}
{{- toYaml (.Values.resources | default $mode.resources) -}}
{{- end }}

{{- define "wick.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end }}

{{- define "wick.saturationTarget" -}}
{{- $mode := include "wick.mode" . | fromYaml -}}
{{- .Values.autoscaling.saturationTarget | default $mode.saturationTarget -}}
{{- end }}

{{/* The CPU utilization target, or "" for none: autoscaling.cpuUtilization, else the mode's. */}}
{{- define "wick.cpuUtilization" -}}
{{- $mode := include "wick.mode" . | fromYaml -}}
{{- $cpu := .Values.autoscaling.cpuUtilization -}}
{{- if kindIs "invalid" $cpu -}}{{- $cpu = $mode.cpuUtilization -}}{{- end -}}
{{- if $cpu -}}{{- $cpu -}}{{- end -}}
{{- end }}

{{- define "wick.claimName" -}}
{{- .Values.model.pvc.existingClaim | default "wick-models" -}}
{{- end }}

{{- define "wick.securityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
{{- end }}

{{- define "wick.probe" -}}
httpGet:
  path: {{ .path }}
  port: http
periodSeconds: {{ .periodSeconds }}
timeoutSeconds: {{ .timeoutSeconds }}
failureThreshold: {{ .failureThreshold }}
{{- end }}
