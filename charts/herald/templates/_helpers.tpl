{{/* Full name of the release's objects, at most 63 characters. */}}
{{- define "herald.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "herald.ccm.name" -}}
{{- printf "%s-ccm" (include "herald.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels every object of the release carries. */}}
{{- define "herald.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels of herald-ccm's pods; never change them in an upgrade. */}}
{{- define "herald.ccm.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: ccm
{{- end -}}

{{- define "herald.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "herald.ccm.name" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The lease herald-ccm's replicas elect a leader with. */}}
{{- define "herald.ccm.leaseName" -}}
{{- include "herald.ccm.name" . -}}
{{- end -}}

{{- define "herald.agent.name" -}}
{{- printf "%s-agent" (include "herald.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Selector labels of herald-agent's pods; never change them in an upgrade. */}}
{{- define "herald.agent.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: agent
{{- end -}}

{{- define "herald.agent.serviceAccountName" -}}
{{- if .Values.agent.serviceAccount.create -}}
{{- default (include "herald.agent.name" .) .Values.agent.serviceAccount.name -}}
{{- else -}}
{{- required "agent.serviceAccount.name is required when agent.serviceAccount.create is false" .Values.agent.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* host:port, with brackets around an IPv6 host. */}}
{{- define "herald.hostPort" -}}
{{- if contains ":" .host -}}
[{{ .host }}]:{{ .port }}
{{- else -}}
{{ .host }}:{{ .port }}
{{- end -}}
{{- end -}}

{{/* The --cloud-config file: the backend and its section only. */}}
{{- define "herald.cloudConfig" -}}
{{- $c := .Values.cloudConfig -}}
{{- $out := dict "backend" $c.backend -}}
{{- if and (eq $c.backend "bare-metal") $c.bareMetal -}}
{{- $_ := set $out "bareMetal" $c.bareMetal -}}
{{- end -}}
{{- if and (eq $c.backend "aws") $c.aws -}}
{{- $_ := set $out "aws" $c.aws -}}
{{- end -}}
{{- toYaml $out -}}
{{- end -}}

{{/* Whether herald-ccm runs a controller that writes Nodes. */}}
{{- define "herald.ccm.nodeControllers" -}}
{{- if or (has "cloud-node" .Values.ccm.controllers) (has "cloud-node-lifecycle" .Values.ccm.controllers) -}}
true
{{- end -}}
{{- end -}}

{{/* Labels that pick one component's objects of this release (a
     ServiceMonitor's Service selector). */}}
{{- define "herald.labels.component" -}}
app.kubernetes.io/name: {{ .ctx.Chart.Name }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}
