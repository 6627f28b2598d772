package main

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/keyd-dev/keyd/backends/file"
	"github.com/keyd-dev/keyd/internal/daemon"
	"github.com/keyd-dev/keyd/keystore"
	"github.com/keyd-dev/keyd/refresh"
	"github.com/keyd-dev/keyd/tokenstate"
	"github.com/keyd-dev/keyd/tokenstate/records"
	keydredis "github.com/keyd-dev/keyd/tokenstate/redis"
)

// --- revocations at scale ---------------------------------------------------------

// revocationsAtScale measures, for each token state engine (bbolt, and
// Redis when a redis-server is given), keyd with none and with n
// revocations in force: revocation writes by 16 callers, verification,
// start-up time and RSS; with Redis also token pairs and refreshes.
func revocationsAtScale(dir string, n int) error {
	engines := []string{"bbolt"}
	if *redisBin != "" {
		engines = append(engines, "redis")
	}
	if *revEngines != "" {
		engines = strings.Split(*revEngines, ",")
	}
	fmt.Printf("\nRevocations in force: none vs %d (16 callers; HTTP; CPU and RSS of keyd)\n", n)
	for _, engine := range engines {
		sub := filepath.Join(dir, "revocations-"+engine)
		if err := os.MkdirAll(sub, 0o700); err != nil {
			return err
		}
		var redisURL string
		var redisProc *proc
		if engine == "redis" {
			srv, url, err := startRedis(sub)
			if err != nil {
				return err
			}
			defer srv.stop()
			redisURL, redisProc = url, srv
		}
		cfg := revocationConfig(sub, redisURL)
		// With none in force.
		p, err := startKeyd(sub, cfg)
		if err != nil {
			return err
		}
		empty := measureRevocations(p, engine == "redis", redisProc)
		p.stop()
		// Fill n, straight into the engine's store (with Redis, n logins
		// too), then start again.
		t0 := time.Now()
		if err := fill(sub, redisURL, n); err != nil {
			return err
		}
		if redisURL != "" {
			if err := fillLogins(redisURL, n); err != nil {
				return err
			}
		}
		fillTime := time.Since(t0)
		if redisURL != "" {
			settle(redisURL) // measure Redis in its steady state, not during the rewrite the fill set off
		}
		t0 = time.Now()
		p, err = startKeyd(sub, cfg)
		if err != nil {
			return err
		}
		ready := time.Since(t0)
		rss, anon := p.rss(), p.rssAnon()
		full := measureRevocations(p, engine == "redis", redisProc)
		loaded := p.rssAnon()
		p.stop()
		fmt.Printf("%-6s filled %d (and as many logins with Redis) in %s; start-up with them: ready in %s, RSS %d MiB (%d MiB its own, the rest the database file's mapped pages); %d MiB its own after the load below\n",
			engine, n, fillTime.Round(time.Second), ready.Round(time.Millisecond), rss>>20, anon>>20, loaded>>20)
		fmt.Printf("%-6s revoke: %8.0f/s none, %8.0f/s with %d (%.2f); verify: %8.0f/s none, %8.0f/s with them (%.2f)\n", engine,
			empty.revoke, full.revoke, n, full.revoke/empty.revoke, empty.verify, full.verify, full.verify/empty.verify)
		if engine == "redis" {
			fmt.Printf("%-6s token-pair + refresh: %8.0f logins/s none, %8.0f/s with %d logins stored (%.2f; each login a pair then a refresh)\n",
				engine, empty.pairs, full.pairs, int64(n)+empty.logins+full.logins, full.pairs/empty.pairs)
			fmt.Printf("%-6s redis-server's CPU per second of measurement (revoke, verify): none %.2f, %.2f; with them %.2f, %.2f\n", engine,
				empty.redisRevoke, empty.redisVerify, full.redisRevoke, full.redisVerify)
		}
	}
	return nil
}

