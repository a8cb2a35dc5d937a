package signer

import (
	"context"
	"errors"
	"fmt"
	"slices"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/meshless/meshless/daemon/certclient"
	"github.com/meshless/meshless/daemon/identity"
)

// Reasons of the conditions the signer writes: ReasonApproved on the
// Approved condition, one of the others on a Denied one (or, for a CSR
// someone else approved, a Failed one). `kubectl get csr -o yaml` shows
// them, and the daemon's error repeats them.
const (
	// ReasonApproved: every check passed; the message names the pod and
	// its node.
	ReasonApproved = "MeshlessNodeVerified"
	// ReasonNotDaemon: the requester is not the daemon's service account.
	ReasonNotDaemon = "NotDaemonServiceAccount"
	// ReasonNotPodBound: the token carried no pod name, pod UID and node
	// name (a legacy or TokenRequest token not bound to a pod).
	ReasonNotPodBound = "NotPodBoundToken"
	// ReasonPodNotFound: the token's pod does not exist any more.
	ReasonPodNotFound = "PodNotFound"
	// ReasonPodUIDMismatch: a pod of that name exists, but it is not the
	// one the token was made for (deleted and recreated).
	ReasonPodUIDMismatch = "PodUIDMismatch"
	// ReasonPodNotOnNode: the pod does not run on the token's node.
	ReasonPodNotOnNode = "PodNotOnNode"
	// ReasonPodNotDaemon: the pod is not of the daemon's service account
	// and namespace.
	ReasonPodNotDaemon = "PodNotDaemon"
	// ReasonPodTerminated: the pod is being deleted or has ended.
	ReasonPodTerminated = "PodTerminated"
	// ReasonBadUsages: the usages are not those of a node certificate.
	ReasonBadUsages = "BadUsages"
	// ReasonBadRequest: spec.request is not a PEM CSR signed by its key.
	ReasonBadRequest = "BadRequest"
	// ReasonKeyType: the key is not ECDSA P-256 or Ed25519.
	ReasonKeyType = "KeyTypeNotAllowed"
	// ReasonExtraSAN: the CSR asks for DNS, IP, email or more URI SANs.
	ReasonExtraSAN = "ExtraSAN"
	// ReasonWrongSAN: the URI SAN is not the node ID of the token's node
	// (another node, another trust domain, none).
	ReasonWrongSAN = "WrongSAN"
)

// Keys of spec.extra that the API server sets from a pod-bound
// service-account token (k8s.io/apiserver/pkg/authentication/
// serviceaccount). The node name is there since Kubernetes 1.30
// (ServiceAccountTokenPodNodeInfo).
const (
	extraPodName  = "authentication.kubernetes.io/pod-name"
	extraPodUID   = "authentication.kubernetes.io/pod-uid"
	extraNodeName = "authentication.kubernetes.io/node-name"
)

// refusal is why a CSR is not signed: the Reason and Message of its
// Denied (or Failed) condition.
type refusal struct {
	reason, message string
}

func (r *refusal) Error() string { return r.reason + ": " + r.message }

func refuse(reason, format string, args ...any) *refusal {
	return &refusal{reason: reason, message: fmt.Sprintf(format, args...)}
}

// caller is who asks, as authenticated by the API server and checked
// against the pod.
type caller struct {
	namespace, pod, uid, node string
}

func (c caller) String() string {
	return fmt.Sprintf("pod %s/%s (uid %s) on node %s", c.namespace, c.pod, c.uid, c.node)
}

// podGetter reads a pod from the API server (not a cache: a pod deleted
// and recreated a moment ago must show its new UID).
type podGetter func(ctx context.Context, namespace, name string) (*corev1.Pod, error)

