package config_test

import (
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/keyd-dev/keyd/internal/config"
)

// leaves are the YAML paths of every setting under t: storage.file.path,
// keysets[].name, ... (a struct field's own name when it is a leaf).
func leaves(t reflect.Type, prefix string) []string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Struct:
		return leaves(t.Elem(), prefix+"[]")
	case t.Kind() != reflect.Struct || t == reflect.TypeOf(time.Time{}):
		return []string{prefix}
	}
	var out []string
	for i := range t.NumField() {
		f := t.Field(i)
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if opts == "inline" {
			out = append(out, leaves(f.Type, prefix)...)
			continue
		}
		if name == "" || name == "-" || !f.IsExported() {
			continue
		}
		p := name
		if prefix != "" {
			p = prefix + "." + name
		}
		out = append(out, leaves(f.Type, p)...)
	}
	return out
}

// TestReferenceNamesEverySetting: docs/configuration.md names every
// setting the config types have, so the reference cannot drift from the
// parser. A setting is named by a row of its own path, or by a row of an
// enclosing path whose text names it (`storage.token_state` ... `url`).
func TestReferenceNamesEverySetting(t *testing.T) {
	raw, err := os.ReadFile("../../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string]string{} // a path of the row's first cell -> the row
	cell, path := regexp.MustCompile(`^\| ([^|]+) \|`), regexp.MustCompile("`([a-z0-9_.\\[\\]]+)`")
	for _, line := range strings.Split(string(raw), "\n") {
		if m := cell.FindStringSubmatch(line); m != nil {
			for _, p := range path.FindAllStringSubmatch(m[1], -1) {
				rows[strings.TrimSuffix(p[1], "[]")] += line
			}
		}
	}
	var missing []string
	all := leaves(reflect.TypeOf(config.Config{}), "")
	for _, leaf := range all {
		if documented(leaf, rows) {
			continue
		}
		missing = append(missing, leaf)
	}
	if len(missing) > 0 {
		t.Fatalf("docs/configuration.md names none of these settings:\n%s", strings.Join(missing, "\n"))
	}
	// And every row names a setting there is.
	for p := range rows {
		known := false
		for _, leaf := range all {
			known = known || leaf == p || strings.HasPrefix(leaf, p+".") || strings.HasPrefix(leaf, p+"[]")
		}
		if !known {
			t.Errorf("docs/configuration.md has a row for %s, which is no setting", p)
		}
	}
}

// documented reports whether a row names leaf: its own, or an enclosing
// path's that names leaf's last part.
func documented(leaf string, rows map[string]string) bool {
	p := leaf
	for {
		if text, ok := rows[strings.TrimSuffix(p, "[]")]; ok {
			name := leaf[strings.LastIndex(leaf, ".")+1:]
			name = strings.TrimSuffix(name, "[]")
			if p == leaf || strings.Contains(text, name) {
				return true
			}
		}
		i := strings.LastIndex(p, ".")
		if i < 0 {
			return false
		}
		p = p[:i]
	}
}