func revocationConfig(dir, redisURL string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "listen: 127.0.0.1:0\nstorage:\n  backend: file\n  file: {path: %q}\n", filepath.Join(dir, "keyd.db"))
	if redisURL != "" {
		fmt.Fprintf(&b, "  token_state: {backend: redis, url: %q}\n", redisURL)
	}
	fmt.Fprintf(&b, "keysets:\n  - {name: app, algorithm: ES256, rotation: \"@daily\", token_ttl: 1h, jwks_max_age: 5m, max_revocations: 10000000, refresh: {ttl: 24h}}\n")
	fmt.Fprintf(&b, "auth:\n  tokens:\n    - {name: bench, sha256: %q, scopes: [admin, \"sign:*\", \"verify:*\"]}\n", daemon.TokenHash(token))
	return b.String()
}

// fill writes n revocations of tokens still valid, made over the last
// hour, from 64 writers at once.
func fill(dir, redisURL string, n int) error {
	ctx := context.Background()
	var st tokenstate.Store
	if redisURL != "" {
		s, err := keydredis.Open(ctx, keydredis.Options{URL: redisURL})
		if err != nil {
			return err
		}
		defer s.Close()
		st = s
	} else {
		key, _ := base64.StdEncoding.DecodeString(masterKey)
		s, err := file.Open(file.Options{Path: filepath.Join(dir, "keyd.db"), MasterKey: key})
		if err != nil {
			return err
		}
		defer s.Close()
		st = records.New(s)
	}
	now := time.Now()
	return writers(n, func(i int64) error {
		r := tokenstate.Revocation{KeySet: "app", JTI: fmt.Sprintf("fill-%016d", i), Expires: now.Add(2 * time.Hour),
			RevokedAt: now.Add(-time.Duration(rand.Int64N(int64(time.Hour)))), Reason: "logout"}
		_, err := st.PutRevocation(ctx, r)
		return err
	})
}

