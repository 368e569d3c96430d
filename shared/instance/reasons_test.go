package instance

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite web/src/reasons.json from Reasons")

// reasonsJSON is the reason codes as the console's tests read them.
var reasonsJSON = filepath.Join("..", "..", "web", "src", "reasons.json")

// web/src/reasons.json is Reasons, for the console's own test
// (web/test/i18n.test.js); `go test ./shared/instance -update` rewrites it.
func TestReasonsJSONIsTheList(t *testing.T) {
	want, _ := json.MarshalIndent(Reasons, "", "  ")
	want = append(want, '\n')
	if *update {
		if err := os.WriteFile(reasonsJSON, want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(reasonsJSON)
	if err != nil || string(got) != string(want) {
		t.Fatalf("%s is not shared/instance.Reasons (err %v); run `go test ./shared/instance -run TestReasonsJSONIsTheList -update`", reasonsJSON, err)
	}
}

// The console has a label in Chinese and in English for every reason code
// (web/src/i18n.js, the reason_ dictionary of each language).
func TestConsoleLabelsEveryReason(t *testing.T) {
	src, err := os.ReadFile(filepath.Join("..", "..", "web", "src", "i18n.js"))
	if err != nil {
		t.Fatal(err)
	}
	for _, lang := range []string{"zh", "en"} {
		keys := dictionaryKeys(t, string(src), lang, "reason_")
		for _, code := range Reasons {
			if !slices.Contains(keys, code) {
				t.Errorf("web/src/i18n.js: %s.reason_ has no label for %q", lang, code)
			}
		}
	}
}

// dictionaryKeys returns the keys of messages.<lang>.<block> in i18n.js.
func dictionaryKeys(t *testing.T, src, lang, block string) []string {
	t.Helper()
	start := strings.Index(src, "\n  "+lang+": {")
	if start < 0 {
		t.Fatalf("web/src/i18n.js has no %s dictionary", lang)
	}
	rest := src[start:]
	open := strings.Index(rest, "\n    "+block+": {")
	if open < 0 {
		t.Fatalf("web/src/i18n.js: %s has no %s block", lang, block)
	}
	body := rest[open+len(block)+8:]
	body = body[:strings.Index(body, "\n    },")]
	var keys []string
	for _, m := range regexp.MustCompile(`(?:^|[\s,{])([a-z_]+):\s*['"]`).FindAllStringSubmatch(body, -1) {
		keys = append(keys, m[1])
	}
	return keys
}

func TestReasonCode(t *testing.T) {
	for reason, code := range map[string]string{
		"user": "user", "start_timeout: no answer within 1m0s": "start_timeout", "": "",
		WithDetail(ReasonPluginInstallFailed, "ERROR: No matching distribution"): ReasonPluginInstallFailed,
	} {
		if got := ReasonCode(reason); got != code {
			t.Errorf("ReasonCode(%q) = %q, want %q", reason, got, code)
		}
	}
	seen := map[string]bool{}
	for _, r := range Reasons {
		if seen[r] || !regexp.MustCompile(`^[a-z]+(_[a-z]+)*$`).MatchString(r) {
			t.Errorf("reason %q: repeated or not snake_case", r)
		}
		seen[r] = true
	}
	for _, s := range []string{"stopping", "stopped", "deleted"} {
		if !seen[EnvironmentReason(s)] {
			t.Errorf("EnvironmentReason(%q) = %q is not in Reasons", s, EnvironmentReason(s))
		}
	}
}

// docs/OPERATIONS.md explains every reason code an operator can meet.
func TestOperationsExplainsEveryReason(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "OPERATIONS.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, code := range Reasons {
		if !strings.Contains(string(doc), "`"+code+"`") {
			t.Errorf("docs/OPERATIONS.md does not explain reason %q", code)
		}
	}
}
