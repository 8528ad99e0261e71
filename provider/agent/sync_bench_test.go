package agent

import (
	"context"
	"fmt"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	testingclock "k8s.io/utils/clock/testing"
	"sigs.k8s.io/knftables"

	"github.com/heraldlb/herald/internal/kubeclient/kubeclienttest"
	"github.com/heraldlb/herald/provider/dataplane"
)

// BenchmarkAgentSyncOneEndpoint is the agent's own share of one endpoint
// added among n Services: the sync after the informer event (rebuild,
// diff, metrics, health checks), with the kernel's part (nft, netlink)
// left out. It should not grow with n: a sync costs what changed.
func BenchmarkAgentSyncOneEndpoint(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			objs := []runtime.Object{testNode()}
			for i := range n {
				objs = append(objs, namedService(fmt.Sprintf("s%05d", i), fmt.Sprintf("198.51.%d.%d", 100+i/250, i%250+1)),
					namedSlice(fmt.Sprintf("s%05d-1", i), fmt.Sprintf("s%05d", i), "192.0.2.101", "node-b", "192.0.2.102", "node-b"))
			}
			h := &harness{client: fake.NewClientset(objs...), reports: make(chan report, 1), clock: testingclock.NewFakeClock(t0)}
			a, err := New(Config{NodeName: nodeName, SyncPeriod: 30 * DefaultFullSyncPeriod, FullSyncPeriod: 30 * DefaultFullSyncPeriod, Burst: 1},
				Deps{Source: kubeclienttest.Clientset{Interface: h.client}, NFT: nopNFT{knftables.NewFake(dataplane.TableFamily, dataplane.TableName)},
					Registerer: prometheus.NewRegistry(), Clock: h.clock, Reloader: nopReloader{}, Listen: newMemNet().listen})
			if err != nil {
				b.Fatal(err)
			}
			h.agent = a
			ctx := h.startInformers(b)
			if err := a.sync(ctx); err != nil {
				b.Fatal(err)
			}
			i := 0
			for b.Loop() {
				b.StopTimer()
				i++
				s := namedSlice(fmt.Sprintf("s%05d-1", i%n), fmt.Sprintf("s%05d", i%n), "192.0.2.101", "node-b", "192.0.2.102", "node-b")
				if i/n%2 == 0 {
					s.Endpoints = append(s.Endpoints, namedSlice("", "", "192.0.2.103", "node-b").Endpoints...)
				}
				h.updateSlice(b, s)
				b.StartTimer()
				if err := a.sync(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// nopNFT takes every transaction and keeps nothing: at 10k Services the
// fake's element list, not the agent, would be what is measured.
type nopNFT struct{ knftables.Interface }

func (nopNFT) Run(context.Context, *knftables.Transaction) error { return nil }

type nopReloader struct{}

func (nopReloader) Fingerprint(context.Context) ([]byte, error)      { return []byte("x"), nil }
func (nopReloader) Reload(context.Context, *dataplane.Ruleset) error { return nil }
func (nopReloader) Change(context.Context, *dataplane.Ruleset, []dataplane.ElementChange) error {
	return nil
}
func (nopReloader) Stamp(context.Context) (string, error)  { return "", nil }
func (nopReloader) SetStamp(context.Context, string) error { return nil }
