package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
)

// Backup asks keyd for a backup of every key set and all token state,
// encrypted to the age recipients given (age1... public keys), and copies
// it to w (admin). keyd answers once the whole backup is made; it is not
// bounded by the client's timeout but by ctx. Check what w holds before
// trusting it (the keyd CLI reads it back): a connection cut while it is
// sent leaves a truncated file.
func (c *Client) Backup(ctx context.Context, recipients []string, w io.Writer) (int64, error) {
	body, err := json.Marshal(struct {
		Recipients []string `json:"recipients"`
	}{recipients})
	if err != nil {
		return 0, err
	}
	req, err := http.NewRequestWithContext(ctx, "POST", c.base+"/v1/backup", bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	hc := *c.http
	hc.Timeout = 0
	resp, err := hc.Do(req)
	if err != nil {
		return 0, fmt.Errorf("cannot reach keyd at %s: %w", c.base, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return 0, apiError(resp, data)
	}
	return io.Copy(w, resp.Body)
}
