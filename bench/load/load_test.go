package load

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/meshless/meshless/internal/testenv"
)

func TestSummarize(t *testing.T) {
	var s []int64
	for i := 100; i >= 1; i-- {
		s = append(s, int64(i)*1000)
	}
	p := Summarize(s)
	if p.P50 != 50 || p.P90 != 90 || p.P99 != 99 || p.Max != 100 || p.N != 100 {
		t.Fatalf("got %+v", p)
	}
	if (Summarize(nil) != Percentiles{}) {
		t.Fatal("empty")
	}
}

func TestMedian(t *testing.T) {
	if m := Median([]float64{3, 1, 2}); m != 2 {
		t.Fatal(m)
	}
	if m := Median([]float64{4, 1, 2, 3}); m != 2.5 {
		t.Fatal(m)
	}
}

func TestLoopback(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		// A sandbox without loopback TCP may run the unit tests; CI has it.
		testenv.Missing(t, "loopback TCP: "+err.Error())
	}
	defer ln.Close()
	go Serve(ln)
	d := Dialer{Network: "tcp4", Addr: ln.Addr().String()}
	ctx := context.Background()
	lr, err := Latency(ctx, d, LatencyOptions{Size: 1024, Rate: 2000, Duration: 100 * time.Millisecond})
	// Pacing's ceiling: sends are scheduled every 500 µs from the start
	// until the end, so at most 201 happen; a loaded machine may send
	// fewer (the client never bursts to catch up), so the floor is 1.
	if err != nil || lr.N < 1 || lr.N > 201 || lr.P50 <= 0 {
		t.Fatalf("latency %+v %v", lr, err)
	}
	fr, err := Latency(ctx, d, LatencyOptions{Size: 1, Conns: 2, Duration: 50 * time.Millisecond})
	if err != nil || fr.N == 0 {
		t.Fatalf("full speed %+v %v", fr, err)
	}
	cr, err := Conns(ctx, d, ConnOptions{Count: 20, Concurrency: 2})
	if err != nil || cr.Count != 20 {
		t.Fatalf("conns %+v %v", cr, err)
	}
	br, err := Bulk(ctx, d, 50*time.Millisecond)
	if err != nil || br.Bytes == 0 {
		t.Fatalf("bulk %+v %v", br, err)
	}
}
