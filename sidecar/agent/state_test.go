package agent

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/envjupyter/envjupyter/shared/message"
)

func TestStateFile(t *testing.T) {
	dir := t.TempDir()
	f := stateFile{path: filepath.Join(dir, "instances.json")}
	if saved, err := f.load(); err != nil || len(saved) != 0 {
		t.Fatalf("no file yet: %v, %v; want empty", saved, err)
	}
	want := map[string]savedInstance{"ji-1": {Command: message.Command{V: 1, Type: "start", InstanceID: "ji-1"}, Running: true}}
	if err := f.save(want); err != nil {
		t.Fatal(err)
	}
	if got, err := f.load(); err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("load = %v, %v; want %v", got, err, want)
	}
	if leftovers, _ := filepath.Glob(filepath.Join(dir, "*.tmp-*")); len(leftovers) > 0 {
		t.Fatalf("temporary files left: %v", leftovers)
	}
	for name, content := range map[string]string{"truncated": `{"ji-1":{"command":{"v":1,`, "garbage": "\x00\xffnot json"} {
		t.Run(name, func(t *testing.T) {
			if err := os.WriteFile(f.path, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			saved, err := f.load()
			if !errors.Is(err, errCorrupt) || saved == nil || len(saved) != 0 {
				t.Fatalf("load of a %s file = %v, %v; want an empty state and errCorrupt", name, saved, err)
			}
			if b, _ := os.ReadFile(f.path + ".corrupt"); string(b) != content {
				t.Fatalf("the corrupt file was not kept aside")
			}
			if _, err := os.Stat(f.path); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("the corrupt file is still in place: %v", err)
			}
		})
	}
}

// The temporary file of a save that a crash cut short is removed; the state
// file stays the last complete save.
func TestUnfinishedSaveIsRemoved(t *testing.T) {
	dir := t.TempDir()
	f := stateFile{path: filepath.Join(dir, "instances.json")}
	want := map[string]savedInstance{"ji-1": {Command: message.Command{V: 1, Type: "start", InstanceID: "ji-1"}, Running: true}}
	if err := f.save(want); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f.path+".tmp-123", []byte(`{"ji-1":{"comm`), 0o600); err != nil {
		t.Fatal(err)
	}
	removed, err := f.removeUnfinished()
	if err != nil || len(removed) != 1 {
		t.Fatalf("removeUnfinished = %v, %v; want the one temporary file", removed, err)
	}
	if got, err := f.load(); err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("load = %v, %v; want the last complete save", got, err)
	}
}
