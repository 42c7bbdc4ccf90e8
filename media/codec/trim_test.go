package codec

import (
	"runtime"
	"runtime/metrics"
	"testing"
)

// heapFree is the Go heap's free memory not yet returned to the system.
func heapFree() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/heap/free:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

var sink [][]byte

// Once a call is over, the memory it freed goes back to the system at
// once, not when the scavenger gets round to it.
func TestTrimHeapReturnsGoMemory(t *testing.T) {
	for range 256 {
		sink = append(sink, make([]byte, 128<<10)) // 32 MiB, as a call's buffers
	}
	sink = nil
	runtime.GC() // now garbage, kept mapped as free heap
	if free := heapFree(); free < 16<<20 {
		t.Skipf("only %d bytes free after the collection: the scavenger was quicker, nothing to show", free)
	}
	trimHeap()
	if free := heapFree(); free > 4<<20 {
		t.Errorf("%d bytes of free heap still mapped after trimHeap, want them returned", free)
	}
}