// authorize checks who asks, from the fields the API server set on the
// CSR (spec.username, spec.extra), never from the request itself: the
// requester must be the daemon's service account, with a pod-bound token
// whose pod still exists with the same UID, runs on the token's node, is
// of the daemon's service account and namespace and has not ended. It
// returns the caller, a refusal, or an error when the pod could not be
// read (retried later).
func authorize(ctx context.Context, opts Options, getPod podGetter, csr *certificatesv1.CertificateSigningRequest) (caller, *refusal, error) {
	if want := opts.requester(); csr.Spec.Username != want {
		return caller{}, refuse(ReasonNotDaemon, "requester %q is not the Meshless daemon's service account %q", csr.Spec.Username, want), nil
	}
	c := caller{namespace: opts.Namespace}
	var missing []string
	for key, dst := range map[string]*string{extraPodName: &c.pod, extraPodUID: &c.uid, extraNodeName: &c.node} {
		v := csr.Spec.Extra[key]
		if len(v) != 1 || v[0] == "" {
			missing = append(missing, key)
			continue
		}
		*dst = v[0]
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		return caller{}, refuse(ReasonNotPodBound, "not made with a pod-bound service-account token: no single %v in the request's extra", missing), nil
	}
	pod, err := getPod(ctx, c.namespace, c.pod)
	if apierrors.IsNotFound(err) {
		return caller{}, refuse(ReasonPodNotFound, "pod %s/%s of the token does not exist", c.namespace, c.pod), nil
	}
	if err != nil {
		return caller{}, nil, fmt.Errorf("get pod %s/%s: %w", c.namespace, c.pod, err)
	}
	if r := checkPod(opts, c, pod); r != nil {
		return caller{}, r, nil
	}
	return c, nil, nil
}

// checkPod compares the pod read from the API server with the caller the
// token named.
func checkPod(opts Options, c caller, pod *corev1.Pod) *refusal {
	switch {
	case string(pod.UID) != c.uid:
		return refuse(ReasonPodUIDMismatch, "pod %s/%s has uid %s, the token was made for uid %s", c.namespace, c.pod, pod.UID, c.uid)
	case pod.Spec.NodeName != c.node:
		return refuse(ReasonPodNotOnNode, "pod %s/%s runs on node %q, the token says node %q", c.namespace, c.pod, pod.Spec.NodeName, c.node)
	case pod.Namespace != opts.Namespace || pod.Spec.ServiceAccountName != opts.ServiceAccount:
		return refuse(ReasonPodNotDaemon, "pod %s/%s runs as service account %q, not the daemon's %s/%s",
			pod.Namespace, pod.Name, pod.Spec.ServiceAccountName, opts.Namespace, opts.ServiceAccount)
	case pod.DeletionTimestamp != nil:
		return refuse(ReasonPodTerminated, "pod %s/%s is being deleted", c.namespace, c.pod)
	case pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed:
		return refuse(ReasonPodTerminated, "pod %s/%s has ended (%s)", c.namespace, c.pod, pod.Status.Phase)
	}
	return nil
}

// checkUsages accepts exactly certclient.Usages(), plus key encipherment
// if asked for (what generic Kubernetes clients add; not granted, since
// node keys are ECDSA or Ed25519 and TLS 1.3 has no RSA key transport).
func checkUsages(usages []certificatesv1.KeyUsage) *refusal {
	need := certclient.Usages()
	for _, u := range usages {
		switch {
		case slices.Contains(need, u):
			need = slices.DeleteFunc(need, func(x certificatesv1.KeyUsage) bool { return x == u })
		case u == certificatesv1.UsageKeyEncipherment:
		default:
			return refuse(ReasonBadUsages, "usage %q is not one of a node certificate's %v (key encipherment optional)", u, certclient.Usages())
		}
	}
	if len(need) > 0 {
		return refuse(ReasonBadUsages, "usages %v missing (a node certificate needs %v)", need, certclient.Usages())
	}
	return nil
}

// requestRefusal maps an error of identity.CA.SignNodeCSR to the refusal
// it stands for, or nil for errors of the signer's own (its CA), which
// are not the requester's fault.
func requestRefusal(err error) *refusal {
	for _, m := range []struct {
		err    error
		reason string
	}{
		{identity.ErrCSRSignature, ReasonBadRequest},
		{identity.ErrCSRKeyType, ReasonKeyType},
		{identity.ErrCSRExtraSAN, ReasonExtraSAN},
		{identity.ErrCSRWrongSAN, ReasonWrongSAN},
	} {
		if errors.Is(err, m.err) {
			return &refusal{reason: m.reason, message: err.Error()}
		}
	}
	return nil
}
