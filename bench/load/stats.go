// Package load is the benchmark's traffic: an echo server (TCP and unix
// socket) and the clients that measure request/response latency, the
// new-connection rate and single-stream throughput through it. The pods of
// the lab run it as bench/cmd/benchapp; results are JSON on stdout.
//
// Wire protocol: the first byte of a connection picks the mode.
//
//	'E' echo: every byte read is written back (request/response)
//	'S' sink: bytes are read and dropped until EOF, then the count is sent
//	    as 8 bytes big-endian (bulk throughput)
package load

import (
	"math"
	"slices"
	"time"
)

// Modes, the first byte of a connection.
const (
	ModeEcho = 'E'
	ModeSink = 'S'
)

// Percentiles are latency percentiles in microseconds.
type Percentiles struct {
	P50 float64 `json:"p50_us"`
	P90 float64 `json:"p90_us"`
	P99 float64 `json:"p99_us"`
	Max float64 `json:"max_us"`
	N   int     `json:"n"`
}

// Summarize sorts samples (nanoseconds) in place and returns their
// percentiles (nearest rank).
func Summarize(samples []int64) Percentiles {
	if len(samples) == 0 {
		return Percentiles{}
	}
	slices.Sort(samples)
	us := func(ns int64) float64 { return math.Round(float64(ns)/10) / 100 }
	return Percentiles{
		P50: us(rank(samples, 0.50)),
		P90: us(rank(samples, 0.90)),
		P99: us(rank(samples, 0.99)),
		Max: us(samples[len(samples)-1]),
		N:   len(samples),
	}
}

// rank returns the nearest-rank q-quantile of sorted samples.
func rank(sorted []int64, q float64) int64 {
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	if i < 0 {
		i = 0
	}
	if i >= len(sorted) {
		i = len(sorted) - 1
	}
	return sorted[i]
}

// Median returns the median of xs (mean of the middle two for an even
// count), 0 for none. xs is not modified.
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	m := len(s) / 2
	if len(s)%2 == 1 {
		return s[m]
	}
	return (s[m-1] + s[m]) / 2
}

// LatencyResult is one latency run.
type LatencyResult struct {
	Percentiles
	// Rate is the target rate (0: full speed, closed loop); Achieved the
	// requests per second completed.
	Rate     float64 `json:"rate"`
	Achieved float64 `json:"achieved_rps"`
	Conns    int     `json:"conns"`
	Size     int     `json:"size"`
	Errors   int     `json:"errors"`
	Seconds  float64 `json:"seconds"`
}

// ConnResult is one new-connection run: connect, one 1-byte request and
// response, close. Latency is connect + that first round trip.
type ConnResult struct {
	Percentiles
	Rate    float64 `json:"conns_per_s"`
	Count   int     `json:"count"`
	Errors  int     `json:"errors"`
	Seconds float64 `json:"seconds"`
}

// BulkResult is one single-stream throughput run.
type BulkResult struct {
	Bytes   int64   `json:"bytes"`
	Seconds float64 `json:"seconds"`
	Gbps    float64 `json:"gbit_per_s"`
}

func seconds(d time.Duration) float64 { return math.Round(d.Seconds()*1000) / 1000 }
