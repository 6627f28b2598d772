package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/keyd-dev/keyd/client"
)

// importRevocations sends a denylist file (or stdin) to the import
// endpoint, telling its progress on stderr every 100,000 lines.
func importRevocations(ctx context.Context, c *client.Client, keyset, from string, o cmdIO) error {
	in := o.stdin
	if from != "-" {
		f, err := os.Open(from)
		if err != nil {
			return err
		}
		defer f.Close()
		in = f
	}
	start := time.Now()
	out, err := c.ImportRevocations(ctx, keyset, &progress{r: in, w: o.stderr, start: start})
	if err != nil {
		return err
	}
	fmt.Fprintf(o.stderr, "imported %d revocations in %v (%d expired already, %d refused)\n", out.Imported, time.Since(start).Round(time.Millisecond), out.Expired, out.Refused)
	printJSON(o.stdout, out)
	if out.Refused > 0 {
		return fmt.Errorf("%d lines were refused (the first ones are named above); the others were imported", out.Refused)
	}
	return nil
}

// progress counts the lines read through it and says so every 100,000.
type progress struct {
	r     io.Reader
	w     io.Writer
	start time.Time
	lines int
}

func (p *progress) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	for _, c := range b[:n] {
		if c == '\n' {
			if p.lines++; p.lines%100_000 == 0 {
				fmt.Fprintf(p.w, "sent %d lines (%v)\n", p.lines, time.Since(p.start).Round(time.Second))
			}
		}
	}
	return n, err
}