// writers calls write with 1 to n from 64 writers at once, and returns
// the first error (each writer stops at its own).
func writers(n int, write func(i int64) error) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for range 64 {
		wg.Go(func() {
			for i := next.Add(1); i <= int64(n); i = next.Add(1) {
				if err := write(i); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// fillLogins stores n refresh token logins in Redis as keyd stores them
// (one key per login, a family of its size, expiring in a day), from 64
// writers at once.
func fillLogins(redisURL string, n int) error {
	ctx := context.Background()
	s, err := keydredis.Open(ctx, keydredis.Options{URL: redisURL})
	if err != nil {
		return err
	}
	defer s.Close()
	rs := s.Records()
	now := time.Now().UTC()
	return writers(n, func(i int64) error {
		id, secret := make([]byte, 16), make([]byte, 32)
		_, _ = crand.Read(id)
		_, _ = crand.Read(secret)
		data, _ := json.Marshal(map[string]any{"keyset": "app", "claims": map[string]string{"sub": fmt.Sprintf("user-%d", i)},
			"secret": secret, "generation": 1, "created_at": now, "expires_at": now.Add(24 * time.Hour)})
		rec := &keystore.Record{ID: base64.RawURLEncoding.EncodeToString(id), Data: data, Expires: now.Add(48 * time.Hour)}
		_, err := rs.PutRecord(ctx, refresh.Kind, rec)
		return err
	})
}

type revocationFigures struct {
	revoke, verify, pairs    float64
	logins                   int64
	redisRevoke, redisVerify float64 // redis-server's CPU seconds per second
}

func measureRevocations(p *proc, pairs bool, redis *proc) revocationFigures {
	var f revocationFigures
	exp := time.Now().Add(time.Hour).Unix()
	var seq atomic.Int64
	busy := func(run func()) float64 {
		if redis == nil {
			run()
			return 0
		}
		c0, t0 := redis.cpu(), time.Now()
		run()
		return (redis.cpu() - c0).Seconds() / time.Since(t0).Seconds()
	}
	f.redisRevoke = busy(func() {
		f.revoke = callers(16, func() (string, []byte) {
			return "/v1/keysets/app/revocations", fmt.Appendf(nil, `{"jti":"bench-%d-%d","exp":%d}`, time.Now().UnixNano(), seq.Add(1), exp)
		}, p, nil)
	})
	tok := signOne(p)
	body := []byte(`{"token":"` + tok + `"}`)
	f.redisVerify = busy(func() {
		f.verify = callers(16, func() (string, []byte) { return "/v1/keysets/app/verify", body }, p, nil)
	})
	if pairs {
		f.pairs = callers(16, func() (string, []byte) { return "/v1/keysets/app/token-pair", []byte(`{"claims":{"sub":"user"}}`) }, p,
			func(resp []byte) (string, []byte) {
				var out struct {
					R string `json:"refresh_token"`
				}
				_ = json.Unmarshal(resp, &out)
				return "/v1/keysets/app/refresh", []byte(`{"refresh_token":"` + out.R + `"}`)
			})
		f.logins = int64(f.pairs * duration.Seconds())
	}
	return f
}

func signOne(p *proc) string {
	req, _ := http.NewRequest("POST", p.addr+"/v1/keysets/app/sign", strings.NewReader(`{"claims":{"sub":"alice"}}`))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := client.Do(req)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	var out struct{ Token string }
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return out.Token
}

// callers runs n concurrent callers for the duration, each calling the
// request next gives (then, if then is set, the request it makes of the
// answer), and returns the completed calls (or pairs of calls) per second.
func callers(n int, next func() (string, []byte), p *proc, then func([]byte) (string, []byte)) float64 {
	call := func(path string, body []byte) ([]byte, bool) {
		req, _ := http.NewRequest("POST", p.addr+path, bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := client.Do(req)
		if err != nil {
			return nil, false
		}
		defer resp.Body.Close()
		out, _ := io.ReadAll(resp.Body)
		return out, resp.StatusCode == 200
	}
	var done atomic.Int64
	stop := time.Now().Add(*duration)
	start := time.Now()
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			for time.Now().Before(stop) {
				out, ok := call(next())
				if ok && then != nil {
					_, ok = call(then(out))
				}
				if ok {
					done.Add(1)
				}
			}
		})
	}
	wg.Wait()
	return float64(done.Load()) / time.Since(start).Seconds()
}

// startRedis runs a redis-server with AOF (appendfsync everysec, as the
// README recommends) in dir on a free port.
func startRedis(dir string) (*proc, string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", err
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cmd := exec.Command(*redisBin, "--port", fmt.Sprint(port), "--bind", "127.0.0.1", "--dir", dir, "--appendonly", "yes", "--appendfsync", "everysec", "--save", "")
	if err := cmd.Start(); err != nil {
		return nil, "", err
	}
	url := fmt.Sprintf("redis://127.0.0.1:%d/0", port)
	for range 100 {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			c.Close()
			return &proc{cmd: cmd}, url, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	_ = cmd.Process.Kill()
	return nil, "", fmt.Errorf("redis-server did not listen on %d", port)
}

// settle rewrites Redis's AOF once the fill is written and waits for it
// (at most two minutes each): a million keys written at once set off
// rewrites, each taking a core while it runs, and the last one's base
// leaves the file close to doubling, the next rewrite's trigger, so the
// measurement would meet one or not by luck. After this rewrite the next
// one is a million writes away, as it is in a steady state.
func settle(url string) {
	opts, err := goredis.ParseURL(url)
	if err != nil {
		return
	}
	c := goredis.NewClient(opts)
	defer c.Close()
	ctx := context.Background()
	idle := func() {
		deadline := time.Now().Add(2 * time.Minute)
		for time.Now().Before(deadline) {
			info, err := c.Info(ctx, "persistence").Result()
			if err != nil || (strings.Contains(info, "aof_rewrite_in_progress:0") && strings.Contains(info, "rdb_bgsave_in_progress:0") &&
				!strings.Contains(info, "aof_rewrite_scheduled:1")) {
				return
			}
			time.Sleep(500 * time.Millisecond)
		}
	}
	idle()
	if c.BgRewriteAOF(ctx).Err() == nil {
		time.Sleep(500 * time.Millisecond)
		idle()
	}
}
