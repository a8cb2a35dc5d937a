// Package app wires the node daemon together: state store, agent, default
// connection handler, CNI socket and admin server. cmd/meshlessd only
// parses flags into a Config and calls Run.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshless/meshless/daemon/admin"
	"github.com/meshless/meshless/daemon/agent"
	"github.com/meshless/meshless/daemon/cniapi"
	"github.com/meshless/meshless/daemon/cniserver"
	"github.com/meshless/meshless/daemon/metrics"
	"github.com/meshless/meshless/daemon/passthrough"
	"github.com/meshless/meshless/daemon/podstore"
)

// Config is the daemon's configuration, one field per meshlessd flag.
type Config struct {
	NodeName string
	// Socket is the CNI API unix socket.
	Socket string
	// StateDir holds the pod registrations.
	StateDir string
	// Registry is the YAML registry file; Kubeconfig the cluster's. Neither
	// means in-cluster discovery. Kept for the discovery component.
	Registry   string
	Kubeconfig string
	// TunnelAddr is where the cross-node tunnel listens; kept for the
	// tunnel component.
	TunnelAddr string
	// AdminAddr serves /healthz, /readyz and /metrics.
	AdminAddr string
	// IdleTimeout closes forwarded connections idle that long; 0 never.
	IdleTimeout time.Duration
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Handler overrides the default passthrough connection handler.
	Handler agent.ConnHandler
	// Metrics overrides the daemon's metrics (the handler should use the
	// same); default metrics.New().
	Metrics *metrics.Metrics
	// Started, if set, is called once the daemon serves and is ready.
	Started func(*Daemon)
}

// Daemon is a running daemon, as seen by Config.Started.
type Daemon struct {
	Agent     *agent.Agent
	Metrics   *metrics.Metrics
	AdminAddr net.Addr
}

// Run runs the daemon until ctx is cancelled. On return the listeners in
// pods are closed and the socket file removed; pod state stays on disk for
// the next start.
func Run(ctx context.Context, cfg Config) error {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	if cfg.Socket == "" {
		cfg.Socket = cniapi.DefaultSocket
	}
	m := cfg.Metrics
	if m == nil {
		m = metrics.New()
	}
	h := cfg.Handler
	if h == nil {
		h = &passthrough.Handler{Metrics: m, Logger: log, IdleTimeout: cfg.IdleTimeout}
	}
	store, err := podstore.Open(cfg.StateDir)
	if err != nil {
		return err
	}
	ag, err := agent.New(agent.Config{Store: store, Handler: h, Socket: cfg.Socket, Metrics: m, Logger: log})
	if err != nil {
		return err
	}
	defer ag.Close()

	// Admin first: /healthz answers while the state is restored, /readyz
	// says 503 until the CNI socket serves.
	adminLn, err := net.Listen("tcp", cfg.AdminAddr)
	if err != nil {
		return fmt.Errorf("listen admin: %w", err)
	}
	var serving atomic.Bool
	ready := func() error {
		if err := ag.Ready(); err != nil {
			return err
		}
		if !serving.Load() {
			return errors.New("cni socket not serving yet")
		}
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, 2)
	serve := func(name string, h func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := h(); err != nil {
				errc <- fmt.Errorf("%s: %w", name, err)
				cancel()
			}
		}()
	}
	serve("admin", func() error {
		return cniserver.Serve(ctx, adminLn, admin.NewHandler(ready, m.Registry))
	})
	defer wg.Wait()

	// The socket serves during the restore too: the plugin gets 503 and
	// retries, rather than "no such file", which it would also retry but
	// cannot tell from a daemon that is not installed.
	sockLn, err := cniserver.Listen(cfg.Socket)
	if err != nil {
		cancel()
		return err
	}
	serve("cni socket", func() error {
		return cniserver.Serve(ctx, sockLn, cniserver.NewHandler(ag, log))
	})
	serving.Store(true)
	if err := ag.Start(ctx); err != nil {
		cancel()
		return fmt.Errorf("restore state: %w", err)
	}
	log.Info("meshlessd ready", "node", cfg.NodeName, "socket", cfg.Socket, "admin", adminLn.Addr().String(),
		"state_dir", cfg.StateDir, "tunnel_addr", cfg.TunnelAddr, "registry", cfg.Registry, "kubeconfig", cfg.Kubeconfig)
	if cfg.Started != nil {
		cfg.Started(&Daemon{Agent: ag, Metrics: m, AdminAddr: adminLn.Addr()})
	}
	<-ctx.Done()
	log.Info("meshlessd stopping")
	wg.Wait()
	select {
	case err := <-errc:
		return err
	default:
		return nil
	}
}
