package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/knftables"

	"github.com/heraldlb/herald/internal/testenv"
	"github.com/heraldlb/herald/provider/dataplane"
)

func TestFlagValidation(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string // substring of the error; "" means valid
	}{
		{"minimal", []string{"--node-name=n1"}, ""},
		{"everything", []string{"--node-name=n1", "--kubeconfig=/k", "--nodeport-addresses=192.0.2.0/24,2001:db8::/64",
			"--cluster-cidr=10.244.0.0/16", "--masquerade-all", "--min-sync-period=0", "--sync-period=1m", "--burst=5",
			"--full-sync-period=2h", "--health-bind-address=[::]:9000", "--metrics-bind-address=:9000", "-v=2"}, ""},
		{"disabled servers", []string{"--node-name=n1", "--health-bind-address=", "--metrics-bind-address="}, ""},
		{"cleanup needs no node", []string{"--cleanup"}, ""},
		{"node name missing", nil, "--node-name is required"},
		{"bad nodeport cidr", []string{"--node-name=n1", "--nodeport-addresses=192.0.2.1"}, `--nodeport-addresses: "192.0.2.1" is not a CIDR`},
		{"bad cluster cidr", []string{"--node-name=n1", "--cluster-cidr=pods"}, `--cluster-cidr: "pods" is not a CIDR`},
		{"negative min sync", []string{"--node-name=n1", "--min-sync-period=-1s"}, "--min-sync-period=-1s must not be negative"},
		{"zero sync period", []string{"--node-name=n1", "--sync-period=0"}, "--sync-period=0s must be positive"},
		{"min above max", []string{"--node-name=n1", "--min-sync-period=1m", "--sync-period=30s"}, "--min-sync-period=1m0s must not exceed --sync-period=30s"},
		{"full shorter than sync", []string{"--node-name=n1", "--full-sync-period=10s"}, "--full-sync-period=10s must not be shorter than --sync-period=30s"},
		{"zero burst", []string{"--node-name=n1", "--burst=0"}, "--burst=0 must be at least 1"},
		{"health address without port", []string{"--node-name=n1", "--health-bind-address=0.0.0.0"}, `--health-bind-address="0.0.0.0": want host:port`},
		{"metrics host not an IP", []string{"--node-name=n1", "--metrics-bind-address=localhost:1"}, `--metrics-bind-address="localhost:1": host "localhost" is not an IP address`},
		{"metrics port out of range", []string{"--node-name=n1", "--metrics-bind-address=:70000"}, `--metrics-bind-address=":70000": port "70000" must be in 1-65535`},
		{"BGP only, without forwarding", []string{"--node-name=n1", "--forwarding=false", "--announce=bgp"}, ""},
		{"both protocols", []string{"--node-name=n1", "--announce=layer2,bgp", "--bgp-router-id=192.0.2.11", "--bgp-listen-port=179",
			"--bgp-converge-wait=500ms", "--bgp-secret-namespace=herald", "--bgp-secret-refresh=1m"}, ""},
		{"nothing to do", []string{"--node-name=n1", "--forwarding=false"}, "--forwarding=false and no --announce: nothing to do"},
		{"unknown protocol", []string{"--node-name=n1", "--announce=ospf"}, `--announce="ospf": want "layer2" or "bgp"`},
		{"IPv6 router ID", []string{"--node-name=n1", "--announce=bgp", "--bgp-router-id=2001:db8::1"}, `--bgp-router-id="2001:db8::1" is not an IPv4 address`},
		{"listen port out of range", []string{"--node-name=n1", "--announce=bgp", "--bgp-listen-port=65536"}, "--bgp-listen-port=65536 must be in 0-65535"},
		{"converge wait beyond the drain", []string{"--node-name=n1", "--announce=bgp", "--bgp-converge-wait=5s"},
			"--bgp-converge-wait=5s must be positive and shorter than --drain-timeout=5s"},
		{"no secret namespace", []string{"--node-name=n1", "--announce=bgp", "--bgp-secret-namespace="}, "--bgp-secret-namespace must not be empty"},
		{"BGP flags unchecked without BGP", []string{"--node-name=n1", "--bgp-router-id=x"}, ""},
		{"node CIDR mode", []string{"--node-name=n1", "--detect-local-mode=NodeCIDR"}, ""},
		{"bridge mode", []string{"--node-name=n1", "--detect-local-mode=BridgeInterface", "--pod-bridge-interface=cbr0"}, ""},
		{"prefix mode", []string{"--node-name=n1", "--detect-local-mode=InterfaceNamePrefix", "--pod-interface-name-prefix=veth"}, ""},
		{"unknown mode", []string{"--node-name=n1", "--detect-local-mode=clustercidr"},
			`--detect-local-mode="clustercidr": want ClusterCIDR, NodeCIDR, BridgeInterface or InterfaceNamePrefix`},
		{"empty mode", []string{"--node-name=n1", "--detect-local-mode="}, `--detect-local-mode="": want ClusterCIDR`},
		{"bridge mode without bridge", []string{"--node-name=n1", "--detect-local-mode=BridgeInterface"},
			"--detect-local-mode=BridgeInterface needs --pod-bridge-interface"},
		{"prefix mode without prefix", []string{"--node-name=n1", "--detect-local-mode=InterfaceNamePrefix"},
			"--detect-local-mode=InterfaceNamePrefix needs --pod-interface-name-prefix"},
		{"bridge name too long", []string{"--node-name=n1", "--detect-local-mode=BridgeInterface", "--pod-bridge-interface=bridge-for-all-pods"},
			`--pod-bridge-interface="bridge-for-all-pods": not a usable interface name: "bridge-for-all-pods" is longer than 15 bytes`},
		{"prefix with a glob", []string{"--node-name=n1", "--detect-local-mode=InterfaceNamePrefix", "--pod-interface-name-prefix=veth*"},
			`--pod-interface-name-prefix="veth*": not a usable interface name: "veth*" has '*'`},
		{"bridge flag in another mode", []string{"--node-name=n1", "--pod-bridge-interface=cbr0"},
			"--pod-bridge-interface is read only with --detect-local-mode=BridgeInterface, not ClusterCIDR"},
		{"prefix flag in another mode", []string{"--node-name=n1", "--detect-local-mode=BridgeInterface", "--pod-bridge-interface=cbr0",
			"--pod-interface-name-prefix=veth"}, "--pod-interface-name-prefix is read only with --detect-local-mode=InterfaceNamePrefix, not BridgeInterface"},
		{"cluster CIDR in node CIDR mode is unused, as in kube-proxy", []string{"--node-name=n1", "--detect-local-mode=NodeCIDR",
			"--cluster-cidr=192.0.2.0/24"}, ""},
		{"bad cluster CIDR in another mode", []string{"--node-name=n1", "--detect-local-mode=NodeCIDR", "--cluster-cidr=x"},
			`--cluster-cidr: "x" is not a CIDR`},
		{"memory limit", []string{"--node-name=n1", "--memory-limit=100Mi"}, ""},
		{"no memory limit", []string{"--node-name=n1", "--memory-limit=0"}, ""},
		{"memory limit not a quantity", []string{"--node-name=n1", "--memory-limit=lots"}, `--memory-limit="lots": want "auto", 0 or a quantity`},
		{"negative memory limit", []string{"--node-name=n1", "--memory-limit=-1Mi"}, `--memory-limit="-1Mi" must not be negative`},
		{"GC target", []string{"--node-name=n1", "--gc-percent=100"}, ""},
		{"GC target off", []string{"--node-name=n1", "--gc-percent=0"}, "--gc-percent=0 must be at least 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var o options
			if err := newFlagSet(&o).Parse(tc.args); err != nil {
				t.Fatalf("parse: %v", err)
			}
			err := o.validate()
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("want valid, got %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("want an error containing %q, got %v", tc.want, err)
			}
		})
	}
}

