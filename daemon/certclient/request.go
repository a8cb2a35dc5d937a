package certclient

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshless/meshless/daemon/identity"
	"github.com/meshless/meshless/internal/watchone"
)

// Errors of Request, for errors.Is; the error text names the CSR and,
// for a refusal, the signer's reason and message.
var (
	// ErrDenied: the signer denied the request (condition Denied) or
	// could not sign it (condition Failed).
	ErrDenied = errors.New("certificate request refused")
	// ErrTimeout: no certificate within Options.Timeout (no signer
	// running, or an overloaded one).
	ErrTimeout = errors.New("no certificate in time")
)

// deleteTimeout bounds the deletion of a CSR once read; it runs even when
// the caller's context is done, so that no CSR is left behind in etcd.
const deleteTimeout = 10 * time.Second

// Request asks the signer for one node certificate: a new ECDSA P-256
// key, made in memory and never written anywhere, a CSR for it
// (identity.NewNodeCSR) created through the CertificateSigningRequest
// API, the wait for its certificate, and the CSR's deletion, whatever the
// outcome. The material it returns has the bundle read from the
// ConfigMap; it is not yet in the Source (Run does that).
func (c *Client) Request(ctx context.Context) (*identity.Material, error) {
	m, _, err := c.request(ctx)
	return m, err
}

// request is Request that also returns the key, which Run keeps to pair
// the same chain with a new bundle.
func (c *Client) request(ctx context.Context) (*identity.Material, crypto.Signer, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("key: %w", err)
	}
	csrPEM, err := identity.NewNodeCSR(identity.IssueOptions{TrustDomain: c.src.TrustDomain()}, c.node, key)
	if err != nil {
		return nil, nil, err
	}
	exp := c.expiration
	created, err := c.api.createCSR(ctx, &certificatesv1.CertificateSigningRequest{
		ObjectMeta: metav1.ObjectMeta{
			// The node in the name tells an operator whose CSR it is;
			// the signer trusts only the fields the API server sets.
			GenerateName: "meshless-node-" + c.node + "-",
			Labels:       map[string]string{"app.kubernetes.io/part-of": "meshless"},
		},
		Spec: certificatesv1.CertificateSigningRequestSpec{
			Request:           csrPEM,
			SignerName:        SignerName,
			ExpirationSeconds: &exp,
			Usages:            Usages(),
		},
	})
	if err != nil {
		return nil, nil, fmt.Errorf("create csr: %w", err)
	}
	defer c.deleteCSR(ctx, created.Name)
	chainPEM, err := c.wait(ctx, created.Name)
	if err != nil {
		return nil, nil, err
	}
	chain, err := identity.ParseCertificates(chainPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("csr %s: certificate: %w", created.Name, err)
	}
	bundle, err := c.getBundle(ctx)
	if err != nil {
		return nil, nil, err
	}
	m, err := identity.NewMaterial(bundle, chain, key)
	if err != nil {
		return nil, nil, fmt.Errorf("csr %s: %w", created.Name, err)
	}
	return m, key, nil
}

// wait follows the CSR until it has a certificate (returned, PEM), is
// denied or failed (ErrDenied), is deleted, or Timeout passes
// (ErrTimeout).
func (c *Client) wait(ctx context.Context, name string) ([]byte, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	timer := c.clock.NewTimer(c.timeout)
	defer timer.Stop()
	go func() {
		select {
		case <-timer.C():
			cancel(ErrTimeout)
		case <-ctx.Done():
		}
	}()
	var cert []byte
	var refused error
	state := "pending"
	err := watchone.Run(ctx, c.api.csr(name), func(csr *certificatesv1.CertificateSigningRequest, exists bool) bool {
		if !exists {
			refused = fmt.Errorf("csr %s deleted before it was signed", name)
			return true
		}
		for _, cond := range csr.Status.Conditions {
			switch cond.Type {
			case certificatesv1.CertificateDenied, certificatesv1.CertificateFailed:
				refused = fmt.Errorf("csr %s %s by %s: %s: %s: %w", name, pastTense(cond.Type), SignerName, cond.Reason, cond.Message, ErrDenied)
				return true
			case certificatesv1.CertificateApproved:
				state = "approved, not signed yet"
			}
		}
		if state != "pending" && len(csr.Status.Certificate) > 0 {
			cert = csr.Status.Certificate
			return true
		}
		return false
	}, c.log)
	switch {
	case cert != nil:
		return cert, nil
	case refused != nil:
		return nil, refused
	case errors.Is(context.Cause(ctx), ErrTimeout):
		return nil, fmt.Errorf("csr %s still %s after %s (is the signer for %s running?): %w", name, state, c.timeout, SignerName, ErrTimeout)
	default:
		return nil, fmt.Errorf("csr %s: %w", name, err)
	}
}

func pastTense(t certificatesv1.RequestConditionType) string {
	if t == certificatesv1.CertificateDenied {
		return "denied"
	}
	return "failed"
}

// deleteCSR deletes a CSR once read: an approved CSR otherwise stays in
// etcd for an hour and a pending one for a day, and clusters have filled
// etcd with them (kubernetes #132947). A failure is logged, not
// returned: the certificate is good, and the garbage collector removes
// the CSR later.
func (c *Client) deleteCSR(ctx context.Context, name string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), deleteTimeout)
	defer cancel()
	if err := c.api.deleteCSR(ctx, name); err != nil && !apierrors.IsNotFound(err) {
		c.log.Warn("csr not deleted; the API server's garbage collector will", "csr", name, "err", err)
	}
}

// getBundle reads the trust bundle ConfigMap.
func (c *Client) getBundle(ctx context.Context) ([]*x509.Certificate, error) {
	cm, err := c.api.bundle().Get(ctx)
	if err != nil {
		return nil, fmt.Errorf("trust bundle: configmap %s/%s: %w", c.namespace, c.configMap, err)
	}
	return c.parseBundle(cm)
}

// parseBundle is the certificates under BundleKey of cm.
func (c *Client) parseBundle(cm *corev1.ConfigMap) ([]*x509.Certificate, error) {
	certs, err := identity.ParseCertificates([]byte(cm.Data[BundleKey]))
	if err != nil {
		return nil, fmt.Errorf("trust bundle: configmap %s/%s key %s: %w", c.namespace, c.configMap, BundleKey, err)
	}
	return certs, nil
}
