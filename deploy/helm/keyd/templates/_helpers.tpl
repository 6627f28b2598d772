{{- define "keyd.name" -}}{{ .Release.Name }}-keyd{{- end -}}
{{- define "keyd.labels" -}}
app.kubernetes.io/name: keyd
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}
{{- define "keyd.selector" -}}
app.kubernetes.io/name: keyd
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
{{- define "keyd.config" -}}
listen: ":8080"
log_level: {{ .Values.config.logLevel }}
{{- with .Values.config.issuerURL }}
issuer_url: {{ . | quote }}
{{- end }}
storage:
{{- if eq .Values.mode "vault" }}
  backend: vault
  vault:
    address: {{ .Values.vault.address | quote }}
    mount: {{ .Values.vault.mount }}
    prefix: {{ .Values.vault.prefix }}
    poll_interval: {{ .Values.vault.pollInterval }}
    auth:
      method: {{ .Values.vault.auth.method }}
      {{- if eq .Values.vault.auth.method "approle" }}
      approle: {role_id: {{ .Values.vault.auth.roleID | quote }}, secret_id_file: /etc/keyd/vault/secret-id}
      {{- else if eq .Values.vault.auth.method "kubernetes" }}
      kubernetes: {role: {{ .Values.vault.auth.kubernetes.role | quote }}, mount: {{ .Values.vault.auth.kubernetes.mount | quote }}, token_file: /var/run/secrets/keyd/vault/token}
      {{- end }}
{{- else }}
  backend: file
  file: {path: /var/lib/keyd/keyd.db}
{{- end }}
{{- with .Values.tokenState.redis }}
{{- if .url }}
  token_state:
    backend: redis
    url: {{ .url | quote }}
    prefix: {{ .prefix | quote }}
    {{- with .username }}
    username: {{ . | quote }}
    {{- end }}
    {{- if .existingSecret }}
    password_file: /etc/keyd/redis/password
    {{- end }}
    {{- if .caSecret }}
    tls_ca_file: /etc/keyd/redis-ca/ca.crt
    {{- end }}
{{- end }}
{{- end }}
keysets:
{{ toYaml .Values.config.keysets | indent 2 }}
auth:
{{ toYaml .Values.config.auth | indent 2 }}
audit:
{{ toYaml (merge (dict "key_file" "/etc/keyd/audit/audit.key") .Values.config.audit) | indent 2 }}
{{- if .Values.tls.existingSecret }}
tls:
  cert_file: /etc/keyd/tls/tls.crt
  key_file: /etc/keyd/tls/tls.key
  {{- if .Values.tls.clientCASecret }}
  client_ca_file: /etc/keyd/client-ca/ca.crt
  {{- end }}
{{- end }}
{{- with .Values.config.metrics }}
metrics:
{{ toYaml . | indent 2 }}
{{- end }}
{{- with .Values.config.publish }}
publish:
{{ toYaml . | indent 2 }}
{{- end }}
{{- end -}}
{{- define "keyd.pod" -}}
metadata:
  labels:
    {{- include "keyd.labels" . | nindent 4 }}
    {{- with .Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    checksum/config: {{ include "keyd.config" . | sha256sum }}
spec:
  serviceAccountName: {{ include "keyd.name" . }}
  automountServiceAccountToken: false
  securityContext:
    runAsNonRoot: true
    runAsUser: 65532
    runAsGroup: 65532
    fsGroup: 65532
    seccompProfile: {type: RuntimeDefault}
  containers:
    - name: keyd
      image: "{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}"
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      args: [serve, --config, /etc/keyd/keyd.yaml, --log-format, json]
      ports:
        - {name: http, containerPort: 8080}
      env:
        {{- if eq .Values.mode "vault" }}
        {{- if eq .Values.vault.auth.method "token" }}
        - name: VAULT_TOKEN
          valueFrom: {secretKeyRef: {name: {{ .Values.vault.auth.existingSecret }}, key: token}}
        {{- end }}
        {{- else }}
        - name: KEYD_MASTER_KEY
          valueFrom: {secretKeyRef: {name: {{ .Values.masterKey.existingSecret }}, key: {{ .Values.masterKey.key }}}}
        {{- end }}
        {{- with .Values.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      securityContext:
        allowPrivilegeEscalation: false
        readOnlyRootFilesystem: true
        runAsNonRoot: true
        capabilities: {drop: [ALL]}
        seccompProfile: {type: RuntimeDefault}
      livenessProbe:
        httpGet: {path: /healthz, port: http{{ if .Values.tls.existingSecret }}, scheme: HTTPS{{ end }}}
      readinessProbe:
        httpGet: {path: /readyz, port: http{{ if .Values.tls.existingSecret }}, scheme: HTTPS{{ end }}}
      resources:
        {{- toYaml .Values.resources | nindent 8 }}
      volumeMounts:
        - {name: config, mountPath: /etc/keyd/keyd.yaml, subPath: keyd.yaml, readOnly: true}
        {{- if ne .Values.mode "vault" }}
        - {name: data, mountPath: /var/lib/keyd}
        {{- end }}
        {{- if and (eq .Values.mode "vault") (eq .Values.vault.auth.method "approle") }}
        - {name: vault, mountPath: /etc/keyd/vault, readOnly: true}
        {{- end }}
        {{- if and (eq .Values.mode "vault") (eq .Values.vault.auth.method "kubernetes") }}
        - {name: vault-token, mountPath: /var/run/secrets/keyd/vault, readOnly: true}
        {{- end }}
        {{- if .Values.tls.existingSecret }}
        - {name: tls, mountPath: /etc/keyd/tls, readOnly: true}
        {{- end }}
        {{- if and .Values.tls.existingSecret .Values.tls.clientCASecret }}
        - {name: client-ca, mountPath: /etc/keyd/client-ca, readOnly: true}
        {{- end }}
        {{- if and .Values.tokenState.redis.url .Values.tokenState.redis.existingSecret }}
        - {name: redis-password, mountPath: /etc/keyd/redis, readOnly: true}
        {{- end }}
        {{- if and .Values.tokenState.redis.url .Values.tokenState.redis.caSecret }}
        - {name: redis-ca, mountPath: /etc/keyd/redis-ca, readOnly: true}
        {{- end }}
        - {name: audit-key, mountPath: /etc/keyd/audit, readOnly: true}
        # The root file system is read-only: backups spool their ciphertext here.
        - {name: tmp, mountPath: /tmp}
  volumes:
    - name: tmp
      emptyDir: {sizeLimit: {{ .Values.tmpSize }}}
    - name: audit-key
      secret: {secretName: {{ include "keyd.auditKeySecret" . }}, items: [{key: {{ .Values.auditKey.key }}, path: audit.key}], defaultMode: 0400}
    - name: config
      configMap: {name: {{ include "keyd.name" . }}}
    {{- if and (eq .Values.mode "vault") (eq .Values.vault.auth.method "approle") }}
    - name: vault
      secret: {secretName: {{ .Values.vault.auth.existingSecret }}, items: [{key: secret-id, path: secret-id}], defaultMode: 0400}
    {{- end }}
    {{- if and (eq .Values.mode "vault") (eq .Values.vault.auth.method "kubernetes") }}
    # A token of keyd's own service account, for Vault alone (its audience),
    # rotated by the kubelet; keyd reads it at every login.
    - name: vault-token
      projected:
        defaultMode: 0400
        sources:
          - serviceAccountToken: {audience: {{ .Values.vault.auth.kubernetes.audience | quote }}, expirationSeconds: 3600, path: token}
    {{- end }}
    {{- if .Values.tls.existingSecret }}
    - name: tls
      secret: {secretName: {{ .Values.tls.existingSecret }}, defaultMode: 0400}
    {{- end }}
    {{- if and .Values.tls.existingSecret .Values.tls.clientCASecret }}
    - name: client-ca
      secret: {secretName: {{ .Values.tls.clientCASecret }}, items: [{key: ca.crt, path: ca.crt}], defaultMode: 0444}
    {{- end }}
    {{- if and .Values.tokenState.redis.url .Values.tokenState.redis.existingSecret }}
    - name: redis-password
      secret: {secretName: {{ .Values.tokenState.redis.existingSecret }}, items: [{key: {{ .Values.tokenState.redis.key }}, path: password}], defaultMode: 0400}
    {{- end }}
    {{- if and .Values.tokenState.redis.url .Values.tokenState.redis.caSecret }}
    - name: redis-ca
      secret: {secretName: {{ .Values.tokenState.redis.caSecret }}, items: [{key: ca.crt, path: ca.crt}], defaultMode: 0444}
    {{- end }}
{{- end -}}

{{- define "keyd.auditKeySecret" -}}
{{ .Values.auditKey.existingSecret | default (printf "%s-audit-key" (include "keyd.name" .)) }}
{{- end -}}
