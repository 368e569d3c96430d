package config

import (
	"context"
	"errors"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"
	"testing"
	"time"
)

// A changed parameter reaches a warm function once its copy is older than
// the refresh interval; before that nothing is read, and a failed read
// leaves the copy in use and is retried on the next call.
func TestRefresherReadsAgainWhenDue(t *testing.T) {
	clearEnv(t)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ssm := &fakeSSM{pages: [][]ssmtypes.Parameter{{param("/envjupyter/public_base_url", "https://j.example.com"), param("/envjupyter/idle_timeout_seconds", "600")}}}
	r := NewRefresher(ssm, time.Minute)
	r.Now = func() time.Time { return now }
	r.loaded = now

	now = now.Add(59 * time.Second)
	if _, fresh, err := r.Refresh(context.Background()); fresh || err != nil || len(ssm.calls) != 0 {
		t.Fatalf("before the interval: fresh=%v err=%v, %d reads; want no read", fresh, err, len(ssm.calls))
	}

	now = now.Add(time.Second)
	ssm.err = errors.New("ThrottlingException")
	if _, fresh, err := r.Refresh(context.Background()); fresh || err == nil {
		t.Fatalf("a failed read: fresh=%v err=%v; want not fresh and the error", fresh, err)
	}
	ssm.err = nil
	cfg, fresh, err := r.Refresh(context.Background())
	if err != nil || !fresh || cfg.IdleTimeout != 10*time.Minute {
		t.Fatalf("when due: fresh=%v err=%v idle=%s; want the parameter's 10m", fresh, err, cfg.IdleTimeout)
	}
	if _, fresh, _ := r.Refresh(context.Background()); fresh {
		t.Fatal("right after a read: fresh again, want the interval to start over")
	}
}

func TestRefreshEvery(t *testing.T) {
	t.Setenv(RefreshEnv, "")
	if got := RefreshEvery(); got != DefaultRefresh {
		t.Errorf("unset: %s, want %s", got, DefaultRefresh)
	}
	t.Setenv(RefreshEnv, "5")
	if got := RefreshEvery(); got != 5*time.Second {
		t.Errorf("5: %s, want 5s", got)
	}
	t.Setenv(RefreshEnv, "-1")
	if got := RefreshEvery(); got != DefaultRefresh {
		t.Errorf("-1: %s, want the default", got)
	}
}
