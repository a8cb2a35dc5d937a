package run

// The native set-up: benchapp serving and calling over the Meshless native
// API (daemon/native), beside the TCP set-ups on the same pods.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/meshless/meshless/bench/report"
	"github.com/meshless/meshless/daemon/meshlet"
	"github.com/meshless/meshless/daemon/native"
	"github.com/meshless/meshless/internal/lab"
)

// The native API's names: Meshlet nativeServer is served by the same-node
// and the cross-node server pods (one service each, so that the daemon's
// choice is the placement measured), Meshlet nativeClient is the client
// pod's and declares both.
const (
	nativeServer = "bench"
	nativeClient = "bench-client"
	nativeSame   = "bench-same"
	nativeCross  = "bench-cross"
	// nativePort is the services' target port. Nothing listens on it: a
	// native connection goes to the server's socket, and the TCP set-ups'
	// connections to appPort stay outside the Meshlet's access control.
	nativePort = 8081
)

// nativeServices are the Kubernetes Services behind the native ones.
func nativeServices() []lab.ServiceState {
	return []lab.ServiceState{
		{Name: nativeSame, VIP: "198.18.100.21", Port: 80, TargetPort: nativePort, Endpoints: []string{sameServer}},
		{Name: nativeCross, VIP: "198.18.100.22", Port: 80, TargetPort: nativePort, Endpoints: []string{crossSrv}},
	}
}

// nativeService is the service a server pod serves natively, if any.
func nativeService(ref string) string {
	switch ref {
	case sameServer:
		return nativeSame
	case crossSrv:
		return nativeCross
	}
	return ""
}

// nativeTarget is the client's native address of the server at place.
func nativeTarget(place string) string {
	svc := nativeSame
	if place == report.Cross {
		svc = nativeCross
	}
	return fmt.Sprintf("native:%s/%s/%s", lab.PodNamespace, nativeServer, svc)
}

// setNativeMeshlets makes the server pods members of Meshlet
// nativeServer and the client pod of nativeClient.
func (b *bench) setNativeMeshlets() error {
	for _, ref := range []string{sameServer, crossSrv} {
		if err := b.l.SetPodLabels(ref, map[string]string{meshlet.LabelMeshlet: nativeServer}); err != nil {
			return err
		}
	}
	if err := b.l.SetPodLabels(client, map[string]string{meshlet.LabelMeshlet: nativeClient}); err != nil {
		return err
	}
	return b.l.SetMeshlets([]meshlet.Meshlet{
		{Namespace: lab.PodNamespace, Name: nativeServer, Spec: meshlet.Spec{Server: meshlet.Server{
			Services: []meshlet.Service{{Name: nativeSame}, {Name: nativeCross}}}}},
		{Namespace: lab.PodNamespace, Name: nativeClient, Spec: meshlet.Spec{Client: []meshlet.ClientRef{
			{Meshlet: nativeServer, Service: nativeSame}, {Meshlet: nativeServer, Service: nativeCross}}}},
	})
}

// podDir is the pod's Meshless folder, its /meshlet, on the host: the
// bench runs the daemons with --meshlet-dir b.meshlet, a base folder.
func (b *bench) podDir(p lab.Pod) string {
	return filepath.Join(b.meshlet, lab.PodNamespace, p.Name)
}

// nativeEnv is the environment of a benchapp in pod p: the native API's
// folder is the pod's.
func (b *bench) nativeEnv(p lab.Pod) []string {
	return append(os.Environ(), native.DirEnv+"="+b.podDir(p))
}

// waitNative waits until the client's native calls to both servers get
// through: the daemons have read the Meshlets and the servers listen.
func (b *bench) waitNative(ctx context.Context) error {
	deadline := time.Now().Add(20 * time.Second)
	for _, place := range []string{report.Same, report.Cross} {
		for {
			_, err := b.client(ctx, "conn", "-addr", nativeTarget(place), "-count", "1")
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("native %s: %w", place, err)
			}
			time.Sleep(100 * time.Millisecond) // polling interval
		}
	}
	return nil
}
