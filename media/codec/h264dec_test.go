package codec

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/doorbell/intercom/media"
)

// TestDecodeH264: a keyframe from our encoder decodes to the picture that
// went in, give or take coding loss.
func TestDecodeH264(t *testing.T) {
	f := media.VideoFormat{Width: 640, Height: 480, FPS: 15}
	pat, err := media.NewTestPattern(f)
	if err != nil {
		t.Fatal(err)
	}
	enc, err := NewH264(media.VideoEncoderConfig{VideoFormat: f, Bitrate: 1_000_000, KeyFrameInterval: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	src := pat.Render(time.Unix(0, 0))
	au, err := enc.Encode(src.Image, true)
	if err != nil || !media.IsKeyFrame(media.H264, au) {
		t.Fatalf("encode: %v (keyframe %v)", err, media.IsKeyFrame(media.H264, au))
	}
	img, err := DecodeH264(au)
	if err != nil {
		t.Fatal(err)
	}
	if b := img.Bounds(); b.Dx() != 640 || b.Dy() != 480 {
		t.Fatalf("decoded %v", b)
	}
	var diff, n int
	for y := 0; y < 480; y += 7 {
		for x := 0; x < 640; x += 7 {
			d := int(img.Y[y*img.YStride+x]) - int(src.Image.Y[y*src.Image.YStride+x])
			diff += max(d, -d)
			n++
		}
	}
	if mean := float64(diff) / float64(n); mean > 6 {
		t.Errorf("mean luma difference %.1f, want a faithful picture", mean)
	}
	if _, err := DecodeH264(au[:len(au)/3]); err == nil {
		t.Log("a truncated keyframe decoded (concealment off): fine if the picture is partial")
	}
	if _, err := DecodeH264([]byte{0, 0, 0, 1, 0x41, 1, 2, 3}); err == nil {
		t.Error("a lone inter slice decoded")
	}
}

// TestDecoderABI compiles h264dec.go's declarations together with the
// OpenH264 headers that ship beside the bundled library and checks that
// sizes and offsets agree, so an upgrade of the library that changes its
// ABI fails here rather than in a snapshot.
func TestDecoderABI(t *testing.T) {
	cc, err := exec.LookPath("cc")
	if err != nil {
		t.Skip("no C compiler")
	}
	out, err := exec.Command("go", "list", "-f", "{{.Dir}}", "github.com/pion/mediadevices/pkg/codec/openh264").Output()
	if err != nil {
		t.Skipf("go list: %v", err)
	}
	inc := filepath.Join(strings.TrimSpace(string(out)), "include")
	src, err := os.ReadFile("h264dec.go")
	if err != nil {
		t.Fatal(err)
	}
	// The cgo preamble: between "/*" and "*/" before import "C".
	pre := string(src)
	pre = pre[strings.Index(pre, "/*")+2 : strings.Index(pre, "*/\nimport \"C\"")]
	pre = pre[:strings.Index(pre, "long WelsCreateDecoder")] // the real header declares these
	var checks strings.Builder
	check := func(ours, theirs string) {
		fmt.Fprintf(&checks, "_Static_assert(%s == %s, \"%s\");\n", ours, theirs, ours)
	}
	check("sizeof(ih_decoding_param)", "sizeof(SDecodingParam)")
	check("offsetof(ih_decoding_param, target_dq_layer)", "offsetof(SDecodingParam, uiTargetDqLayer)")
	check("offsetof(ih_decoding_param, error_concealment)", "offsetof(SDecodingParam, eEcActiveIdc)")
	check("offsetof(ih_decoding_param, video)", "offsetof(SDecodingParam, sVideoProperty)")
	check("sizeof(ih_video_property)", "sizeof(SVideoProperty)")
	check("sizeof(ih_buffer_info)", "sizeof(SBufferInfo)")
	check("offsetof(ih_buffer_info, usr)", "offsetof(SBufferInfo, UsrData)")
	check("offsetof(ih_buffer_info, dst)", "offsetof(SBufferInfo, pDst)")
	check("offsetof(ih_sys_buffer, stride)", "offsetof(SSysMEMBuffer, iStride)")
	check("offsetof(ih_vtbl, initialize)", "offsetof(ISVCDecoderVtbl, Initialize)")
	check("offsetof(ih_vtbl, uninitialize)", "offsetof(ISVCDecoderVtbl, Uninitialize)")
	check("offsetof(ih_vtbl, decode_frame_no_delay)", "offsetof(ISVCDecoderVtbl, DecodeFrameNoDelay)")
	check("offsetof(ih_vtbl, set_option)", "offsetof(ISVCDecoderVtbl, SetOption)")
	check("sizeof(ih_vtbl)", "sizeof(ISVCDecoderVtbl)")
	check("ih_option_trace_level", "DECODER_OPTION_TRACE_LEVEL")
	check("ih_log_quiet", "WELS_LOG_QUIET")
	check("sizeof(int)", "sizeof(DECODING_STATE)")
	file := "#include <stddef.h>\n#include <openh264/codec_api.h>\n" + pre + checks.String()
	dir := t.TempDir()
	cfile := filepath.Join(dir, "abi.c")
	if err := os.WriteFile(cfile, []byte(file), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(cc, "-std=c11", "-fsyntax-only", "-I", inc, cfile).CombinedOutput(); err != nil {
		t.Fatalf("the declarations disagree with OpenH264's headers: %v\n%s", err, out)
	}
}
