package main

import (
	"strings"
	"testing"
)

// TestCLIPapercuts: help spells flags as the docs do (--config), a ttl
// without a unit says so, `keyd version --help` is usage, and a refused
// connection names KEYD_ADDR.
func TestCLIPapercuts(t *testing.T) {
	t.Setenv("KEYD_ADDR", "http://127.0.0.1:1") // nothing listens there
	t.Setenv("KEYD_TOKEN", "")
	if _, out, _ := runCLI("", "serve", "--help"); !strings.Contains(out, "\n  --config string") || strings.Contains(out, "\n  -config") {
		t.Errorf("serve --help spells flags otherwise than the docs:\n%s", out)
	}
	if code, _, errOut := runCLI(`{"sub":"a"}`, "sign", "--ttl", "5", "default"); code != 2 || !strings.Contains(errOut, "5 has no unit: use one, e.g. 5m or 5s") {
		t.Errorf("sign --ttl 5: exit %d\n%s", code, errOut)
	}
	if code, _, errOut := runCLI(`{"sub":"a"}`, "sign", "--ttl", "soon", "default"); code != 2 || !strings.Contains(errOut, `"soon" is not a duration`) {
		t.Errorf("sign --ttl soon: exit %d\n%s", code, errOut)
	}
	if code, out, _ := runCLI("", "version", "--help"); code != 0 || !strings.HasPrefix(out, "Usage: keyd version") {
		t.Errorf("version --help: exit %d\n%s", code, out)
	}
	if code, _, errOut := runCLI(`{"sub":"a"}`, "sign", "default"); code == 0 || !strings.Contains(errOut, "is keyd running there? KEYD_ADDR") {
		t.Errorf("sign against nothing: exit %d\n%s", code, errOut)
	}
}
