// Package testenv decides what a test does when the machine lacks something
// it needs: root, network namespaces, a tool such as nft, or the Kubernetes
// binaries. Run by hand, the test skips and says what is missing and how to
// get it, so `go test ./...` works anywhere. In CI the same gap fails the
// test: a tier that cannot run there is a broken pipeline, and a skip would
// let it go green with the tier never run.
//
// Every environment skip in the repository goes through Unavailable.
package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"testing"
)

// RequireTiersEnv is set by `make test` when it runs as root: there every
// tier can run (make deps installs the packages, make tools builds the
// Kubernetes binaries), so a missing one is a failure as in CI.
const RequireTiersEnv = "HERALD_REQUIRE_TIERS"

// Strict reports why a missing environment fails tests in this run, or ""
// when it only skips them.
func Strict() string {
	return strictReason(os.Getenv("CI"), os.Getenv(RequireTiersEnv))
}

// strictReason is Strict over the two variables' values. CI systems set
// CI=true (GitHub Actions, GitLab CI and others); any value that parses as
// true counts, so CI=1 does too.
func strictReason(ci, requireTiers string) string {
	if on, err := strconv.ParseBool(ci); err == nil && on {
		return "CI=" + ci
	}
	if on, err := strconv.ParseBool(requireTiers); err == nil && on {
		return RequireTiersEnv + "=" + requireTiers + " (make test as root)"
	}
	return ""
}

// Unavailable ends tb because the environment lacks what it needs: a skip
// with the message when run by hand, a failure in CI. Like Skip and Fatal
// it must be called from the goroutine running the test.
func Unavailable(tb testing.TB, format string, args ...any) {
	tb.Helper()
	msg := fmt.Sprintf(format, args...)
	if reason := Strict(); reason != "" {
		tb.Fatalf("%s\n(a failure, not a skip: with %s every test tier must run)", msg, reason)
	}
	tb.Skip(msg)
}

// RequireRoot ends tb through Unavailable unless it runs as root; why says
// what needs root.
func RequireRoot(tb testing.TB, why string) {
	tb.Helper()
	if os.Geteuid() != 0 {
		Unavailable(tb, "%s need root; run as root (make test as root runs them)", why)
	}
}

// RequireTools ends tb through Unavailable unless every tool is in PATH;
// why says what needs them.
func RequireTools(tb testing.TB, why string, tools ...string) {
	tb.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			Unavailable(tb, "%s need %s, not found in PATH (make deps installs it): %v", why, tool, err)
		}
	}
}
