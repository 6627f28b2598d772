// Package keygen makes RSA keys in a child process at the lowest CPU
// priority, so that a rotation (seconds of CPU for RSA-4096) does not stall
// signing: the child has its own heap and garbage collector, and the
// kernel gives it only the time requests leave over (nice 19); on an idle
// machine it runs at full speed. The child is the keyd binary itself,
// started with a hidden command that runs Serve. Other algorithms take
// microseconds and are made in process.
package keygen

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strconv"
	"syscall"

	"github.com/keyd-dev/keyd/keystore"
)

// Subprocess returns a Generator that makes RSA keys by running binary
// with args, then the algorithm and the bits, at nice 19.
func Subprocess(binary string, args ...string) keystore.Generator {
	return func(alg keystore.Algorithm, bits int) (keystore.Material, error) {
		if alg.Family() != keystore.FamilyRSA {
			return keystore.GenerateMaterial(alg, bits)
		}
		cmd := exec.Command(binary, append(args, string(alg), strconv.Itoa(bits))...)
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		if err := cmd.Start(); err != nil {
			return nil, fmt.Errorf("key generation process: %w", err)
		}
		// The child starts at the parent's priority for the moment this
		// takes; key generation has not begun by then.
		_ = syscall.Setpriority(syscall.PRIO_PROCESS, cmd.Process.Pid, 19)
		if err := cmd.Wait(); err != nil {
			return nil, fmt.Errorf("key generation process: %w: %s", err, bytes.TrimSpace(errOut.Bytes()))
		}
		m, err := base64.StdEncoding.DecodeString(string(bytes.TrimSpace(out.Bytes())))
		if err != nil || len(m) == 0 {
			return nil, errors.New("key generation process: no key material in its output")
		}
		return keystore.Material(m), nil
	}
}

// Serve is the child's side: args are the algorithm and the RSA bits; it
// writes the material, base64, to stdout (a pipe to the parent only).
func Serve(args []string, stdout io.Writer) error {
	if len(args) != 2 {
		return errors.New("usage: ALGORITHM BITS")
	}
	alg, err := keystore.ParseAlgorithm(args[0])
	if err != nil {
		return err
	}
	bits, err := strconv.Atoi(args[1])
	if err != nil {
		return fmt.Errorf("bits: %w", err)
	}
	m, err := keystore.GenerateMaterial(alg, bits)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, base64.StdEncoding.EncodeToString(m))
	return err
}
