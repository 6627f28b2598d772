package api

// Request decoding: one JSON body, read once, with encoding/json's
// semantics and unknown fields refused.

import (
	"bytes"
	"encoding/json"
	"encoding/json/jsontext"
	jsonv2 "encoding/json/v2"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
)

// decode reads one JSON object into v: at most MaxBodyBytes, no unknown
// fields, nothing after it. An empty body leaves v as it is when optional.
func decode(w http.ResponseWriter, r *http.Request, v any, optional bool) error {
	buf := bodies.Get().(*bytes.Buffer)
	defer putBody(buf)
	_, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return errorf("body_too_large", "request body is larger than %d bytes", MaxBodyBytes)
	}
	if err != nil {
		return errorf("bad_request", "could not read the request body")
	}
	data := buf.Bytes()
	if len(data) == 0 {
		if optional {
			return nil
		}
		return errorf("bad_request", "request body is required (JSON)")
	}
	// One value, with encoding/json's (v1) semantics and errors, unknown
	// fields refused; decoded straight from the bytes read (a Decoder
	// would copy them into a buffer of its own).
	if err := jsonv2.Unmarshal(data, v, json.DefaultOptionsV1(), jsonv2.RejectUnknownMembers(true)); err != nil {
		var syn *json.SyntaxError
		switch {
		case trailing(data):
			return errorf("bad_json", "request body has data after the JSON object")
		case errors.As(err, &syn) && syn.Offset >= int64(len(bytes.TrimRight(data, " \t\r\n"))):
			return errorf("bad_json", "request body is not valid: truncated JSON")
		}
		return errorf("bad_json", "request body is not valid: %s", jsonProblem(err))
	}
	return nil
}

// trailing reports whether data starts with one whole JSON value followed
// by more than white space.
func trailing(data []byte) bool {
	dec := jsontext.NewDecoder(bytes.NewReader(data))
	if _, err := dec.ReadValue(); err != nil {
		return false
	}
	_, err := dec.ReadToken()
	return err != io.EOF
}

// bodies hold request bodies while they are decoded.
var bodies = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// putBody returns buf to the pool unless a large body grew it (an
// import): those are left to the collector.
func putBody(buf *bytes.Buffer) {
	if buf.Cap() <= 64<<10 {
		buf.Reset()
		bodies.Put(buf)
	}
}

// jsonProblem describes a decoding error without echoing the input.
func jsonProblem(err error) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return fmt.Sprintf("malformed JSON at byte %d", syn.Offset)
	case errors.As(err, &typ) && (typ.Field == "claims" || strings.HasSuffix(typ.Field, ".claims")):
		return fmt.Sprintf("%s must be a JSON object of claims, e.g. {\"sub\": \"alice\"}, not a JSON %s", typ.Field, typ.Value)
	case errors.As(err, &typ):
		return fmt.Sprintf("field %q must be %s", typ.Field, typ.Type)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "truncated JSON"
	}
	if msg := err.Error(); len(msg) < 120 {
		return msg // "json: unknown field \"x\"" and the like
	}
	return "invalid JSON"
}
