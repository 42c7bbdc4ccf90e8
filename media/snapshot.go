package media

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/jpeg"
)

// snapshotUser holds the video pipeline open while a snapshot is taken; it
// is not a codec, so no encoder starts for it.
const snapshotUser Codec = "snapshot"

// errSourceStopped tells a waiting snapshot that the runner it waited on
// stopped (the last call ended at that moment): it asks again.
var errSourceStopped = errors.New("media: video source stopped")

type snapResult struct {
	img *image.YCbCr
	err error
}

// SnapshotQuality is the JPEG quality of snapshots.
const SnapshotQuality = 85

// Snapshot returns the next picture of the video source as a JPEG. It
// works with or without a call: when no video runs, the source (camera or
// test pattern) is opened for the one frame and closed again, which on a
// V4L2 camera costs its start-up time (typically 0.2–1 s). The ring notice
// uses it at press time, before any call exists.
func (s *Stream) Snapshot(ctx context.Context) ([]byte, error) {
	for attempt := 0; ; attempt++ {
		img, err := s.snapshotFrame(ctx)
		if errors.Is(err, errSourceStopped) && attempt < 3 && ctx.Err() == nil {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("snapshot: %w", err)
		}
		var b bytes.Buffer
		if err := jpeg.Encode(&b, img, &jpeg.Options{Quality: SnapshotQuality}); err != nil {
			return nil, fmt.Errorf("snapshot: encode jpeg: %w", err)
		}
		return b.Bytes(), nil
	}
}

func (s *Stream) snapshotFrame(ctx context.Context) (*image.YCbCr, error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, ErrClosed
	}
	s.mu.Unlock()
	ch := make(chan snapResult, 1)
	s.snapMu.Lock()
	s.snapWaiters = append(s.snapWaiters, ch)
	s.snapMu.Unlock()
	s.video.acquire(snapshotUser)
	defer s.video.release(snapshotUser)
	select {
	case r := <-ch:
		return r.img, r.err
	case <-ctx.Done():
		s.snapMu.Lock()
		for i, w := range s.snapWaiters {
			if w == ch {
				s.snapWaiters = append(s.snapWaiters[:i], s.snapWaiters[i+1:]...)
				break
			}
		}
		s.snapMu.Unlock()
		return nil, ctx.Err()
	}
}

// serveSnapshots hands frame to every waiting snapshot, copied once (the
// source reuses its buffer). A passthrough frame has no picture to give.
func (s *Stream) serveSnapshots(frame *Frame) {
	s.snapMu.Lock()
	waiters := s.snapWaiters
	s.snapWaiters = nil
	s.snapMu.Unlock()
	if len(waiters) == 0 {
		return
	}
	r := snapResult{err: ErrNoPicture}
	if frame.Image != nil {
		r = snapResult{img: cloneYCbCr(frame.Image)}
	}
	for _, w := range waiters {
		w <- r
	}
}

func (s *Stream) failSnapshots(err error) {
	s.snapMu.Lock()
	waiters := s.snapWaiters
	s.snapWaiters = nil
	s.snapMu.Unlock()
	for _, w := range waiters {
		w <- snapResult{err: err}
	}
}

func cloneYCbCr(src *image.YCbCr) *image.YCbCr {
	dst := &image.YCbCr{
		Y: bytes.Clone(src.Y), Cb: bytes.Clone(src.Cb), Cr: bytes.Clone(src.Cr),
		YStride: src.YStride, CStride: src.CStride,
		SubsampleRatio: src.SubsampleRatio, Rect: src.Rect,
	}
	return dst
}
