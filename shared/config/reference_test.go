package config

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// repoRoot is the directory holding go.mod.
func repoRoot(t *testing.T) string {
	t.Helper()
	dir, _ := os.Getwd()
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test")
		}
		dir = parent
	}
}

// docRow returns the table row of docs/CONFIGURATION.md whose first cell
// names the setting, or "".
func docRow(doc, name string) string {
	for _, line := range strings.Split(doc, "\n") {
		first, _, _ := strings.Cut(strings.TrimPrefix(line, "| "), " |")
		if strings.HasPrefix(line, "| ") && strings.Contains(first, "`"+name+"`") {
			return line
		}
	}
	return ""
}

// docs/CONFIGURATION.md lists every setting the code reads, with the code's
// defaults: each SSM setting with its override variable, every environment
// variable read by the product's Go code (functions, shared packages, the
// sidecar), and every template parameter. Adding a setting without its
// entry fails here.
func TestConfigurationReferenceIsComplete(t *testing.T) {
	root := repoRoot(t)
	raw, err := os.ReadFile(filepath.Join(root, "docs", "CONFIGURATION.md"))
	if err != nil {
		t.Fatal(err)
	}
	doc := string(raw)

	for name, env := range overrides {
		row := docRow(doc, name)
		switch {
		case row == "":
			t.Errorf("SSM setting %s has no row", name)
		case !strings.Contains(row, "`"+env+"`"):
			t.Errorf("SSM setting %s: its row does not name its override %s", name, env)
		case Defaults[name] != "" && !strings.Contains(row, "`"+Defaults[name]+"`"):
			t.Errorf("SSM setting %s: its row does not give the default `%s`", name, Defaults[name])
		}
	}
	if docRow(doc, "hosts/<host id>/command_queue_url") == "" {
		t.Error("the hosts' command_queue_url parameters have no row")
	}

	// Environment variables the product reads, and the defaults next to them.
	// Reads: os.Getenv/LookupEnv of a literal, the sidecar's env(KEY, default)
	// and its duration table, and constants named *Env (config.RefreshEnv).
	// Literals elsewhere are not settings (e.g. variables set for Jupyter).
	read := regexp.MustCompile(`(?:Getenv|LookupEnv)\("(\w+)"\)|\benv\("(\w+)"|\{&s\.\w+, "(\w+)"|\w+Env\s*=\s*"(\w+)"`)
	withDefault := regexp.MustCompile(`(?:\benv\(|\{&s\.\w+, )"(ENVJUPYTER_[A-Z_]+)",[ \t]*"([^"]+)"`)
	seen := 0
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if d.IsDir() && (rel == "infra" || rel == "web" || strings.HasPrefix(d.Name(), ".") && rel != ".") {
			return fs.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range read.FindAllStringSubmatch(string(src), -1) {
			name := m[1] + m[2] + m[3] + m[4]
			seen++
			if !strings.Contains(doc, "`"+name+"`") {
				t.Errorf("%s reads %s, which docs/CONFIGURATION.md does not list", rel, name)
			}
		}
		for _, m := range withDefault.FindAllStringSubmatch(string(src), -1) {
			if row := docRow(doc, m[1]); row == "" || !strings.Contains(row, "`"+m[2]+"`") {
				t.Errorf("%s: %s defaults to %q, which its row in docs/CONFIGURATION.md does not say", rel, m[1], m[2])
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if seen < 20 {
		t.Fatalf("found %d reads of environment variables; the pattern no longer matches the code", seen)
	}

	tmpl, err := os.ReadFile(filepath.Join(root, "template.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	params := string(tmpl)[strings.Index(string(tmpl), "\nParameters:\n"):]
	params = params[:regexp.MustCompile(`\n[A-Z]\w*:\n`).FindAllStringIndex(params, 2)[1][0]]
	names := regexp.MustCompile(`(?m)^  (\w+):$`).FindAllStringSubmatch(params, -1)
	if len(names) < 10 {
		t.Fatalf("found %d template parameters; the pattern no longer matches template.yaml", len(names))
	}
	for _, m := range names {
		if !strings.Contains(doc, "`"+m[1]+"`") {
			t.Errorf("template parameter %s is not in docs/CONFIGURATION.md", m[1])
		}
	}
}
