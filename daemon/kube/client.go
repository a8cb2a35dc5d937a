package kube

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
)

// The source talks to the API server with two plain REST clients over a
// scheme that knows only core/v1 and discovery/v1, not with client-go's
// generated clientset: the clientset's scheme registers every API group at
// init, which tripled the daemon's binary (9.5 to 30 MB) and its resident
// memory (10 to 25 MiB) for four resources. A daemon on every node pays
// that on every node.

// listWatchers are the four resources the source watches.
type listWatchers struct {
	services, slices, pods, nodes cache.ListerWatcher
}

// newScheme knows the types the source decodes and nothing else.
func newScheme() (*runtime.Scheme, error) {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, discoveryv1.AddToScheme} {
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
	lw := func(c *rest.RESTClient, resource string) cache.ListerWatcher {
		return cache.NewListWatchFromClient(c, resource, metav1.NamespaceAll, fields.Everything())
	}
	return listWatchers{
		services: lw(core, "services"),
		slices:   lw(disc, "endpointslices"),
		pods:     lw(core, "pods"),
		nodes:    lw(core, "nodes"),
	}, nil
}
