package testenv

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
)

func TestStrictReason(t *testing.T) {
	for _, tc := range []struct {
		ci, requireTiers string
		want             string
	}{
		{"", "", ""},
		{"false", "0", ""},
		{"yes", "", ""}, // not a boolean: by hand, as before
		{"true", "", "CI=true"},
		{"1", "", "CI=1"},
		{"", "1", RequireTiersEnv + "=1 (make test as root)"},
		{"true", "1", "CI=true"},
	} {
		if got := strictReason(tc.ci, tc.requireTiers); got != tc.want {
			t.Errorf("strictReason(CI=%q, %s=%q) = %q, want %q", tc.ci, RequireTiersEnv, tc.requireTiers, got, tc.want)
		}
	}
}

// recorder is a testing.TB that records how Unavailable ended it. Skip and
// Fatal end the calling goroutine, as the real ones do.
type recorder struct {
	testing.TB
	skipped, failed string
}

func (r *recorder) Helper() {}
func (r *recorder) Skip(args ...any) {
	r.skipped = args[0].(string)
	runtime.Goexit()
}
func (r *recorder) Fatalf(format string, args ...any) {
	r.failed = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func unavailable(t *testing.T) *recorder {
	r := &recorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		Unavailable(r, "the widget tier needs %s", "a widget")
	}()
	<-done
	return r
}

func TestUnavailableSkipsByHandAndFailsInCI(t *testing.T) {
	t.Setenv("CI", "")
	t.Setenv(RequireTiersEnv, "")
	if r := unavailable(t); r.skipped != "the widget tier needs a widget" || r.failed != "" {
		t.Errorf("by hand: skipped %q, failed %q; want a skip with the message", r.skipped, r.failed)
	}
	for env, value := range map[string]string{"CI": "true", RequireTiersEnv: "1"} {
		t.Setenv(env, value)
		r := unavailable(t)
		if r.skipped != "" || !strings.Contains(r.failed, "the widget tier needs a widget") ||
			!strings.Contains(r.failed, env+"="+value) {
			t.Errorf("with %s=%s: skipped %q, failed %q; want a failure naming the gap and %s", env, value, r.skipped, r.failed, env)
		}
		t.Setenv(env, "")
	}
}
