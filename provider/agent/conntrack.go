package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"

	"github.com/heraldlb/herald/provider/dataplane"
)

// Conntrack deletes conntrack entries that a sync made stale (see
// dataplane.StaleFlow for why UDP needs it).
type Conntrack interface {
	DeleteUDP(ctx context.Context, flows []dataplane.StaleFlow) error
}

// ErrConntrack wraps every failure to delete conntrack entries.
var ErrConntrack = errors.New("delete conntrack entries")

// ExecConntrack drives the conntrack tool (Debian package conntrack), as
// knftables drives nft.
type ExecConntrack struct {
	// Path is the conntrack binary.
	Path string
}

// NewExecConntrack finds the conntrack binary in PATH.
func NewExecConntrack() (*ExecConntrack, error) {
	path, err := exec.LookPath("conntrack")
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConntrack, err)
	}
	return &ExecConntrack{Path: path}, nil
}

// DeleteUDP runs one conntrack -D per flow; a flow with no entries is not an
// error. It tries every flow and reports all failures.
func (c *ExecConntrack) DeleteUDP(ctx context.Context, flows []dataplane.StaleFlow) error {
	var errs []error
	for _, f := range flows {
		args := conntrackArgs(f)
		out, err := exec.CommandContext(ctx, c.Path, args...).CombinedOutput()
		// conntrack exits 1 when nothing matched; it says so on stderr.
		if err != nil && !bytes.Contains(out, []byte(" 0 flow entries have been deleted")) {
			errs = append(errs, fmt.Errorf("%w: conntrack %s: %w: %s", ErrConntrack, strings.Join(args, " "), err,
				bytes.TrimSpace(out)))
		}
	}
	return errors.Join(errs...)
}

// conntrackArgs selects a flow's entries by their original destination
// (address and port, or only the port for a NodePort) and, for a removed
// endpoint, by the endpoint that answers them.
func conntrackArgs(f dataplane.StaleFlow) []string {
	family := "ipv4"
	if f.IPv6 {
		family = "ipv6"
	}
	args := []string{"-D", "-f", family, "-p", "udp"}
	if f.Dst.IsValid() {
		args = append(args, "--orig-dst", f.Dst.String())
	}
	args = append(args, "--orig-port-dst", strconv.Itoa(int(f.Port)))
	if f.Endpoint.IsValid() {
		args = append(args, "--reply-src", f.Endpoint.Addr().String(),
			"--reply-port-src", strconv.Itoa(int(f.Endpoint.Port())))
	}
	return args
}
