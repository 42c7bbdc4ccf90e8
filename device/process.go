package device

import (
	"bufio"
	"math"
	"os"
	"runtime"
	"runtime/metrics"
	"strconv"
	"strings"
)

// ProcessStatus is the daemon's own footprint, for the status API: an
// appliance with a memory budget must show whether it keeps to it, and
// where the memory goes.
type ProcessStatus struct {
	RSSBytes int64 `json:"rss_bytes"`
	// RSSAnonBytes is the anonymous part of the RSS (RssAnon): the Go
	// heap and stacks, and the C libraries' heap (codecs, SQLite). It is
	// what the board must really find in RAM. RSSFileBytes (RssFile) is
	// the binary's and the libraries' pages read from disk: clean, shared
	// with the page cache, dropped and read again under memory pressure.
	RSSAnonBytes int64  `json:"rss_anon_bytes"`
	RSSFileBytes int64  `json:"rss_file_bytes"`
	HeapInUse    uint64 `json:"heap_in_use"`
	HeapReleased uint64 `json:"heap_released"`
	// GoMappedBytes is the memory the Go runtime holds and has not
	// returned to the kernel (heap, stacks, its own metadata): at most
	// that much of RSSAnonBytes is Go's, the rest is C's.
	GoMappedBytes uint64 `json:"go_mapped_bytes"`
	// MemoryLimitBytes is the Go runtime's soft memory limit (GOMEMLIMIT,
	// debug.SetMemoryLimit); 0 when there is none.
	MemoryLimitBytes uint64 `json:"memory_limit_bytes"`
	Goroutines       int    `json:"goroutines"`
}

// goMetrics are the runtime/metrics samples processStatus reads.
var goMetrics = []string{"/memory/classes/total:bytes", "/memory/classes/heap/released:bytes", "/gc/gomemlimit:bytes"}

func processStatus() ProcessStatus {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	s := ProcessStatus{HeapInUse: ms.HeapInuse, HeapReleased: ms.HeapReleased, Goroutines: runtime.NumGoroutine()}
	s.RSSBytes, s.RSSAnonBytes, s.RSSFileBytes = selfRSS()
	samples := make([]metrics.Sample, len(goMetrics))
	for i, name := range goMetrics {
		samples[i].Name = name
	}
	metrics.Read(samples)
	if samples[0].Value.Kind() == metrics.KindUint64 && samples[1].Value.Kind() == metrics.KindUint64 {
		s.GoMappedBytes = samples[0].Value.Uint64() - samples[1].Value.Uint64()
	}
	if samples[2].Value.Kind() == metrics.KindUint64 {
		if l := samples[2].Value.Uint64(); l != math.MaxInt64 {
			s.MemoryLimitBytes = l
		}
	}
	return s
}

// selfRSS reads VmRSS, RssAnon and RssFile from /proc; -1 for those it
// cannot read (no procfs).
func selfRSS() (rss, anon, file int64) {
	rss, anon, file = -1, -1, -1
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		var dst *int64
		switch key {
		case "VmRSS":
			dst = &rss
		case "RssAnon":
			dst = &anon
		case "RssFile":
			dst = &file
		default:
			continue
		}
		if kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(val), "kB")), 10, 64); err == nil {
			*dst = kb * 1024
		}
	}
	return
}
