package signer

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"

	"github.com/meshless/meshless/daemon/certclient"
	"github.com/meshless/meshless/daemon/identity"
	"github.com/meshless/meshless/internal/watchone"
)

// republishEvery is how often the bundle ConfigMap is compared with the
// CA and rewritten if someone changed or deleted it. The signer does not
// watch it (its Role has no watch on it); minutes are fine, since daemons
// keep the bundle they have when it disappears.
const republishEvery = 5 * time.Minute

// caStore holds the CA loaded from the Secret and publishes its bundle.
// A new CA (a changed Secret) is used for signing only once its bundle
// is published, so that daemons can already trust what it signs: of a
// rotation done in one step (new root and key together) only the few
// seconds until the daemons see the ConfigMap are a window, and the
// documented two-step rotation has none.
type caStore struct {
	cs          kubernetes.Interface
	ns          string
	secret, cm  string
	log         *slog.Logger
	onNew       func() // a new CA is in use: retry the CSRs waiting for one
	cur         atomic.Pointer[authority]
	mu          sync.Mutex
	want        *authority    // loaded, not yet published
	wantChanged chan struct{} // cap 1
	seen        string        // the Secret's version last loaded (followSecret's)
}

func newCAStore(cs kubernetes.Interface, opts Options, onNew func()) *caStore {
	return &caStore{
		cs: cs, ns: opts.Namespace, secret: opts.CASecret, cm: opts.BundleConfigMap,
		log: opts.Logger, onNew: onNew, wantChanged: make(chan struct{}, 1),
	}
}

// current is the CA in use, nil until one is loaded and published.
func (st *caStore) current() *authority { return st.cur.Load() }

// run follows the Secret and publishes until ctx is done.
func (st *caStore) run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Go(func() { st.followSecret(ctx) })
	st.publishLoop(ctx)
	wg.Wait()
}

// followSecret loads the CA each time the Secret changes (see load).
func (st *caStore) followSecret(ctx context.Context) {
	secrets := st.cs.CoreV1().Secrets(st.ns)
	_ = watchone.Run(ctx, watchone.Funcs[*corev1.Secret]{
		Get: func(ctx context.Context) (*corev1.Secret, error) {
			return secrets.Get(ctx, st.secret, metav1.GetOptions{})
		},
		Watch: func(ctx context.Context, rv string) (watch.Interface, error) {
			return secrets.Watch(ctx, metav1.ListOptions{
				FieldSelector:   fields.OneTermEqualSelector("metadata.name", st.secret).String(),
				ResourceVersion: rv,
			})
		},
	}, func(s *corev1.Secret, exists bool) bool {
		st.load(s, exists)
		return false
	}, st.log)
}

// load parses a version of the Secret and hands the CA to publishLoop.
// A missing or broken Secret is logged, once per version, and the CA in
// use kept: a mistaken edit must not stop issuance for the whole cluster.
func (st *caStore) load(s *corev1.Secret, exists bool) {
	version := "absent"
	if exists {
		version = s.ResourceVersion
	}
	if version == st.seen {
		return
	}
	st.seen = version
	name := st.ns + "/" + st.secret
	if !exists {
		st.log.Error("CA secret missing; create it (docs/security.md), signing with the CA in use if any", "secret", name)
		return
	}
	ca, err := parseAuthority(s.Data[identity.CACertFile], s.Data[identity.CAKeyFile])
	if err != nil {
		st.log.Error("CA secret unusable; signing with the CA in use if any", "secret", name, "err", err)
		return
	}
	st.log.Info("CA loaded", "secret", name, "signer", ca.Certificate().Subject.CommonName,
		"roots", len(ca.Bundle()), "notAfter", ca.Certificate().NotAfter.UTC())
	st.mu.Lock()
	st.want = ca
	st.mu.Unlock()
	select {
	case st.wantChanged <- struct{}{}:
	default:
	}
}

// publishLoop publishes the loaded CA's bundle, then puts the CA in use;
// it retries failures with backoff and republishes now and then.
func (st *caStore) publishLoop(ctx context.Context) {
	tick := time.NewTicker(republishEvery)
	defer tick.Stop()
	var retry <-chan time.Time
	backoff := time.Duration(0)
	for {
		select {
		case <-ctx.Done():
			return
		case <-st.wantChanged:
		case <-tick.C:
		case <-retry:
		}
		st.mu.Lock()
		ca := st.want
		st.mu.Unlock()
		if ca == nil {
			continue
		}
		if err := st.publish(ctx, ca); err != nil {
			if ctx.Err() != nil {
				return
			}
			backoff = min(max(2*backoff, time.Second), time.Minute)
			st.log.Error("trust bundle not published; retrying", "configmap", st.ns+"/"+st.cm, "err", err, "retryIn", backoff)
			retry = time.After(backoff)
			continue
		}
		backoff, retry = 0, nil
		if st.cur.Swap(ca) != ca {
			st.onNew()
		}
	}
}

// publish writes ca's bundle into the ConfigMap, creating it if needed,
// unless it is already there.
func (st *caStore) publish(ctx context.Context, ca *authority) error {
	bundle := encodeCerts(ca.Bundle())
	cms := st.cs.CoreV1().ConfigMaps(st.ns)
	cm, err := cms.Get(ctx, st.cm, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		_, err = cms.Create(ctx, &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: st.cm, Namespace: st.ns, Labels: map[string]string{"app.kubernetes.io/part-of": "meshless"}},
			Data:       map[string]string{certclient.BundleKey: string(bundle)},
		}, metav1.CreateOptions{})
		if err == nil {
			st.log.Info("trust bundle published", "configmap", st.ns+"/"+st.cm, "roots", len(ca.Bundle()))
		}
		return err
	}
	if err != nil {
		return fmt.Errorf("get configmap: %w", err)
	}
	if cm.Data[certclient.BundleKey] == string(bundle) {
		return nil
	}
	if cm.Data == nil {
		cm.Data = map[string]string{}
	}
	cm.Data[certclient.BundleKey] = string(bundle)
	if _, err := cms.Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("update configmap: %w", err)
	}
	st.log.Info("trust bundle published", "configmap", st.ns+"/"+st.cm, "roots", len(ca.Bundle()))
	return nil
}

// encodeCerts is the PEM of certs, in order.
func encodeCerts(certs []*x509.Certificate) []byte {
	var buf bytes.Buffer
	for _, c := range certs {
		_ = pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return buf.Bytes()
}
