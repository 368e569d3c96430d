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
	// Rebuilt means the command was recovered from the host's rules and
	// processes after the file was lost: it lacks what they do not show
	// (the password, the plugins), so the instance cannot be launched
	// again from it.
	Rebuilt bool `json:"rebuilt,omitempty"`
}

// errCorrupt means the state file could not be decoded (torn by a crash of
// an older version, or damaged); it has been moved aside.
var errCorrupt = errors.New("state file is corrupt")

// load reads the state. A file that does not decode is moved aside and
// errCorrupt returned with an empty state: the sidecar starts anyway (it
// must not restart forever over it) and keeps whatever it finds running.
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
		aside := f.path + ".corrupt"
		if rerr := os.Rename(f.path, aside); rerr != nil {
			return nil, fmt.Errorf("moving aside the corrupt state %s: %w", f.path, rerr)
		}
		return map[string]savedInstance{}, fmt.Errorf("%w: %s (kept as %s): %v", errCorrupt, f.path, aside, err)
	}
	return saved, nil
}

// save replaces the file atomically and durably: a temporary file of its
// own, synced, renamed over the old one, and the directory synced, so a
// crash at any point leaves the old state or the new, never a torn one.
// Callers serialise saves (agent.put), so the last snapshot taken is the
// last written.
func (f stateFile) save(saved map[string]savedInstance) error {
	b, err := json.Marshal(saved)
	if err != nil {
		return err
	}
	dir := filepath.Dir(f.path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("writing state: %w", err)
	}
	tmp, err := os.CreateTemp(dir, filepath.Base(f.path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("writing state: %w", err)
	}
	defer os.Remove(tmp.Name()) // gone once renamed; removes a failed attempt
	_, err = tmp.Write(b)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), f.path)
	}
	if err == nil {
		err = syncDir(dir)
	}
	if err != nil {
		return fmt.Errorf("writing state: %w", err)
	}
	return nil
}

// removeUnfinished removes the temporary files of saves that a crash cut
// short (the state file itself is then the last complete save), and returns
// their names.
func (f stateFile) removeUnfinished() ([]string, error) {
	tmps, err := filepath.Glob(f.path + ".tmp-*")
	if err != nil {
		return nil, err
	}
	for _, tmp := range tmps {
		if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("removing an unfinished save of the state: %w", err)
		}
	}
	return tmps, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
