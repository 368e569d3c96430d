package message

import (
	"errors"
	"reflect"
	"testing"
)

// FuzzDecodeCommand: any input either decodes to a valid command that
// survives a round trip unchanged, or fails with ErrInvalid; never a panic.
func FuzzDecodeCommand(f *testing.F) {
	f.Add([]byte(`{"v":1,"type":"start","instance_id":"ji-1","environment_id":"e1","container_id":"c","host_port":20001,"internal_port":8888,"token":"t","base_url":"/env-e1/","sent_at":"2026-01-01T00:00:00Z"}`))
	f.Add([]byte(`{"v":1,"type":"stop","instance_id":"ji-1","environment_id":"e1","container_id":"c","host_port":20001,"sent_at":"2026-01-01T00:00:00Z"}`))
	f.Add([]byte(`{"v":2}`))
	f.Add([]byte(`{}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		c, err := DecodeCommand(body)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v is not ErrInvalid", err)
			}
			return
		}
		again, err := Encode(c)
		if err != nil {
			t.Fatal(err)
		}
		c2, err := DecodeCommand([]byte(again))
		if err != nil || !reflect.DeepEqual(c.String(), c2.String()) || c.Token != c2.Token {
			t.Fatalf("round trip changed %+v into %+v (%v)", c, c2, err)
		}
	})
}

// FuzzDecodeReport: the same for reports.
func FuzzDecodeReport(f *testing.F) {
	f.Add([]byte(`{"v":1,"instance_id":"ji-1","host_id":"h","status":"running","at":"2026-01-01T00:00:00Z"}`))
	f.Add([]byte(`{"v":1,"instance_id":"ji-1","host_id":"h","status":"starting","stage":"routing","health":{"checked_at":"2026-01-01T00:00:00Z","kernels":1,"connections":0},"at":"2026-01-01T00:00:00Z"}`))
	f.Add([]byte(`{"v":1,"status":"exploded"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		r, err := DecodeReport(body)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v is not ErrInvalid", err)
			}
			return
		}
		if !r.Status.Valid() || r.InstanceID == "" || r.HostID == "" {
			t.Fatalf("accepted an invalid report %+v", r)
		}
		again, err := Encode(r)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := DecodeReport([]byte(again)); err != nil {
			t.Fatalf("round trip of %+v failed: %v", r, err)
		}
	})
}
