package config

import (
	"fmt"
	"maps"
	"reflect"
	"regexp"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// checkYAML walks the parsed document against the Config type before it
// is decoded, so that problems are named by their YAML path, all at once:
// an unknown field (with the known field it most resembles) and a
// duration without a unit (yaml would take `token_ttl: 15` as 15
// nanoseconds). Validate then reports the rest.
func checkYAML(doc *yaml.Node) []error {
	var errs []error
	bad := func(field, format string, a ...any) {
		errs = append(errs, &FieldError{Field: field, Reason: fmt.Sprintf(format, a...)})
	}
	if doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 {
		walk(doc.Content[0], reflect.TypeOf(Config{}), "", bad)
	}
	return errs
}

var durationType = reflect.TypeOf(time.Duration(0))

var bareNumber = regexp.MustCompile(`^-?[0-9]+(\.[0-9]+)?$`)

func walk(n *yaml.Node, t reflect.Type, path string, bad func(string, string, ...any)) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case t == durationType:
		if n.Kind == yaml.ScalarNode && bareNumber.MatchString(n.Value) {
			bad(path, "%s has no unit: use one, e.g. %sm or %ss", n.Value, n.Value, n.Value)
		}
	case t.Kind() == reflect.Struct && t != reflect.TypeOf(time.Time{}):
		if n.Kind != yaml.MappingNode {
			return // the decoder names the type mismatch
		}
		fields, names := yamlFields(t)
		for i := 0; i+1 < len(n.Content); i += 2 {
			key, val := n.Content[i].Value, n.Content[i+1]
			p := join(path, key)
			f, ok := fields[key]
			if !ok {
				if near := nearest(key, names); near != "" {
					bad(p, "unknown field (did you mean %s?)", near)
				} else {
					bad(p, "unknown field (line %d; the fields here: %s)", n.Content[i].Line, strings.Join(names, ", "))
				}
				continue
			}
			walk(val, f.Type, p, bad)
		}
	case t.Kind() == reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			return
		}
		for i, item := range n.Content {
			walk(item, t.Elem(), fmt.Sprintf("%s[%d]", path, i), bad)
		}
	}
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// nearest returns the name closest to s by edit distance, if close enough
// to be a typo.
func nearest(s string, names []string) string {
	best, bestD := "", len(s)/2+2
	for _, n := range names {
		if d := distance(s, n); d < bestD {
			best, bestD = n, d
		}
	}
	return best
}

// distance is the Levenshtein distance.
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// indentHint finds the first line whose indentation fits no enclosing
// level (a dedent to a column no line above it used): the usual cause of
// a YAML syntax error that the parser reports at another line.
func indentHint(data []byte) string {
	stack := []int{0}
	for i, line := range strings.Split(string(data), "\n") {
		trimmed := strings.TrimLeft(line, " ")
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue
		}
		indent := len(line) - len(trimmed)
		top := stack[len(stack)-1]
		switch {
		case indent > top:
			stack = append(stack, indent)
		case indent < top:
			for len(stack) > 0 && stack[len(stack)-1] > indent {
				stack = stack[:len(stack)-1]
			}
			if len(stack) == 0 || stack[len(stack)-1] != indent {
				return fmt.Sprintf("line %d is indented %d spaces, which matches no line above it: align it with its siblings", i+1, indent)
			}
		}
		// A list item's keys sit two columns in: "- name: a" then "  key".
		if strings.HasPrefix(trimmed, "- ") {
			stack = append(stack, indent+2)
		}
	}
	return ""
}

// yamlFields are the fields of struct type t by their yaml names, the
// fields of inline structs among them, and the names in order.
func yamlFields(t reflect.Type) (map[string]reflect.StructField, []string) {
	fields := map[string]reflect.StructField{}
	var names []string
	for i := range t.NumField() {
		f := t.Field(i)
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if opts == "inline" && f.Type.Kind() == reflect.Struct {
			inner, innerNames := yamlFields(f.Type)
			maps.Copy(fields, inner)
			names = append(names, innerNames...)
			continue
		}
		if name == "" || name == "-" {
			continue
		}
		fields[name] = f
		names = append(names, name)
	}
	return fields, names
}
