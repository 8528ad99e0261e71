// Command demo is `make demo`: herald at work on one Linux host, with real
// components. It starts etcd and kube-apiserver on loopback, builds a LAN
// of network namespaces (three nodes and a client on one bridge, an echo
// "pod" behind each node), runs herald-ccm and one herald-agent per node
// (nftables forwarding and ARP/NDP announcing), creates a LoadBalancer
// Service and shows the client's HTTP request answered through its VIP.
// Then it kills the announcing node's agent and shows the client's traffic
// moving to another node, and how long that took.
//
// It needs root (network namespaces, nftables, raw sockets) and refuses to
// start without it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	v1 "k8s.io/api/core/v1"

	"github.com/heraldlb/herald/e2e/cluster"
	"github.com/heraldlb/herald/e2e/labkit"
)

func main() {
	k8sBin := flag.String("k8s-bin", "", "folder with kube-apiserver, etcd and kubectl (make tools prints it)")
	binDir := flag.String("bin", "bin", "folder with herald-ccm, herald-agent and herald-echo (make build)")
	crds := flag.String("crds", "charts/herald/crds", "herald's CRDs")
	keep := flag.Bool("keep", false, "keep everything running until interrupted, to explore with kubectl")
	flag.Parse()
	if *k8sBin == "" {
		fmt.Fprintln(os.Stderr, "demo: --k8s-bin is required (run `make demo`)")
		os.Exit(2)
	}
	bin := labkit.Binaries{CCM: filepath.Join(*binDir, "herald-ccm"), Agent: filepath.Join(*binDir, "herald-agent"),
		Echo: filepath.Join(*binDir, "herald-echo")}
	if err := preflight(bin); err != nil {
		fmt.Fprintf(os.Stderr, "demo: %v\n", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, *k8sBin, *crds, bin, *keep))
}

// preflight refuses, with the reason, what cannot work.
func preflight(bin labkit.Binaries) error {
	if os.Geteuid() != 0 {
		return errors.New("needs root: it builds network namespaces, programs nftables and answers ARP on raw sockets " +
			"(run `sudo make demo`, or as root)")
	}
	for _, tool := range []string{"ip", "nft", "sysctl"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s not found (make deps installs it): %w", tool, err)
		}
	}
	for _, b := range []string{bin.CCM, bin.Agent, bin.Echo} {
		if _, err := os.Stat(b); err != nil {
			return fmt.Errorf("%w (run `make build`)", err)
		}
	}
	return nil
}

func run(ctx context.Context, k8sBin, crds string, bin labkit.Binaries, keep bool) (code int) {
	t := newDemoT()
	defer func() {
		if r := recover(); r != nil {
			f, ok := r.(fatal)
			if !ok {
				panic(r)
			}
			fmt.Fprintf(os.Stderr, "demo: %s\n", string(f))
			code = 1
		}
		t.cleanup()
	}()

	step("Starting etcd and kube-apiserver v1.37.2 on 127.0.0.1")
	c, err := cluster.Start(ctx, cluster.Options{BinDir: k8sBin})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	fmt.Printf("    ready in %v\n", c.StartupDuration.Round(time.Millisecond))

	step("Building the LAN: nodes n1, n2, n3 and a client on one bridge, an echo pod behind each node;\n" +
		"    herald-ccm, and herald-agent on every node (forwarding + Layer 2); pool \"lab\" 192.0.2.200-209, 2001:db8::200-209")
	started := time.Now()
	l := labkit.StartL2(t, c, labkit.L2Options{Bin: bin, CRDDir: crds, Dir: c.Dir()})
	fmt.Printf("    lab up in %v\n", time.Since(started).Round(time.Millisecond))

	step("Creating Service default/web (type LoadBalancer, dual-stack)")
	created := time.Now()
	svc := l.CreateService("default", "web", v1.IPv4Protocol, v1.IPv6Protocol)
	fmt.Printf("    addresses assigned %v after the Service was created\n", time.Since(created).Round(time.Millisecond))
	owner := l.WaitAnnouncer("default", "web", "is announced", func(string) bool { return true })
	fmt.Printf("    announced by node %s %v after the Service was created\n", owner, time.Since(created).Round(time.Millisecond))
	kubectl(c, "get", "svc", "web", "-o", "wide")

	vip4, _ := labkit.VIP(svc, false)
	vip6, _ := labkit.VIP(svc, true)
	step("The client asks http://" + vip4.String() + "/ and http://[" + vip6.String() + "]/")
	for _, vip := range []netip.Addr{vip4, vip6} {
		addr := netip.AddrPortFrom(vip, 80).String()
		via, a, _ := l.WaitTrafficVia(addr, func(string) bool { return true }, labkit.WaitTimeout)
		mac, _ := l.ClientNeighbour(vip)
		fmt.Printf("    %-15s answered by pod %s; the client reached node %s (it resolved the VIP to %s, %s's NIC)\n",
			vip, a.Pod, via, mac, l.NodeOfMAC[mac])
	}

	step("Killing herald-agent on " + owner + " (SIGKILL): the other nodes notice, one takes the VIP over")
	addr := netip.AddrPortFrom(vip4, 80).String()
	killed := time.Now()
	l.Agents[owner].Kill()
	via, a, at := l.WaitTrafficVia(addr, func(n string) bool { return n != owner }, labkit.WaitTimeout)
	fmt.Printf("    traffic moved from %s to %s %v after the kill (answered by pod %s)\n",
		owner, via, at.Sub(killed).Round(time.Millisecond), a.Pod)
	next := l.WaitAnnouncer("default", "web", "names the new owner", func(n string) bool { return n != owner })
	fmt.Printf("    the Service's condition now names node %s\n", next)
	step("kubectl describe svc web (conditions and events)")
	describe := kubectlOutput(c, "describe", "svc", "web")
	if i := strings.Index(describe, "Events:"); i >= 0 {
		fmt.Print(describe[i:])
	}
	printCondition(c)

	if !keep {
		step("Done; stopping everything (use --keep to explore)")
		return 0
	}
	step("Kept running; try: KUBECONFIG=" + c.Kubeconfig + " " + filepath.Join(c.BinDir, "kubectl") + " get svc,l2adv,ipaddresspools -A")
	fmt.Printf("    logs in %s; Ctrl-C stops everything.\n", c.Dir())
	<-ctx.Done()
	return 0
}

func printCondition(c *cluster.Cluster) {
	out := kubectlOutput(c, "get", "svc", "web", "-o",
		`jsonpath={range .status.conditions[*]}{.type}{"\t"}{.status}{"\t"}{.reason}{"\t"}{.message}{"\n"}{end}`)
	fmt.Print(out)
}

func step(s string) { fmt.Printf("==> %s\n", s) }

func kubectl(c *cluster.Cluster, args ...string) { fmt.Print(kubectlOutput(c, args...)) }

func kubectlOutput(c *cluster.Cluster, args ...string) string {
	out, err := exec.Command(filepath.Join(c.BinDir, "kubectl"), append([]string{"--kubeconfig", c.Kubeconfig}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Sprintf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}
