// Package strictjson decodes JSON that must be exactly one object of the
// expected shape: unknown fields and anything after the value are errors.
package strictjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
)

// ErrTrailingData means something followed the JSON value.
var ErrTrailingData = errors.New("data after the JSON value")

// Decode parses b into v strictly.
func Decode(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	// More() misses a stray '}' or ']'; reading a token does not.
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return ErrTrailingData
	}
	return nil
}
