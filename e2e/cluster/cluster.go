// Package cluster runs a real etcd and kube-apiserver on 127.0.0.1 for tests:
// self-signed certificates, RBAC, a cluster-admin token, free ports, and a
// temporary directory of its own, so test packages running in parallel never
// collide. The binaries come from e2e/tools (make tools).
package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/heraldlb/herald/internal/testenv"
)

// BinDirEnv names the folder with kube-apiserver, etcd and kubectl; the
// Makefile sets it to the output of e2e/tools/build.sh.
const BinDirEnv = "HERALD_K8S_BIN"

// Options tune the cluster.
type Options struct {
	// BinDir holds kube-apiserver, etcd and kubectl.
	BinDir string
	// ServiceCIDRs for ClusterIPs; default 203.0.113.0/24 and
	// 2001:db8:ffff::/112 (documentation ranges: the lab may carry traffic
	// to them inside network namespaces).
	ServiceCIDRs string
	// ExtraAPIServerArgs are appended to kube-apiserver's flags.
	ExtraAPIServerArgs []string
}

// Cluster is a running etcd + kube-apiserver.
type Cluster struct {
	// Config is a cluster-admin client config.
	Config *rest.Config
	// Kubeconfig is a file with the same credentials, for binaries.
	Kubeconfig string
	// BinDir holds the component binaries, kubectl among them.
	BinDir string
	// StartupDuration is how long it took from starting etcd to a ready
	// apiserver with the default namespace.
	StartupDuration time.Duration

	dir       string
	etcd      *Process
	apiserver *Process
}

// Start brings up etcd and kube-apiserver and waits until the apiserver is
// ready. It retries with new ports if one was taken in between.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	if opts.ServiceCIDRs == "" {
		opts.ServiceCIDRs = "203.0.113.0/24,2001:db8:ffff::/112"
	}
	for _, name := range []string{"etcd", "kube-apiserver", "kubectl"} {
		if _, err := os.Stat(filepath.Join(opts.BinDir, name)); err != nil {
			return nil, fmt.Errorf("%s missing in %q (run make tools): %w", name, opts.BinDir, err)
		}
	}
	var errs []error
	for range 3 {
		c, err := start(ctx, opts)
		if err == nil {
			return c, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, errors.Join(errs...)
}

func start(ctx context.Context, opts Options) (_ *Cluster, err error) {
	began := time.Now()
	dir, err := os.MkdirTemp("", "herald-cluster-")
	if err != nil {
		return nil, err
	}
	c := &Cluster{dir: dir, BinDir: opts.BinDir}
	defer func() {
		if err != nil {
			c.Stop()
		}
	}()
	creds, err := writeCredentials(dir)
	if err != nil {
		return nil, err
	}
	ports, err := freePorts(3)
	if err != nil {
		return nil, err
	}
	etcdURL := "http://127.0.0.1:" + strconv.Itoa(ports[0])
	peerURL := "http://127.0.0.1:" + strconv.Itoa(ports[1])
	c.etcd, err = StartProcess("etcd", filepath.Join(dir, "etcd.log"), filepath.Join(opts.BinDir, "etcd"),
		"--name=herald-e2e", "--data-dir="+filepath.Join(dir, "etcd"),
		"--listen-client-urls="+etcdURL, "--advertise-client-urls="+etcdURL,
		"--listen-peer-urls="+peerURL, "--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=herald-e2e="+peerURL,
		"--unsafe-no-fsync", "--log-level=warn", "--quota-backend-bytes=4294967296")
	if err != nil {
		return nil, err
	}
	host := "https://127.0.0.1:" + strconv.Itoa(ports[2])
	args := []string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", "--secure-port=" + strconv.Itoa(ports[2]),
		// The default reconciler refuses a loopback advertise address.
		"--endpoint-reconciler-type=none",
		"--cert-dir=" + filepath.Join(dir, "certs"),
		"--tls-cert-file=" + creds.certFile, "--tls-private-key-file=" + creds.keyFile,
		"--token-auth-file=" + creds.tokenFile,
		"--authorization-mode=RBAC",
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file=" + creds.saKeyFile, "--service-account-signing-key-file=" + creds.saKeyFile,
		"--service-cluster-ip-range=" + opts.ServiceCIDRs,
		"--allow-privileged=true", "--profiling=false",
	}
	c.apiserver, err = StartProcess("kube-apiserver", filepath.Join(dir, "kube-apiserver.log"),
		filepath.Join(opts.BinDir, "kube-apiserver"), append(args, opts.ExtraAPIServerArgs...)...)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(creds.caPEM)
	c.Config = &rest.Config{Host: host, BearerToken: creds.token,
		TLSClientConfig: rest.TLSClientConfig{CAData: creds.caPEM}, QPS: 200, Burst: 400}
	if err := c.waitReady(ctx, &tls.Config{RootCAs: pool}, creds.token); err != nil {
		return nil, err
	}
	if c.Kubeconfig, err = writeKubeconfig(dir, host, creds); err != nil {
		return nil, err
	}
	c.StartupDuration = time.Since(began)
	return c, nil
}

