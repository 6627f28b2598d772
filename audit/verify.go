package audit

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
)

// VerifyResult says how much of a trail checked out.
type VerifyResult struct {
	Files   int
	Records int
}

// Verify checks the chain of the files in order (oldest first): every line
// matches its own hash, and every record names the one before it, across
// files too. The first record of the first file is taken as it is. It
// returns an error naming the file and line of the first break.
func Verify(paths ...string) (VerifyResult, error) {
	var res VerifyResult
	var last [32]byte
	started := false
	for _, path := range paths {
		f, err := os.Open(path)
		if err != nil {
			return res, err
		}
		n, err := verifyFile(f, path, &last, &started)
		f.Close()
		res.Records += n
		if err != nil {
			return res, err
		}
		res.Files++
	}
	return res, nil
}

func verifyFile(r io.Reader, path string, last *[32]byte, started *bool) (int, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	n := 0
	for lineNo := 1; ; lineNo++ {
		line, err := br.ReadBytes('\n')
		if err == io.EOF && len(line) == 0 {
			return n, nil
		}
		if err != nil && err != io.EOF {
			return n, fmt.Errorf("%s: %w", path, err)
		}
		if err == io.EOF {
			return n, fmt.Errorf("%s:%d: the last record is incomplete (no newline)", path, lineNo)
		}
		hash, prev, perr := parseLine(bytes.TrimSuffix(line, []byte("\n")))
		if perr != nil {
			return n, fmt.Errorf("%s:%d: %v", path, lineNo, perr)
		}
		if *started && prev != *last {
			return n, fmt.Errorf("%s:%d: the record does not follow the one before it (a record was removed, inserted or reordered here)", path, lineNo)
		}
		*last, *started = hash, true
		n++
	}
}
