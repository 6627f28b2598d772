// Package kubesigner makes keyd Kubernetes' external service account token
// signer: the ExternalJWTSigner gRPC service (KEP-740, k8s.io/externaljwt,
// API versions v1 and v1alpha1 on one server) on a Unix socket that
// kube-apiserver dials. Service account tokens are then signed by a keyd
// key set: its keys rotate on their schedule, are offered to the API
// server before they sign, live in bbolt or Vault, and never leave keyd.
//
// The package owns the socket (its mode, its stale-file cleanup, a refusal
// when another signer serves it) and the translation of keyd's errors into
// gRPC status codes; the daemon only wires it.
package kubesigner

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
	v1 "k8s.io/externaljwt/apis/v1"
	v1alpha1 "k8s.io/externaljwt/apis/v1alpha1"

	"github.com/keyd-dev/keyd/audit"
	"github.com/keyd-dev/keyd/errcode"
	"github.com/keyd-dev/keyd/keystore"
	"github.com/keyd-dev/keyd/signer"
)

// Algorithms kube-apiserver accepts from an external signer.
var Algorithms = []keystore.Algorithm{keystore.RS256, keystore.ES256, keystore.ES384, keystore.ES512}

// MinTokenTTL is the least max_token_expiration_seconds kube-apiserver
// accepts.
const MinTokenTTL = 600 * time.Second

// Options configure a Server.
type Options struct {
	Socket string // path of the Unix socket
	Group  string // group that may dial it (mode 0660); "": owner only (0600)
	KeySet string
	Signer *signer.Signer
	// Policy returns the key set's current settings (they change on reload).
	Policy func() (keystore.Policy, bool)
	// Ready reports whether the key sets are loaded.
	Ready  func() bool
	Audit  *audit.Log
	Logger *slog.Logger
	Now    func() time.Time
}

// Server serves ExternalJWTSigner.
type Server struct {
	o    Options
	grpc *grpc.Server
	ln   net.Listener
}

// Listen prepares the socket: a stale socket file is removed, a live one
// (another signer answering on it) is an error, the new one gets mode 0600
// (0660 and the group with Group).
func Listen(o Options) (*Server, error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if conn, err := net.DialTimeout("unix", o.Socket, time.Second); err == nil {
		conn.Close()
		return nil, fmt.Errorf("kubernetes.socket %s: another process is serving it (a second keyd?)", o.Socket)
	}
	// Only a stale socket is removed (and replaced by the rename below):
	// a wrong kubernetes.socket pointing at a regular file, a folder or a
	// link must not cost the operator that file.
	if fi, err := os.Lstat(o.Socket); err == nil && fi.Mode().Type() != os.ModeSocket {
		return nil, fmt.Errorf("kubernetes.socket %s: there is a %s at that path, not a socket; keyd will neither remove nor replace it (point kubernetes.socket at a path of its own)", o.Socket, fileKind(fi.Mode()))
	}
	if err := os.Remove(o.Socket); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("kubernetes.socket %s: removing the stale socket: %w", o.Socket, err)
	}
	if err := os.MkdirAll(filepath.Dir(o.Socket), 0o755); err != nil {
		return nil, fmt.Errorf("kubernetes.socket: %w", err)
	}
	ln, err := listenPrivately(o)
	if err != nil {
		return nil, err
	}
	s := &Server{o: o, ln: ln, grpc: grpc.NewServer()}
	v1.RegisterExternalJWTSignerServer(s.grpc, v1Server{s: s})
	v1alpha1.RegisterExternalJWTSignerServer(s.grpc, v1alpha1Server{s: s})
	return s, nil
}

// Serve answers until Stop; it removes the socket when it returns.
func (s *Server) Serve() error {
	defer func() {
		if fi, err := os.Lstat(s.o.Socket); err == nil && fi.Mode().Type() == os.ModeSocket {
			_ = os.Remove(s.o.Socket)
		}
	}()
	return s.grpc.Serve(s.ln)
}

// fileKind names what a path holds, for errors.
func fileKind(m os.FileMode) string {
	switch {
	case m.IsDir():
		return "folder"
	case m&os.ModeSymlink != 0:
		return "symbolic link"
	case m.IsRegular():
		return "regular file"
	}
	return "file of another kind"
}

