package netlab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/heraldlb/herald/e2e/cluster"
)

// Netns is one named network namespace (/run/netns/<Name>).
type Netns struct {
	Name string
}

// ErrCommand is wrapped by every failed ip/nft/sysctl invocation.
var ErrCommand = errors.New("netlab: command failed")

// Run runs a command inside the namespace (ip netns exec) and returns its
// combined output.
func (ns *Netns) Run(name string, args ...string) (string, error) {
	return run("ip", append([]string{"netns", "exec", ns.Name, name}, args...)...)
}

// Start runs binary inside the namespace as a harness process that dies with
// the test binary. `ip netns exec` execs the binary in place, so the PID is
// the binary's own and Stop signals it, not a wrapper.
func (ns *Netns) Start(name, logPath, binary string, args ...string) (*cluster.Process, error) {
	return cluster.StartProcess(name, logPath, "ip", append([]string{"netns", "exec", ns.Name, binary}, args...)...)
}

// Do runs fn on an OS thread that has entered the namespace. Sockets fn
// creates belong to the namespace for their whole life, which lets the test
// process act as a client or server inside the lab without a helper binary.
func (ns *Netns) Do(fn func() error) error {
	target, err := os.Open(filepath.Join("/run/netns", ns.Name))
	if err != nil {
		return fmt.Errorf("netns %s: %w", ns.Name, err)
	}
	defer target.Close()

	runtime.LockOSThread()
	orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", syscall.Gettid()))
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("netns of the current thread: %w", err)
	}
	defer orig.Close()
	if err := setns(target); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("entering netns %s: %w", ns.Name, err)
	}
	fnErr := fn()
	if err := setns(orig); err != nil {
		// The thread stays locked and therefore dies with this goroutine:
		// the Go runtime never reuses a thread left in a foreign namespace.
		return errors.Join(fnErr, fmt.Errorf("leaving netns %s: %w", ns.Name, err))
	}
	runtime.UnlockOSThread()
	return fnErr
}

func setns(f *os.File) error {
	return unix.Setns(int(f.Fd()), unix.CLONE_NEWNET)
}

// DialContext opens a connection from inside the namespace.
func (ns *Netns) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var conn net.Conn
	err := ns.Do(func() error {
		var err error
		conn, err = (&net.Dialer{}).DialContext(ctx, network, addr)
		return err
	})
	return conn, err
}

// Listen opens a listener inside the namespace.
func (ns *Netns) Listen(network, addr string) (net.Listener, error) {
	var l net.Listener
	err := ns.Do(func() error {
		var err error
		l, err = net.Listen(network, addr)
		return err
	})
	return l, err
}

func run(name string, args ...string) (string, error) {
	return runStdin("", name, args...)
}

// runStdin is run with stdin as the command's input.
func runStdin(stdin, name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%w: %s %s: %w: %s", ErrCommand, name, strings.Join(args, " "), err,
			strings.TrimSpace(string(out)))
	}
	return string(out), nil
}
