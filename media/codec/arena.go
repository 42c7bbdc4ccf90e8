package codec

/*
#include <malloc.h>

// A constructor: it runs when the binary is loaded, before the Go runtime
// starts its threads (see below).
static void __attribute__((constructor)) intercom_one_arena(void) { mallopt(M_ARENA_MAX, 1); }
*/
import "C"

// The process's C heap is one glibc malloc arena: the constructor above
// caps it.
//
// By default glibc gives threads that allocate at the same time arenas of
// their own, up to eight per core, and the daemon's cgo calls run on
// whichever thread the Go scheduler picks: a call's encoders spread their
// buffers over several arenas, and what they free there stays resident
// even after malloc_trim (trimHeap). Ten VP8 encoders made and closed in
// turn kept ≈ 23 MB of anonymous memory that way, two arenas ≈ 12 MB after
// sixty, one arena ≈ 1 MB (TestEncodersGiveMemoryBack), and the soak's
// idle RSS crept up call after call. The C heap sees few allocations
// (codec set-up and tear-down, SQLite), so the one arena's lock is rarely
// contended.
//
// It must run before any thread has a second arena: the limit does not
// take back arenas already made, and by the time Go's package
// initialisation runs, the runtime's threads have (set from init(), the
// cap left the test above at ≈ 12 MB). A C constructor runs before them;
// MALLOC_ARENA_MAX=1 in the environment is the same setting.
