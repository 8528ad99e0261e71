package routers

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"text/template"

	"github.com/heraldlb/herald/e2e/cluster"
	"github.com/heraldlb/herald/e2e/netlab"
)

// birdConfig: one BGP protocol per node, IPv4 and IPv6 channels on each
// IPv4 session (multiprotocol BGP), and kernel protocols that merge
// equal routes from several nodes into one multipath (ECMP) route.
var birdConfig = template.Must(template.New("bird.conf").Funcs(template.FuncMap{"key": neighborKey}).Parse(`log stderr all;
router id {{.Address}};
protocol device {}
protocol kernel k4 {
	ipv4 { export all; };
	merge paths on;
}
protocol kernel k6 {
	ipv6 { export all; };
	merge paths on;
}
{{range .Neighbors}}
protocol bgp {{key .}} {
	local {{$.Address}} as {{$.ASN}};
	neighbor {{.Address}} as {{.ASN}};
{{- if .Password}}
	password "{{.Password}}";
{{- end}}
	connect retry time 1;
	ipv4 { import all; export none; };
	ipv6 { import all; export none; };
}
{{end}}`))

type bird struct {
	ns      *netlab.Netns
	dir     string
	cfg     Config
	process *cluster.Process
}

func startBIRD(t netlab.T, lab *netlab.Lab, ns *netlab.Netns, dir string, cfg Config) *bird {
	t.Helper()
	b := &bird{ns: ns, dir: dir, cfg: cfg}
	if err := b.writeConfig(); err != nil {
		t.Fatal(err)
	}
	b.process = startDaemon(t, lab, ns, dir, "bird", "/usr/sbin/bird", "-f", "-c", b.path("bird.conf"),
		"-s", b.path("bird.ctl"), "-P", b.path("bird.pid"))
	return b
}

func (b *bird) path(name string) string { return filepath.Join(b.dir, name) }

func (b *bird) writeConfig() error {
	var sb strings.Builder
	if err := birdConfig.Execute(&sb, b.cfg); err != nil {
		return err
	}
	return os.WriteFile(b.path("bird.conf"), []byte(sb.String()), 0o600)
}

func (b *bird) Kind() Kind { return BIRD }

// birdc runs a command on the control socket.
func (b *bird) birdc(args ...string) (string, error) {
	out, err := exec.Command("/usr/sbin/birdc", append([]string{"-s", b.path("bird.ctl")}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("birdc %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

func (b *bird) neighbor(addr netip.Addr) (*Neighbor, error) {
	for i := range b.cfg.Neighbors {
		if b.cfg.Neighbors[i].Address == addr {
			return &b.cfg.Neighbors[i], nil
		}
	}
	return nil, fmt.Errorf("routers: %s is no neighbor", addr)
}

func (b *bird) Established(addr netip.Addr) (bool, error) {
	n, err := b.neighbor(addr)
	if err != nil {
		return false, err
	}
	out, err := b.birdc("show", "protocols", neighborKey(*n))
	if err != nil {
		return false, err
	}
	return strings.Contains(out, "Established"), nil
}

func (b *bird) SetPassword(addr netip.Addr, password string) error {
	n, err := b.neighbor(addr)
	if err != nil {
		return err
	}
	n.Password = password
	if err := b.writeConfig(); err != nil {
		return err
	}
	_, err = b.birdc("configure")
	return err
}

func (b *bird) LogTail() string { return b.process.LogTail(40) }