// waitReady polls /readyz and then waits for the default namespace, which a
// controller inside the apiserver creates shortly after it is ready.
func (c *Cluster) waitReady(ctx context.Context, tlsConfig *tls.Config, token string) error {
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsConfig}, Timeout: 2 * time.Second}
	deadline := time.Now().Add(90 * time.Second)
	paths := []string{"/readyz", "/api/v1/namespaces/default"}
	for len(paths) > 0 {
		for _, p := range []*Process{c.etcd, c.apiserver} {
			if err := p.ExitedErr(); err != nil {
				return err
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("apiserver not ready after 90 s (%s):\n%s", paths[0], c.apiserver.LogTail(30))
		}
		if err := get(ctx, client, c.Config.Host+paths[0], token); err == nil {
			paths = paths[1:]
			continue
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return nil
}

func get(ctx context.Context, client *http.Client, url, token string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%w: %s answered %d", errNotReady, url, resp.StatusCode)
	}
	return nil
}

func writeKubeconfig(dir, host string, creds *credentials) (string, error) {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["herald-e2e"] = &clientcmdapi.Cluster{Server: host, CertificateAuthorityData: creds.caPEM}
	cfg.AuthInfos["admin"] = &clientcmdapi.AuthInfo{Token: creds.token}
	cfg.Contexts["herald-e2e"] = &clientcmdapi.Context{Cluster: "herald-e2e", AuthInfo: "admin"}
	cfg.CurrentContext = "herald-e2e"
	path := filepath.Join(dir, "kubeconfig")
	return path, clientcmd.WriteToFile(*cfg, path)
}

// Stop ends kube-apiserver and etcd (by PID) and removes their files.
func (c *Cluster) Stop() {
	if c.apiserver != nil {
		c.apiserver.Stop(10 * time.Second)
	}
	if c.etcd != nil {
		c.etcd.Stop(10 * time.Second)
	}
	if c.dir != "" {
		os.RemoveAll(c.dir)
	}
}

// Dir is the cluster's temporary directory (logs, kubeconfig).
func (c *Cluster) Dir() string { return c.dir }

// BinDirForTest returns the folder with the Kubernetes binaries. When
// HERALD_K8S_BIN is not set it ends t through testenv.Unavailable: a skip
// naming `make test` by hand, so `go test ./...` outside make still runs
// the unit tier, and a failure in CI. Like t.Skip it must be called from the
// test's goroutine.
func BinDirForTest(t testing.TB) string {
	t.Helper()
	dir := os.Getenv(BinDirEnv)
	if dir == "" {
		testenv.Unavailable(t, "%s is not set: this test needs kube-apiserver, etcd and kubectl; "+
			"run `make test` (it builds them and sets %s)", BinDirEnv, BinDirEnv)
	}
	return dir
}

// StartForTest starts a cluster for t and stops it when t ends. Without
// opts.BinDir it takes the binaries from BinDirForTest, so it must be called
// from the test's goroutine; tests that start clusters concurrently call
// Start with BinDirForTest's folder instead.
func StartForTest(t testing.TB, opts Options) *Cluster {
	t.Helper()
	if opts.BinDir == "" {
		opts.BinDir = BinDirForTest(t)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, err := Start(ctx, opts)
	if err != nil {
		t.Fatalf("starting etcd and kube-apiserver: %v", err)
	}
	t.Logf("etcd + kube-apiserver ready in %v (%s)", c.StartupDuration.Round(time.Millisecond), c.Config.Host)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("kube-apiserver log (tail):\n%s", c.apiserver.LogTail(40))
		}
		c.Stop()
	})
	return c
}

// APIServerPID is kube-apiserver's process id, for tests that read its
// memory use from /proc.
func (c *Cluster) APIServerPID() int { return c.apiserver.PID() }

// EtcdPID is etcd's process id.
func (c *Cluster) EtcdPID() int { return c.etcd.PID() }
