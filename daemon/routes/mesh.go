package routes

import (
	"net/netip"

	"github.com/meshless/meshless/daemon/meshlet"
)

// The snapshot's view of the Meshlets and their pods (workloads), for the
// decisions' identity, access control and server-side checks; Lookup never
// reads it.

// Workload returns the workload (pod) that has address ip, or nil. The
// workload is shared with the snapshot: do not modify it.
func (s *Snapshot) Workload(ip netip.Addr) *meshlet.Workload {
	if s == nil {
		return nil
	}
	return s.mesh.Workload(ip)
}

// Meshlet returns the Meshlet namespace/name, or nil (shared: do not
// modify it).
func (s *Snapshot) Meshlet(namespace, name string) *meshlet.Meshlet {
	if s == nil {
		return nil
	}
	return s.mesh.Meshlet(namespace, name)
}

// MeshletOf returns the Meshlet that w joined, or nil; see
// meshlet.Index.MeshletOf.
func (s *Snapshot) MeshletOf(w *meshlet.Workload) *meshlet.Meshlet {
	if s == nil {
		return nil
	}
	return s.mesh.MeshletOf(w)
}

// MeshletService returns the Meshlet that serves the service name of
// namespace (the Kubernetes Service namespace/name) and that service, or
// nil, nil when no Meshlet governs it.
func (s *Snapshot) MeshletService(namespace, name string) (*meshlet.Meshlet, *meshlet.Service) {
	if s == nil {
		return nil, nil
	}
	return s.mesh.Service(namespace, name)
}

// Mesh returns the snapshot's index of workloads and Meshlets, for the
// questions the accessors above do not ask (server pods, versions). It
// is nil for a snapshot that was not built.
func (s *Snapshot) Mesh() *meshlet.Index {
	if s == nil {
		return nil
	}
	return s.mesh
}
