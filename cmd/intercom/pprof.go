//go:build pprof

package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"runtime"
	"runtime/metrics"
	"strings"
	"time"
)

// serveProfiles serves Go's runtime profiles on INTERCOM_PPROF_LISTEN (a
// loopback host:port) until ctx ends. Only a binary built with the pprof
// tag has it: profiles show memory contents and cost CPU, so the board's
// binary never carries this listener. It is how a soak finds what grows
// (BenchmarkSoak's INTERCOM_SOAK_PROFILES).
func serveProfiles(ctx context.Context, stderr io.Writer) {
	addr := os.Getenv("INTERCOM_PPROF_LISTEN")
	if addr == "" {
		return
	}
	host, _, err := net.SplitHostPort(addr)
	if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
		fmt.Fprintf(stderr, "intercom: INTERCOM_PPROF_LISTEN %q: not a loopback host:port, not serving profiles\n", addr)
		return
	}
	// Sample every 4 KiB allocated, not the default 512 KiB: an idle
	// door's heap is a few megabytes, and a soak looks for a step of one
	// or two. Set before the daemon allocates anything.
	runtime.MemProfileRate = 4 << 10
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/memclasses", serveMemClasses)
	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	go func() {
		if err := srv.ListenAndServe(); err != nil && err != http.ErrServerClosed {
			fmt.Fprintf(stderr, "intercom: profiles on %s: %v\n", addr, err)
		}
	}()
}

// serveMemClasses writes every /memory/classes/ metric of the runtime, a
// line each: where the memory the Go runtime holds goes (heap objects,
// free spans not yet returned, stacks, its own metadata, the profiler's
// buckets), which a heap profile does not show.
func serveMemClasses(w http.ResponseWriter, _ *http.Request) {
	var samples []metrics.Sample
	for _, d := range metrics.All() {
		if strings.HasPrefix(d.Name, "/memory/classes/") {
			samples = append(samples, metrics.Sample{Name: d.Name})
		}
	}
	metrics.Read(samples)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	for _, s := range samples {
		if s.Value.Kind() == metrics.KindUint64 {
			fmt.Fprintf(w, "%s %d\n", s.Name, s.Value.Uint64())
		}
	}
}
