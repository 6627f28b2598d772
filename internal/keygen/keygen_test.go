package keygen_test

import (
	"bytes"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"os"
	"testing"

	"github.com/keyd-dev/keyd/internal/keygen"
	"github.com/keyd-dev/keyd/keystore"
)

// TestMain lets the test binary play the child process.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "keygen-child" {
		if err := keygen.Serve(os.Args[2:], os.Stdout); err != nil {
			os.Stderr.WriteString(err.Error())
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestSubprocessMakesRSAKeys(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	gen := keygen.Subprocess(self, "keygen-child")
	m, err := gen(keystore.RS256, 2048)
	if err != nil {
		t.Fatal(err)
	}
	priv, err := x509.ParsePKCS8PrivateKey(m)
	if err != nil {
		t.Fatal(err)
	}
	if k, ok := priv.(*rsa.PrivateKey); !ok || k.N.BitLen() != 2048 || k.Validate() != nil {
		t.Fatalf("child made %T", priv)
	}
	// Other algorithms are made in process (the child would refuse no
	// argument, but is not asked).
	if m, err := gen(keystore.ES256, 0); err != nil || len(m) == 0 {
		t.Fatalf("ES256: %v", err)
	}
	if _, err := gen(keystore.RS256, 1000); err == nil {
		t.Fatal("the child's refusal of 1000 bits was not reported")
	}
}

func TestServeRefusesBadArguments(t *testing.T) {
	var out bytes.Buffer
	for _, args := range [][]string{{}, {"none", "2048"}, {"RS256", "x"}} {
		if err := keygen.Serve(args, &out); err == nil {
			t.Errorf("Serve(%q) accepted", args)
		}
	}
	if err := keygen.Serve([]string{"EdDSA", "0"}, &out); err != nil {
		t.Fatal(err)
	}
	if _, err := base64.StdEncoding.DecodeString(string(bytes.TrimSpace(out.Bytes()))); err != nil {
		t.Fatalf("output is not base64: %v", err)
	}
}
