package run

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// clockTick is USER_HZ, the unit of utime and stime in /proc/PID/stat.
const clockTick = 100

// cpuSeconds returns utime+stime of pid (all its threads).
func cpuSeconds(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("pid %d: bad stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("pid %d: short stat", pid)
	}
	u, _ := strconv.ParseFloat(f[11], 64)
	s, _ := strconv.ParseFloat(f[12], 64)
	return (u + s) / clockTick, nil
}

// statusMiB returns a "Vm...:  N kB" field of /proc/PID/status in MiB.
func statusMiB(pid int, field string) (float64, error) {
	return kBField(fmt.Sprintf("/proc/%d/status", pid), field)
}

// pssMiB returns the proportional set size of pid.
func pssMiB(pid int) (float64, error) {
	return kBField(fmt.Sprintf("/proc/%d/smaps_rollup", pid), "Pss")
}

func kBField(path, field string) (float64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			f := strings.Fields(rest)
			if len(f) == 0 {
				break
			}
			v, err := strconv.ParseFloat(f[0], 64)
			return v / 1024, err
		}
	}
	return 0, fmt.Errorf("%s: no %s", path, field)
}

func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i > 0 && i+2 < len(b) && b[i+2] != 'Z' && b[i+2] != 'X'
}

// monitor samples the summed VmRSS of some processes and measures their
// CPU time between start and stop.
type monitor struct {
	pids  []int
	cpu0  float64
	t0    time.Time
	done  chan struct{}
	wg    sync.WaitGroup
	mu    sync.Mutex
	maxMB float64
}

func startMonitor(pids []int) *monitor {
	m := &monitor{pids: pids, t0: time.Now(), done: make(chan struct{})}
	m.cpu0 = m.cpu()
	m.sample()
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-m.done:
				return
			case <-t.C:
				m.sample()
			}
		}
	}()
	return m
}

func (m *monitor) cpu() float64 {
	var s float64
	for _, p := range m.pids {
		v, _ := cpuSeconds(p)
		s += v
	}
	return s
}

func (m *monitor) sample() {
	var s float64
	for _, p := range m.pids {
		v, _ := statusMiB(p, "VmRSS")
		s += v
	}
	m.mu.Lock()
	m.maxMB = max(m.maxMB, s)
	m.mu.Unlock()
}

// stop returns the CPU seconds used, the wall seconds and the peak summed
// RSS in MiB.
func (m *monitor) stop() (cpu, wall, rss float64) {
	close(m.done)
	m.wg.Wait()
	m.sample()
	return m.cpu() - m.cpu0, time.Since(m.t0).Seconds(), m.maxMB
}
