package config

// MasterKey says who wraps bbolt's master key: nobody (the default: the
// key is in master_key_file or KEYD_MASTER_KEY as it is), a Vault Transit
// key, or an AES key in a PKCS#11 token. Wrapped, master_key_file holds
// only the wrapped form (keyd master-key new or wrap writes it), and keyd
// unwraps it at start and never writes the key itself anywhere.
type MasterKey struct {
	WrappedBy string `yaml:"wrapped_by"` // "", vault_transit or pkcs11
	// Key names the wrapping key: the Transit key, or the label of the
	// token's AES key. Default keyd-master.
	Key string `yaml:"key"`
	// vault_transit: the Transit mount (default transit) and the
	// connection to Vault.
	Mount string    `yaml:"mount"`
	Vault VaultConn `yaml:"vault"`
	// pkcs11: the module, the token's label, and a file holding the user
	// PIN (else KEYD_PKCS11_PIN).
	Module     string `yaml:"module"`
	TokenLabel string `yaml:"token_label"`
	PINFile    string `yaml:"pin_file"`
}

// DefaultWrappingKey names the wrapping key unless master_key.key does.
const DefaultWrappingKey = "keyd-master"

func (m *MasterKey) applyDefaults() {
	if m.WrappedBy == "" {
		return
	}
	if m.Key == "" {
		m.Key = DefaultWrappingKey
	}
	if m.WrappedBy == "vault_transit" {
		if m.Mount == "" {
			m.Mount = "transit"
		}
		m.Vault.applyDefaults()
	}
}

// validateMasterKey checks storage.file's master key settings.
func (f File) validateMasterKey(bad func(field, format string, args ...any)) {
	const p = "storage.file.master_key"
	m := f.MasterKey
	switch m.WrappedBy {
	case "":
		if m != (MasterKey{}) {
			bad(p+".wrapped_by", "is required when master_key is set (vault_transit or pkcs11)")
		}
		return
	case "vault_transit":
		if m.Module != "" || m.TokenLabel != "" || m.PINFile != "" {
			bad(p+".wrapped_by", "is vault_transit: module, token_label and pin_file are for pkcs11")
		}
		m.Vault.validate(p+".vault", bad)
	case "pkcs11":
		if m.Mount != "" || m.Vault != (VaultConn{}) {
			bad(p+".wrapped_by", "is pkcs11: mount and vault are for vault_transit")
		} else {
			validateToken(p, m.Module, m.TokenLabel, "the wrapping key", bad)
		}
	default:
		bad(p+".wrapped_by", "%q is not supported (want vault_transit or pkcs11)", m.WrappedBy)
		return
	}
	if f.MasterKeyFile == "" {
		bad("storage.file.master_key_file", "is required with master_key.wrapped_by: the file holding the wrapped key (keyd master-key new --config writes one)")
	}
}

func (v *VaultConn) applyDefaults() {
	if v.Auth.Method == "" {
		v.Auth.Method = "token"
	}
	if v.Timeout == 0 {
		v.Timeout = DefaultVaultTimeout
	}
}

// validate checks a connection to Vault, its fields named under p.
func (v VaultConn) validate(p string, bad func(field, format string, args ...any)) {
	switch v.Auth.Method {
	case "token":
	case "approle":
		if v.Auth.AppRole.RoleID == "" {
			bad(p+".auth.approle.role_id", "is required for method approle")
		}
		if v.Auth.AppRole.SecretIDFile == "" {
			bad(p+".auth.approle.secret_id_file", "is required for method approle")
		}
	case "kubernetes":
		if v.Auth.Kubernetes.Role == "" {
			bad(p+".auth.kubernetes.role", "is required for method kubernetes: the Vault role bound to keyd's service account")
		}
	default:
		bad(p+".auth.method", "%q is not supported (want token, approle or kubernetes)", v.Auth.Method)
	}
	if v.Timeout <= 0 {
		bad(p+".timeout", "must be positive, got %v", v.Timeout)
	}
}
