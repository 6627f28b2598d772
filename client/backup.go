package client

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
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
	resp, err := c.stream(ctx, "/v1/backup", "application/json", bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	return io.Copy(w, resp.Body)
}
