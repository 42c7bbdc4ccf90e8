package webrtc

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/doorbell/intercom/media"
)

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkFanout measures, per second of 640x480@15 H.264 video, the time
// spent encoding (enc-ms/s) with 1 and 4 connected peers, and the whole
// process's CPU (proc-ms/s), which also counts pion sending to every peer
// and the in-process residents receiving. One op is one second of video.
func BenchmarkFanout(b *testing.B) {
	for _, peers := range []int{1, 4} {
		b.Run(fmt.Sprintf("peers=%d", peers), func(b *testing.B) {
			e := newEnv(b)
			for i := 0; i < peers; i++ {
				_, r := e.call(b, []media.Codec{media.H264, media.VP8})
				waitFor(b, "video", 10*time.Second, func() bool { return r.keyFrames.Load() > 0 })
			}
			time.Sleep(500 * time.Millisecond)
			s0, c0, t0 := encStats(e.stream, media.H264), cpuTime(), time.Now()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				time.Sleep(time.Second)
			}
			b.StopTimer()
			s1, c1, el := encStats(e.stream, media.H264), cpuTime(), time.Since(t0)
			sec := el.Seconds()
			b.ReportMetric(float64((s1.EncodeTime-s0.EncodeTime).Microseconds())/1000/sec, "enc-ms/s")
			b.ReportMetric(float64((c1-c0).Microseconds())/1000/sec, "proc-ms/s")
			b.ReportMetric(float64(s1.Frames-s0.Frames)/sec, "frames/s")
			b.ReportMetric(0, "ns/op")
		})
	}
}
