package main

import (
	"archive/tar"
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/validate"
)

// TestImage builds the image of a freshly built keyd into an OCI layout,
// validates the layout with go-containerregistry, checks the config (user
// 65532, the entrypoint, no shell in the layers), extracts the root
// filesystem and runs keyd from it to /healthz.
func TestImage(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "keyd")
	build := exec.Command("go", "build", "-trimpath", "-o", bin, "../keyd")
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out := filepath.Join(dir, "oci")
	if err := buildLayout(out, bin); err != nil {
		t.Fatal(err)
	}
	p, err := layout.FromPath(out)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := p.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	if err := validate.Index(idx); err != nil {
		t.Fatalf("the layout does not validate: %v", err)
	}
	im, err := idx.IndexManifest()
	if err != nil || len(im.Manifests) != 1 || im.Manifests[0].Platform == nil || im.Manifests[0].Platform.Architecture != "amd64" {
		t.Fatalf("index: %+v %v", im, err)
	}
	img, err := idx.Image(im.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	c := cf.Config
	if c.User != "65532:65532" || !slices.Equal(c.Entrypoint, []string{"/usr/local/bin/keyd"}) || c.WorkingDir != "/var/lib/keyd" ||
		cf.OS != "linux" || c.Labels["org.opencontainers.image.version"] != "test" {
		t.Fatalf("config: %+v", cf)
	}
	root := filepath.Join(dir, "rootfs")
	files := extract(t, img, root)
	for _, name := range files {
		if strings.HasSuffix(name, "/sh") || strings.HasSuffix(name, "/bash") || strings.HasPrefix(name, "bin/") {
			t.Errorf("a shell or /bin in the image: %s", name)
		}
	}
	if !slices.Contains(files, "usr/local/bin/keyd") || !slices.Contains(files, "var/lib/keyd") {
		t.Fatalf("files: %v", files)
	}
	// keyd from the image's filesystem answers /healthz.
	cmd := exec.Command(filepath.Join(root, "usr/local/bin/keyd"), "serve", "--data", filepath.Join(dir, "data"), "--listen", "127.0.0.1:0", "--log-format", "json")
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var rec struct{ Msg, Addr string }
			if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.Msg == "keyd listening" {
				addr <- rec.Addr
			}
		}
	}()
	select {
	case a := <-addr:
		resp, err := http.Get("http://" + a + "/healthz")
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("/healthz: %v %v", resp, err)
		}
		resp.Body.Close()
	case <-time.After(30 * time.Second):
		t.Fatal("keyd from the image did not listen within 30 s")
	}
}

func buildLayout(out, bin string) error {
	return build(out, "test", []string{"linux/amd64=" + bin})
}

// extract writes the image's filesystem under root and returns its names.
func extract(t *testing.T, img v1.Image, root string) []string {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	var names []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return names
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
		target := filepath.Join(root, h.Name)
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(target, 0o755); err != nil {
				t.Fatal(err)
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
				t.Fatal(err)
			}
			f, err := os.OpenFile(target, os.O_CREATE|os.O_WRONLY, os.FileMode(h.Mode))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.Copy(f, tr); err != nil {
				t.Fatal(err)
			}
			f.Close()
		}
	}
}

// TestPKCS11Image builds keyd with -tags pkcs11 (cgo), and its image with
// the shared libraries ldd names: the root filesystem alone runs it
// (chroot: nothing from the build machine's own /lib), and keyd reports
// the pkcs11 tag. No shell in it either.
func TestPKCS11Image(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("chroot needs root")
	}
	if _, err := exec.LookPath("gcc"); err != nil {
		t.Skip("no C compiler for cgo")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "keyd")
	build := exec.Command("go", "build", "-trimpath", "-tags", "pkcs11", "-o", bin, "../keyd")
	build.Env = append(os.Environ(), "CGO_ENABLED=1")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build -tags pkcs11: %v\n%s", err, out)
	}
	withLibs = true
	defer func() { withLibs = false }()
	img, err := Image(bin, "linux", "amd64", "test")
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(dir, "rootfs")
	files := extract(t, img, root)
	for _, name := range files {
		if strings.HasSuffix(name, "/sh") || strings.HasSuffix(name, "/bash") {
			t.Errorf("a shell in the image: %s", name)
		}
	}
	if !slices.ContainsFunc(files, func(n string) bool { return strings.Contains(n, "libc.so") }) {
		t.Fatalf("no libc in the image: %v", files)
	}
	out, err := exec.Command("chroot", root, "/usr/local/bin/keyd", "version").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "pkcs11") {
		t.Fatalf("keyd version inside the image's root: %v\n%s", err, out)
	}
}
