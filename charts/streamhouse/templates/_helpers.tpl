{{/*
Names. Kubernetes names are DNS labels: at most 63 characters. The longest
suffix added below is "-controller-headless" (20), so the full name is cut
to 40 to leave room for it and a StatefulSet ordinal.
*/}}
{{- define "streamhouse.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{- define "streamhouse.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "streamhouse.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels on every object. */}}
{{- define "streamhouse.labels" -}}
helm.sh/chart: {{ include "streamhouse.chart" . }}
{{ include "streamhouse.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: streamhouse
{{- end -}}

{{- define "streamhouse.selectorLabels" -}}
app.kubernetes.io/name: {{ include "streamhouse.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/*
Labels of one component: call with (dict "root" $ "component" "agent").
*/}}
{{- define "streamhouse.componentLabels" -}}
{{ include "streamhouse.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "streamhouse.componentSelectorLabels" -}}
{{ include "streamhouse.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "streamhouse.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "streamhouse.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "streamhouse.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* Service names. */}}
{{- define "streamhouse.controllerHeadless" -}}{{ include "streamhouse.fullname" . }}-controller-headless{{- end -}}
{{- define "streamhouse.controllerService" -}}{{ include "streamhouse.fullname" . }}-controller{{- end -}}
{{- define "streamhouse.agentHeadless" -}}{{ include "streamhouse.fullname" . }}-agent-headless{{- end -}}
{{- define "streamhouse.gatewayService" -}}{{ include "streamhouse.fullname" . }}-gateway{{- end -}}

{{/*
Stable DNS name of controller pod i: <fullname>-controller-<i>.<headless>.<ns>.svc.<domain>.
Call with (dict "root" $ "i" 0).
*/}}
{{- define "streamhouse.controllerHost" -}}
{{- printf "%s-controller-%d.%s.%s.svc.%s" (include "streamhouse.fullname" .root) (int .i) (include "streamhouse.controllerHeadless" .root) .root.Release.Namespace .root.Values.clusterDomain -}}
{{- end -}}

{{/* --initial-cluster: id=raft-address for every voter, the same on each. */}}
{{- define "streamhouse.initialCluster" -}}
{{- $root := . -}}
{{- $items := list -}}
{{- range $i := until (int .Values.controller.replicas) -}}
{{- $items = append $items (printf "%s-controller-%d=%s:7000" (include "streamhouse.fullname" $root) $i (include "streamhouse.controllerHost" (dict "root" $root "i" $i))) -}}
{{- end -}}
{{- join "," $items -}}
{{- end -}}

{{/* Controller API addresses (--controllers, shctl --controller). */}}
{{- define "streamhouse.controllerAddrs" -}}
{{- $root := . -}}
{{- $items := list -}}
{{- range $i := until (int .Values.controller.replicas) -}}
{{- $items = append $items (printf "%s:7001" (include "streamhouse.controllerHost" (dict "root" $root "i" $i))) -}}
{{- end -}}
{{- join "," $items -}}
{{- end -}}

{{/* Gossip seeds: every controller's gossip address. */}}
{{- define "streamhouse.seeds" -}}
{{- $root := . -}}
{{- $items := list -}}
{{- range $i := until (int .Values.controller.replicas) -}}
{{- $items = append $items (printf "%s:7946" (include "streamhouse.controllerHost" (dict "root" $root "i" $i))) -}}
{{- end -}}
{{- join "," $items -}}
{{- end -}}

{{/*
Environment every StreamHouse container gets: who it is (downward API), the
shctl defaults (so `kubectl exec ... -- shctl cluster status` needs no flags),
and tracing.
*/}}
{{- define "streamhouse.commonEnv" -}}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: POD_IP
  valueFrom:
    fieldRef:
      fieldPath: status.podIP
- name: STREAMHOUSE_GATEWAY
  value: {{ printf "%s.%s.svc.%s:%d" (include "streamhouse.gatewayService" .root) .root.Release.Namespace .root.Values.clusterDomain (int .root.Values.gateway.service.port) | quote }}
- name: STREAMHOUSE_CONTROLLER
  value: {{ include "streamhouse.controllerAddrs" .root | quote }}
{{- with .root.Values.tracing.otlpEndpoint }}
{{- /* service.name is the binary's own: streamhouse-<component>. */}}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ . | quote }}
- name: OTEL_EXPORTER_OTLP_PROTOCOL
  value: {{ $.root.Values.tracing.protocol | quote }}
- name: OTEL_RESOURCE_ATTRIBUTES
  value: "k8s.namespace.name=$(POD_NAMESPACE),k8s.pod.name=$(POD_NAME)"
{{- end }}
{{- if not (kindIs "invalid" .root.Values.tracing.sampleRatio) }}
- name: STREAMHOUSE_TRACE_SAMPLE_RATIO
  value: {{ .root.Values.tracing.sampleRatio | toString | quote }}
{{- end }}
{{- end -}}

{{/* Zone of an agent or gateway: a fixed value, or the pod's zone label. */}}
{{- define "streamhouse.zoneEnv" -}}
- name: STREAMHOUSE_ZONE
{{- if .Values.zone.value }}
  value: {{ .Values.zone.value | quote }}
{{- else }}
  valueFrom:
    fieldRef:
      fieldPath: metadata.labels['{{ .Values.topologySpread.zoneKey }}']
{{- end }}
{{- end -}}

{{/* Topology spread constraints of one component: (dict "root" $ "component" "agent"). */}}
{{- define "streamhouse.topologySpread" -}}
{{- $ts := .root.Values.topologySpread -}}
{{- if $ts.enabled }}
topologySpreadConstraints:
  - maxSkew: {{ $ts.maxSkew }}
    topologyKey: {{ $ts.zoneKey }}
    whenUnsatisfiable: {{ $ts.whenUnsatisfiable }}
    labelSelector:
      matchLabels:
        {{- include "streamhouse.componentSelectorLabels" . | nindent 8 }}
{{- if $ts.spreadAcrossNodes }}
  - maxSkew: 1
    topologyKey: kubernetes.io/hostname
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        {{- include "streamhouse.componentSelectorLabels" . | nindent 8 }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Scheduling fields shared by the pod templates: (dict "root" $ "c" .Values.agent). */}}
{{- define "streamhouse.scheduling" -}}
{{- with .c.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .c.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .c.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .c.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* The object store's credentials Secret name, if any. */}}
{{- define "streamhouse.s3SecretName" -}}
{{- $c := .Values.objectStore.credentials -}}
{{- if eq $c.source "existingSecret" -}}
{{- $c.existingSecret -}}
{{- else if eq $c.source "secret" -}}
{{- printf "%s-object-store" (include "streamhouse.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* Duration values ("90s", "2m", "1h30m") in whole seconds, for grace periods. */}}
{{- define "streamhouse.seconds" -}}
{{- $d := toString . -}}
{{- $total := 0.0 -}}
{{- range $part := regexFindAll "[0-9.]+(ms|h|m|s)" $d -1 -}}
{{- $n := float64 (regexFind "^[0-9.]+" $part) -}}
{{- $u := regexFind "(ms|h|m|s)$" $part -}}
{{- if eq $u "h" }}{{ $total = addf $total (mulf $n 3600) }}{{ else if eq $u "m" }}{{ $total = addf $total (mulf $n 60) }}{{ else if eq $u "s" }}{{ $total = addf $total $n }}{{ else }}{{ $total = addf $total (divf $n 1000) }}{{ end -}}
{{- end -}}
{{- ceil $total | int -}}
{{- end -}}
