# The least privilege keyd needs on Vault Transit for keys in custody
# (keysets[].custody: {type: vault_transit}), for mount "transit" and
# key_prefix "keyd-": make its keys, read their public halves, sign and MAC
# with them, allow their deletion and delete them, and list the mount (the
# orphan sweep at start). Nothing else: no export, no backup, and no key
# outside the prefix. Add it beside configs/vault-policy.hcl:
#
#   vault policy write keyd-transit configs/vault-transit-policy.hcl
#
# The config path must stay writable (deletion_allowed is set there before a
# delete); it would also let a stolen token set exportable=true, which keyd
# detects before it signs and refuses (custody_unavailable).
path "transit/keys/keyd-*" {
  capabilities = ["create", "read", "update", "delete"]
}

path "transit/keys" {
  capabilities = ["list"]
}

path "transit/sign/keyd-*" {
  capabilities = ["update"]
}

path "transit/hmac/keyd-*" {
  capabilities = ["update"]
}

# Vault's globs cannot take rotate and trim back from keyd's own keys (the
# keyd-* grant outranks any deny of a path with an earlier wildcard): keyd
# signs with version 1 only and refuses a key rotated behind its back.
path "transit/export/*" {
  capabilities = ["deny"]
}

path "transit/backup/*" {
  capabilities = ["deny"]
}
