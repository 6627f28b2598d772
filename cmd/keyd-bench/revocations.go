package main

import (
	"bufio"
	"context"
	crand "crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/keyd-dev/keyd/backends/file"
	"github.com/keyd-dev/keyd/internal/config"
	"github.com/keyd-dev/keyd/internal/parallel"
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
// start-up time and RSS; with Redis also token pairs and refreshes. Two
// keyds run side by side, one on an empty store (and its own
// redis-server) and one on the filled one, and each figure is measured on
// them in turn, round after round (the machine's noise swings a figure by
// a fifth from one minute to the next; alternating makes the ratio one of
// the same minutes): the medians are reported, and the range of the
// rounds' ratios.
func revocationsAtScale(dir string, n int) error {
	engines := []string{"bbolt"}
	if *redisBin != "" {
		engines = append(engines, "redis")
	}
	if *revEngines != "" {
		engines = strings.Split(*revEngines, ",")
	}
	fmt.Printf("\nRevocations in force: none vs %d (16 callers; HTTP; CPU and RSS of keyd; medians of %d alternated rounds)\n", n, *rounds)
	for _, engine := range engines {
		if err := revocationsOn(filepath.Join(dir, "revocations-"+engine), engine, n); err != nil {
			return err
		}
	}
	return nil
}

// side is one of the two keyds revocationsOn compares, its redis-server
// and its figures, round by round.
type side struct {
	keyd, redis *proc
	url         string
	rounds      []revocationFigures
}

// revocationsOn is revocationsAtScale for one engine, in sub.
func revocationsOn(sub, engine string, n int) error {
	var empty, full side
	defer func() {
		for _, s := range []*side{&empty, &full} {
			if s.redis != nil {
				s.redis.stop()
			}
		}
	}()
	for _, s := range []struct {
		side *side
		dir  string
	}{{&empty, filepath.Join(sub, "none")}, {&full, filepath.Join(sub, "full")}} {
		if err := os.MkdirAll(s.dir, 0o700); err != nil {
			return err
		}
		if engine == "redis" {
			srv, url, err := startRedis(s.dir)
			if err != nil {
				return err
			}
			s.side.redis, s.side.url = srv, url
		}
	}
	var err error
	if empty.keyd, err = startKeyd(filepath.Join(sub, "none"), revocationConfig(filepath.Join(sub, "none"), empty.url)); err != nil {
		return err
	}
	defer empty.keyd.stop()
	// Fill n, straight into the engine's store (with Redis, n logins
	// too), then start the second keyd on it.
	t0 := time.Now()
	if err := fill(filepath.Join(sub, "full"), full.url, n); err != nil {
		return err
	}
	if full.url != "" {
		if err := fillLogins(full.url, n); err != nil {
			return err
		}
	}
	fillTime := time.Since(t0)
	if full.url != "" {
		// Measure Redis in its steady state, not during or right after
		// the rewrites the fill set off.
		if err := settle(&full, filepath.Join(sub, "full")); err != nil {
			return err
		}
	}
	t0 = time.Now()
	if full.keyd, err = startKeyd(filepath.Join(sub, "full"), revocationConfig(filepath.Join(sub, "full"), full.url)); err != nil {
		return err
	}
	defer full.keyd.stop()
	ready := time.Since(t0)
	rss, anon := full.keyd.rss(), full.keyd.rssAnon()
	for range max(*rounds, 1) {
		for _, s := range []*side{&empty, &full} {
			s.rounds = append(s.rounds, measureRevocations(s.keyd, engine == "redis", s.redis))
		}
	}
	loaded := full.keyd.rssAnon()
	fmt.Printf("%-6s filled %d (and as many logins with Redis) in %s; start-up with them: ready in %s, RSS %d MiB (%d MiB its own, the rest the database file's mapped pages); %d MiB its own after the loads below\n",
		engine, n, fillTime.Round(time.Second), ready.Round(time.Millisecond), rss>>20, anon>>20, loaded>>20)
	ratio := func(of func(revocationFigures) float64) string {
		e, f := median(empty.rounds, of), median(full.rounds, of)
		lo, hi := 0.0, 0.0
		for i := range full.rounds {
			r := of(full.rounds[i]) / of(empty.rounds[i])
			if i == 0 || r < lo {
				lo = r
			}
			hi = max(hi, r)
		}
		return fmt.Sprintf("%8.0f/s none, %8.0f/s with them (%.2f; rounds %.2f-%.2f)", e, f, f/e, lo, hi)
	}
	fmt.Printf("%-6s revoke:  %s\n", engine, ratio(func(f revocationFigures) float64 { return f.revoke }))
	fmt.Printf("%-6s verify:  %s\n", engine, ratio(func(f revocationFigures) float64 { return f.verify }))
	if engine == "redis" {
		// Each caller makes a pair, then spends its refresh token: two
		// requests a login.
		var logins int64
		for _, r := range append(empty.rounds, full.rounds...) {
			logins += r.logins
		}
		fmt.Printf("%-6s token-pair + refresh, requests: %s; %d logins stored beside the revocations at the end\n", engine,
			ratio(func(f revocationFigures) float64 { return 2 * f.pairs }), int64(n)+logins)
		fmt.Printf("%-6s the same as logins, a pair then its refresh: %s\n", engine, ratio(func(f revocationFigures) float64 { return f.pairs }))
		fmt.Printf("%-6s redis-server's CPU per second of measurement (revoke, verify): none %.2f, %.2f; with them %.2f, %.2f\n", engine,
			median(empty.rounds, func(f revocationFigures) float64 { return f.redisRevoke }), median(empty.rounds, func(f revocationFigures) float64 { return f.redisVerify }),
			median(full.rounds, func(f revocationFigures) float64 { return f.redisRevoke }), median(full.rounds, func(f revocationFigures) float64 { return f.redisVerify }))
	}
	return nil
}

// median is the median of of over rounds.
func median(rounds []revocationFigures, of func(revocationFigures) float64) float64 {
	v := make([]float64, len(rounds))
	for i, r := range rounds {
		v[i] = of(r)
	}
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

func revocationConfig(dir, redisURL string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "listen: 127.0.0.1:0\nstorage:\n  backend: file\n  file: {path: %q}\n", filepath.Join(dir, "keyd.db"))
	if redisURL != "" {
		fmt.Fprintf(&b, "  token_state: {backend: redis, url: %q}\n", redisURL)
	}
	fmt.Fprintf(&b, "keysets:\n  - {name: app, algorithm: ES256, rotation: \"@daily\", token_ttl: 1h, jwks_max_age: 5m, max_revocations: 10000000, refresh: {ttl: 24h}}\n")
	fmt.Fprintf(&b, "auth:\n  tokens:\n    - {name: bench, sha256: %q, scopes: [admin, \"sign:*\", \"verify:*\"]}\n", config.TokenHash(token))
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
// the first error (the others' writes go on).
func writers(n int, write func(i int64) error) error {
	var first atomic.Pointer[error]
	parallel.Each(n, 64, func(i int) {
		if err := write(int64(i) + 1); err != nil {
			first.CompareAndSwap(nil, &err)
		}
	})
	if p := first.Load(); p != nil {
		return *p
	}
	return nil
}

// fillLogins stores n refresh token logins in Redis as keyd stores them
// (one key per login, a family of its size, expiring in a day), from 64
// writers at once.
func fillLogins(redisURL string, n int) error {
	s, err := keydredis.Open(context.Background(), keydredis.Options{URL: redisURL})
	if err != nil {
		return err
	}
	defer s.Close()
	return writeLogins(s.Records(), n)
}

// writeLogins writes n refresh logins of key set app into rs, from 64
// writers at once.
func writeLogins(rs keystore.RecordStore, n int) error {
	ctx := context.Background()
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
// answer) on a keep-alive connection of its own, and returns the completed
// calls (or pairs of calls) per second.
func callers(n int, next func() (string, []byte), p *proc, then func([]byte) (string, []byte)) float64 {
	var done atomic.Int64
	stop := time.Now().Add(*duration)
	start := time.Now()
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			c := &leanClient{addr: strings.TrimPrefix(p.addr, "http://")}
			defer c.close()
			for time.Now().Before(stop) {
				out, ok := c.post(next())
				if ok && then != nil {
					_, ok = c.post(then(out))
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

// leanClient is one caller's keep-alive HTTP/1.1 connection to keyd: it
// writes each request in one write and reads the answer with
// http.ReadResponse, in the caller's goroutine (as wrk does), where
// http.Client hands each request to the connection's own reader and
// writer goroutines. The load generator shares the cores with keyd (and
// redis-server): on this machine http.Client cost 85-95 µs of CPU per
// request, more than half of what keyd spends answering a revocation, and
// its share is taken from keyd's figures.
type leanClient struct {
	addr string
	c    net.Conn
	r    *bufio.Reader
	buf  []byte
}

// post sends body to path and returns the answer's body and whether it
// is a 200; on any error the connection is closed and redialled next time.
func (l *leanClient) post(path string, body []byte) ([]byte, bool) {
	if l.c == nil {
		c, err := net.Dial("tcp", l.addr)
		if err != nil {
			return nil, false
		}
		l.c, l.r = c, bufio.NewReader(c)
	}
	l.buf = fmt.Appendf(l.buf[:0], "POST %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n",
		path, l.addr, token, len(body))
	l.buf = append(l.buf, body...)
	if _, err := l.c.Write(l.buf); err != nil {
		l.close()
		return nil, false
	}
	resp, err := http.ReadResponse(l.r, nil)
	if err != nil {
		l.close()
		return nil, false
	}
	out, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.Close {
		l.close()
	}
	return out, err == nil && resp.StatusCode == http.StatusOK
}

func (l *leanClient) close() {
	if l.c != nil {
		l.c.Close()
		l.c = nil
	}
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

// settle rewrites the AOF of the side's Redis once the fill is written
// (waiting at most two minutes each for the rewrites under way and its
// own), then restarts it on the rewritten file in dir. A million keys
// written at once set off rewrites, each taking a core while it runs, and
// each a fork: after one, Redis's first write to each page of its memory
// is a page fault (a revocation's script cost 40 µs in Redis for a while
// after one here, 18 µs before and after), so measuring right after the
// fill measured the fork, not the million. A restarted Redis holds its
// data in pages of its own, as one does between rewrites.
func settle(s *side, dir string) error {
	opts, err := goredis.ParseURL(s.url)
	if err != nil {
		return err
	}
	c := goredis.NewClient(opts)
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
	c.Close()
	s.redis.stop()
	if s.redis, s.url, err = startRedis(dir); err != nil {
		return err
	}
	// It answers LOADING until the file is read.
	opts, _ = goredis.ParseURL(s.url)
	c = goredis.NewClient(opts)
	defer c.Close()
	deadline := time.Now().Add(2 * time.Minute)
	for c.Ping(ctx).Err() != nil {
		if time.Now().After(deadline) {
			return errors.New("redis-server did not load its AOF within two minutes")
		}
		time.Sleep(100 * time.Millisecond)
	}
	return nil
}
