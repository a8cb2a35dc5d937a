package signer

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/meshless/meshless/daemon/certclient"
	"github.com/meshless/meshless/daemon/identity"
	"github.com/meshless/meshless/internal/testenv"
)

// caSecret is the Secret an operator makes from `meshlessctl ca init`.
func caSecret(t *testing.T, rv string) (*corev1.Secret, *identity.CA) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "ca")
	ca, err := identity.InitCA(dir, identity.CAOptions{})
	if err != nil {
		t.Fatal(err)
	}
	data := map[string][]byte{}
	for _, f := range []string{"ca.crt", "ca.key"} {
		if data[f], err = os.ReadFile(filepath.Join(dir, f)); err != nil {
			t.Fatal(err)
		}
	}
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "meshless-system", Name: DefaultCASecret, ResourceVersion: rv}, Data: data}, ca
}

func newTestStore(t *testing.T) (*caStore, *fake.Clientset, *logCount, *atomic.Int32) {
	t.Helper()
	cs := fake.NewClientset()
	logs := &logCount{n: map[string]int{}}
	news := new(atomic.Int32)
	st := newCAStore(cs, Options{Logger: slog.New(logs)}.withDefaults(), func() { news.Add(1) })
	return st, cs, logs, news
}

func TestCAStoreLoadsPublishesThenSigns(t *testing.T) {
	st, cs, logs, news := newTestStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { st.publishLoop(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	// No Secret: logged once, nothing in use.
	st.load(nil, false)
	st.load(nil, false)
	if n := logs.count("CA secret missing; create it (docs/security.md), signing with the CA in use if any"); n != 1 || st.current() != nil {
		t.Fatalf("missing secret logged %d times, CA %v", n, st.current())
	}

	s1, ca1 := caSecret(t, "1")
	st.load(s1, true)
	testenv.Eventually(t, 10*time.Second, func() error {
		if st.current() == nil {
			return fmt.Errorf("CA not in use")
		}
		return nil
	})
	cm, err := cs.CoreV1().ConfigMaps("meshless-system").Get(ctx, certclient.DefaultBundleConfigMap, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("bundle not published before the CA was used: %v", err)
	}
	if got, err := identity.ParseCertificates([]byte(cm.Data[certclient.BundleKey])); err != nil || len(got) != 1 || !got[0].Equal(ca1.Certificate()) {
		t.Fatalf("bundle %v, %v", got, err)
	}

	// A broken version keeps the CA in use.
	broken := s1.DeepCopy()
	broken.ResourceVersion, broken.Data["ca.key"] = "2", []byte("junk")
	st.load(broken, true)
	if n := logs.count("CA secret unusable; signing with the CA in use if any"); n != 1 || !st.current().Certificate().Equal(ca1.Certificate()) {
		t.Fatalf("broken secret: logged %d times, CA changed", n)
	}

	// A new CA: published (other keys of the ConfigMap kept), then used.
	cm.Data["note"] = "kept"
	if _, err := cs.CoreV1().ConfigMaps("meshless-system").Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	s2, ca2 := caSecret(t, "3")
	st.load(s2, true)
	testenv.Eventually(t, 10*time.Second, func() error {
		if !st.current().Certificate().Equal(ca2.Certificate()) {
			return fmt.Errorf("new CA not in use")
		}
		return nil
	})
	cm, _ = cs.CoreV1().ConfigMaps("meshless-system").Get(ctx, certclient.DefaultBundleConfigMap, metav1.GetOptions{})
	if !strings.Contains(cm.Data[certclient.BundleKey], "CERTIFICATE") || cm.Data["note"] != "kept" {
		t.Fatalf("configmap after the new CA: %v", cm.Data)
	}
	if n := news.Load(); n != 2 {
		t.Errorf("onNew called %d times, want 2", n)
	}
	// Publishing the same bundle again writes nothing.
	actions := len(cs.Actions())
	if err := st.publish(ctx, &authority{CA: ca2}); err != nil {
		t.Fatal(err)
	}
	for _, a := range cs.Actions()[actions:] {
		if a.GetVerb() != "get" {
			t.Errorf("unneeded %s of the configmap", a.GetVerb())
		}
	}
}

func TestHandlerReadiness(t *testing.T) {
	s := newTestSigner(t)
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	get := func(path string) int {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if get("/healthz") != 200 || get("/readyz") != 503 || get("/metrics") != 200 {
		t.Fatal("before the cache synced: want healthy, not ready, metrics")
	}
	s.synced.Store(true)
	if get("/readyz") != 200 {
		t.Fatal("not ready with a CA and a synced cache")
	}
}
