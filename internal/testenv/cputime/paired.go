package cputime

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"testing"
	"time"
)

// Paired measures what a load (more peers, viewers) adds to this
// process's CPU in paired rounds. The machines these benchmarks run on
// (shared VMs) drift by ±15 % over tens of seconds, more than the
// differences measured, so each round measures both cases close together:
// Load, a window with the load, Unload, a window without it. The medians
// over the rounds, of each and of the per-round ratio, are what a
// benchmark reports.
type Paired struct {
	// Settle is the pause before each window, after a garbage collection:
	// connecting and hanging up leave garbage and closing goroutines
	// behind, and neither window should pay for the other's churn.
	Settle time.Duration
	// Span is each window's length.
	Span time.Duration
	// Load adds the load and returns once it is in place (viewers
	// watching); Unload takes it away again and returns once it is gone.
	// Each runs once per round, on the calling goroutine (they may call
	// b.Fatal).
	Load, Unload func()
	// Counters are other cumulative readings (encoder time in ms, frames,
	// packets) taken at each window's edges: a Window holds their growth
	// per second under the same names.
	Counters map[string]func() float64
	// ProfileDir, if set, gets a Go CPU profile of every measured window,
	// loaded-N.pprof and unloaded-N.pprof for round N: `go tool pprof
	// loaded-*.pprof` merges one side's, so the two cases are compared
	// over the same windows the figures come from. The benchmarks take
	// it from ProfileEnv. Code outside Go (the codecs' C) shows only as
	// its cgo call.
	ProfileDir string
	// PerfDir, if set, gets a Linux perf recording of this process over
	// every measured window (loaded-N.perf, unloaded-N.perf; cpu-clock
	// at 2 kHz with call graphs): unlike the Go profile it sees the
	// kernel's share of a send and threads that C started. perf runs as
	// a process of its own, so its CPU is not in the figures, though its
	// interrupts are: figures from profiled runs are for finding costs,
	// not for reporting. The benchmarks take it from PerfEnv.
	PerfDir string
	// PerfEvent, if set, is what perf records instead of cpu-clock,
	// every occurrence with its call graph: sched:sched_switch shows
	// where threads went to sleep or were preempted, which is what the
	// context-switch counters count. The benchmarks take it from
	// PerfEventEnv.
	PerfEvent string
}

// PerfEnv names the environment variable the benchmarks read
// Paired.PerfDir from.
const PerfEnv = "INTERCOM_BENCH_PERF"

// PerfEventEnv names the environment variable the benchmarks read
// Paired.PerfEvent from.
const PerfEventEnv = "INTERCOM_BENCH_PERF_EVENT"

// ProfileEnv names the environment variable the benchmarks read
// Paired.ProfileDir from.
const ProfileEnv = "INTERCOM_BENCH_CPUPROFILE"

// Window is what the process spent over one measured span, per second of
// wall time.
type Window struct {
	CPU   float64            // process CPU, ms per second
	Rates map[string]float64 // each of Paired.Counters' growth per second
}

// Rounds holds each round's two windows, in round order.
type Rounds struct {
	Loaded, Unloaded []Window
}

// Run runs b.N rounds (one op is one round) with the benchmark timer
// covering only them.
func (p Paired) Run(b *testing.B) Rounds {
	b.ResetTimer()
	r := p.Rounds(b.N)
	b.StopTimer()
	return r
}

// Rounds runs n rounds.
func (p Paired) Rounds(n int) Rounds {
	var r Rounds
	for i := range n {
		p.Load()
		loaded := p.window(fmt.Sprintf("loaded-%d", i))
		p.Unload()
		unloaded := p.window(fmt.Sprintf("unloaded-%d", i))
		r.Loaded, r.Unloaded = append(r.Loaded, loaded), append(r.Unloaded, unloaded)
	}
	return r
}

// window settles, then measures one span (profiled as name in ProfileDir
// and PerfDir, if set).
func (p Paired) window(name string) Window {
	runtime.GC()
	time.Sleep(p.Settle)
	c0 := make(map[string]float64, len(p.Counters))
	for name, read := range p.Counters {
		c0[name] = read()
	}
	stopPerf := p.perf(name + ".perf")
	stop := p.profile(name + ".pprof")
	cpu0, t0 := Self(), time.Now()
	time.Sleep(p.Span)
	cpu1, sec := Self(), time.Since(t0).Seconds()
	stop()
	stopPerf()
	w := Window{CPU: float64((cpu1 - cpu0).Microseconds()) / 1000 / sec, Rates: make(map[string]float64, len(p.Counters))}
	for name, read := range p.Counters {
		w.Rates[name] = (read() - c0[name]) / sec
	}
	return w
}

// profile starts a CPU profile into ProfileDir/name and returns what
// stops it. A profile that cannot be written is not worth failing the
// figures for: it is skipped with a line on stderr.
func (p Paired) profile(name string) (stop func()) {
	if p.ProfileDir == "" {
		return func() {}
	}
	f, err := os.Create(filepath.Join(p.ProfileDir, name))
	if err == nil {
		err = pprof.StartCPUProfile(f)
		if err != nil {
			f.Close()
		}
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "cputime: no profile %s: %v\n", name, err)
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}

// perf starts perf recording this process into PerfDir/name and returns
// what stops it (SIGINT, as perf expects, then a wait for it to write).
// perf needs a moment to attach: the recording starts a little late, it
// does not matter for a profile. Failures are skipped as in profile.
func (p Paired) perf(name string) (stop func()) {
	if p.PerfDir == "" {
		return func() {}
	}
	event := []string{"-e", "cpu-clock", "-F", "2000"}
	if p.PerfEvent != "" {
		event = []string{"-e", p.PerfEvent, "-c", "1"}
	}
	args := append([]string{"record", "-q"}, event...)
	cmd := exec.Command("perf", append(args, "-g", "-p", strconv.Itoa(os.Getpid()), "-o", filepath.Join(p.PerfDir, name))...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "cputime: no perf recording %s: %v\n", name, err)
		return func() {}
	}
	time.Sleep(100 * time.Millisecond)
	return func() {
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait()
	}
}

// CPU is the median CPU (ms/s) of windows.
func CPU(windows []Window) float64 {
	v := make([]float64, len(windows))
	for i, w := range windows {
		v[i] = w.CPU
	}
	return median(v)
}

// Rate is the median of one counter's rate over windows.
func Rate(windows []Window, counter string) float64 {
	v := make([]float64, len(windows))
	for i, w := range windows {
		v[i] = w.Rates[counter]
	}
	return median(v)
}

// Ratio is the median over the rounds of loaded CPU / unloaded CPU.
func (r Rounds) Ratio() float64 {
	v := make([]float64, len(r.Loaded))
	for i := range r.Loaded {
		v[i] = r.Loaded[i].CPU / r.Unloaded[i].CPU
	}
	return median(v)
}

// Report reports the medians of the unloaded and the loaded CPU and of the
// per-round ratio under the given units, and sets ns/op to 0: an op is a
// round, whose wall time means nothing.
func (r Rounds) Report(b *testing.B, unloaded, loaded, ratio string) {
	b.ReportMetric(CPU(r.Unloaded), unloaded)
	b.ReportMetric(CPU(r.Loaded), loaded)
	b.ReportMetric(r.Ratio(), ratio)
	b.ReportMetric(0, "ns/op")
}

// median is the median of v (the upper one of an even count), 0 for none.
func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}
