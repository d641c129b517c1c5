package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// procRef is one server process of a system under test, measured from
// /proc while a workload runs.
type procRef struct {
	Name string
	PID  int
	// External marks a process that is not the system itself but stands
	// in for a service it would use in production (versitygw for S3): it
	// is reported, but left out of the system's CPU and RSS totals.
	External bool
}

// ProcStats is what one server process used during a run.
type ProcStats struct {
	Name string `json:"name"`
	PID  int    `json:"pid"`
	// CPUSeconds is user+system CPU time during the measured phase (from
	// /proc/<pid>/stat utime+stime before and after).
	CPUSeconds float64 `json:"cpu_seconds"`
	// CPUCores is CPUSeconds over the phase's wall time.
	CPUCores float64 `json:"cpu_cores"`
	// PeakRSSBytes is the largest VmRSS (/proc/<pid>/status) seen by
	// sampling every rssSampleEvery during the phase.
	PeakRSSBytes float64 `json:"peak_rss_bytes"`
	External     bool    `json:"external,omitempty"`
}

// rssSampleEvery is how often the meter reads VmRSS. Allocation spikes
// shorter than this can be missed; /proc's own VmHWM would not miss them
// but is the peak over the process's whole life, not over one workload.
const rssSampleEvery = 100 * time.Millisecond

// meter measures the CPU time and peak RSS of a system's processes over one
// phase of a workload (start to stop).
type meter struct {
	procs []procRef
	cpu0  []float64
	start time.Time

	mu   sync.Mutex
	peak []float64

	done chan struct{}
	wg   sync.WaitGroup
}

// startMeter reads every process's CPU time now and samples their RSS in
// the background until stop.
func startMeter(procs []procRef) *meter {
	m := &meter{procs: procs, cpu0: make([]float64, len(procs)), peak: make([]float64, len(procs)), done: make(chan struct{}), start: time.Now()}
	for i, p := range procs {
		m.cpu0[i] = cpuSeconds(p.PID)
	}
	m.sample()
	if len(procs) == 0 {
		return m
	}
	m.wg.Go(func() {
		t := time.NewTicker(rssSampleEvery)
		defer t.Stop()
		for {
			select {
			case <-m.done:
				return
			case <-t.C:
				m.sample()
			}
		}
	})
	return m
}

func (m *meter) sample() {
	for i, p := range m.procs {
		rss := vmRSS(p.PID)
		m.mu.Lock()
		m.peak[i] = max(m.peak[i], rss)
		m.mu.Unlock()
	}
}

// stop ends the phase and returns each process's figures.
func (m *meter) stop() []ProcStats {
	el := time.Since(m.start).Seconds()
	close(m.done)
	m.wg.Wait()
	m.sample()
	out := make([]ProcStats, len(m.procs))
	for i, p := range m.procs {
		cpu := max(cpuSeconds(p.PID)-m.cpu0[i], 0)
		out[i] = ProcStats{Name: p.Name, PID: p.PID, CPUSeconds: cpu, PeakRSSBytes: m.peak[i], External: p.External}
		if el > 0 {
			out[i].CPUCores = cpu / el
		}
	}
	return out
}

// vmRSS is a process's current resident set size in bytes (VmRSS in
// /proc/<pid>/status), or 0 if it cannot be read.
func vmRSS(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 64)
			if err != nil {
				return 0
			}
			return kb * 1024
		}
	}
	return 0
}

// cpuSeconds is the user+system CPU time process pid has used (from
// /proc/pid/stat, in clock ticks of 1/100 s, Linux's USER_HZ), or 0.
func cpuSeconds(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name may hold spaces: the fields after it start past ')'.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	utime, err1 := strconv.ParseFloat(f[11], 64)
	stime, err2 := strconv.ParseFloat(f[12], 64)
	if err1 != nil || err2 != nil {
		return 0
	}
	return (utime + stime) / 100
}
