// Package version says which keyd this is: the module version, the
// commit, the build date, the Go version and the build tags, from
// runtime/debug.ReadBuildInfo and, for release builds, -ldflags -X (the
// vcs stamps are missing from builds made with -buildvcs=false). It is its
// own package because the CLI, the startup log and keyd_build_info all
// report the same thing.
package version

import (
	"fmt"
	goversion "go/version"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
)

// Set by release builds: go build -ldflags "-X github.com/keyd-dev/keyd/internal/version.version=v1.2.3 ...".
var (
	version = ""
	commit  = ""
	date    = ""
)

// Toolchain is the Go keyd is built, tested and released with: go.mod's
// toolchain line (a test keeps the two equal). Earlier releases carry
// advisories reachable on keyd's HTTPS API.
const Toolchain = "go1.27.3"

// OldGo says, when goVersion is older than Toolchain, what that means; ""
// when it is not.
func OldGo(goVersion string) string {
	if !goversion.IsValid(goVersion) || goversion.Compare(goVersion, Toolchain) >= 0 {
		return ""
	}
	return fmt.Sprintf("built with %s, older than %s which keyd is released with: earlier Go releases carry advisories reachable on keyd's HTTPS API; build with GOTOOLCHAIN=%s", goVersion, Toolchain, Toolchain)
}

// Info is what a keyd binary knows of its build.
type Info struct {
	Version   string // v1.2.3, or "(devel)" for a build from a checkout
	Commit    string // "" when unknown
	Date      string // RFC 3339; "" when unknown
	GoVersion string
	Tags      string // build tags, e.g. "pkcs11"; "" for none
	Modified  bool   // built from a checkout with changes
}

// Get returns the binary's build information, read once.
var Get = sync.OnceValue(func() Info {
	i := Info{Version: "(devel)", GoVersion: runtime.Version()}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" {
			i.Version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				i.Commit = s.Value
			case "vcs.time":
				i.Date = s.Value
			case "vcs.modified":
				i.Modified = s.Value == "true"
			case "-tags":
				i.Tags = s.Value
			}
		}
	}
	if version != "" {
		i.Version = version
	}
	if commit != "" {
		i.Commit = commit
	}
	if date != "" {
		i.Date = date
	}
	return i
})

// String is the one-line form `keyd version` prints.
func (i Info) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "keyd %s", i.Version)
	if i.Commit != "" {
		c := i.Commit
		if len(c) > 12 {
			c = c[:12]
		}
		fmt.Fprintf(&b, " commit %s", c)
		if i.Modified {
			b.WriteString(" (modified)")
		}
	}
	if i.Date != "" {
		fmt.Fprintf(&b, " built %s", i.Date)
	}
	fmt.Fprintf(&b, " %s", i.GoVersion)
	tags := i.Tags
	if tags == "" {
		tags = "none"
	}
	fmt.Fprintf(&b, " tags %s", tags)
	if old := OldGo(i.GoVersion); old != "" {
		fmt.Fprintf(&b, "\nwarning: %s", old)
	}
	return b.String()
}
