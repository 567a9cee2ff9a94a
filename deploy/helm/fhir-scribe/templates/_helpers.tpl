{{/* Names: <release>-fhir-scribe unless the release already says fhir-scribe; 63 chars is the DNS label limit. */}}
{{- define "fhir-scribe.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "fhir-scribe.fullname" -}}
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

{{- define "fhir-scribe.selectorLabels" -}}
app.kubernetes.io/name: {{ include "fhir-scribe.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "fhir-scribe.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "fhir-scribe.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "fhir-scribe.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "fhir-scribe.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret this chart creates from values (only for the parts that name no existingSecret). */}}
{{- define "fhir-scribe.secretName" -}}
{{- include "fhir-scribe.fullname" . }}
{{- end }}

{{/* image: repository@digest when a digest is pinned (immutable), else repository:tag (tag defaults to appVersion). */}}
{{- define "fhir-scribe.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The fewest replicas that will run: what decides whether a PodDisruptionBudget can allow an eviction. */}}
{{- define "fhir-scribe.minReplicas" -}}
{{- if .Values.keda.enabled }}{{ .Values.keda.minReplicaCount }}
{{- else if .Values.autoscaling.enabled }}{{ .Values.autoscaling.minReplicas }}
{{- else }}{{ .Values.replicaCount }}{{ end }}
{{- end }}

{{/* Which secret parts are on, and where each one comes from. */}}
{{- define "fhir-scribe.smartAppOn" -}}
{{- if or .Values.smartApp.sessionKeys .Values.smartApp.existingSecret }}true{{ end }}
{{- end }}
{{- define "fhir-scribe.backendServicesOn" -}}
{{- if .Values.backendServices.clientId }}true{{ end }}
{{- end }}
{{- define "fhir-scribe.subscriptionsOn" -}}
{{- if or .Values.subscriptions.secret .Values.subscriptions.existingSecret }}true{{ end }}
{{- end }}
{{- define "fhir-scribe.chartSecretNeeded" -}}
{{- if or (and .Values.smartApp.sessionKeys (not .Values.smartApp.existingSecret))
          (and .Values.backendServices.privateKey (not .Values.backendServices.existingSecret))
          (and .Values.subscriptions.secret (not .Values.subscriptions.existingSecret)) }}true{{ end }}
{{- end }}

{{/* Probes speak HTTPS when the service terminates TLS itself. */}}
{{- define "fhir-scribe.probeScheme" -}}
{{- if .Values.tls.enabled }}HTTPS{{ else }}HTTP{{ end }}
{{- end }}
