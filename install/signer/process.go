package signer

import (
	"context"
	"errors"
	"fmt"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshless/meshless/daemon/certclient"
	"github.com/meshless/meshless/daemon/identity"
)

// apiTimeout bounds each API call of the handling of one CSR.
const apiTimeout = 30 * time.Second

// errNoCA: no CA is loaded yet; the CSR waits (it is queued again when
// one is).
var errNoCA = errors.New("no CA loaded yet")

// handle decides one CSR: checks who asks and what is asked for, then
// approves and signs it, or denies it with the reason (Failed instead of
// Denied when someone else approved it: those two conditions exclude
// each other). A returned error means "try again later".
func (s *Signer) handle(ctx context.Context, name string) error {
	obj, exists, err := s.csrs.GetStore().GetByKey(name)
	if err != nil || !exists {
		return err
	}
	csr := obj.(*certificatesv1.CertificateSigningRequest)
	if csr.Spec.SignerName != certclient.SignerName || finished(csr) || s.isFinishedHere(csr.UID) {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	c, ref, err := authorize(ctx, s.opts, s.getPod, csr)
	if err != nil {
		return err
	}
	if ref == nil {
		ref = checkUsages(csr.Spec.Usages)
	}
	var chainPEM []byte
	if ref == nil {
		if chainPEM, ref, err = s.sign(csr, c.node); err != nil {
			return err
		}
	}
	if ref != nil {
		return s.refuse(ctx, csr, ref)
	}
	return s.issue(ctx, csr, c, chainPEM)
}

// sign signs the CSR's request for node with the CA in use: the chain as
// PEM, or a refusal naming the request's defect, or an error of the CA.
func (s *Signer) sign(csr *certificatesv1.CertificateSigningRequest, node string) ([]byte, *refusal, error) {
	req, err := identity.ParseCSR(csr.Spec.Request)
	if err != nil {
		return nil, refuse(ReasonBadRequest, "%v", err), nil
	}
	ca := s.ca.current()
	if ca == nil {
		return nil, nil, errNoCA
	}
	chain, err := ca.SignNodeCSR(req, node, identity.IssueOptions{
		TrustDomain: s.opts.TrustDomain,
		TTL:         lifetime(csr.Spec.ExpirationSeconds),
		Now:         s.opts.Now,
	})
	if err != nil {
		if r := requestRefusal(err); r != nil {
			return nil, r, nil
		}
		return nil, nil, fmt.Errorf("sign: %w", err)
	}
	return encodeCerts(chain), nil, nil
}

// issue approves the CSR (unless it is approved already) and stores the
// certificate.
func (s *Signer) issue(ctx context.Context, csr *certificatesv1.CertificateSigningRequest, c caller, chainPEM []byte) error {
	csr = csr.DeepCopy()
	if !hasCondition(csr, certificatesv1.CertificateApproved) {
		csr.Status.Conditions = append(csr.Status.Conditions, condition(certificatesv1.CertificateApproved,
			ReasonApproved, fmt.Sprintf("%s, service account %s: node identity of %s", c, s.opts.requester(), c.node)))
		var err error
		csr, err = s.cs.CertificatesV1().CertificateSigningRequests().UpdateApproval(ctx, csr.Name, csr, metav1.UpdateOptions{})
		if err != nil {
			return fmt.Errorf("approve: %w", err)
		}
	}
	csr.Status.Certificate = chainPEM
	if _, err := s.cs.CertificatesV1().CertificateSigningRequests().UpdateStatus(ctx, csr, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("store certificate: %w", err)
	}
	s.finishedHere(csr.UID)
	s.metrics.result("issued")
	s.opts.Logger.Debug("certificate issued", "csr", csr.Name, "caller", c.String(),
		"ttl", lifetime(csr.Spec.ExpirationSeconds))
	return nil
}

// refuse denies the CSR with ref, or marks it Failed if it is approved
// already, and logs it, once: a CSR with either condition is never
// handled again.
func (s *Signer) refuse(ctx context.Context, csr *certificatesv1.CertificateSigningRequest, ref *refusal) error {
	csr = csr.DeepCopy()
	csrs := s.cs.CertificatesV1().CertificateSigningRequests()
	var err error
	result := "denied"
	if hasCondition(csr, certificatesv1.CertificateApproved) {
		result = "failed"
		csr.Status.Conditions = append(csr.Status.Conditions, condition(certificatesv1.CertificateFailed, ref.reason, ref.message))
		_, err = csrs.UpdateStatus(ctx, csr, metav1.UpdateOptions{})
	} else {
		csr.Status.Conditions = append(csr.Status.Conditions, condition(certificatesv1.CertificateDenied, ref.reason, ref.message))
		_, err = csrs.UpdateApproval(ctx, csr.Name, csr, metav1.UpdateOptions{})
	}
	if err != nil {
		return fmt.Errorf("%s: %w", result, err)
	}
	s.finishedHere(csr.UID)
	s.metrics.result(result)
	s.opts.Logger.Warn("csr "+result, "csr", csr.Name, "requester", csr.Spec.Username, "reason", ref.reason, "message", ref.message)
	return nil
}

// finished reports whether a CSR needs nothing more from a signer: it is
// denied, failed, or has its certificate.
func finished(csr *certificatesv1.CertificateSigningRequest) bool {
	return len(csr.Status.Certificate) > 0 ||
		hasCondition(csr, certificatesv1.CertificateDenied) ||
		hasCondition(csr, certificatesv1.CertificateFailed)
}

func hasCondition(csr *certificatesv1.CertificateSigningRequest, t certificatesv1.RequestConditionType) bool {
	for _, c := range csr.Status.Conditions {
		if c.Type == t && c.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}

func condition(t certificatesv1.RequestConditionType, reason, message string) certificatesv1.CertificateSigningRequestCondition {
	now := metav1.Now()
	return certificatesv1.CertificateSigningRequestCondition{
		Type: t, Status: corev1.ConditionTrue, Reason: reason, Message: message,
		LastUpdateTime: now, LastTransitionTime: now,
	}
}
