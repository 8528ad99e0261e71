package e2e

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/heraldlb/herald/internal/testenv"
)

// kindScripts are the shell scripts users run where Docker is: they cannot
// run on the machines herald is developed on, so they are checked here
// without Docker.
var kindScripts = []string{"kind/kind.sh", "../images/debian-rootfs.sh"}

// TestKindScript checks e2e/kind/kind.sh (and the images' base-layer
// script) with bash -n and shellcheck, and the pool range the kind script
// takes from the kind network's subnet.
func TestKindScript(t *testing.T) {
	testenv.RequireTools(t, "checking the shell scripts", "bash", "shellcheck")
	for _, script := range kindScripts {
		if out, err := exec.Command("bash", "-n", script).CombinedOutput(); err != nil {
			t.Errorf("bash -n %s: %v\n%s", script, err, out)
		}
		if out, err := exec.Command("shellcheck", "--severity=style", script).CombinedOutput(); err != nil {
			t.Errorf("shellcheck %s: %v\n%s", script, err, out)
		}
	}
	for _, c := range []struct{ subnet, want string }{
		{"172.18.0.0/16", "172.18.255.200-172.18.255.249"}, // Docker's usual kind network
		{"10.89.0.0/24", "10.89.0.200-10.89.0.249"},
		{"192.168.128.0/20", "192.168.143.200-192.168.143.249"},
		{"10.0.0.0/25", ""}, // too small: POOL must say
	} {
		out, err := exec.Command("bash", "-c", `source kind/kind.sh && l2_range "$1"`, "bash", c.subnet).Output()
		got := strings.TrimSpace(string(out))
		if c.want == "" {
			if err == nil {
				t.Errorf("l2_range %s = %q, want a refusal", c.subnet, got)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("l2_range %s = %q (%v), want %q", c.subnet, got, err, c.want)
		}
	}
}
