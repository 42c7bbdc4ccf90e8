package media

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/jpeg"
	"time"
)

// snapshotUser holds the video pipeline open while a snapshot is taken; it
// is not a codec, so no encoder starts for it.
const snapshotUser Codec = "snapshot"

// errSourceStopped tells a waiting snapshot that the runner it waited on
// stopped (the last call ended at that moment): it asks again.
var errSourceStopped = errors.New("media: video source stopped")

type snapResult struct {
	img *image.YCbCr
	au  []byte // an H.264 keyframe to decode instead (passthrough)
	err error
}

// snapshotKeyWait is how long a snapshot of a passthrough camera waits for
// a fresh IDR (asked of the camera at once) before it takes the last one
// the camera sent, at most one GOP old.
const snapshotKeyWait = 300 * time.Millisecond

// SnapshotQuality is the JPEG quality of snapshots.
const SnapshotQuality = 85

// Snapshot returns the next picture of the video source as a JPEG. It
// works with or without a call: when no video runs, the source (camera or
// test pattern) is opened for the one frame and closed again, which on a
// V4L2 camera costs its start-up time (typically 0.2–1 s). The ring notice
// uses it at press time, before any call exists.
//
// A camera whose H.264 is passed through gives no raw picture: its next
// keyframe (asked of it at once) is decoded, or after snapshotKeyWait the
// last one it sent; the decoding runs on the caller's goroutine, not the
// video pipeline's.
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
	if len(s.snapWaiters) == 0 {
		s.snapSince, s.snapKeyAsk = time.Now(), false
	}
	s.snapWaiters = append(s.snapWaiters, ch)
	s.snapMu.Unlock()
	s.video.acquire(snapshotUser)
	defer s.video.release(snapshotUser)
	select {
	case r := <-ch:
		if r.au != nil && r.err == nil {
			img, err := s.cfg.Encoders.DecodeH264(r.au)
			if err != nil {
				return nil, fmt.Errorf("decode camera keyframe: %w", err)
			}
			return img, nil
		}
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
// source reuses its buffer). A passthrough frame has no picture: its IDR
// access units are kept (the last one of this run) and handed out to be
// decoded; see Snapshot.
func (s *Stream) serveSnapshots(frame *Frame, src VideoSource) {
	canDecode := s.cfg.Encoders.DecodeH264 != nil
	key := frame.H264 != nil && canDecode && IsKeyFrame(H264, frame.H264)
	s.snapMu.Lock()
	if key {
		s.lastIDR = bytes.Clone(frame.H264)
	}
	waiters := s.snapWaiters
	if len(waiters) == 0 {
		s.snapMu.Unlock()
		return
	}
	var r snapResult
	switch {
	case frame.Image != nil:
		r.img = cloneYCbCr(frame.Image)
	case !canDecode:
		r.err = ErrNoPicture
	case key:
		r.au = s.lastIDR
	case s.lastIDR != nil && time.Since(s.snapSince) >= snapshotKeyWait:
		r.au = s.lastIDR
	default:
		// Wait for the camera's next IDR, asked for now.
		ask := !s.snapKeyAsk
		s.snapKeyAsk = true
		s.snapMu.Unlock()
		if kr, ok := src.(KeyFrameRequester); ok && ask {
			kr.RequestKeyFrame()
		}
		return
	}
	s.snapWaiters = nil
	s.snapMu.Unlock()
	for _, w := range waiters {
		w <- r
	}
}

// forgetIDR drops the kept IDR: a new run of the camera must not serve a
// picture from an earlier one.
func (s *Stream) forgetIDR() {
	s.snapMu.Lock()
	s.lastIDR = nil
	s.snapMu.Unlock()
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
