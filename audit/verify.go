package audit

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
)

// VerifyResult says how much of a trail checked out.
type VerifyResult struct {
	Files   int
	Records int
	// Keyed trails: the first and last sequence numbers seen (a first seq
	// above 1 means older files were not given), and the last checkpoint.
	FirstSeq, LastSeq uint64
	Checkpoints       int
	Keyed             bool
}

// VerifyOptions are what a keyed trail is checked with.
type VerifyOptions struct {
	// Key is the trail's audit key: every keyed line must verify under it.
	// A trail that holds keyed lines cannot be checked without it.
	Key []byte
	// Checkpoint, when set, is one keyd logged (seq and MAC in hex): the
	// trail must hold that record with that MAC, which also shows whether
	// records were removed from its end.
	CheckpointSeq uint64
	CheckpointMAC string
}

// Verify checks an unkeyed trail; see VerifyWith.
func Verify(paths ...string) (VerifyResult, error) { return VerifyWith(VerifyOptions{}, paths...) }

// VerifyWith checks the chain of the files in order (oldest first): every
// line matches its own hash (HMAC under o.Key for keyed lines), and every
// record names the one before it, across files too. For a keyed trail it
// also checks that sequence numbers run without a gap, that every file
// begins with a checkpoint at offset 0 and every checkpoint stands at the
// offset it records (so records removed from the front of a file, or
// before a checkpoint, are found), and, given one, the logged checkpoint.
// With a key, every line after the first keyed one must be keyed (lines
// before it are the unkeyed trail keyd continued when the key was set).
// It returns an error naming the file and line of the first break.
func VerifyWith(o VerifyOptions, paths ...string) (VerifyResult, error) {
	v := &verifier{o: o}
	for _, path := range paths {
		f, err := os.Open(path)
		if err != nil {
			return v.res, err
		}
		err = v.file(f, path)
		f.Close()
		if err != nil {
			return v.res, err
		}
		v.res.Files++
	}
	if o.Key != nil && !v.res.Keyed {
		return v.res, errors.New("no record of the trail is keyed: it was written without audit.key_file, and anyone able to write it could have re-chained it")
	}
	if o.CheckpointSeq != 0 && !v.sawCheckpoint {
		if v.res.LastSeq < o.CheckpointSeq {
			return v.res, fmt.Errorf("the trail ends at record %d, but checkpoint %d was logged: records were removed from its end", v.res.LastSeq, o.CheckpointSeq)
		}
		return v.res, fmt.Errorf("record %d is not in the files given", o.CheckpointSeq)
	}
	return v.res, nil
}

type verifier struct {
	o             VerifyOptions
	res           VerifyResult
	last          [32]byte
	started       bool
	sawCheckpoint bool
}

func (v *verifier) file(r io.Reader, path string) error {
	br := bufio.NewReaderSize(r, 64<<10)
	var offset int64
	for lineNo := 1; ; lineNo++ {
		raw, err := br.ReadBytes('\n')
		if err == io.EOF && len(raw) == 0 {
			return nil
		}
		if err != nil && err != io.EOF {
			return fmt.Errorf("%s: %w", path, err)
		}
		if err == io.EOF {
			return fmt.Errorf("%s:%d: the last record is incomplete (no newline)", path, lineNo)
		}
		at := offset
		offset += int64(len(raw))
		ln, perr := parseLine(bytes.TrimSuffix(raw, []byte("\n")), v.o.Key)
		if perr != nil {
			return fmt.Errorf("%s:%d: %v", path, lineNo, perr)
		}
		if v.started && ln.prev != v.last {
			return fmt.Errorf("%s:%d: the record does not follow the one before it (a record was removed, inserted or reordered here)", path, lineNo)
		}
		if err := v.keyed(ln, at, lineNo == 1); err != nil {
			return fmt.Errorf("%s:%d: %v", path, lineNo, err)
		}
		v.last, v.started = ln.mac, true
		v.res.Records++
	}
}

// keyed applies the keyed trail's rules to one line at byte offset at.
func (v *verifier) keyed(ln line, at int64, fileStart bool) error {
	if v.o.Key == nil {
		return nil
	}
	if !ln.keyed {
		if v.res.Keyed {
			return errors.New("an unkeyed record in a keyed trail: records were replaced by someone without the key")
		}
		return nil
	}
	switch {
	case !v.res.Keyed && !ln.checkpoint:
		return errors.New("the keyed trail does not begin with a checkpoint: records were removed before this one")
	case fileStart && (!ln.checkpoint || ln.offset != 0):
		return errors.New("the file does not begin with its checkpoint: records were removed from its front")
	case ln.checkpoint && ln.offset != at:
		return fmt.Errorf("the checkpoint was written at byte %d but stands at byte %d: records before it were removed or added", ln.offset, at)
	case v.res.Keyed && ln.seq != v.res.LastSeq+1:
		return fmt.Errorf("record %d follows record %d: records are missing", ln.seq, v.res.LastSeq)
	}
	if !v.res.Keyed {
		v.res.Keyed, v.res.FirstSeq = true, ln.seq
	}
	v.res.LastSeq = ln.seq
	if ln.checkpoint {
		v.res.Checkpoints++
	}
	if v.o.CheckpointSeq != 0 && ln.seq == v.o.CheckpointSeq {
		if hex.EncodeToString(ln.mac[:]) != v.o.CheckpointMAC {
			return fmt.Errorf("record %d does not match the logged checkpoint: the trail was rewritten", ln.seq)
		}
		v.sawCheckpoint = true
	}
	return nil
}
