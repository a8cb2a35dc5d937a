package signer

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/meshless/meshless/daemon/certclient"
	"github.com/meshless/meshless/install/webhook"
)

// Signer approves, signs or denies the CertificateSigningRequests of
// signer certclient.SignerName. See the package documentation.
type Signer struct {
	cs      kubernetes.Interface
	opts    Options
	getPod  podGetter
	ca      *caStore
	queue   workqueue.TypedRateLimitingInterface[string]
	csrs    cache.SharedIndexInformer
	metrics *metrics
	synced  atomic.Bool
	webhook *webhookCert     // nil without Options.Webhook
	hook    *webhook.Handler // nil without Options.Webhook

	doneMu sync.Mutex
	done   map[types.UID]time.Time // CSRs finished here, while the cache may lag
}

// New makes a Signer that works through cs (see RESTConfig for its rate
// limit).
func New(cs kubernetes.Interface, opts Options) (*Signer, error) {
	if cs == nil {
		return nil, errors.New("signer: no kubernetes client")
	}
	opts = opts.withDefaults()
	s := &Signer{
		cs:   cs,
		opts: opts,
		getPod: func(ctx context.Context, ns, name string) (*corev1.Pod, error) {
			return cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		},
		// Retries (conflicts, an unreadable pod, no CA yet) back off per
		// CSR from 50 ms to 30 s. client-go's default limiter also caps
		// all retries at 10 a second, which a burst of conflicts would
		// hit; the daemon gives up on a CSR after 30 s anyway.
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](50*time.Millisecond, 30*time.Second),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "meshless-signer"}),
		metrics: newMetrics(),
		done:    map[types.UID]time.Time{},
	}
	s.ca = newCAStore(cs, opts, s.newCA)
	if opts.Webhook != nil {
		s.webhook = newWebhookCert(cs, opts, s.ca.current)
		var err error
		if s.hook, err = webhook.NewHandler(webhook.Options{Logger: opts.Logger.With("server", "webhook"), Registerer: s.metrics.reg}); err != nil {
			return nil, fmt.Errorf("signer: %w", err)
		}
	}
	factory := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.FieldSelector = "spec.signerName=" + certclient.SignerName
	}))
	s.csrs = factory.Certificates().V1().CertificateSigningRequests().Informer()
	if _, err := s.csrs.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    s.enqueue,
		UpdateFunc: func(_, obj any) { s.enqueue(obj) },
		DeleteFunc: s.forget,
	}); err != nil {
		return nil, fmt.Errorf("signer: %w", err)
	}
	return s, nil
}

// Ready reports whether the signer can sign: a CA is loaded and
// published, and the CSR cache is synced; and, with Options.Webhook,
// the webhook has its serving certificate.
func (s *Signer) Ready() bool {
	return s.synced.Load() && s.ca.current() != nil && (s.webhook == nil || s.webhook.cert.Load() != nil)
}

// Run watches CSRs and the CA Secret and handles CSRs with
// Options.Workers workers until ctx is done; then it returns nil.
func (s *Signer) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		s.queue.ShutDown()
		wg.Wait()
	}()
	wg.Go(func() { s.ca.run(ctx) })
	if s.webhook != nil {
		wg.Go(func() { s.webhook.run(ctx) })
	}
	wg.Go(func() { s.csrs.RunWithContext(ctx) })
	if !cache.WaitForCacheSync(ctx.Done(), s.csrs.HasSynced) {
		return nil
	}
	s.synced.Store(true)
	s.opts.Logger.Info("signer running", "signerName", certclient.SignerName, "requester", s.opts.requester(),
		"trustDomain", s.opts.TrustDomain.String(), "workers", s.opts.Workers)
	for range s.opts.Workers {
		wg.Go(func() {
			for s.next(ctx) {
			}
		})
	}
	<-ctx.Done()
	return nil
}

// next handles one queued CSR; false when the queue is shut down.
func (s *Signer) next(ctx context.Context) bool {
	key, quit := s.queue.Get()
	if quit {
		return false
	}
	defer s.queue.Done(key)
	if err := s.handle(ctx, key); err != nil {
		if ctx.Err() == nil {
			s.opts.Logger.Debug("csr retried", "csr", key, "err", err)
			s.queue.AddRateLimited(key)
		}
		return true
	}
	s.queue.Forget(key)
	return true
}

func (s *Signer) enqueue(obj any) {
	if csr, ok := obj.(*certificatesv1.CertificateSigningRequest); ok && !finished(csr) {
		s.queue.Add(csr.Name)
	}
}

// forget drops a deleted CSR from the finished set.
func (s *Signer) forget(obj any) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	if csr, ok := obj.(*certificatesv1.CertificateSigningRequest); ok {
		s.doneMu.Lock()
		delete(s.done, csr.UID)
		s.doneMu.Unlock()
	}
}

// newCA is called when a new CA is in use: the CSRs that waited for one
// can be signed, and the webhook needs a certificate of it.
func (s *Signer) newCA() {
	s.requeueAll()
	if s.webhook != nil {
		s.webhook.wake()
	}
}

// requeueAll queues every unfinished CSR again.
func (s *Signer) requeueAll() {
	for _, obj := range s.csrs.GetStore().List() {
		s.enqueue(obj)
	}
}

// finishedHere records that uid got its final condition from this
// signer: until the cache shows it, its stale copy must not be handled
// again (a second signature would only fail on a conflict, but costs a
// pod read and a signature). Entries of CSRs nobody deleted are dropped
// after an hour, when the API server's garbage collector has removed
// them.
func (s *Signer) finishedHere(uid types.UID) {
	s.doneMu.Lock()
	defer s.doneMu.Unlock()
	now := time.Now()
	for u, t := range s.done {
		if now.Sub(t) > time.Hour {
			delete(s.done, u)
		}
	}
	s.done[uid] = now
}

func (s *Signer) isFinishedHere(uid types.UID) bool {
	s.doneMu.Lock()
	defer s.doneMu.Unlock()
	_, ok := s.done[uid]
	return ok
}

// metrics of the signer, in a registry of its own (nothing else of the
// process is exported).
type metrics struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshless_signer_requests_total",
			Help: "CertificateSigningRequests decided, by result: issued, denied (Denied condition), failed (Failed condition on a CSR approved by someone else).",
		}, []string{"result"}),
	}
	m.reg.MustRegister(m.requests)
	for _, r := range []string{"issued", "denied", "failed"} {
		m.requests.WithLabelValues(r) // present at 0 from the start
	}
	return m
}

func (m *metrics) result(r string) { m.requests.WithLabelValues(r).Inc() }

// Handler serves /healthz (the process runs), /readyz (Ready) and
// /metrics (the signer's and the webhook's).
func (s *Signer) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !s.Ready() {
			http.Error(w, "not ready: no CA loaded, CSR cache not synced, or no webhook certificate", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{}))
	return mux
}
