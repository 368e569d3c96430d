package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/envjupyter/envjupyter/shared/message"
)

// stateFile keeps the start commands of the instances this sidecar runs, so a
// restarted sidecar knows what it owns: it adopts them, finishes starts it
// was in the middle of, and removes anything else it finds tagged as its own.
// The commands hold the instances' tokens, so the file is readable by root
// only.
type stateFile struct {
	path string
}

// savedInstance is one entry of the state file.
type savedInstance struct {
	Command message.Command `json:"command"`
	// Running is false while the start is under way.
	Running bool `json:"running"`
}

func (f stateFile) load() (map[string]savedInstance, error) {
	b, err := os.ReadFile(f.path)
	if errors.Is(err, fs.ErrNotExist) {
		return map[string]savedInstance{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading state: %w", err)
	}
	saved := map[string]savedInstance{}
	if err := json.Unmarshal(b, &saved); err != nil {
		return nil, fmt.Errorf("decoding state %s: %w", f.path, err)
	}
	return saved, nil
}

// save replaces the file atomically.
func (f stateFile) save(saved map[string]savedInstance) error {
	b, err := json.Marshal(saved)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(f.path), 0o700); err != nil {
		return fmt.Errorf("writing state: %w", err)
	}
	tmp := f.path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("writing state: %w", err)
	}
	if err := os.Rename(tmp, f.path); err != nil {
		return fmt.Errorf("writing state: %w", err)
	}
	return nil
}
