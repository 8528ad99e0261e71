package kubeclient

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/flowcontrol"
)

// Client talks to the apiserver about core/v1, discovery.k8s.io/v1 and
// networking.k8s.io/v1 objects, as the generated typed clients of those
// groups would: same paths, verbs, content types and options.
type Client struct {
	scheme *runtime.Scheme
	params runtime.ParameterCodec
	// groups holds one REST client per group version, keyed by group.
	groups map[string]*rest.RESTClient
	// discovery is the group-less client for /api and /apis.
	discovery *rest.RESTClient
}

// New returns a Client for cfg; cfg's content type (protobuf, say) is kept.
func New(cfg *rest.Config) (*Client, error) {
	scheme := runtime.NewScheme()
	// Status, ListOptions and the other unversioned meta types, as
	// client-go's own scheme registers them.
	metav1.AddToGroupVersion(scheme, schema.GroupVersion{Version: "v1"})
	for _, add := range []func(*runtime.Scheme) error{v1.AddToScheme, discoveryv1.AddToScheme, networkingv1.AddToScheme} {
		if err := add(scheme); err != nil {
			return nil, fmt.Errorf("kubeclient: scheme: %w", err)
		}
	}
	codecs := rest.CodecFactoryForGeneratedClient(scheme, serializer.NewCodecFactory(scheme)).WithoutConversion()
	// One HTTP client (one HTTP/2 connection) and, where cfg sets a QPS,
	// one rate limiter for every group, as client-go's clientset shares
	// them.
	cfg = rest.CopyConfig(cfg)
	if cfg.RateLimiter == nil && cfg.QPS > 0 {
		if cfg.Burst <= 0 {
			return nil, errors.New("kubeclient: a QPS needs a burst greater than 0")
		}
		cfg.RateLimiter = flowcontrol.NewTokenBucketRateLimiter(cfg.QPS, cfg.Burst)
	}
	httpClient, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubeclient: %w", err)
	}
	c := &Client{scheme: scheme, params: runtime.NewParameterCodec(scheme), groups: map[string]*rest.RESTClient{}}
	for _, gv := range []schema.GroupVersion{v1.SchemeGroupVersion, discoveryv1.SchemeGroupVersion, networkingv1.SchemeGroupVersion} {
		gc := rest.CopyConfig(cfg)
		gc.GroupVersion = &gv
		gc.APIPath = "/apis"
		if gv.Group == "" {
			gc.APIPath = "/api"
		}
		gc.NegotiatedSerializer = codecs
		rc, err := rest.RESTClientForConfigAndClient(gc, httpClient)
		if err != nil {
			return nil, fmt.Errorf("kubeclient: %s client: %w", gv, err)
		}
		c.groups[gv.Group] = rc
	}
	// Discovery documents are JSON only, as client-go's discovery client
	// asks for them.
	dc := rest.CopyConfig(cfg)
	dc.GroupVersion, dc.APIPath = nil, ""
	dc.ContentType, dc.AcceptContentTypes = runtime.ContentTypeJSON, runtime.ContentTypeJSON
	dc.NegotiatedSerializer = codecs
	if c.discovery, err = rest.UnversionedRESTClientForConfigAndClient(dc, httpClient); err != nil {
		return nil, fmt.Errorf("kubeclient: discovery client: %w", err)
	}
	return c, nil
}

func (c *Client) group(r Resource) *rest.RESTClient {
	return c.groups[r.GroupVersionResource().Group]
}

// ListWatch lists and watches r in all namespaces, as the generated
// informers do (context-aware functions, WatchList semantics supported).
func (c *Client) ListWatch(r Resource, tweak func(*metav1.ListOptions)) cache.ListerWatcher {
	rc, resource := c.group(r), r.GroupVersionResource().Resource
	edit := func(o *metav1.ListOptions) {
		if tweak != nil {
			tweak(o)
		}
	}
	return cache.ToListWatcherWithWatchListSemantics(&cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			edit(&o)
			list := r.newList()
			err := rc.Get().Resource(resource).VersionedParams(&o, c.params).Timeout(timeout(o)).Do(ctx).Into(list)
			return list, err
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			edit(&o)
			o.Watch = true
			return rc.Get().Resource(resource).VersionedParams(&o, c.params).Timeout(timeout(o)).Watch(ctx)
		},
	}, c)
}

func timeout(o metav1.ListOptions) time.Duration {
	if o.TimeoutSeconds == nil {
		return 0
	}
	return time.Duration(*o.TimeoutSeconds) * time.Second
}

// ServerResourcesForGroupVersion asks the apiserver which resources it
// serves in groupVersion ("v1" is the core group).
func (c *Client) ServerResourcesForGroupVersion(groupVersion string) (*metav1.APIResourceList, error) {
	path := "/apis/" + groupVersion
	if groupVersion == "v1" {
		path = "/api/v1"
	}
	body, err := c.discovery.Get().AbsPath(path).Do(context.TODO()).Raw()
	if err != nil {
		return nil, err
	}
	resources := &metav1.APIResourceList{}
	if err := json.Unmarshal(body, resources); err != nil {
		return nil, fmt.Errorf("decoding the discovery of %s: %w", groupVersion, err)
	}
	resources.GroupVersion = groupVersion
	return resources, nil
}

// Node reads one Node.
func (c *Client) Node(ctx context.Context, name string) (*v1.Node, error) {
	node := &v1.Node{}
	err := c.groups[""].Get().Resource("nodes").Name(name).VersionedParams(&metav1.GetOptions{}, c.params).Do(ctx).Into(node)
	return node, err
}

// EventSink writes core/v1 Events, for record.EventBroadcaster.
func (c *Client) EventSink() record.EventSink { return eventSink{rc: c.groups[""]} }

// Scheme knows the Client's types: an EventRecorder needs it to refer to
// the objects events are about.
func (c *Client) Scheme() *runtime.Scheme { return c.scheme }

// eventSink writes Events in their own namespaces, as client-go's
// EventSinkImpl over a namespace-less events client does.
type eventSink struct{ rc *rest.RESTClient }

func (s eventSink) Create(event *v1.Event) (*v1.Event, error) {
	out := &v1.Event{}
	err := s.rc.Post().NamespaceIfScoped(event.Namespace, event.Namespace != "").Resource("events").
		Body(event).Do(context.TODO()).Into(out)
	return out, err
}

func (s eventSink) Update(event *v1.Event) (*v1.Event, error) {
	out := &v1.Event{}
	err := s.rc.Put().NamespaceIfScoped(event.Namespace, event.Namespace != "").Resource("events").
		Name(event.Name).Body(event).Do(context.TODO()).Into(out)
	return out, err
}

func (s eventSink) Patch(event *v1.Event, data []byte) (*v1.Event, error) {
	out := &v1.Event{}
	err := s.rc.Patch(types.StrategicMergePatchType).NamespaceIfScoped(event.Namespace, event.Namespace != "").
		Resource("events").Name(event.Name).Body(data).Do(context.TODO()).Into(out)
	return out, err
}
