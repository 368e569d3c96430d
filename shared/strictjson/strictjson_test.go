package strictjson

import (
	"errors"
	"testing"
)

type sample struct {
	A int    `json:"a"`
	B string `json:"b"`
}

func TestDecode(t *testing.T) {
	tests := []struct {
		name     string
		in       string
		want     sample
		wantErr  bool
		trailing bool // the error must be ErrTrailingData
	}{
		{name: "one object", in: `{"a":1,"b":"x"}`, want: sample{A: 1, B: "x"}},
		{name: "empty object", in: `{}`, want: sample{}},
		{name: "surrounding whitespace", in: " \n\t{\"a\":2}\n ", want: sample{A: 2}},
		{name: "subset of fields", in: `{"b":"only"}`, want: sample{B: "only"}},

		{name: "unknown field", in: `{"a":1,"c":2}`, wantErr: true},
		{name: "stray closing brace", in: `{}}`, wantErr: true, trailing: true},
		{name: "stray closing bracket", in: `{} ]`, wantErr: true, trailing: true},
		{name: "trailing word", in: `{} x`, wantErr: true, trailing: true},
		{name: "two objects", in: `{}{}`, wantErr: true, trailing: true},
		{name: "two objects with fields", in: `{"a":1} {"a":2}`, wantErr: true, trailing: true},
		{name: "trailing number", in: `{"a":1} 2`, wantErr: true, trailing: true},
		{name: "trailing comma", in: `{"a":1},`, wantErr: true, trailing: true},
		{name: "empty input", in: ``, wantErr: true},
		{name: "only whitespace", in: "  ", wantErr: true},
		{name: "truncated", in: `{"a":1`, wantErr: true},
		{name: "wrong type", in: `{"a":"1"}`, wantErr: true},
		{name: "array", in: `[]`, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got sample
			err := Decode([]byte(tt.in), &got)
			if (err != nil) != tt.wantErr {
				t.Fatalf("Decode(%q) error = %v, want error %v", tt.in, err, tt.wantErr)
			}
			if tt.trailing && !errors.Is(err, ErrTrailingData) {
				t.Errorf("Decode(%q) error = %v, want ErrTrailingData", tt.in, err)
			}
			if !tt.trailing && errors.Is(err, ErrTrailingData) {
				t.Errorf("Decode(%q) error = %v, want an error other than ErrTrailingData", tt.in, err)
			}
			if !tt.wantErr && got != tt.want {
				t.Errorf("Decode(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
		})
	}
}
