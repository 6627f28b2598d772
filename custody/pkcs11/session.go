//go:build pkcs11

package pkcs11

import (
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/ThalesGroup/crypto11"

	"github.com/keyd-dev/keyd/keystore"
)

// Backoff bounds of reopening a token that stopped answering.
const (
	minReopen = 250 * time.Millisecond
	maxReopen = 5 * time.Second
)

// conn is the custody's connection to its token. crypto11 never reopens
// its sessions: a token that went away (a network HSM's blip, SoftHSM's
// folder moved) and came back kept answering errors until keyd restarted.
// When an operation fails with a sign that the token or its sessions are
// gone, conn finalises the module and opens it again, logging in anew (at
// most every backoff, doubling up to maxReopen while it fails): keys are
// then found again in the new sessions, and keyd signs within seconds of
// the token answering.
type conn struct {
	cfg Config
	mu  sync.RWMutex
	c   *crypto11.Context // nil while the token cannot be opened
	gen uint64            // bumped by every reopening that succeeded

	reopenMu sync.Mutex
	nextTry  time.Time
	backoff  time.Duration
}

// configure loads the module and logs in to the token. Errors say which:
// the module, the token or the PIN; never the PIN itself.
func configure(cfg Config) (*crypto11.Context, error) {
	c, err := crypto11.Configure(&crypto11.Config{Path: cfg.Module, TokenLabel: cfg.TokenLabel, Pin: cfg.PIN})
	if err != nil {
		msg := err.Error()
		switch {
		case strings.Contains(msg, "CKR_PIN_INCORRECT") || strings.Contains(msg, "CKR_PIN"):
			return nil, fmt.Errorf("pkcs11: the PIN of token %q is refused", cfg.TokenLabel)
		case strings.Contains(msg, "could not find") && strings.Contains(msg, "token"):
			return nil, fmt.Errorf("pkcs11: no token labelled %q in %s", cfg.TokenLabel, cfg.Module)
		}
		return nil, fmt.Errorf("pkcs11: %s with token %q: %s", cfg.Module, cfg.TokenLabel, strings.ReplaceAll(msg, cfg.PIN, "[pin]"))
	}
	return c, nil
}

// get returns the open context and its generation, or an error wrapping
// keystore.ErrCustodyUnavailable while the token cannot be opened (and
// tries to open it, within the backoff).
func (n *conn) get() (*crypto11.Context, uint64, error) {
	n.mu.RLock()
	c, gen := n.c, n.gen
	n.mu.RUnlock()
	if c != nil {
		return c, gen, nil
	}
	n.reopen(gen)
	n.mu.RLock()
	c, gen = n.c, n.gen
	n.mu.RUnlock()
	if c == nil {
		return nil, gen, fmt.Errorf("%w: pkcs11: token %q cannot be opened; retrying", keystore.ErrCustodyUnavailable, n.cfg.TokenLabel)
	}
	return c, gen, nil
}

// failed is told an operation of generation gen failed with err: when err
// says the token or its sessions are gone, the token is reopened.
func (n *conn) failed(gen uint64, err error) {
	if err != nil && tokenGone(err) {
		n.reopen(gen)
	}
}

// reopen finalises the module and opens it again, unless another caller
// has already done so since gen, or the backoff has not passed.
func (n *conn) reopen(gen uint64) {
	n.reopenMu.Lock()
	defer n.reopenMu.Unlock()
	n.mu.RLock()
	done := n.gen != gen
	n.mu.RUnlock()
	if done || time.Now().Before(n.nextTry) {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.c != nil {
		// Finalised first: only a new C_Initialize makes the module look
		// for its tokens again.
		_ = n.c.Close()
		n.c = nil
	}
	c, err := configure(n.cfg)
	if err != nil {
		n.backoff = min(max(2*n.backoff, minReopen), maxReopen)
		n.nextTry = time.Now().Add(n.backoff)
		return
	}
	n.c, n.gen, n.backoff, n.nextTry = c, n.gen+1, 0, time.Time{}
}

func (n *conn) close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.c == nil {
		return nil
	}
	err := n.c.Close()
	n.c = nil
	return err
}

// tokenGone reports whether err says the token, its slot or its sessions
// are gone (PKCS#11 return values), rather than a refusal of one request.
func tokenGone(err error) bool {
	msg := err.Error()
	for _, code := range []string{
		"CKR_TOKEN_NOT_PRESENT", "CKR_TOKEN_NOT_RECOGNIZED", "CKR_DEVICE_REMOVED", "CKR_DEVICE_ERROR",
		"CKR_SESSION_HANDLE_INVALID", "CKR_SESSION_CLOSED", "CKR_SLOT_ID_INVALID", "CKR_USER_NOT_LOGGED_IN",
		"CKR_CRYPTOKI_NOT_INITIALIZED", "CKR_GENERAL_ERROR", "CKR_OBJECT_HANDLE_INVALID", "CKR_KEY_HANDLE_INVALID",
		"CKR_FUNCTION_FAILED", "CKR_DEVICE_MEMORY",
	} {
		if strings.Contains(msg, code) {
			return true
		}
	}
	return false
}
