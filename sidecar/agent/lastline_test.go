package agent

import "testing"

func TestLastLine(t *testing.T) {
	pip := "Looking in links: /opt/w\nERROR: Could not find a version that satisfies the requirement x==9.9\nERROR: No matching distribution found for x==9.9\n\n"
	if got := lastLine(pip); got != "ERROR: No matching distribution found for x==9.9" {
		t.Fatalf("lastLine = %q", got)
	}
	if got := lastLine("  \n"); got != "no output" {
		t.Fatalf("lastLine of nothing = %q", got)
	}
}
