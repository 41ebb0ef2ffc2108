{{/* Names ------------------------------------------------------------------------------ */}}
{{- define "gatekeeper.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "gatekeeper.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "gatekeeper.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "gatekeeper.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "gatekeeper.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "gatekeeper.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "gatekeeper.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gatekeeper.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "gatekeeper.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "gatekeeper.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "gatekeeper.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/* The OPA sidecar image, pinned by digest when one is given. */}}
{{- define "gatekeeper.opaImage" -}}
{{- $opa := .Values.opa.image -}}
{{- if $opa.digest -}}
{{- printf "%s:%s@%s" $opa.repository $opa.tag $opa.digest -}}
{{- else -}}
{{- printf "%s:%s" $opa.repository $opa.tag -}}
{{- end -}}
{{- end -}}

{{- define "gatekeeper.tlsSecretName" -}}
{{- default (printf "%s-tls" (include "gatekeeper.fullname" .)) .Values.tls.secretName -}}
{{- end -}}

{{- define "gatekeeper.databaseSecretName" -}}
{{- default (printf "%s-database" (include "gatekeeper.fullname" .)) .Values.database.existingSecret -}}
{{- end -}}

{{- define "gatekeeper.policiesConfigMapName" -}}
{{- default (printf "%s-policies" (include "gatekeeper.fullname" .)) .Values.policies.existingConfigMap -}}
{{- end -}}

{{- define "gatekeeper.hasPolicies" -}}
{{- if or .Values.policies.files .Values.policies.existingConfigMap -}}true{{- end -}}
{{- end -}}

{{/* The service DNS names the serving certificate must carry. */}}
{{- define "gatekeeper.dnsNames" -}}
{{- $svc := include "gatekeeper.fullname" . -}}
{{- list $svc (printf "%s.%s" $svc .Release.Namespace) (printf "%s.%s.svc" $svc .Release.Namespace) (printf "%s.%s.svc.cluster.local" $svc .Release.Namespace) | toJson -}}
{{- end -}}

{{/* Namespaces never sent to the webhooks: the release namespace, kube-system, configured. */}}
{{- define "gatekeeper.excludedNamespaces" -}}
{{- $all := concat (list .Release.Namespace "kube-system") .Values.admission.excludedNamespaces | uniq -}}
{{- toJson $all -}}
{{- end -}}

