package k8s

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/meshless/meshless/daemon/certclient"
	"github.com/meshless/meshless/daemon/identity"
	"github.com/meshless/meshless/install/signer"
)

// issuance is one measurement of the signer's issuance rate.
type issuance struct {
	n        int
	elapsed  time.Duration
	p50, p99 time.Duration
}

func (r issuance) rate() float64 { return float64(r.n) / r.elapsed.Seconds() }

// testIssuanceRate measures certificates per second, end to end as a
// daemon sees them: key, CSR created, watched until its certificate is
// there, deleted, bundle read; many daemons at once (par requests in
// flight). Then the same with the signer throttled to client-go's default
// 5 QPS, which this signer does not use, to show what that would cost.
func testIssuanceRate(ctx context.Context, t *testing.T, e *signerEnv) {
	const par = 32
	one := e.measureIssuance(ctx, t, 20, 1)
	t.Logf("issuance, one request at a time: %d certificates in %v = %.0f/s (latency p50 %v, p99 %v)",
		one.n, one.elapsed.Round(time.Millisecond), one.rate(), one.p50, one.p99)
	fast := e.measureIssuance(ctx, t, 300, par)
	t.Logf("issuance, signer at %d QPS / %d burst: %d certificates in %v = %.0f/s (latency p50 %v, p99 %v; %d in flight)",
		signer.DefaultQPS, signer.DefaultBurst, fast.n, fast.elapsed.Round(time.Millisecond), fast.rate(), fast.p50, fast.p99, par)

	e.stop()
	e.startSigner(ctx, t, 5, 10)
	slow := e.measureIssuance(ctx, t, 30, par)
	t.Logf("issuance, signer at client-go's default 5 QPS / 10 burst: %d certificates in %v = %.1f/s (latency p50 %v, p99 %v)",
		slow.n, slow.elapsed.Round(time.Millisecond), slow.rate(), slow.p50, slow.p99)

	// Three requests per certificate at 5 QPS: about 1.7 a second. The
	// signer's own limit must do better by far; the bound is low so that
	// a loaded machine does not fail the test.
	if fast.rate() < 10 || fast.rate() < 3*slow.rate() {
		t.Errorf("issuance %.1f/s, throttled %.1f/s: want at least 10/s and 3 times the throttled rate", fast.rate(), slow.rate())
	}
}

// measureIssuance requests n certificates for node n1, par at a time.
func (e *signerEnv) measureIssuance(ctx context.Context, t *testing.T, n, par int) issuance {
	t.Helper()
	src, err := identity.NewSource(identity.Options{Node: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	cfg := e.config(e.podToken(ctx, t, e.pod(ctx, t, signerNS, "meshless-n1")))
	quiet := slog.New(slog.DiscardHandler)
	cl, err := certclient.New(cfg, src, certclient.Options{Node: "n1", Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Request(ctx); err != nil { // warm up connections and caches
		t.Fatal(err)
	}
	var mu sync.Mutex
	var lat []time.Duration
	next := make(chan struct{}, n)
	for range n {
		next <- struct{}{}
	}
	close(next)
	var wg sync.WaitGroup
	start := time.Now()
	for range par {
		wg.Go(func() {
			for range next {
				t0 := time.Now()
				if _, err := cl.Request(ctx); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				lat = append(lat, time.Since(t0))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if t.Failed() {
		t.FailNow()
	}
	slices.Sort(lat)
	at := func(q float64) time.Duration { return lat[int(q*float64(len(lat)-1))].Round(time.Millisecond) }
	return issuance{n: len(lat), elapsed: elapsed, p50: at(0.50), p99: at(0.99)}
}
