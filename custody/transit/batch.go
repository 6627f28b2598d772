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

	"github.com/keyd-dev/keyd/internal/gather"
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
	// KeyVersion pins the version keyd signs with: 1, the only one keyd
	// makes and the one its JWKS holds (a rotation behind keyd's back
	// changes nothing it signs).
	KeyVersion int `json:"key_version,omitempty"`
}

type batchRequest struct {
	BatchInput []batchInput `json:"batch_input"`
	params
}

type batchInput struct {
	Input string `json:"input"`
}

// batcher sends the signatures (or MACs) asked of one Transit key at one
// path with the same params together (gather.Batcher: a lone caller's
// input leaves at once; under load the inputs that arrive while
// maxInFlight requests are out leave together in Transit's batch_input,
// up to maxBatch), saving Vault and keyd a round trip, a token lookup and
// a request's bookkeeping per signature.
type batcher struct {
	t      *Custody
	path   string
	params params
	field  string // the value each batch result carries: signature or hmac
	g      gather.Batcher[string, []byte]
}

func newBatcher(t *Custody, path string, p params, field string) *batcher {
	b := &batcher{t: t, path: path, params: p, field: field}
	b.g = gather.Batcher[string, []byte]{MaxInFlight: t.maxInFlight(), MaxBatch: maxBatch, Send: b.send}
	return b
}

// do returns the decoded value Transit gives for input.
func (b *batcher) do(input []byte) ([]byte, error) {
	return b.g.Do(base64.StdEncoding.EncodeToString(input))
}

// send makes one Transit request for inputs (base64).
func (b *batcher) send(inputs []string) ([][]byte, []error) {
	outs, errs := make([][]byte, len(inputs)), make([]error, len(inputs))
	req := batchRequest{BatchInput: make([]batchInput, len(inputs)), params: b.params}
	for i, in := range inputs {
		req.BatchInput[i].Input = in
	}
	results, err := b.t.postBatch(b.path, req)
	if err == nil && len(results) != len(inputs) {
		err = fmt.Errorf("%d results for %d inputs", len(results), len(inputs))
	}
	for i := range inputs {
		switch {
		case err != nil:
			errs[i] = err
		case results[i].Error != "":
			errs[i] = fmt.Errorf("%s", results[i].Error)
		default:
			v := results[i].Signature
			if b.field == "hmac" {
				v = results[i].HMAC
			}
			outs[i], errs[i] = decodeValue(b.field, v)
		}
	}
	return outs, errs
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

// decodeValue decodes a vault:v1:base64 value: a value of any other
// version is not of the key keyd published, and is refused.
func decodeValue(field, v string) ([]byte, error) {
	parts := strings.SplitN(v, ":", 3)
	if len(parts) != 3 || parts[0] != "vault" {
		return nil, fmt.Errorf("the %s is not vault:vN:base64", field)
	}
	if parts[1] != "v1" {
		return nil, fmt.Errorf("the %s was made with version %s of the key, not version 1, the one keyd publishes", field, parts[1])
	}
	return base64.StdEncoding.DecodeString(parts[2])
}
