package main

// Load: the HTTP load generator and its summaries.

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"time"
)

type result struct {
	perSec   float64 // units per second (tokens, or requests)
	cpuPer   float64 // µs of the target's CPU per unit
	p50, p99 time.Duration
}

var client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1024, MaxConnsPerHost: 1024}, Timeout: time.Minute}

// load sends requests from conns goroutines for the duration; each
// successful request counts units (tokens per request).
func load(p *proc, method, path string, body []byte, units int) result {
	return loadAs(p, method, path, body, units, "Authorization", "Bearer "+token)
}

// loadAs is load with the credential in another header.
func loadAs(p *proc, method, path string, body []byte, units int, header, value string) result {
	url := p.addr + path
	// Warm the connections and the server.
	runLoad(method, url, body, 300*time.Millisecond, header, value)
	cpu0 := p.cpu()
	start := time.Now()
	lat := runLoad(method, url, body, *duration, header, value)
	elapsed := time.Since(start)
	cpu := p.cpu() - cpu0
	return summarize(lat, units, elapsed, cpu)
}

func summarize(lat []time.Duration, units int, elapsed, cpu time.Duration) result {
	slices.Sort(lat)
	n := len(lat) * units
	if n == 0 {
		return result{}
	}
	return result{
		perSec: float64(n) / elapsed.Seconds(),
		cpuPer: float64(cpu.Microseconds()) / float64(n),
		p50:    lat[len(lat)/2].Round(time.Microsecond), p99: lat[len(lat)*99/100].Round(time.Microsecond),
	}
}

func runLoad(method, url string, body []byte, d time.Duration, header, value string) []time.Duration {
	var mu sync.Mutex
	var all []time.Duration
	var wg sync.WaitGroup
	stop := time.Now().Add(d)
	for range *conns {
		wg.Go(func() {
			var mine []time.Duration
			for time.Now().Before(stop) {
				t0 := time.Now()
				req, _ := http.NewRequest(method, url, bytes.NewReader(body))
				req.Header.Set(header, value)
				resp, err := client.Do(req)
				if err != nil {
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == 200 {
					mine = append(mine, time.Since(t0))
				}
			}
			mu.Lock()
			all = append(all, mine...)
			mu.Unlock()
		})
	}
	wg.Wait()
	return all
}

func fetch(url string) ([]byte, error) {
	resp, err := client.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return io.ReadAll(resp.Body)
}

func post(url string, body []byte) error {
	resp, err := client.Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

// postAuth posts body with the bench's bearer token and returns the answer
// (an error unless 200).
func postAuth(url string, body []byte) ([]byte, error) {
	req, err := http.NewRequest("POST", url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != 200 {
		err = fmt.Errorf("%s: HTTP %d: %s", url, resp.StatusCode, out)
	}
	return out, err
}

// medianResult is the median of each figure of rs, taken separately.
func medianResult(rs []result) result {
	med := func(f func(result) float64) float64 {
		v := make([]float64, len(rs))
		for i, r := range rs {
			v[i] = f(r)
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	return result{
		perSec: med(func(r result) float64 { return r.perSec }),
		cpuPer: med(func(r result) float64 { return r.cpuPer }),
		p50:    time.Duration(med(func(r result) float64 { return float64(r.p50) })),
		p99:    time.Duration(med(func(r result) float64 { return float64(r.p99) })),
	}
}
