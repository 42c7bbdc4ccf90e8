package codec

// #include <malloc.h>
import "C"

import "runtime/debug"

// trimHeap hands the memory a call freed back to the system, once the last
// encoder has stopped. Both heaps keep freed memory mapped otherwise:
//   - the Go heap (frames, packet buffers, the call's peer state) until
//     the runtime's background scavenger gets round to it, minutes after
//     an idle door last collected; the soak (BenchmarkSoak) saw the
//     anonymous RSS after calls swing between 19 and 30 MB with when the
//     last collection happened to run;
//   - the C heap: openh264, libvpx and libopus allocate their working
//     buffers with malloc, and glibc keeps freed arenas mapped, so
//     without a trim the daemon's RSS after its first call stayed ~30 MB
//     above its idle size for good.
//
// The Go side goes first: a collection may free C memory (finalizers)
// that the trim then returns. It costs one full collection per call, a
// few milliseconds for the door's heap of ~10 MB; the next call faults
// the pages back in.
func trimHeap() {
	debug.FreeOSMemory()
	C.malloc_trim(0)
}
