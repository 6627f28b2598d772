// Package testnet reserves loopback ports for the test servers keyd's
// tests start (kube-apiserver and etcd, the object stores): a package of
// its own so that each server helper takes them the same way.
package testnet

import (
	"net"
	"testing"
)

// FreePorts reserves n loopback ports by listening on them all at once
// (so they differ), then frees them for a server to take.
func FreePorts(t testing.TB, n int) []int {
	t.Helper()
	var ls []net.Listener
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		_ = l.Close()
	}
	return ports
}