func TestAgentConfigFromFlags(t *testing.T) {
	var o options
	err := newFlagSet(&o).Parse([]string{"--node-name=n1", "--nodeport-addresses=192.0.2.7/24",
		"--cluster-cidr=10.244.0.0/16,fd00::/48", "--masquerade-all", "--burst=3", "--min-sync-period=2s"})
	if err != nil {
		t.Fatal(err)
	}
	c := o.agentConfig()
	if c.NodeName != "n1" || c.Burst != 3 || c.MinSyncPeriod != 2*time.Second || c.SyncPeriod != 30*time.Second ||
		!c.Dataplane.MasqueradeAll || len(c.Dataplane.Local.PodCIDRs) != 2 || c.LocalFromNode ||
		len(c.Dataplane.NodePortCIDRs) != 1 || c.Dataplane.NodePortCIDRs[0].String() != "192.0.2.0/24" {
		t.Errorf("config %+v", c)
	}
}

func TestLocalDetectorFromFlags(t *testing.T) {
	for _, tc := range []struct {
		args     []string
		want     dataplane.LocalDetector
		fromNode bool
	}{
		{nil, dataplane.LocalDetector{PodCIDRs: []netip.Prefix{}}, false},
		{[]string{"--cluster-cidr=192.0.2.7/24,2001:db8::/64"},
			dataplane.LocalDetector{PodCIDRs: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("2001:db8::/64")}}, false},
		{[]string{"--detect-local-mode=NodeCIDR", "--cluster-cidr=192.0.2.0/24"}, dataplane.LocalDetector{}, true},
		{[]string{"--detect-local-mode=BridgeInterface", "--pod-bridge-interface=cbr0"}, dataplane.LocalDetector{Interface: "cbr0"}, false},
		{[]string{"--detect-local-mode=InterfaceNamePrefix", "--pod-interface-name-prefix=veth"},
			dataplane.LocalDetector{Interface: "veth", InterfacePrefix: true}, false},
	} {
		var o options
		if err := newFlagSet(&o).Parse(append([]string{"--node-name=n1"}, tc.args...)); err != nil {
			t.Fatal(err)
		}
		if err := o.validate(); err != nil {
			t.Fatalf("%q: %v", tc.args, err)
		}
		c := o.agentConfig()
		if !reflect.DeepEqual(c.Dataplane.Local, tc.want) || c.LocalFromNode != tc.fromNode {
			t.Errorf("%q: detector %+v fromNode %t, want %+v %t", tc.args, c.Dataplane.Local, c.LocalFromNode, tc.want, tc.fromNode)
		}
	}
}

