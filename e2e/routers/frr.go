package routers

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"text/template"
	"time"

	"github.com/heraldlb/herald/e2e/cluster"
	"github.com/heraldlb/herald/e2e/netlab"
)

// FRR runs three daemons: zebra (the kernel's routes), bgpd and bfdd, each
// with its own configuration file and every socket, PID file and log in
// the run directory (--vty_socket, -z, -i, --bfdctl, --log), and no TCP vty
// port (-P 0). They run as the frr user (FRR refuses root outside the frrvty
// group), so the directory belongs to frr.
var frrDaemons = []string{"zebra", "bfdd", "bgpd"}

var bgpdConfig = template.Must(template.New("bgpd.conf").Parse(`hostname router
log stdout informational
router bgp {{.ASN}}
 bgp router-id {{.Address}}
 no bgp ebgp-requires-policy
 no bgp default ipv4-unicast
{{- range .Neighbors}}
 neighbor {{.Address}} remote-as {{.ASN}}
{{- if .Password}}
 neighbor {{.Address}} password {{.Password}}
{{- end}}
{{- if .BFD}}
 neighbor {{.Address}} bfd profile lab
{{- end}}
{{- end}}
 address-family ipv4 unicast
  maximum-paths 16
{{- range .Neighbors}}
  neighbor {{.Address}} activate
{{- end}}
 exit-address-family
 address-family ipv6 unicast
  maximum-paths 16
{{- range .Neighbors}}
  neighbor {{.Address}} activate
{{- end}}
 exit-address-family
`))

var bfddConfig = template.Must(template.New("bfdd.conf").Parse(`hostname router
log stdout informational
bfd
 profile lab
  transmit-interval {{.}}
  receive-interval {{.}}
  detect-multiplier 3
 exit
exit
`))

type frr struct {
	dir       string
	cfg       Config
	processes []*cluster.Process
}

func startFRR(t netlab.T, lab *netlab.Lab, ns *netlab.Netns, dir string, cfg Config) *frr {
	t.Helper()
	f := &frr{dir: dir, cfg: cfg}
	if err := f.prepare(); err != nil {
		t.Fatal(err)
	}
	for _, d := range frrDaemons {
		args := []string{"-u", "frr", "-g", "frr", "-P", "0", "--vty_socket", dir, "-i", f.path(d + ".pid"),
			"-z", f.path("zserv.api"), "-f", f.path(d + ".conf"), "--log", "stdout"}
		if d == "bfdd" {
			args = append(args, "--bfdctl", f.path("bfdd.sock"))
		}
		f.processes = append(f.processes, startDaemon(t, lab, ns, dir, d, "/usr/lib/frr/"+d, args...))
		if d == "zebra" {
			// The others connect to zebra's socket at start.
			if err := waitForFile(f.path("zserv.api"), 10*time.Second); err != nil {
				t.Fatalf("FRR's zebra did not start: %v\n%s", err, f.LogTail())
			}
		}
	}
	return f
}

func (f *frr) path(name string) string { return filepath.Join(f.dir, name) }

// prepare writes the configuration files into a run directory the frr
// user owns.
func (f *frr) prepare() error {
	u, err := user.Lookup("frr")
	if err != nil {
		return fmt.Errorf("routers: the frr user (package frr): %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	var bgpd, bfdd strings.Builder
	if err := bgpdConfig.Execute(&bgpd, f.cfg); err != nil {
		return err
	}
	if err := bfddConfig.Execute(&bfdd, f.cfg.BFDInterval.Milliseconds()); err != nil {
		return err
	}
	for name, content := range map[string]string{"zebra.conf": "hostname router\nlog stdout informational\n",
		"bgpd.conf": bgpd.String(), "bfdd.conf": bfdd.String()} {
		if err := os.WriteFile(f.path(name), []byte(content), 0o600); err != nil {
			return err
		}
		if err := os.Chown(f.path(name), uid, gid); err != nil {
			return err
		}
	}
	return os.Chown(f.dir, uid, gid)
}

func waitForFile(path string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not appear within %v", path, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// FRRRouter is the FRR router's view of its sessions, beyond Router.
type FRRRouter interface {
	Router
	// Neighbor returns FRR's state of the session with addr.
	Neighbor(addr netip.Addr) (NeighborState, error)
	// VTY runs vtysh commands.
	VTY(commands ...string) (string, error)
}

var _ FRRRouter = (*frr)(nil)

func (f *frr) Kind() Kind { return FRR }

// VTY runs vtysh commands against this instance's daemons.
func (f *frr) VTY(commands ...string) (string, error) {
	args := []string{"--vty_socket", f.dir}
	for _, c := range commands {
		args = append(args, "-c", c)
	}
	out, err := exec.Command("/usr/bin/vtysh", args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("vtysh %q: %w: %s", commands, err, out)
	}
	return string(out), nil
}

// NeighborState is what FRR says of a session.
type NeighborState struct {
	State          string `json:"bgpState"`
	LastResetDueTo string `json:"lastResetDueTo"`
	// LastNotificationReason names the last NOTIFICATION's code and
	// subcode, e.g. "Cease/BFD Down" when bfdd saw the peer go.
	LastNotificationReason string   `json:"lastNotificationReason"`
	ConnectionsDropped     int      `json:"connectionsDropped"`
	PeerBFDInfo            *BFDInfo `json:"peerBfdInfo"`
	MessageStats           struct {
		UpdatesRecv int `json:"updatesRecv"`
	} `json:"messageStats"`
}

// BFDInfo is FRR's BFD state of a session.
type BFDInfo struct {
	Status string `json:"status"`
}

// Neighbor returns FRR's view of the session with addr.
func (f *frr) Neighbor(addr netip.Addr) (NeighborState, error) {
	out, err := f.VTY("show bgp neighbors " + addr.String() + " json")
	if err != nil {
		return NeighborState{}, err
	}
	var all map[string]NeighborState
	if err := json.Unmarshal([]byte(out), &all); err != nil {
		return NeighborState{}, fmt.Errorf("show bgp neighbors: %w: %s", err, out)
	}
	return all[addr.String()], nil
}

func (f *frr) Established(addr netip.Addr) (bool, error) {
	n, err := f.Neighbor(addr)
	return n.State == "Established", err
}

func (f *frr) SetPassword(addr netip.Addr, password string) error {
	cmd := fmt.Sprintf("neighbor %s password %s", addr, password)
	if password == "" {
		cmd = fmt.Sprintf("no neighbor %s password", addr)
	}
	_, err := f.VTY("configure terminal", fmt.Sprintf("router bgp %d", f.cfg.ASN), cmd)
	return err
}

func (f *frr) LogTail() string {
	var sb strings.Builder
	for i, p := range f.processes {
		fmt.Fprintf(&sb, "--- %s\n%s\n", frrDaemons[i], p.LogTail(20))
	}
	return sb.String()
}
