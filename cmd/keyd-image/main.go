// Command keyd-image builds keyd's container image into an OCI layout,
// without a Docker daemon, with go-containerregistry: one layer holding
// the static keyd binary, the CA bundle, a passwd entry for user 65532
// and the data folder, on an empty base (no shell, no package manager),
// for each platform given, under one image index. scripts/image.sh builds
// the binaries and calls it; `crane push` (or any OCI tool) can push the
// layout. With --libs (the keyd built with -tags pkcs11, which needs cgo),
// the shared libraries the binary loads (ldd's list: glibc's) are copied
// from the build machine into the layer: a glibc base of the build
// machine's architecture only. The PKCS#11 module itself is the
// operator's, mounted into the container.
//
//	keyd-image --out DIR --version V [--libs] linux/amd64=PATH [linux/arm64=PATH]
package main

import (
	"archive/tar"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// The image's layout, which the Helm chart and the README rely on.
const (
	User      = "65532:65532"
	Binary    = "/usr/local/bin/keyd"
	ConfigDir = "/etc/keyd"
	DataDir   = "/var/lib/keyd"
	caBundle  = "/etc/ssl/certs/ca-certificates.crt"
)

func main() {
	out := flag.String("out", "", "the OCI layout folder to write (made anew)")
	version := flag.String("version", "dev", "the version label")
	flag.BoolVar(&withLibs, "libs", false, "copy the binary's shared libraries (ldd) into the image: for a cgo build (-tags pkcs11)")
	flag.Parse()
	if *out == "" || flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: keyd-image --out DIR [--version V] OS/ARCH=BINARY...")
		os.Exit(2)
	}
	if err := build(*out, *version, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "keyd-image:", err)
		os.Exit(1)
	}
}

// withLibs copies the binary's shared libraries into the image.
var withLibs bool

// build writes the index of one image per OS/ARCH=BINARY argument to an
// OCI layout at out.
func build(out, version string, targets []string) error {
	var adds []mutate.IndexAddendum
	for _, t := range targets {
		platform, bin, ok := strings.Cut(t, "=")
		osName, arch, ok2 := strings.Cut(platform, "/")
		if !ok || !ok2 {
			return fmt.Errorf("%q: want OS/ARCH=BINARY", t)
		}
		img, err := Image(bin, osName, arch, version)
		if err != nil {
			return fmt.Errorf("%s: %w", platform, err)
		}
		adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: osName, Architecture: arch}}})
	}
	if err := os.RemoveAll(out); err != nil {
		return err
	}
	idx := mutate.IndexMediaType(mutate.AppendManifests(empty.Index, adds...), types.OCIImageIndex)
	_, err := layout.Write(out, idx)
	return err
}

// Image is keyd's image for one platform, around the keyd binary at bin.
func Image(bin, osName, arch, version string) (v1.Image, error) {
	keyd, err := os.ReadFile(bin)
	if err != nil {
		return nil, err
	}
	var libs []string
	if withLibs {
		if libs, err = sharedLibs(bin); err != nil {
			return nil, err
		}
	}
	files, err := rootfs(keyd, libs...)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(files)), nil },
		tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}
	img, err := mutate.AppendLayers(mutate.MediaType(empty.Image, types.OCIManifestSchema1), layer)
	if err != nil {
		return nil, err
	}
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = osName, arch
	cf.Config = v1.Config{
		User:         User,
		Entrypoint:   []string{Binary},
		Cmd:          []string{"serve", "--config", ConfigDir + "/keyd.yaml"},
		WorkingDir:   DataDir,
		ExposedPorts: map[string]struct{}{"8080/tcp": {}},
		Volumes:      map[string]struct{}{DataDir: {}},
		Labels: map[string]string{
			"org.opencontainers.image.title":   "keyd",
			"org.opencontainers.image.version": version,
			"org.opencontainers.image.source":  "https://github.com/keyd-dev/keyd",
		},
	}
	return mutate.ConfigFile(img, cf)
}

// epoch dates every file: the same binary gives the same image.
var epoch = time.Unix(0, 0).UTC()

// rootfs is the layer's tar: the binary, the data and config folders, a
// passwd and group naming user 65532, and the build machine's CA bundle
// (for TLS to Vault or Redis) when it has one.
func rootfs(keyd []byte, libs ...string) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dir := func(name string, mode int64, uid int) error {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode, Uid: uid, Gid: uid, ModTime: epoch})
	}
	file := func(name string, mode int64, data []byte) error {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data)), ModTime: epoch}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	steps := []func() error{
		func() error { return dir("etc", 0o755, 0) },
		func() error { return dir("etc/keyd", 0o755, 0) },
		func() error { return dir("etc/ssl", 0o755, 0) },
		func() error { return dir("etc/ssl/certs", 0o755, 0) },
		func() error { return dir("tmp", 0o1777, 0) },
		func() error { return dir("usr", 0o755, 0) },
		func() error { return dir("usr/local", 0o755, 0) },
		func() error { return dir("usr/local/bin", 0o755, 0) },
		func() error { return dir("var", 0o755, 0) },
		func() error { return dir("var/lib", 0o755, 0) },
		func() error { return dir("var/lib/keyd", 0o700, 65532) },
		func() error {
			return file("etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:keyd:/var/lib/keyd:/sbin/nologin\n"))
		},
		func() error { return file("etc/group", 0o644, []byte("root:x:0:\nnonroot:x:65532:\n")) },
		func() error { return file(strings.TrimPrefix(Binary, "/"), 0o755, keyd) },
		func() error {
			ca, err := os.ReadFile(caBundle)
			if errors.Is(err, os.ErrNotExist) {
				return nil
			}
			if err != nil {
				return err
			}
			return file(strings.TrimPrefix(caBundle, "/"), 0o644, ca)
		},
	}
	made := map[string]bool{"etc": true, "usr": true}
	for _, lib := range libs {
		// Each library at the path the binary names it by, with its
		// folders; its content is what that path resolves to.
		var parents []string
		for d := filepath.Dir(lib); d != "/" && d != "."; d = filepath.Dir(d) {
			parents = append([]string{strings.TrimPrefix(d, "/")}, parents...)
		}
		for _, d := range parents {
			if !made[d] {
				made[d] = true
				steps = append(steps, func() error { return dir(d, 0o755, 0) })
			}
		}
		steps = append(steps, func() error {
			data, err := os.ReadFile(lib)
			if err != nil {
				return err
			}
			return file(strings.TrimPrefix(lib, "/"), 0o755, data)
		})
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// sharedLibs lists the shared libraries bin loads, by the paths it names
// them (ldd's output), the dynamic loader included.
func sharedLibs(bin string) ([]string, error) {
	out, err := exec.Command("ldd", bin).Output()
	if err != nil {
		return nil, fmt.Errorf("ldd %s: %w (is it a cgo build?)", bin, err)
	}
	var libs []string
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 3 && f[1] == "=>" && strings.HasPrefix(f[2], "/"):
			libs = append(libs, f[2])
		case len(f) >= 1 && strings.HasPrefix(f[0], "/"):
			libs = append(libs, f[0]) // the loader, named by its own path
		}
	}
	if len(libs) == 0 {
		return nil, fmt.Errorf("ldd %s lists no shared library: a static binary needs no --libs", bin)
	}
	return libs, nil
}
