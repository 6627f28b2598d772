// Package tlsconf holds keyd's server TLS settings: the certificate and key
// files, and the CA that client certificates must chain to, loaded into a
// tls.Config that picks up new files when Load is called again (a reload),
// so renewed certificates are served without a restart. It is its own
// package because the daemon (reload) and the API (client identities)
// both use it.
package tlsconf

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync/atomic"

	"github.com/keyd-dev/keyd/internal/config"
	"github.com/keyd-dev/keyd/internal/secretfile"
)

// Server is a reloadable server TLS configuration.
type Server struct {
	cur atomic.Pointer[tls.Config]
}

// Load reads the files of tc and serves them from the next handshake on;
// on any error the previous files stay in force.
func (s *Server) Load(tc config.TLS) error {
	c, err := Build(tc)
	if err != nil {
		return err
	}
	s.Set(c)
	return nil
}

// Set serves c from the next handshake on.
func (s *Server) Set(c *tls.Config) { s.cur.Store(c) }

// Build reads the files of tc into a server tls.Config: TLS 1.2 or later,
// forward-secret AEAD cipher suites, and client certificates verified
// against tls.client_ca_file when it is set.
func Build(tc config.TLS) (*tls.Config, error) {
	if err := secretfile.Check(tc.KeyFile); err != nil { // owner-only, as every secret file
		return nil, fmt.Errorf("tls.key_file: %w", err)
	}
	cert, err := tls.LoadX509KeyPair(tc.CertFile, tc.KeyFile)
	if err != nil {
		// The error names the files and what is wrong with their PEM,
		// never key bytes.
		return nil, fmt.Errorf("tls.cert_file/tls.key_file: %w", err)
	}
	c := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		// TLS 1.2: forward secret AEAD suites only (TLS 1.3's are fixed).
		CipherSuites: []uint16{
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
		},
		NextProtos: []string{"h2", "http/1.1"},
	}
	if tc.ClientCAFile != "" {
		pem, err := os.ReadFile(tc.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("tls.client_ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls.client_ca_file: %s holds no PEM certificate", tc.ClientCAFile)
		}
		// A certificate is checked when given; callers without one may
		// still use a bearer token.
		c.ClientAuth, c.ClientCAs = tls.VerifyClientCertIfGiven, pool
	}
	return c, nil
}

// Config returns the tls.Config to serve with: each handshake uses the
// files of the latest successful Load.
func (s *Server) Config() (*tls.Config, error) {
	if s.cur.Load() == nil {
		return nil, errors.New("tls: nothing loaded")
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"h2", "http/1.1"},
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return s.cur.Load(), nil
		},
	}, nil
}
