package plugin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/meshless/meshless/daemon/cniapi"
	"github.com/meshless/meshless/internal/podmesh"
	"github.com/meshless/meshless/internal/redirect"
)

// daemonTimeout bounds one exchange with the daemon. Registration opens
// listeners in a netns, which takes milliseconds; the bound only matters for
// a daemon that hangs.
const daemonTimeout = 20 * time.Second

// Funcs are the plugin's CNI entry points, for skel.PluginMainFuncs.
func Funcs() skel.CNIFuncs {
	return skel.CNIFuncs{
		Add:    wrap("ADD", cmdAdd),
		Del:    wrap("DEL", cmdDel),
		Check:  wrap("CHECK", cmdCheck),
		Status: wrap("STATUS", cmdStatus),
		GC:     wrap("GC", cmdGC),
	}
}

// invocation is what every command starts from.
type invocation struct {
	args   *skel.CmdArgs
	conf   *Config
	pod    podArgs
	log    *slog.Logger
	client *cniapi.Client
}

func wrap(op string, fn func(*invocation) error) func(*skel.CmdArgs) error {
	return func(args *skel.CmdArgs) error {
		conf, err := parseConfig(args.StdinData)
		if err != nil {
			return cniError(op, err)
		}
		pa, err := parseArgs(args.Args)
		if err != nil {
			return cniError(op, &configError{msg: err.Error()})
		}
		log, closer, err := newLogger(conf.LogFile, "op", op, "containerID", args.ContainerID,
			"pod", pa.Namespace+"/"+pa.Name)
		if err != nil {
			return cniError(op, &configError{msg: err.Error()})
		}
		defer closer.Close()
		inv := &invocation{args: args, conf: conf, pod: pa, log: log, client: cniapi.NewClient(conf.DaemonSocket)}
		if err := fn(inv); err != nil {
			te := cniError(op, err)
			// The code the runtime acts on (11: try again later), in the
			// log so a failed ADD can be told from a retried one.
			log.Error("failed", "err", err, "code", te.Code)
			return te
		}
		return nil
	}
}

func (inv *invocation) attachment() cniapi.Attachment {
	return cniapi.Attachment{ContainerID: inv.args.ContainerID, IfName: inv.args.IfName}
}

// meshed reports whether this pod belongs in the mesh, and its exclusions.
func (inv *invocation) meshed() (exclusions, bool, error) {
	ex, optOut, err := inv.conf.podExclusions()
	if err != nil {
		return ex, false, err
	}
	if optOut || inv.conf.excludedNamespace(inv.pod.Namespace) {
		return ex, false, nil
	}
	return ex, true, nil
}

func cmdAdd(inv *invocation) error {
	conf := inv.conf
	if conf.prevResult == nil {
		return errNotChained
	}
	ex, meshed, err := inv.meshed()
	if err != nil {
		return err
	}
	if !meshed {
		inv.log.Info("pod not meshed: excluded by namespace or annotation")
		return types.PrintResult(conf.PrevResult, conf.CNIVersion)
	}
	ips := podIPs(conf.prevResult, inv.args.IfName)
	if len(ips) == 0 {
		return invalidf("prevResult has no IP address for interface %s", inv.args.IfName)
	}
	// A netns that is not there is the runtime's error (code 4), found
	// before the daemon is asked anything.
	netns, err := ns.GetNS(inv.args.Netns)
	if err != nil {
		return fmt.Errorf("open pod netns: %w", err)
	}
	netns.Close()
	pod := &cniapi.Pod{
		Attachment: inv.attachment(),
		Netns:      inv.args.Netns,
		IPs:        ips,
		Namespace:  inv.pod.Namespace,
		Name:       inv.pod.Name,
		UID:        inv.pod.UID,
		Exclusions: cniapi.Exclusions{
			InboundPorts:  ex.inboundPorts,
			OutboundPorts: ex.outboundPorts,
			OutboundCIDRs: ex.outboundCIDRs,
		},
		Redirect: string(conf.Redirect),
	}
	// A DEL of an earlier attachment with this ID that the daemon missed
	// must not remove this one.
	if err := cniapi.ClearPending(conf.DaemonSocket, pod.Attachment); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), daemonTimeout)
	defer cancel()
	backend, err := podmesh.Join(ctx, inv.client, podmesh.Redirect{Mode: conf.Redirect}, pod)
	if re := (*podmesh.RegisterError)(nil); errors.As(err, &re) && conf.FailOpen && retryable(err) {
		inv.log.Warn("failOpen: daemon unreachable, pod starts WITHOUT the mesh", "err", err)
		return types.PrintResult(conf.PrevResult, conf.CNIVersion)
	}
	if err != nil {
		return err
	}
	inv.log.Info("pod meshed", "ips", ips, "redirect", backend)
	return types.PrintResult(conf.PrevResult, conf.CNIVersion)
}

