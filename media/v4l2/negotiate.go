package v4l2

import "fmt"

// Negotiate picks the pixel format to capture in. want is the configured
// camera.format: "auto" takes H.264 when allowH264 (the stream was built
// for passthrough) and the camera offers it, else MJPEG, else YUYV; a named
// format is taken only if offered. MJPEG costs a JPEG decode per frame
// (3–4 ms at 640x480) but needs a fraction of the USB bandwidth of YUYV,
// which many cameras can send at 640x480 only at low rates.
func Negotiate(offered map[PixFmt]string, want string, allowH264 bool) (PixFmt, error) {
	has := func(f PixFmt) bool { _, ok := offered[f]; return ok }
	mjpeg := MJPEG
	if !has(MJPEG) && has(JPEG) {
		mjpeg = JPEG
	}
	var order []PixFmt
	switch want {
	case "", "auto":
		if allowH264 {
			order = append(order, H264)
		}
		order = append(order, mjpeg, YUYV)
	case "h264":
		order = []PixFmt{H264}
	case "mjpeg":
		order = []PixFmt{mjpeg}
	case "yuyv":
		order = []PixFmt{YUYV}
	default:
		return 0, fmt.Errorf("camera format %q: %w", want, ErrNoFormat)
	}
	for _, f := range order {
		if has(f) {
			return f, nil
		}
	}
	names := make([]string, 0, len(offered))
	for f := range offered {
		names = append(names, f.String())
	}
	return 0, fmt.Errorf("camera offers %v, want %s: %w", names, want, ErrNoFormat)
}

// PassesThrough reports whether a camera offering these formats, configured
// with want, will deliver H.264 to pass through.
func PassesThrough(offered map[PixFmt]string, want string) bool {
	f, err := Negotiate(offered, want, true)
	return err == nil && f == H264
}
