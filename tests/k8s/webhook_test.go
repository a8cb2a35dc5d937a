package k8s

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/meshless/meshless/daemon/meshlet"
	"github.com/meshless/meshless/install/webhook"
	"github.com/meshless/meshless/internal/testenv"
)

// webhookNS is the namespace of testWebhook's pods.
const webhookNS = "webhook-e2e"

// testWebhook: with install/kubernetes/webhook.yaml applied and the
// signer binary serving it, the API server itself calls the webhook
// through its Service (egress_test.go) and stores what it answered: a
// pod of a Meshlet created without any volume is stored with the
// emptyDir and its mounts; a pod without the label and a pod with its
// own /meshlet are stored as they were sent (the latter annotated); a
// server-side dry run is mutated too (sideEffects None); a container
// that a later webhook adds gets the mount on the re-invocation, and a
// review of the stored pod adds nothing.
func testWebhook(ctx context.Context, t *testing.T, c *Cluster) {
	w := startWebhookSigner(ctx, t, c)
	for _, obj := range []func() error{
		func() error {
			_, err := c.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: webhookNS}}, metav1.CreateOptions{})
			return err
		},
		func() error { // pods need it (admission); do not wait for the controller
			_, err := c.Client.CoreV1().ServiceAccounts(webhookNS).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{})
			return err
		},
	} {
		if err := obj(); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	pods := c.Client.CoreV1().Pods(webhookNS)

	// A pod of a Meshlet, without any volume: the first one is admitted
	// once the API server has seen the caBundle (a second or so).
	t0 := time.Now()
	var stored *corev1.Pod
	testenv.Eventually(t, 30*time.Second, func() error {
		_, err := pods.Create(ctx, meshletPod("web-1", "init", "app", "log"), metav1.CreateOptions{})
		return err
	})
	t.Logf("first pod of a Meshlet admitted %v after the caBundle was written", time.Since(t0).Round(time.Millisecond))
	stored, err := pods.Get(ctx, "web-1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	checkInjected(t, stored)

	// Not a pod of a Meshlet: stored as sent.
	plain := meshletPod("plain-1", "", "app")
	plain.Labels = map[string]string{"app": "plain"}
	if _, err := pods.Create(ctx, plain, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if stored, err = pods.Get(ctx, "plain-1", metav1.GetOptions{}); err != nil {
		t.Fatal(err)
	}
	if len(stored.Spec.Volumes) != 0 || len(stored.Spec.Containers[0].VolumeMounts) != 0 || stored.Annotations[webhook.AnnotationMeshletDir] != "" {
		t.Errorf("pod without the label changed: volumes %+v, mounts %+v, annotations %v", stored.Spec.Volumes, stored.Spec.Containers[0].VolumeMounts, stored.Annotations)
	}

	// A /meshlet of its own: left alone, annotated.
	own := meshletPod("own-1", "", "app")
	own.Spec.Volumes = []corev1.Volume{{Name: "mine", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
	own.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "mine", MountPath: "/meshlet"}}
	if _, err := pods.Create(ctx, own, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if stored, err = pods.Get(ctx, "own-1", metav1.GetOptions{}); err != nil {
		t.Fatal(err)
	}
	if len(stored.Spec.Volumes) != 1 || stored.Spec.Volumes[0].Name != "mine" || len(stored.Spec.Containers[0].VolumeMounts) != 1 ||
		stored.Annotations[webhook.AnnotationMeshletDir] != webhook.AnnotationSkipped ||
		stored.Annotations[webhook.AnnotationReason] != `container "app" mounts volume "mine" at /meshlet` {
		t.Errorf("pod with its own /meshlet: volumes %+v, mounts %+v, annotations %v", stored.Spec.Volumes, stored.Spec.Containers[0].VolumeMounts, stored.Annotations)
	}

	// A server-side dry run is mutated as well, and stores nothing.
	dry, err := pods.Create(ctx, meshletPod("dry-1", "", "app"), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	if err != nil {
		t.Fatal(err)
	}
	checkInjected(t, dry)
	if _, err := pods.Get(ctx, "dry-1", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("dry-run pod stored: %v", err)
	}

	testReinvocation(ctx, t, c, w)
	checkServingCertificate(t, w)
	testSignerWebhookPolicy(ctx, t, c)
	testWebhookDown(ctx, t, c, w)
}

// testSignerWebhookPolicy: with the signer's own token, changing the
// configuration meshless is refused by the admission policy of
// webhook.yaml unless only caBundle changes (dry runs: the policy is
// what is tested, nothing is stored).
func testSignerWebhookPolicy(ctx context.Context, t *testing.T, c *Cluster) {
	tr, err := c.Client.CoreV1().ServiceAccounts(signerNS).CreateToken(ctx, "meshless-signer",
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr(int64(3600))}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := rest.CopyConfig(c.Config)
	cfg.BearerToken = tr.Status.Token
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cfgs := cs.AdmissionregistrationV1().MutatingWebhookConfigurations()
	update := func(edit func(*admissionregistrationv1.MutatingWebhookConfiguration)) error {
		cur, err := cfgs.Get(ctx, "meshless", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		edit(cur)
		_, err = cfgs.Update(ctx, cur, metav1.UpdateOptions{DryRun: []string{metav1.DryRunAll}})
		return err
	}
	refused := func(what string, edit func(*admissionregistrationv1.MutatingWebhookConfiguration)) {
		t.Helper()
		if err := update(edit); !apierrors.IsInvalid(err) && !apierrors.IsForbidden(err) || !strings.Contains(fmt.Sprint(err), "meshless-signer-webhook") {
			t.Errorf("signer %s: %v, want refused by the policy meshless-signer-webhook", what, err)
		}
	}
	refused("pointing the webhook elsewhere", func(m *admissionregistrationv1.MutatingWebhookConfiguration) {
		m.Webhooks[0].ClientConfig.Service.Name = "evil"
	})
	refused("widening the rules", func(m *admissionregistrationv1.MutatingWebhookConfiguration) {
		m.Webhooks[0].Rules[0].Resources = []string{"*"}
	})
	refused("dropping the object selector", func(m *admissionregistrationv1.MutatingWebhookConfiguration) {
		m.Webhooks[0].ObjectSelector = &metav1.LabelSelector{}
	})
	refused("setting an owner", func(m *admissionregistrationv1.MutatingWebhookConfiguration) {
		m.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "Namespace", Name: webhookNS, UID: "x"}}
	})
	if err := update(func(m *admissionregistrationv1.MutatingWebhookConfiguration) {
		m.Webhooks[0].ClientConfig.CABundle = append(m.Webhooks[0].ClientConfig.CABundle, '\n')
	}); err != nil {
		t.Errorf("signer changing the caBundle: %v", err)
	}
}

// testWebhookDown: with the signer stopped, failurePolicy Fail refuses
// pods of a Meshlet, and only them: the selectors keep pods without the
// label, and kube-system, out of the webhook's reach.
func testWebhookDown(ctx context.Context, t *testing.T, c *Cluster, w *webhookSigner) {
	w.p.stop(false)
	if code := w.p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("meshless-signer exit status %d after SIGTERM, want 0", code)
	}
	pods := c.Client.CoreV1().Pods(webhookNS)
	_, err := pods.Create(ctx, meshletPod("down-1", "", "app"), metav1.CreateOptions{})
	if err == nil || !strings.Contains(err.Error(), "meshlet-dir.meshless.io") {
		t.Errorf("pod of a Meshlet with the webhook down: %v, want refused by the webhook's failurePolicy", err)
	} else {
		t.Logf("pod of a Meshlet with the webhook down: %v", err)
	}
	plain := meshletPod("down-plain", "", "app")
	plain.Labels = nil
	if _, err := pods.Create(ctx, plain, metav1.CreateOptions{}); err != nil {
		t.Errorf("pod without the label, webhook down: %v", err)
	}
	if _, err := c.Client.CoreV1().Pods("kube-system").Create(ctx, meshletPod("meshless-e2e-down", "", "app"), metav1.CreateOptions{}); err != nil {
		t.Errorf("pod of a Meshlet in kube-system, webhook down: %v", err)
	}
	_ = c.Client.CoreV1().Pods("kube-system").Delete(ctx, "meshless-e2e-down", metav1.DeleteOptions{GracePeriodSeconds: ptr(int64(0))})
}

// testReinvocation: a sidecar injector (a second webhook, served here,
// called after this one: configurations run in name order) adds a
// container; reinvocationPolicy IfNeeded calls the /meshlet webhook
// again, which mounts the folder in it; a review of the stored pod,
// as a further re-invocation would send it, adds nothing.
func testReinvocation(ctx context.Context, t *testing.T, c *Cluster, w *webhookSigner) {
	var calls atomic.Int32
	srv := httptest.NewTLSServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		var rv struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Request    struct {
				UID    string     `json:"uid"`
				Object corev1.Pod `json:"object"`
			} `json:"request"`
		}
		if err := json.NewDecoder(r.Body).Decode(&rv); err != nil {
			http.Error(rw, err.Error(), http.StatusBadRequest)
			return
		}
		resp := map[string]any{"uid": rv.Request.UID, "allowed": true}
		if !hasContainer(&rv.Request.Object, "sidecar") {
			patch, _ := json.Marshal([]map[string]any{{"op": "add", "path": "/spec/containers/-",
				"value": map[string]string{"name": "sidecar", "image": "meshless.local/sidecar:1"}}})
			resp["patchType"], resp["patch"] = "JSONPatch", patch
		}
		_ = json.NewEncoder(rw).Encode(map[string]any{"apiVersion": rv.APIVersion, "kind": rv.Kind, "response": resp})
	}))
	t.Cleanup(srv.Close)
	fail, never, none, five := admissionregistrationv1.Fail, admissionregistrationv1.NeverReinvocationPolicy, admissionregistrationv1.SideEffectClassNone, int32(5)
	cfgs := c.Client.AdmissionregistrationV1().MutatingWebhookConfigurations()
	_, err := cfgs.Create(ctx, &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "zz-meshless-e2e-sidecar"},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name:                    "sidecar.e2e.meshless.io",
			ClientConfig:            admissionregistrationv1.WebhookClientConfig{URL: ptr(srv.URL + "/"), CABundle: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})},
			Rules:                   []admissionregistrationv1.RuleWithOperations{{Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create}, Rule: admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}}}},
			ObjectSelector:          &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "meshless-e2e/sidecar", Operator: metav1.LabelSelectorOpExists}}},
			NamespaceSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": webhookNS}},
			FailurePolicy:           &fail,
			ReinvocationPolicy:      &never,
			SideEffects:             &none,
			TimeoutSeconds:          &five,
			AdmissionReviewVersions: []string{"v1"},
		}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cfgs.Delete(context.Background(), "zz-meshless-e2e-sidecar", metav1.DeleteOptions{}) })
	pod := func(name string) *corev1.Pod {
		p := meshletPod(name, "", "app")
		p.Labels["meshless-e2e/sidecar"] = "yes"
		return p
	}
	pods := c.Client.CoreV1().Pods(webhookNS)
	// Until the API server has seen the new configuration (dry runs:
	// nothing is stored meanwhile).
	testenv.Eventually(t, 30*time.Second, func() error {
		p, err := pods.Create(ctx, pod("probe"), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil || !hasContainer(p, "sidecar") {
			return fmt.Errorf("no sidecar yet: %v", err)
		}
		return nil
	})
	injected, sidecars := w.reviews(t, "injected"), calls.Load()
	if _, err := pods.Create(ctx, pod("web-2"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	stored, err := pods.Get(ctx, "web-2", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	checkInjected(t, stored)
	if !hasContainer(stored, "sidecar") {
		t.Fatalf("no sidecar in %+v", stored.Spec.Containers)
	}
	if d, s := w.reviews(t, "injected")-injected, calls.Load()-sidecars; d != 2 || s != 1 {
		t.Errorf("the /meshlet webhook injected %d times, the sidecar webhook was called %d times; want 2 (first call, re-invocation) and 1", d, s)
	}
	present := w.reviews(t, "present")
	resp := w.review(t, stored)
	if resp["allowed"] != true || resp["patch"] != nil {
		t.Errorf("review of the stored pod: %v, want allowed without a patch", resp)
	}
	if n := w.reviews(t, "present") - present; n != 1 {
		t.Errorf("present reviews +%d, want +1", n)
	}
}

// checkServingCertificate: the webhook serves a certificate of the
// Meshless CA for the Service's DNS name only, no node identity.
func checkServingCertificate(t *testing.T, w *webhookSigner) {
	roots := x509.NewCertPool()
	for _, r := range w.roots {
		roots.AddCert(r)
	}
	conn, err := tls.Dial("tcp", w.addr, &tls.Config{RootCAs: roots, ServerName: webhookDNSName})
	if err != nil {
		t.Fatalf("TLS to the webhook as the API server does it: %v", err)
	}
	defer conn.Close()
	leaf := conn.ConnectionState().PeerCertificates[0]
	if len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != webhookDNSName || len(leaf.URIs)+len(leaf.IPAddresses) != 0 {
		t.Errorf("serving certificate SANs: DNS %v, URI %v, IP %v", leaf.DNSNames, leaf.URIs, leaf.IPAddresses)
	}
	t.Logf("serving certificate: %s, valid %v, issuer %s", leaf.DNSNames[0], leaf.NotAfter.Sub(leaf.NotBefore).Round(time.Minute), leaf.Issuer.CommonName)
}

// meshletPod is a pod of Meshlet "web" with an init container (unless
// init is "") and the containers, without any volume.
func meshletPod(name, init string, containers ...string) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{meshlet.LabelMeshlet: "web"}},
		Spec:       corev1.PodSpec{AutomountServiceAccountToken: ptr(false), EnableServiceLinks: ptr(false)},
	}
	if init != "" {
		p.Spec.InitContainers = []corev1.Container{{Name: init, Image: "meshless.local/app:1"}}
	}
	for _, n := range containers {
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: n, Image: "meshless.local/app:1"})
	}
	return p
}

