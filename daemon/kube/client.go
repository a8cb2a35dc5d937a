package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"github.com/meshless/meshless/daemon/meshlet"
)

// The source talks to the API server with plain REST clients over a
// scheme that knows only core/v1, discovery/v1 and the two Meshlet types,
// not with client-go's generated clientset: the clientset's scheme
// registers every API group at init, which tripled the daemon's binary
// (9.5 to 30 MB) and its resident memory (10 to 25 MiB) for four
// resources. A daemon on every node pays that on every node. Meshlets get
// the same treatment (a hand-written type in meshlets.go) rather than the
// dynamic client, whose unstructured maps would cost more to keep and to
// read.

// listWatchers are the resources the source watches.
type listWatchers struct {
	services, slices, pods, nodes cache.ListerWatcher
	// meshlets is nil when the source does not watch Meshlets (tests over
	// a fake clientset that has no such type).
	meshlets cache.ListerWatcher
	// updateStatus writes a Meshlet's status subresource; nil: the source
	// reports rejected Meshlets in its log and Status only.
	updateStatus func(context.Context, *MeshletObject) error
}

// newScheme knows the types the source decodes and nothing else.
func newScheme() (*runtime.Scheme, error) {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, discoveryv1.AddToScheme, addMeshletTypes} {
		if err := add(s); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// restListWatchers returns list-watchers for every resource over cfg.
func restListWatchers(cfg *rest.Config) (listWatchers, error) {
	scheme, err := newScheme()
	if err != nil {
		return listWatchers{}, fmt.Errorf("scheme: %w", err)
	}
	codecs := serializer.WithoutConversionCodecFactory{CodecFactory: serializer.NewCodecFactory(scheme)}
	client := func(apiPath string, gv schema.GroupVersion) (*rest.RESTClient, error) {
		c := rest.CopyConfig(cfg)
		c.APIPath, c.GroupVersion, c.NegotiatedSerializer = apiPath, &gv, codecs
		if c.ContentType == "" {
			c.ContentType = runtime.ContentTypeJSON
		}
		return rest.RESTClientFor(c)
	}
	core, err := client("/api", corev1.SchemeGroupVersion)
	if err != nil {
		return listWatchers{}, fmt.Errorf("core client: %w", err)
	}
	disc, err := client("/apis", discoveryv1.SchemeGroupVersion)
	if err != nil {
		return listWatchers{}, fmt.Errorf("discovery client: %w", err)
	}
	ext, err := client("/apis", MeshletGroupVersion)
	if err != nil {
		return listWatchers{}, fmt.Errorf("meshlet client: %w", err)
	}
	lw := func(c *rest.RESTClient, resource string) *cache.ListWatch {
		return cache.NewListWatchFromClient(c, resource, metav1.NamespaceAll, fields.Everything())
	}
	return listWatchers{
		services: lw(core, "services"),
		slices:   lw(disc, "endpointslices"),
		pods:     lw(core, "pods"),
		nodes:    lw(core, "nodes"),
		meshlets: &optionalResource{
			lw:        lw(ext, meshlet.Resource),
			emptyList: func() runtime.Object { return &MeshletList{} },
			idle:      missingResourcePoll,
		},
		updateStatus: func(ctx context.Context, m *MeshletObject) error {
			body, err := json.Marshal(m)
			if err != nil {
				return err
			}
			return ext.Put().Namespace(m.Namespace).Resource(meshlet.Resource).Name(m.Name).SubResource("status").
				Body(body).Do(ctx).Error()
		},
	}, nil
}

// missingResourcePoll is how often, at most, the source looks for the
// Meshlet CRD while it is not installed (jittered up to twice that).
const missingResourcePoll = 10 * time.Second

// optionalResource is a ListerWatcher over a resource that may not exist:
// the Meshlet CRD is installed on its own, maybe after the daemons, maybe
// never. While the API server answers 404 the informer holds no objects
// and is synced (no Meshlet can exist without its CRD), so discovery does
// not wait for it; a watch is then an idle one that ends after idle, and
// the next watch finds the CRD once it is there (a watch from no resource
// version starts with every existing object). A 404 when the cache holds
// objects is passed on instead: an API server that is starting can answer
// 404 for custom resources for a moment, and that must not empty the
// policy.
type optionalResource struct {
	lw        *cache.ListWatch
	emptyList func() runtime.Object
	idle      time.Duration
	// haveItems reports whether the informer's cache holds objects; set
	// by Source.init.
	haveItems func() bool
}

// ListWithContext lists, or returns an empty list if the resource does
// not exist and the cache is empty.
func (o *optionalResource) ListWithContext(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
	obj, err := o.lw.ListWithContext(ctx, opts)
	if apierrors.IsNotFound(err) && (o.haveItems == nil || !o.haveItems()) {
		return o.emptyList(), nil
	}
	return obj, err
}

// WatchWithContext watches, or returns an idle watch if the resource does
// not exist.
func (o *optionalResource) WatchWithContext(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
	w, err := o.lw.WatchWithContext(ctx, opts)
	if apierrors.IsNotFound(err) {
		return newIdleWatch(ctx, o.idle+rand.N(o.idle+1)), nil
	}
	return w, err
}

// List implements cache.Lister.
func (o *optionalResource) List(opts metav1.ListOptions) (runtime.Object, error) {
	return o.ListWithContext(context.Background(), opts)
}

// Watch implements cache.Watcher.
func (o *optionalResource) Watch(opts metav1.ListOptions) (watch.Interface, error) {
	return o.WatchWithContext(context.Background(), opts)
}

// IsWatchListSemanticsUnSupported makes the reflector list and watch
// (its streaming list would take an idle watch for a failed one).
func (o *optionalResource) IsWatchListSemanticsUnSupported() bool { return true }

// idleWatch is a watch that sends nothing and ends after a while.
type idleWatch struct {
	ch   chan watch.Event
	stop chan struct{}
	once sync.Once
}

func newIdleWatch(ctx context.Context, d time.Duration) *idleWatch {
	w := &idleWatch{ch: make(chan watch.Event), stop: make(chan struct{})}
	go func() {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
		case <-w.stop:
		}
		close(w.ch)
	}()
	return w
}

// Stop ends the watch.
func (w *idleWatch) Stop() { w.once.Do(func() { close(w.stop) }) }

// ResultChan returns the channel that closes when the watch ends.
func (w *idleWatch) ResultChan() <-chan watch.Event { return w.ch }