func cmdDel(inv *invocation) error {
	var errs []error
	if inv.args.Netns != "" {
		if err := (podmesh.Redirect{Mode: inv.conf.Redirect}).Remove(inv.args.Netns); err != nil {
			errs = append(errs, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), daemonTimeout)
	defer cancel()
	a := inv.attachment()
	if err := inv.client.Deregister(ctx, a); err != nil {
		if !retryable(err) {
			return errors.Join(append(errs, fmt.Errorf("deregister: %w", err))...)
		}
		// The daemon is down: leave a note it applies when it is back.
		if werr := cniapi.WritePending(inv.conf.DaemonSocket, a); werr != nil {
			return errors.Join(append(errs, fmt.Errorf("deregister: %w; and record it for later: %w", err, werr))...)
		}
		inv.log.Warn("daemon unreachable: deregistration recorded for later", "err", err)
	}
	return errors.Join(errs...)
}

func cmdCheck(inv *invocation) error {
	conf := inv.conf
	if conf.prevResult == nil {
		return errNotChained
	}
	_, meshed, err := inv.meshed()
	if err != nil || !meshed {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), daemonTimeout)
	defer cancel()
	st, err := inv.client.Get(ctx, inv.attachment())
	if errors.Is(err, cniapi.ErrNotFound) {
		return fmt.Errorf("pod is not registered with the daemon")
	}
	if err != nil {
		return fmt.Errorf("get registration: %w", err)
	}
	if st.Netns != inv.args.Netns {
		return fmt.Errorf("daemon has the pod in netns %s, runtime says %s", st.Netns, inv.args.Netns)
	}
	return podmesh.Redirect{Mode: redirect.Mode(st.Redirect)}.Check(inv.args.Netns, redirect.SpecFor(&st.Pod))
}

func cmdStatus(inv *invocation) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := inv.client.Ready(ctx); err != nil {
		return fmt.Errorf("daemon not ready: %w", err)
	}
	return nil
}

func cmdGC(inv *invocation) error {
	valid := make([]cniapi.Attachment, 0, len(inv.conf.ValidAttachments))
	for _, a := range inv.conf.ValidAttachments {
		valid = append(valid, cniapi.Attachment{ContainerID: a.ContainerID, IfName: a.IfName})
	}
	ctx, cancel := context.WithTimeout(context.Background(), daemonTimeout)
	defer cancel()
	resp, err := inv.client.GC(ctx, valid)
	if err != nil {
		return fmt.Errorf("gc: %w", err)
	}
	if len(resp.Removed) > 0 {
		inv.log.Info("gc deregistered stale attachments", "removed", resp.Removed)
	}
	return nil
}

// retryable reports whether err means "the daemon is not there right now".
func retryable(err error) bool {
	var se *cniapi.StatusError
	return errors.Is(err, cniapi.ErrUnreachable) || (errors.As(err, &se) && se.NotReady())
}

// podIPs returns the addresses prevResult gives the pod's interface, or all
// of its addresses when it does not say which interface they belong to.
func podIPs(res *current.Result, ifName string) []netip.Addr {
	var all, mine []netip.Addr
	for _, ipc := range res.IPs {
		a, ok := netip.AddrFromSlice(ipc.Address.IP)
		if !ok {
			continue
		}
		a = a.Unmap()
		all = append(all, a)
		if ipc.Interface != nil && *ipc.Interface >= 0 && *ipc.Interface < len(res.Interfaces) {
			if itf := res.Interfaces[*ipc.Interface]; itf.Name == ifName && itf.Sandbox != "" {
				mine = append(mine, a)
			}
		}
	}
	if len(mine) > 0 {
		return mine
	}
	return all
}
