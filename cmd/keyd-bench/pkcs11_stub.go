//go:build !pkcs11

package main

import (
	"fmt"
	"os"
)

// pkcs11Custody needs crypto11: this keyd-bench was built without it.
func pkcs11Custody(string, []byte) error {
	fmt.Println("\nPKCS#11 custody: skipped (build keyd-bench and keyd with -tags pkcs11 to measure it)")
	return nil
}

// bareHSMServer needs crypto11 too.
func bareHSMServer() {
	fmt.Fprintln(os.Stderr, "keyd-bench: built without -tags pkcs11")
	os.Exit(2)
}
