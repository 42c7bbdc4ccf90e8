package device

import (
	"math"
	"runtime/debug"
	"testing"
)

// The footprint shows where the memory goes: its parts add up, and the
// Go runtime's soft limit is the one set.
func TestProcessStatus(t *testing.T) {
	old := debug.SetMemoryLimit(64 << 20)
	defer debug.SetMemoryLimit(old)
	s := processStatus()
	if s.RSSBytes <= 0 || s.RSSAnonBytes <= 0 || s.RSSFileBytes <= 0 {
		t.Fatalf("RSS %d, anonymous %d, file-backed %d: want all read from /proc", s.RSSBytes, s.RSSAnonBytes, s.RSSFileBytes)
	}
	// VmRSS is RssAnon + RssFile + RssShmem.
	if s.RSSAnonBytes+s.RSSFileBytes > s.RSSBytes {
		t.Errorf("anonymous %d + file-backed %d > RSS %d", s.RSSAnonBytes, s.RSSFileBytes, s.RSSBytes)
	}
	if s.GoMappedBytes < s.HeapInUse {
		t.Errorf("Go holds %d bytes, less than its heap in use %d", s.GoMappedBytes, s.HeapInUse)
	}
	if s.MemoryLimitBytes != 64<<20 {
		t.Errorf("memory limit %d, want the 64 MiB set", s.MemoryLimitBytes)
	}
	debug.SetMemoryLimit(math.MaxInt64)
	if s := processStatus(); s.MemoryLimitBytes != 0 {
		t.Errorf("memory limit %d without one, want 0", s.MemoryLimitBytes)
	}
}