// checkInjected checks a pod as the API server stored it: the emptyDir
// once, a mount of it at /meshlet in each container, the annotation.
func checkInjected(t *testing.T, p *corev1.Pod) {
	t.Helper()
	var vols []string
	for _, v := range p.Spec.Volumes {
		vols = append(vols, v.Name)
		if v.Name == webhook.VolumeName && v.EmptyDir == nil {
			t.Errorf("%s: volume %s is not an emptyDir: %+v", p.Name, v.Name, v.VolumeSource)
		}
	}
	if strings.Count(strings.Join(vols, " "), webhook.VolumeName) != 1 {
		t.Errorf("%s: volumes %v, want %s once", p.Name, vols, webhook.VolumeName)
	}
	for _, ctr := range append(append([]corev1.Container(nil), p.Spec.InitContainers...), p.Spec.Containers...) {
		n := 0
		for _, m := range ctr.VolumeMounts {
			if m.MountPath == webhook.MountPath {
				n++
				if m.Name != webhook.VolumeName || m.ReadOnly {
					t.Errorf("%s/%s: mount %+v", p.Name, ctr.Name, m)
				}
			}
		}
		if n != 1 {
			t.Errorf("%s/%s: %d mounts at %s: %+v", p.Name, ctr.Name, n, webhook.MountPath, ctr.VolumeMounts)
		}
	}
	if p.Annotations[webhook.AnnotationMeshletDir] != webhook.AnnotationInjected {
		t.Errorf("%s: annotations %v", p.Name, p.Annotations)
	}
}

func hasContainer(p *corev1.Pod, name string) bool {
	for _, c := range p.Spec.Containers {
		if c.Name == name {
			return true
		}
	}
	return false
}
