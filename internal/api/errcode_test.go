package api_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/keyd-dev/keyd/errcode"
)

// Every code the API answers with is a row of errcode's table, the one the
// gRPC signer and the Go client read too: a code written here and missing
// there would answer 500.
func TestEveryCodeIsInTheTable(t *testing.T) {
	files, _ := filepath.Glob("*.go")
	re := regexp.MustCompile(`errorf\("([a-z_]+)"`)
	seen := 0
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range re.FindAllStringSubmatch(string(src), -1) {
			seen++
			if _, ok := errcode.Lookup(m[1]); !ok {
				t.Errorf("%s answers code %q, which is not in errcode.Table", f, m[1])
			}
		}
	}
	if seen < 40 {
		t.Fatalf("found only %d codes in the API's sources", seen)
	}
}