func noNFT() (knftables.Interface, error) { return nil, errors.New("nft must not be used") }

func TestRunExitCodes(t *testing.T) {
	for _, tc := range []struct {
		name   string
		args   []string
		code   int
		stderr string
		stdout string
	}{
		{"missing node name", nil, 2, "herald-agent: --node-name is required", ""},
		{"bridge mode without bridge", []string{"--node-name=n1", "--detect-local-mode=BridgeInterface"}, 2,
			"herald-agent: --detect-local-mode=BridgeInterface needs --pod-bridge-interface", ""},
		{"unknown flag", []string{"--node-nme=x"}, 2, "unknown flag: --node-nme", ""},
		{"stray argument", []string{"--node-name=n1", "extra"}, 2, `unexpected arguments ["extra"]`, ""},
		{"help", []string{"--help"}, 0, "--nodeport-addresses", ""},
		{"version", []string{"--version"}, 0, "", "herald-agent v"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := run(context.Background(), tc.args, &stdout, &stderr, noNFT, false); code != tc.code {
				t.Errorf("exit %d, want %d; stderr:\n%s", code, tc.code, stderr.String())
			}
			if !strings.Contains(stderr.String(), tc.stderr) {
				t.Errorf("stderr lacks %q:\n%s", tc.stderr, stderr.String())
			}
			if !strings.HasPrefix(stdout.String(), tc.stdout) || (tc.stdout == "") != (stdout.Len() == 0) {
				t.Errorf("stdout %q, want %q...", stdout.String(), tc.stdout)
			}
		})
	}
}

func TestCleanupDeletesTheTableIdempotently(t *testing.T) {
	fake := knftables.NewFake(dataplane.TableFamily, dataplane.TableName)
	nft := func() (knftables.Interface, error) { return fake, nil }
	tx := fake.NewTransaction()
	tx.Add(&knftables.Table{})
	tx.Add(&knftables.Chain{Name: "services"})
	if err := fake.Run(context.Background(), tx); err != nil {
		t.Fatal(err)
	}
	for i := range 2 { // the second run finds no table
		var stderr bytes.Buffer
		if code := run(context.Background(), []string{"--cleanup"}, io.Discard, &stderr, nft, false); code != 0 {
			t.Fatalf("run %d: exit %d: %s", i, code, stderr.String())
		}
		if d := fake.Dump(); d != "" {
			t.Fatalf("run %d: table left:\n%s", i, d)
		}
	}
}

func TestBusyBindAddressNamesTheFlag(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		testenv.Unavailable(t, "cannot listen on 127.0.0.1: %v", err)
	}
	defer l.Close()
	o := options{healthBindAddress: l.Addr().String(), metricsBindAddress: "127.0.0.1:0"}
	_, err = serve(context.Background(), &o, http.NotFoundHandler(), http.NotFoundHandler())
	if err == nil || !strings.Contains(err.Error(), "--health-bind-address=") {
		t.Errorf("want an error naming --health-bind-address, got %v", err)
	}
}

func TestResolveMemoryLimit(t *testing.T) {
	for _, tc := range []struct {
		name  string
		flag  string
		files map[string]string // under the fake cgroup root
		want  int64
		err   bool
	}{
		{"explicit", "100Mi", nil, 100 << 20, false},
		{"explicit beats the container's", "100Mi", map[string]string{"memory.max": "268435456\n"}, 100 << 20, false},
		{"none", "0", map[string]string{"memory.max": "268435456\n"}, 0, false},
		{"auto, cgroup v2", "auto", map[string]string{"memory.max": "268435456\n"}, 241591910, false},
		{"auto, cgroup v2 unlimited", "auto", map[string]string{"memory.max": "max\n"}, 0, false},
		{"auto, cgroup v1", "auto", map[string]string{"memory/memory.limit_in_bytes": "134217728\n"}, 120795955, false},
		{"auto, cgroup v1 unlimited", "auto", map[string]string{"memory/memory.limit_in_bytes": "9223372036854771712\n"}, 0, false},
		{"auto, no cgroup", "auto", nil, 0, false},
		{"auto, garbled", "auto", map[string]string{"memory.max": "lots\n"}, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			for name, content := range tc.files {
				path := filepath.Join(root, name)
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			got, err := resolveMemoryLimit(tc.flag, root)
			if (err != nil) != tc.err {
				t.Fatalf("error %v, want error %t", err, tc.err)
			}
			if got.bytes != tc.want {
				t.Errorf("limit %d bytes, want %d", got.bytes, tc.want)
			}
		})
	}
}
