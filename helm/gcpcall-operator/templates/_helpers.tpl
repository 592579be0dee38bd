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

{{/* The kopf peering object's name; peering is on when replicaCount > 1. */}}
{{- define "gcpcall.peeringName" -}}
{{- include "gcpcall.fullname" . }}
{{- end }}

{{- define "gcpcall.peering" -}}
{{- if gt (int .Values.replicaCount) 1 }}true{{ end }}
{{- end }}

{{- define "gcpcall.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
