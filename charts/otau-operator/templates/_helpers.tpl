{{/*
The chart name, or nameOverride.
*/}}
{{- define "otau-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The prefix of every resource name: fullnameOverride, else the release name when it already
holds the chart name, else <release>-<chart>. At most 63 characters (a DNS label).
*/}}
{{- define "otau-operator.fullname" -}}
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

{{/*
Labels on every resource.
*/}}
{{- define "otau-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "otau-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: otau-operator
{{- end }}

{{/*
The labels that select the operator's pods.
*/}}
{{- define "otau-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "otau-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The ServiceAccount the operator runs as.
*/}}
{{- define "otau-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "otau-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false (name an existing ServiceAccount)" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The image reference: repository:tag, the tag defaulting to the chart's appVersion.
*/}}
{{- define "otau-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
The namespaces watched without watchAllNamespaces, as a JSON array: watchNamespaces, or the
release namespace when it is empty.
*/}}
{{- define "otau-operator.watchedNamespaces" -}}
{{- if .Values.watchNamespaces }}
{{- toJson .Values.watchNamespaces }}
{{- else }}
{{- list .Release.Namespace | toJson }}
{{- end }}
{{- end }}

{{/*
A size value as written (a whole number, or one with a Ki, Mi, Gi, Ti, k, M, G or T suffix, as
the schema allows), as text: a number from a values file arrives as a float and is printed as a
whole number.
*/}}
{{- define "otau-operator.size" -}}
{{- if kindIs "float64" . }}{{ int64 . }}{{ else }}{{ toString . }}{{ end }}
{{- end }}

{{/*
A size value in bytes, as text.
*/}}
{{- define "otau-operator.bytes" -}}
{{- $text := include "otau-operator.size" . }}
{{- $number := regexFind "^[0-9]+" $text | atoi }}
{{- $factors := dict "" 1 "Ki" 1024 "Mi" 1048576 "Gi" 1073741824 "Ti" 1099511627776 "k" 1000 "M" 1000000 "G" 1000000000 "T" 1000000000000 }}
{{- mul $number (get $factors (regexFind "[A-Za-z]*$" $text)) }}
{{- end }}

{{/*
Checks of value combinations the schema cannot express; each fails with what to change.
*/}}
{{- define "otau-operator.validate" -}}
{{- if and (not .Values.leaderElection.enabled) (gt (int .Values.replicas) 1) }}
{{- fail "replicas must be 1 when leaderElection.enabled is false: without a Lease two replicas would both start waves on the devices" }}
{{- end }}
{{- if and .Values.webhook.ingress.enabled (not .Values.webhook.enabled) }}
{{- fail "webhook.ingress.enabled needs webhook.enabled: the Ingress would point at a receiver that does not run" }}
{{- end }}
{{- if and .Values.watchAllNamespaces .Values.watchNamespaces }}
{{- fail "watchNamespaces and watchAllNamespaces exclude each other: list namespaces, or watch all of them" }}
{{- end }}
{{- $workDir := include "otau-operator.bytes" .Values.workDir.sizeLimit | atoi }}
{{- $perFile := include "otau-operator.bytes" .Values.operator.maxFileBytes | atoi }}
{{- $needed := mul $perFile (int .Values.operator.uploadConcurrency) }}
{{- if lt $workDir $needed }}
{{- fail (printf "workDir.sizeLimit (%s = %d bytes) is smaller than operator.maxFileBytes (%s) × operator.uploadConcurrency (%d) = %d bytes: raise workDir.sizeLimit, or lower maxFileBytes or uploadConcurrency" (include "otau-operator.size" .Values.workDir.sizeLimit) $workDir .Values.operator.maxFileBytes (int .Values.operator.uploadConcurrency) $needed) }}
{{- end }}
{{- if .Values.networkPolicy.enabled }}
{{- if not .Values.networkPolicy.apiServer.cidrs }}
{{- fail "networkPolicy.apiServer.cidrs is required when networkPolicy.enabled is true: list the apiserver endpoint addresses (kubectl get endpointslices -n default -l kubernetes.io/service-name=kubernetes)" }}
{{- end }}
{{- if not .Values.networkPolicy.exosite.cidrs }}
{{- fail "networkPolicy.exosite.cidrs is required when networkPolicy.enabled is true: list the addresses of your Exosite endpoints, or the operator cannot reach the platform" }}
{{- end }}
{{- end }}
{{- end }}