{{/*
The webhook entries, shared by the validating and the mutating configuration.
Called with (dict "root" $ "kind" "validate"|"mutate" "caBundle" "<b64 or empty>").
One entry per mode: the API server matches the namespace label gatekeeper.forge.dev/mode and
calls the path of that mode, so the gatekeeper learns the mode without reading namespaces.
*/}}
{{- define "gatekeeper.webhooks" -}}
{{- $root := .root -}}
{{- $kind := .kind -}}
{{- $modes := list "" -}}
{{- if $root.Values.admission.labelledModes -}}
{{- $modes = list "" "warn" "audit" -}}
{{- end -}}
{{- range $mode := $modes }}
- name: {{ if $mode }}{{ $kind }}-{{ $mode }}{{ else }}{{ $kind }}{{ end }}.gatekeeper.forge.dev
  admissionReviewVersions: ["v1"]
  # A dry run is decided like any request; its record is flagged dry_run (or not written,
  # admission.recordDryRun=false): no side effect a dry run must avoid.
  sideEffects: NoneOnDryRun
  failurePolicy: {{ $root.Values.admission.failurePolicy }}
  matchPolicy: Equivalent
  timeoutSeconds: {{ $root.Values.admission.timeoutSeconds }}
  {{- if eq $kind "mutate" }}
  reinvocationPolicy: {{ $root.Values.admission.mutating.reinvocationPolicy }}
  {{- end }}
  clientConfig:
    {{- if $root.Values.admission.url }}
    url: {{ printf "%s/admission/%s%s" (trimSuffix "/" $root.Values.admission.url) $kind (ternary (printf "/%s" $mode) "" (ne $mode "")) | quote }}
    {{- else }}
    service:
      name: {{ include "gatekeeper.fullname" $root }}
      namespace: {{ $root.Release.Namespace }}
      path: /admission/{{ $kind }}{{ if $mode }}/{{ $mode }}{{ end }}
      port: {{ $root.Values.service.port }}
    {{- end }}
    {{- if $.caBundle }}
    caBundle: {{ $.caBundle }}
    {{- end }}
  namespaceSelector:
    matchExpressions:
      - key: kubernetes.io/metadata.name
        operator: NotIn
        values: {{ include "gatekeeper.excludedNamespaces" $root }}
      {{- if not $root.Values.admission.labelledModes }}
      {{- else if $mode }}
      - key: gatekeeper.forge.dev/mode
        operator: In
        values: [{{ $mode | quote }}]
      {{- else }}
      - key: gatekeeper.forge.dev/mode
        operator: NotIn
        values: ["warn", "audit"]
      {{- end }}
  {{- with $root.Values.admission.objectSelector }}
  objectSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  rules:
    - operations: ["CREATE", "UPDATE"]
      apiGroups: [""]
      apiVersions: ["v1"]
      resources: ["pods", "pods/ephemeralcontainers", "replicationcontrollers", "podtemplates"]
      scope: Namespaced
    - operations: ["CREATE", "UPDATE"]
      apiGroups: ["apps"]
      apiVersions: ["v1"]
      resources: ["deployments", "replicasets", "statefulsets", "daemonsets"]
      scope: Namespaced
    - operations: ["CREATE", "UPDATE"]
      apiGroups: ["batch"]
      apiVersions: ["v1"]
      resources: ["jobs", "cronjobs"]
      scope: Namespaced
    {{- range $root.Values.admission.extraRules }}
    - operations: ["CREATE", "UPDATE"]
      apiGroups: {{ toJson .apiGroups }}
      apiVersions: {{ toJson (default (list "*") .apiVersions) }}
      resources: {{ toJson .resources }}
      scope: Namespaced
    {{- end }}
{{- end }}
{{- end -}}

{{/*
Checks that fail the render with a clear message (included by the Deployment). A gatekeeper
without a token verification key refuses to start; an OPA sidecar without a bundle token never
loads the policies, so every decision would be a deny.
*/}}
{{- define "gatekeeper.validate" -}}
{{- $auth := .Values.auth -}}
{{- if or (not $auth.existingSecret) (not (or $auth.hs256SecretKey $auth.jwksKey $auth.publicKeyKeys)) -}}
{{- fail "auth is required: set auth.existingSecret (a Secret in the release namespace) and at least one of auth.hs256SecretKey, auth.jwksKey or auth.publicKeyKeys; the gatekeeper refuses to start without a token verification key, and this chart cannot turn authentication off" -}}
{{- end -}}
{{- if not .Values.opa.bundleTokenSecret.name -}}
{{- fail "opa.bundleTokenSecret.name is required: a Secret holding a JWT with the role auditor, which the OPA sidecar presents to load the active policies (GET /v1/policies/bundle); without it every decision is a deny" -}}
{{- end -}}
{{- if gt (int .Values.opa.bundlePolling.minDelaySeconds) (int .Values.opa.bundlePolling.maxDelaySeconds) -}}
{{- fail "opa.bundlePolling.minDelaySeconds must not exceed opa.bundlePolling.maxDelaySeconds" -}}
{{- end -}}
{{- if and .Values.policies.archiveKey (not .Values.policies.existingConfigMap) -}}
{{- fail "policies.archiveKey names a key of policies.existingConfigMap: set policies.existingConfigMap too" -}}
{{- end -}}
{{- end -}}

{{/* The name the serving certificate carries and that resolves to 127.0.0.1 inside the pod
(hostAliases): the OPA sidecar reaches its own gatekeeper over loopback and still verifies TLS. */}}
{{- define "gatekeeper.loopbackHost" -}}
{{- printf "%s.%s.svc" (include "gatekeeper.fullname" .) .Release.Namespace -}}
{{- end -}}

{{- define "gatekeeper.opaConfigName" -}}
{{- printf "%s-opa-config" (include "gatekeeper.fullname" .) -}}
{{- end -}}
