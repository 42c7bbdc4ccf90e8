package device

import (
	"bufio"
	"os"
	"runtime"
	"strconv"
	"strings"
)

// ProcessStatus is the daemon's own footprint, for the status API: an
// appliance with a memory budget must show whether it keeps to it.
type ProcessStatus struct {
	RSSBytes     int64  `json:"rss_bytes"`
	HeapInUse    uint64 `json:"heap_in_use"`
	HeapReleased uint64 `json:"heap_released"`
	Goroutines   int    `json:"goroutines"`
}

func processStatus() ProcessStatus {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ProcessStatus{RSSBytes: selfRSS(), HeapInUse: ms.HeapInuse, HeapReleased: ms.HeapReleased, Goroutines: runtime.NumGoroutine()}
}

// selfRSS reads VmRSS from /proc; -1 where there is no procfs.
func selfRSS() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return -1
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				return -1
			}
			return kb * 1024
		}
	}
	return -1
}
