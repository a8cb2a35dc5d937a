// Package cniapi is the protocol between the meshless-cni plugin and the
// meshlessd node daemon: JSON over HTTP on the daemon's unix socket.
//
// The plugin calls Register on ADD and gets an answer only once the daemon's
// listeners are open inside the pod's netns, so the plugin never writes a
// redirect rule towards a port that is not listening yet:
//
//	c := cniapi.NewClient("/run/meshless/cni.sock")
//	st, err := c.Register(ctx, pod)
//	if errors.Is(err, cniapi.ErrUnreachable) { ... } // CNI code 11: try again later
//
// The daemon's side, and the list of every route of the socket, is
// package localapi.
//
// A deregistration that cannot reach the daemon is written as a file in
// PendingDir (see WritePending); the daemon applies those files when it
// starts and before every registration, so no DEL is lost.
package cniapi

import (
	"fmt"
	"net/netip"
	"strings"
)

// Attachment names one CNI attachment: the container ID and interface name
// the runtime uses in ADD, DEL, CHECK and GC.
type Attachment struct {
	ContainerID string `json:"containerID"`
	IfName      string `json:"ifName"`
}

// Key returns the attachment's identifier in URLs and state files.
func (a Attachment) Key() string { return a.ContainerID + "." + a.IfName }

// EnrolledPrefix starts the container ID of the synthetic attachment the
// daemon gives a pod it enrolled itself (a pod already running when
// meshless-cni joined the CNI chain): "enrolled-<pod UID>". No runtime
// knows these attachments, so CNI GC leaves them alone; the daemon removes
// them when the pod goes away.
const EnrolledPrefix = "enrolled-"

// Enrolled reports whether a is the synthetic attachment of an enrolled
// pod.
func (a Attachment) Enrolled() bool { return strings.HasPrefix(a.ContainerID, EnrolledPrefix) }

// Validate reports whether the attachment is usable as a key: non-empty and
// free of path separators and dots in the container ID.
func (a Attachment) Validate() error {
	if a.ContainerID == "" || a.IfName == "" {
		return fmt.Errorf("container ID and interface name are required")
	}
	if strings.ContainsAny(a.ContainerID, "/.\\ \x00") || strings.ContainsAny(a.IfName, "/\\ \x00") {
		return fmt.Errorf("invalid attachment %q/%q", a.ContainerID, a.IfName)
	}
	return nil
}

// ParseKey is the inverse of Attachment.Key.
func ParseKey(key string) (Attachment, error) {
	id, ifname, ok := strings.Cut(key, ".")
	a := Attachment{ContainerID: id, IfName: ifname}
	if !ok {
		return a, fmt.Errorf("invalid attachment key %q", key)
	}
	return a, a.Validate()
}

// Exclusions are the ports and CIDRs a pod's rules let pass untouched.
type Exclusions struct {
	InboundPorts  []uint16       `json:"inboundPorts,omitempty"`
	OutboundPorts []uint16       `json:"outboundPorts,omitempty"`
	OutboundCIDRs []netip.Prefix `json:"outboundCIDRs,omitempty"`
}

// Pod is one registration: a pod's attachment, its netns and identity.
type Pod struct {
	Attachment
	// Netns is the path of the pod's network namespace (CNI_NETNS).
	Netns string `json:"netns"`
	// IPs are the pod's addresses from the primary plugin's result.
	IPs       []netip.Addr `json:"ips"`
	Namespace string       `json:"namespace,omitempty"`
	Name      string       `json:"name,omitempty"`
	UID       string       `json:"uid,omitempty"`
	// Exclusions mirror what the plugin wrote into the pod's rules.
	Exclusions Exclusions `json:"exclusions,omitempty"`
	// Redirect is the rule backend the plugin used ("iptables" or
	// "nftables"), so CHECK and DEL act on the same one ADD chose.
	Redirect string `json:"redirect,omitempty"`
}

// Validate checks the fields the daemon needs before it touches a netns.
func (p *Pod) Validate() error {
	if err := p.Attachment.Validate(); err != nil {
		return err
	}
	if p.Netns == "" {
		return fmt.Errorf("netns is required")
	}
	if len(p.IPs) == 0 {
		return fmt.Errorf("at least one pod IP is required")
	}
	for _, ip := range p.IPs {
		if !ip.IsValid() {
			return fmt.Errorf("invalid pod IP")
		}
	}
	return nil
}

// PodStatus is the daemon's view of a registered pod.
type PodStatus struct {
	Pod
	// Listeners are the addresses open inside the pod netns, e.g.
	// "127.0.0.1:15001".
	Listeners []string `json:"listeners"`
}

// GCRequest lists the attachments that are still valid; the daemon
// deregisters every other one (CNI GC, cni.dev/valid-attachments).
type GCRequest struct {
	Valid []Attachment `json:"valid"`
}

// GCResponse names what a GC removed.
type GCResponse struct {
	Removed []Attachment `json:"removed"`
}

// ErrorResponse is the body of every non-2xx answer.
type ErrorResponse struct {
	Error string `json:"error"`
}
