package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// Process is a child started by the harness. It dies with the test binary
// (Pdeathsig), so a crashed test leaves nothing running.
type Process struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	exited  chan struct{}
	err     error
}

// StartProcess runs binary with its output in logPath.
func StartProcess(name, logPath, binary string, args ...string) (*Process, error) {
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(binary, args...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &Process{name: name, cmd: cmd, logPath: logPath, exited: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logFile.Close()
		close(p.exited)
	}()
	return p, nil
}

// PID is the process id, for tests that need to signal it.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Kill ends the process at once (SIGKILL), as a crash or the OOM killer
// would, and waits for it.
func (p *Process) Kill() {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Kill()
	<-p.exited
}

// Stop asks the process to exit and kills it if it does not within grace.
func (p *Process) Stop(grace time.Duration) {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

// ExitedErr reports, without blocking, whether the process has died and why,
// with the end of its log.
func (p *Process) ExitedErr() error {
	select {
	case <-p.exited:
		if p.err == nil {
			return fmt.Errorf("%s exited with status 0:\n%s", p.name, p.LogTail(30))
		}
		return fmt.Errorf("%s exited (%w):\n%s", p.name, p.err, p.LogTail(30))
	default:
		return nil
	}
}

// LogTail returns the last lines of the process output.
func (p *Process) LogTail(lines int) string {
	data, err := os.ReadFile(p.logPath)
	if err != nil {
		return ""
	}
	parts := bytes.Split(bytes.TrimRight(data, "\n"), []byte("\n"))
	if len(parts) > lines {
		parts = parts[len(parts)-lines:]
	}
	return string(bytes.Join(parts, []byte("\n")))
}

// freePorts returns n distinct ports that were free a moment ago. Another
// process may take one before we bind it; Start retries with new ports when
// a component fails to come up.
func freePorts(n int) ([]int, error) {
	var listeners []net.Listener
	defer func() {
		for _, l := range listeners {
			l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		listeners = append(listeners, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

var errNotReady = errors.New("not ready")

// Exited is closed when the process has ended.
func (p *Process) Exited() <-chan struct{} { return p.exited }

// FreePort returns a loopback port that was free a moment ago, for a test
// that starts a server of its own.
func FreePort(t testing.TB) int {
	t.Helper()
	ports, err := freePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	return ports[0]
}

// StopAtCleanup stops the process when t ends, first logging the end of its
// output if t failed, which is where the reason usually is.
func (p *Process) StopAtCleanup(t interface {
	Cleanup(func())
	Failed() bool
	Logf(format string, args ...any)
}, tailLines int) {
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s log (tail):\n%s", p.name, p.LogTail(tailLines))
		}
		p.Stop(10 * time.Second)
	})
}
