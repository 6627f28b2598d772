package custodytest

import (
	"bytes"
	"context"
	"crypto/rand"
	"testing"

	"github.com/keyd-dev/keyd/keystore"
)

// RunWrapper checks a keystore.KeyWrapper: what it wraps unwraps to the
// same bytes, the wrapped form holds nothing of the plaintext, two wraps
// of one secret differ, and a wrapped form changed anywhere (a flipped
// bit, cut short, another wrapper's) is refused, never unwrapped to
// something else. other wraps under another key of the same custody.
func RunWrapper(t *testing.T, w, other keystore.KeyWrapper) {
	ctx := context.Background()
	secret := make([]byte, 32)
	_, _ = rand.Read(secret)
	a, err := w.Wrap(ctx, secret)
	if err != nil {
		t.Fatalf("Wrap: %v", err)
	}
	if bytes.Contains(a, secret) || len(a) <= len(secret) {
		t.Fatalf("the wrapped form (%d bytes) holds the plaintext or cannot authenticate it", len(a))
	}
	b, err := w.Wrap(ctx, secret)
	if err != nil || bytes.Equal(a, b) {
		t.Fatalf("two wraps of one secret: equal %v, %v", bytes.Equal(a, b), err)
	}
	for _, wrapped := range [][]byte{a, b} {
		got, err := w.Unwrap(ctx, wrapped)
		if err != nil || !bytes.Equal(got, secret) {
			t.Fatalf("Unwrap = %x, %v; want the secret", got, err)
		}
	}
	for i := 0; i < len(a); i += max(1, len(a)/16) {
		bad := bytes.Clone(a)
		bad[i] ^= 0x01
		// The same secret back is no forgery (a text encoding's slack, such
		// as base64's unused bits); anything else unwrapped is.
		if got, err := w.Unwrap(ctx, bad); err == nil && !bytes.Equal(got, secret) {
			t.Fatalf("a bit flipped at byte %d of %d unwrapped to %x", i, len(a), got)
		}
	}
	if got, err := w.Unwrap(ctx, a[:len(a)-4]); err == nil {
		t.Fatalf("the wrapped form cut short unwrapped to %x", got)
	}
	if got, err := w.Unwrap(ctx, nil); err == nil {
		t.Fatalf("nothing unwrapped to %x", got)
	}
	c, err := other.Wrap(ctx, secret)
	if err != nil {
		t.Fatalf("the other wrapper: %v", err)
	}
	if got, err := w.Unwrap(ctx, c); err == nil {
		t.Fatalf("a form wrapped under another key unwrapped to %x", got)
	}
}
