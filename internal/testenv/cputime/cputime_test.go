package cputime

import (
	"testing"
	"time"
)

// Busy work shows up as CPU time (however the machine's load spreads it
// over the wall clock).
func TestSelfCountsWork(t *testing.T) {
	before := Self()
	if before <= 0 {
		t.Fatalf("CPU time so far %v", before)
	}
	for deadline := time.Now().Add(10 * time.Second); Self()-before < 20*time.Millisecond; {
		if time.Now().After(deadline) {
			t.Fatalf("10 s of busy work counted as %v", Self()-before)
		}
	}
}
