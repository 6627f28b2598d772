# The least privilege keyd needs on Vault, for mount "secret" and prefix
# "keyd" (storage.vault.mount and .prefix): read and write its key sets, list
# them, and set their metadata (cas_required, max_versions) after each write
# to one. No delete of key sets: keyd never deletes one, and destroyed keys go
# with the old versions that max_versions=1 drops. Records (refresh token
# families, under <prefix>/records/) are listed, and deleted once expired.
#
#   vault policy write keyd configs/vault-policy.hcl
path "secret/data/keyd/*" {
  capabilities = ["create", "read", "update"]
}

path "secret/metadata/keyd/*" {
  capabilities = ["create", "read", "update"]
}

path "secret/metadata/keyd" {
  capabilities = ["list"]
}

path "secret/metadata/keyd/" {
  capabilities = ["list"]
}

# Token auth: keyd looks its token up to learn its TTL, and renews it before
# it expires. (Vault's "default" policy grants both too.)
path "auth/token/lookup-self" {
  capabilities = ["read"]
}

path "auth/token/renew-self" {
  capabilities = ["update"]
}

path "secret/metadata/keyd/records/*" {
  capabilities = ["create", "read", "update", "list", "delete"]
}
