{{/* Common labels. */}}
{{- define "cni-genie.labels" -}}
app.kubernetes.io/name: cni-genie
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}

{{- define "cni-genie.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag }}
{{- end }}
