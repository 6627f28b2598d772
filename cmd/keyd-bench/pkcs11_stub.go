//go:build !pkcs11

package main

import "fmt"

// pkcs11Custody needs crypto11: this keyd-bench was built without it.
func pkcs11Custody(string, []byte) error {
	fmt.Println("\nPKCS#11 custody: skipped (build keyd-bench and keyd with -tags pkcs11 to measure it)")
	return nil
}
