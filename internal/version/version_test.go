package version

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// Toolchain is go.mod's toolchain line.
func TestToolchainIsGoMods(t *testing.T) {
	raw, err := os.ReadFile("../../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^toolchain (\S+)$`).FindSubmatch(raw)
	if m == nil || string(m[1]) != Toolchain {
		t.Fatalf("go.mod's toolchain is %q, version.Toolchain %q", m, Toolchain)
	}
}

// A Go older than the toolchain is said, in keyd version's line too; the
// toolchain itself and newer ones are not.
func TestOldGoIsSaid(t *testing.T) {
	for v, old := range map[string]bool{"go1.26.8": true, "go1.27.2": true, Toolchain: false, "go1.27.4": false, "go1.28": false, "devel go1.28-abc": false} {
		if got := OldGo(v); (got != "") != old {
			t.Errorf("OldGo(%s) = %q", v, got)
		}
	}
	line := Info{Version: "v1.0.0", GoVersion: "go1.26.8"}.String()
	if !strings.Contains(line, "warning: built with go1.26.8, older than "+Toolchain) {
		t.Fatalf("keyd version with an old Go: %s", line)
	}
	if line := (Info{Version: "v1.0.0", GoVersion: Toolchain}).String(); strings.Contains(line, "warning") {
		t.Fatalf("keyd version with the toolchain: %s", line)
	}
}
