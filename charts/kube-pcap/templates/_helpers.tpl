{{/* Labels on every object: deploy/'s own, plus what Helm users expect. */}}
{{- define "kube-pcap.labels" -}}
app.kubernetes.io/part-of: kube-pcap
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{- define "kube-pcap.image" -}}
{{- $tag := .image.tag | default .root.Chart.AppVersion -}}
{{ printf "%s:%s" .image.repository $tag }}
{{- end }}

{{/* The agents' namespace: never the release's (the gateway's), docs/security.md. */}}
{{- define "kube-pcap.agentNamespace" -}}
{{- if or (not .Values.agent.namespace) (eq .Values.agent.namespace .Release.Namespace) -}}
{{- fail "agent.namespace must name a namespace of its own, not the gateway's (whoever may port-forward to the gateway would reach the agents' node network)" -}}
{{- end -}}
{{ .Values.agent.namespace }}
{{- end }}
