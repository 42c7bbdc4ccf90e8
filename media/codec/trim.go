package codec

// #include <malloc.h>
import "C"

// trimHeap returns the C heap's free memory to the system. openh264,
// libvpx and libopus allocate their working buffers with malloc; glibc
// keeps freed arenas mapped, so without a trim the daemon's RSS after its
// first call stays ~30 MB above its idle size for good.
func trimHeap() { C.malloc_trim(0) }
