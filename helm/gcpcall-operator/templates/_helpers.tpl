{{/* Names and labels shared by every template. */}}

{{- define "gcpcall.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "gcpcall.fullname" -}}
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

{{- define "gcpcall.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gcpcall.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The operator's pods (the relay's pods, when it runs as its own Deployment, are
"relay"): a selector of one never matches the other. */}}
{{- define "gcpcall.operatorSelectorLabels" -}}
{{ include "gcpcall.selectorLabels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "gcpcall.relaySelectorLabels" -}}
{{ include "gcpcall.selectorLabels" . }}
app.kubernetes.io/component: relay
{{- end }}

{{/* The relay as its own Deployment (relay.deployment.enabled), or inside the operator. */}}
{{- define "gcpcall.relayDeployment" -}}
{{- if and .Values.relay.enabled .Values.relay.deployment.enabled }}true{{ end }}
{{- end }}

{{/* The pods that serve the relay port. */}}
{{- define "gcpcall.relayPodSelectorLabels" -}}
{{- if include "gcpcall.relayDeployment" . }}
{{- include "gcpcall.relaySelectorLabels" . }}
{{- else }}
{{- include "gcpcall.operatorSelectorLabels" . }}
{{- end }}
{{- end }}

{{- define "gcpcall.relayUrl" -}}
{{- required "relay.url is required when relay.enabled: the relay's public https URL" .Values.relay.url }}
{{- end }}

{{- define "gcpcall.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "gcpcall.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: gcpcall-operator
{{- end }}

{{- define "gcpcall.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "gcpcall.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "gcpcall.clusterName" -}}
{{- required "clusterName is required: the name of this cluster in Cloud Scheduler job ids (unique per Google project and location)" .Values.clusterName }}
{{- end }}

{{/* Leader election on a Lease: on when replicaCount > 1 (or leaderElection.enabled). */}}
{{- define "gcpcall.leaderElection" -}}
{{- if or (gt (int .Values.replicaCount) 1) .Values.leaderElection.enabled }}true{{ end }}
{{- end }}

{{- define "gcpcall.leaseName" -}}
{{- include "gcpcall.fullname" . }}
{{- end }}

{{- define "gcpcall.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
The settings both the operator and the relay read (GCPCALL_*), as a container's env list.
Called with (dict "root" $ "relayPort" N): N is the relay's port in this container, 0 for
none (the operator, when the relay runs as its own Deployment: it still needs the relay
URL, which it points Relay jobs and tasks at).
*/}}
{{- define "gcpcall.env" -}}
{{- $v := .root.Values -}}
- name: GCPCALL_CLUSTER_NAME
  value: {{ include "gcpcall.clusterName" .root | quote }}
- name: GCPCALL_IDENTITY_MODE
  value: {{ $v.identity.mode | quote }}
- name: GCPCALL_LOG_FORMAT
  value: {{ $v.logFormat | quote }}
{{- with $v.gcp.project }}
- name: GCPCALL_PROJECT
  value: {{ . | quote }}
{{- end }}
{{- with $v.gcp.location }}
- name: GCPCALL_LOCATION
  value: {{ . | quote }}
{{- end }}
{{- with $v.identity.defaultServiceAccountName }}
- name: GCPCALL_SERVICE_ACCOUNT
  value: {{ . | quote }}
{{- end }}
{{- with $v.identity.workloadPool }}
- name: GCPCALL_WORKLOAD_POOL
  value: {{ . | quote }}
{{- end }}
{{- with $v.identity.clusterUrl }}
- name: GCPCALL_CLUSTER_URL
  value: {{ . | quote }}
{{- end }}
{{- with $v.identity.stsAudience }}
- name: GCPCALL_STS_AUDIENCE
  value: {{ . | quote }}
{{- end }}
{{- with $v.identity.impersonationDelegates }}
- name: GCPCALL_IMPERSONATION_DELEGATES
  value: {{ join "," . | quote }}
{{- end }}
{{- if $v.relay.enabled }}
- name: GCPCALL_RELAY_URL
  value: {{ include "gcpcall.relayUrl" .root | quote }}
- name: GCPCALL_RELAY_PORT
  value: {{ .relayPort | quote }}
{{- if .relayPort }}
{{- with $v.relay.address }}
- name: GCPCALL_RELAY_ADDRESS
  value: {{ . | quote }}
{{- end }}
{{- with $v.relay.oidc.certsUrl }}
- name: GCPCALL_OIDC_CERTS_URL
  value: {{ . | quote }}
{{- end }}
{{- with $v.relay.oidc.issuer }}
- name: GCPCALL_OIDC_ISSUER
  value: {{ . | quote }}
{{- end }}
{{- end }}
{{- end }}
- name: PYTHONUNBUFFERED
  value: "1"
{{- with $v.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}