// listenPrivately creates the socket with its final mode and group before
// anyone can reach it: in a fresh folder of mode 0700 beside its path, then
// moved into place. Listening at the path directly would leave it open with
// the umask's mode until a chmod.
func listenPrivately(o Options) (net.Listener, error) {
	dir, err := os.MkdirTemp(filepath.Dir(o.Socket), ".keyd-sock-")
	if err != nil {
		return nil, fmt.Errorf("kubernetes.socket: %w", err)
	}
	defer os.RemoveAll(dir)
	tmp := filepath.Join(dir, "s")
	ln, err := net.Listen("unix", tmp)
	if err != nil {
		return nil, fmt.Errorf("kubernetes.socket %s: %w", o.Socket, err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false) // Serve removes the final path
	fail := func(field string, err error) (net.Listener, error) {
		ln.Close()
		return nil, fmt.Errorf("%s: %w", field, err)
	}
	mode := os.FileMode(0o600)
	if o.Group != "" {
		g, err := user.LookupGroup(o.Group)
		if err != nil {
			return fail("kubernetes.group", err)
		}
		gid, _ := strconv.Atoi(g.Gid)
		if err := os.Chown(tmp, -1, gid); err != nil {
			return fail("kubernetes.group", err)
		}
		mode = 0o660
	}
	if err := os.Chmod(tmp, mode); err != nil {
		return fail("kubernetes.socket", err)
	}
	if err := os.Rename(tmp, o.Socket); err != nil {
		return fail("kubernetes.socket", err)
	}
	return ln, nil
}

// Stop lets calls in progress finish, then stops and removes the socket
// (before it returns, so nobody finds a dead socket after keyd exits).
func (s *Server) Stop() {
	s.grpc.GracefulStop()
	_ = os.Remove(s.o.Socket)
}

// sign signs the claims segment as kube-apiserver built it.
func (s *Server) sign(claims string) (header, signature string, err error) {
	p, err := s.policy()
	if err != nil {
		return "", "", err
	}
	raw, err := base64.RawURLEncoding.DecodeString(claims)
	if err != nil {
		return "", "", status.Error(codes.InvalidArgument, "claims is not base64url (unpadded)")
	}
	// Read exactly the members every verifier reads: duplicates and
	// case variants of registered names are refused, not resolved.
	c, err := signer.DecodeClaims(raw)
	if err != nil {
		return "", "", status.Errorf(codes.InvalidArgument, "claims: %v", err)
	}
	exp, err := strconv.ParseInt(string(c["exp"]), 10, 64)
	now := s.o.Now()
	if err != nil || time.Unix(exp, 0).After(now.Add(p.TokenTTL+time.Minute)) {
		return "", "", status.Errorf(codes.InvalidArgument, "exp must be set (whole seconds) and within the key set's token_ttl (%v, max_token_expiration_seconds)", p.TokenTTL)
	}
	var jti string
	if raw, ok := c["jti"]; ok && (json.Unmarshal(raw, &jti) != nil || len(jti) > signer.MaxJTI) {
		return "", "", status.Errorf(codes.InvalidArgument, "jti must be a string of at most %d bytes", signer.MaxJTI)
	}
	header, signature, kid, err := s.o.Signer.SignSegment(s.o.KeySet, claims)
	if err != nil {
		return "", "", toStatus(err)
	}
	if err := s.o.Audit.Record(audit.Record{Event: audit.EventTokenSigned, KeySet: s.o.KeySet, KID: kid, JTI: jti,
		Sub: audit.Claim(c["sub"]), Aud: audit.Claim(c["aud"]), Exp: exp, Caller: "kube-apiserver", Remote: "unix:" + s.o.Socket}); err != nil {
		return "", "", status.Error(codes.Unavailable, "the audit trail cannot be written, and audit.required refuses to sign without it")
	}
	return header, signature, nil
}

type key struct {
	id   string
	pkix []byte
}

// keys returns the keys that verify, when they were loaded, and the
// refresh hint: jwks_max_age, the time keyd publishes a key before it
// signs, so kube-apiserver always knows a key before its first token.
func (s *Server) keys() ([]key, time.Time, int64, error) {
	p, err := s.policy()
	if err != nil {
		return nil, time.Time{}, 0, err
	}
	pubs, loaded, err := s.o.Signer.PublicKeys(s.o.KeySet)
	if err != nil {
		return nil, time.Time{}, 0, toStatus(err)
	}
	out := make([]key, len(pubs))
	for i, k := range pubs {
		out[i] = key{k.KID, k.PKIX}
	}
	return out, loaded, max(int64(p.JWKSMaxAge/time.Second), 1), nil
}

func (s *Server) policy() (keystore.Policy, error) {
	if !s.o.Ready() {
		return keystore.Policy{}, status.Error(codes.Unavailable, "keyd is starting: the key sets are not loaded yet")
	}
	p, ok := s.o.Policy()
	if !ok {
		return keystore.Policy{}, status.Errorf(codes.FailedPrecondition, "key set %s is not configured", s.o.KeySet)
	}
	return p, nil
}

// toStatus maps keyd's errors to gRPC codes with messages safe to show.
func toStatus(err error) error {
	switch {
	case errors.Is(err, signer.ErrInvalidRequest):
		return status.Error(errcode.GRPC(errcode.BadRequest), err.Error())
	case errors.Is(err, signer.ErrUnknownKeySet):
		return status.Error(errcode.GRPC(errcode.NotReady), "the key set is not loaded")
	case errors.Is(err, keystore.ErrCustodyUnavailable):
		return status.Error(errcode.GRPC(errcode.CustodyUnavailable), "the key set's key custody did not answer")
	}
	return status.Error(errcode.GRPC(errcode.Internal), "internal error")
}

type v1Server struct {
	v1.UnimplementedExternalJWTSignerServer
	s *Server
}

func (v v1Server) Sign(_ context.Context, r *v1.SignJWTRequest) (*v1.SignJWTResponse, error) {
	h, sig, err := v.s.sign(r.GetClaims())
	if err != nil {
		return nil, err
	}
	return &v1.SignJWTResponse{Header: h, Signature: sig}, nil
}

func (v v1Server) FetchKeys(context.Context, *v1.FetchKeysRequest) (*v1.FetchKeysResponse, error) {
	keys, loaded, hint, err := v.s.keys()
	if err != nil {
		return nil, err
	}
	out := &v1.FetchKeysResponse{DataTimestamp: timestamppb.New(loaded), RefreshHintSeconds: hint}
	for _, k := range keys {
		out.Keys = append(out.Keys, &v1.Key{KeyId: k.id, Key: k.pkix})
	}
	return out, nil
}

func (v v1Server) Metadata(context.Context, *v1.MetadataRequest) (*v1.MetadataResponse, error) {
	p, err := v.s.policy()
	if err != nil {
		return nil, err
	}
	return &v1.MetadataResponse{MaxTokenExpirationSeconds: int64(p.TokenTTL / time.Second)}, nil
}

type v1alpha1Server struct {
	v1alpha1.UnimplementedExternalJWTSignerServer
	s *Server
}

func (v v1alpha1Server) Sign(_ context.Context, r *v1alpha1.SignJWTRequest) (*v1alpha1.SignJWTResponse, error) {
	h, sig, err := v.s.sign(r.GetClaims())
	if err != nil {
		return nil, err
	}
	return &v1alpha1.SignJWTResponse{Header: h, Signature: sig}, nil
}

func (v v1alpha1Server) FetchKeys(context.Context, *v1alpha1.FetchKeysRequest) (*v1alpha1.FetchKeysResponse, error) {
	keys, loaded, hint, err := v.s.keys()
	if err != nil {
		return nil, err
	}
	out := &v1alpha1.FetchKeysResponse{DataTimestamp: timestamppb.New(loaded), RefreshHintSeconds: hint}
	for _, k := range keys {
		out.Keys = append(out.Keys, &v1alpha1.Key{KeyId: k.id, Key: k.pkix})
	}
	return out, nil
}

func (v v1alpha1Server) Metadata(context.Context, *v1alpha1.MetadataRequest) (*v1alpha1.MetadataResponse, error) {
	p, err := v.s.policy()
	if err != nil {
		return nil, err
	}
	return &v1alpha1.MetadataResponse{MaxTokenExpirationSeconds: int64(p.TokenTTL / time.Second)}, nil
}
