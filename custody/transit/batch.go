package transit

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
)

// DefaultMaxInFlight is how many requests keyd keeps out to Transit for
// one key before the next signatures wait to leave together (New's
// default; Custody.MaxInFlight changes it). On the 2-core machine with
// OpenBao beside keyd, 32 concurrent callers: 2 in flight gave 1.09 of
// Transit called directly, 4 gave 0.94, 8 0.87, 16 0.77, no limit 0.57; a
// Vault with more cores of its own serves more requests at once.
const DefaultMaxInFlight = 4

// maxBatch bounds the inputs of one Transit request (and so the size of
// its answer: 256 RSA-4096 signatures are about 180 KB).
const maxBatch = 256

// SignConcurrency implements keystore.CustodyConcurrency: a batch of
// tokens asks for all its signatures at once, and they leave together in
// a request or a few.
func (t *Custody) SignConcurrency() int { return maxBatch }

// params are the fields of a Transit sign or hmac request other than its
// inputs: the same for every signature of one key.
type params struct {
	Prehashed          bool   `json:"prehashed,omitempty"`
	Marshaling         string `json:"marshaling_algorithm,omitempty"`
	SignatureAlgorithm string `json:"signature_algorithm,omitempty"`
	SaltLength         string `json:"salt_length,omitempty"`
}

type batchRequest struct {
	BatchInput []batchInput `json:"batch_input"`
	params
}

type batchInput struct {
	Input string `json:"input"`
}

// batcher sends the signatures (or MACs) asked of one Transit key at one
// path with the same params. A caller's input leaves at once while fewer
// than maxInFlight requests are out; under more load the inputs that
// arrive meanwhile wait for the next request to free up and leave together
// in it (Transit's batch_input, up to maxBatch): batching adds no delay to
// a lone caller and forms only under load, where it saves Vault and keyd a
// round trip, a token lookup and a request's bookkeeping per signature.
type batcher struct {
	t      *Custody
	path   string
	params params
	field  string // the value each batch result carries: signature or hmac

	mu       sync.Mutex
	queue    []*pending
	inFlight int
}

type pending struct {
	input string // base64
	out   []byte
	err   error
	done  chan struct{}
}

// do returns the decoded value Transit gives for input.
func (b *batcher) do(input []byte) ([]byte, error) {
	p := &pending{input: base64.StdEncoding.EncodeToString(input), done: make(chan struct{})}
	b.mu.Lock()
	b.queue = append(b.queue, p)
	if b.inFlight < b.t.maxInFlight() {
		b.inFlight++
		b.mu.Unlock()
		b.flush()
	} else {
		b.mu.Unlock()
	}
	<-p.done
	return p.out, p.err
}

// flush holds one of the in-flight places: it sends what waits, and when
// more has arrived by the time the answer is in, hands its place to a
// goroutine that sends that, so its own caller is answered at once.
func (b *batcher) flush() {
	b.mu.Lock()
	n := min(len(b.queue), maxBatch)
	batch := make([]*pending, n)
	copy(batch, b.queue)
	b.queue = append(b.queue[:0], b.queue[n:]...)
	b.mu.Unlock()

	b.send(batch)

	b.mu.Lock()
	if len(b.queue) > 0 {
		b.mu.Unlock()
		go b.flush()
		return
	}
	b.inFlight--
	b.mu.Unlock()
}

// send makes one Transit request for batch and answers each of its
// callers.
func (b *batcher) send(batch []*pending) {
	req := batchRequest{BatchInput: make([]batchInput, len(batch)), params: b.params}
	for i, p := range batch {
		req.BatchInput[i].Input = p.input
	}
	results, err := b.t.postBatch(b.path, req)
	if err == nil && len(results) != len(batch) {
		err = fmt.Errorf("%d results for %d inputs", len(results), len(batch))
	}
	for i, p := range batch {
		switch {
		case err != nil:
			p.err = err
		case results[i].Error != "":
			p.err = fmt.Errorf("%s", results[i].Error)
		default:
			v := results[i].Signature
			if b.field == "hmac" {
				v = results[i].HMAC
			}
			p.out, p.err = decodeValue(b.field, v)
		}
		close(p.done)
	}
}

type batchResult struct {
	Signature string `json:"signature"`
	HMAC      string `json:"hmac"`
	Error     string `json:"error"`
}

// postBatch sends req to path on the Vault client's own pooled
// connections with its token (not through the api package's per-request
// machinery: this is the hot path), and returns the batch's results.
func (t *Custody) postBatch(path string, req batchRequest) ([]batchResult, error) {
	raw, _ := json.Marshal(req)
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, t.c.Address()+"/v1/"+path, bytes.NewReader(raw))
	if err != nil {
		return nil, err
	}
	hreq.Header.Set("X-Vault-Token", t.c.Token())
	hreq.Header.Set("Content-Type", "application/json")
	if ns := t.c.Namespace(); ns != "" {
		hreq.Header.Set("X-Vault-Namespace", ns)
	}
	resp, err := t.http.Do(hreq)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var out struct {
		Data struct {
			BatchResults []batchResult `json:"batch_results"`
		} `json:"data"`
		Errors []string `json:"errors"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&out); err != nil || resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", resp.Status, strings.Join(out.Errors, "; "))
	}
	return out.Data.BatchResults, nil
}

// decodeValue decodes a vault:vN:base64 value.
func decodeValue(field, v string) ([]byte, error) {
	parts := strings.SplitN(v, ":", 3)
	if len(parts) != 3 || parts[0] != "vault" {
		return nil, fmt.Errorf("the %s is not vault:vN:base64", field)
	}
	return base64.StdEncoding.DecodeString(parts[2])
}
