package podmesh

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"testing"

	"github.com/meshless/meshless/daemon/cniapi"
	"github.com/meshless/meshless/internal/redirect"
)

// journal records the calls of a registrar and rules in order.
type journal struct {
	calls                    []string
	regErr, applyErr, derErr error
}

func (j *journal) Register(_ context.Context, p *cniapi.Pod) (*cniapi.PodStatus, error) {
	j.calls = append(j.calls, "register")
	if j.regErr != nil {
		return nil, j.regErr
	}
	return &cniapi.PodStatus{Pod: *p}, nil
}

func (j *journal) Deregister(context.Context, cniapi.Attachment) error {
	j.calls = append(j.calls, "deregister")
	return j.derErr
}

func (j *journal) Apply(path string, spec redirect.Spec) (string, error) {
	j.calls = append(j.calls, "apply")
	if j.applyErr != nil {
		return "", j.applyErr
	}
	return "nftables", nil
}

func (j *journal) Remove(string) error { j.calls = append(j.calls, "remove"); return nil }

// TestJoin: registration comes before the rules, a rules failure rolls
// the registration back, a registration failure touches nothing, and the
// errors say which step failed.
func TestJoin(t *testing.T) {
	boom := errors.New("boom")
	tests := []struct {
		name  string
		j     journal
		calls []string
		reg   bool // a *RegisterError
		err   bool
	}{
		{"ok", journal{}, []string{"register", "apply"}, false, false},
		{"daemon unreachable", journal{regErr: boom}, []string{"register"}, true, true},
		{"rules fail", journal{applyErr: boom}, []string{"register", "apply", "deregister"}, false, true},
		{"rules and rollback fail", journal{applyErr: boom, derErr: boom}, []string{"register", "apply", "deregister"}, false, true},
	}
	pod := &cniapi.Pod{Attachment: cniapi.Attachment{ContainerID: "c", IfName: "eth0"}, Netns: "/run/netns/x",
		IPs: []netip.Addr{netip.MustParseAddr("198.19.1.2")}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			j := tt.j
			backend, err := Join(context.Background(), &j, &j, pod)
			if !slices.Equal(j.calls, tt.calls) {
				t.Errorf("calls %v, want %v", j.calls, tt.calls)
			}
			if (err != nil) != tt.err {
				t.Fatalf("err %v, want error %v", err, tt.err)
			}
			var re *RegisterError
			if errors.As(err, &re) != tt.reg {
				t.Errorf("err %v: RegisterError %v, want %v", err, !tt.reg, tt.reg)
			}
			if err == nil && backend != "nftables" {
				t.Errorf("backend %q", backend)
			}
			if err != nil && !errors.Is(err, boom) {
				t.Errorf("err %v does not wrap the cause", err)
			}
		})
	}
}
