package nodeproc

import (
	"encoding/json"
	"image"
	"image/color"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/doorbell/intercom/media"
)

// TestGlassCodeReader runs page/glass.js's reader in node over frames the
// Go side drew (media.TestPattern), converted to RGBA as a browser's
// canvas gives them: it must read the same times as media.ReadGlassCode,
// and refuse a frame with a misread cell and one without a code.
func TestGlassCodeReader(t *testing.T) {
	if _, err := exec.LookPath("node"); err != nil {
		t.Skip("needs node")
	}
	type frame struct {
		W, H   int
		RGBA   []byte // the grid's region only
		Stride int
		Cell   int
		X0, Y0 int
		Want   uint32
		Expect string // "ok" or a reason
	}
	var frames []frame
	add := func(img *image.YCbCr, want uint32, expect string) {
		b := img.Bounds()
		w, h := b.Dx(), b.Dy()
		cell := max(h/30, 4) &^ 1
		x0, y0 := w-14*cell, cell
		gw, gh := 13*cell, 4*cell
		rgba := make([]byte, 0, gw*gh*4)
		for y := y0; y < y0+gh; y++ {
			for x := x0; x < x0+gw; x++ {
				r, g, bb, _ := color.NRGBAModel.Convert(img.YCbCrAt(x, y)).RGBA()
				rgba = append(rgba, byte(r>>8), byte(g>>8), byte(bb>>8), 255)
			}
		}
		frames = append(frames, frame{W: w, H: h, RGBA: rgba, Stride: gw, Cell: cell, X0: x0, Y0: y0, Want: want, Expect: expect})
	}
	for _, f := range []media.VideoFormat{{Width: 640, Height: 480, FPS: 15}, {Width: 1280, Height: 720, FPS: 15}, {Width: 320, Height: 240, FPS: 15}} {
		p, err := media.NewTestPattern(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, ts := range []time.Time{time.UnixMilli(1_765_061_000_123), time.UnixMilli(1<<32 - 1)} {
			img := p.Render(ts).Image
			want, err := media.ReadGlassCode(img)
			if err != nil {
				t.Fatal(err)
			}
			add(img, want, "ok")
		}
	}
	// A cell painted the other colour: the CRC refuses it.
	p, _ := media.NewTestPattern(media.VideoFormat{Width: 640, Height: 480, FPS: 15})
	img := p.Render(time.UnixMilli(1_765_061_000_123)).Image
	cell, x0, y0 := 16, 640-14*16, 16
	v := img.Y[(y0+cell+cell/2)*img.YStride+x0+5*cell+cell/2] // column 5, row 1
	for y := y0 + cell; y < y0+2*cell; y++ {
		for x := x0 + 5*cell; x < x0+6*cell; x++ {
			img.Y[y*img.YStride+x] = 251 - v
		}
	}
	add(img, 0, "checksum")
	flat := image.NewYCbCr(image.Rect(0, 0, 640, 480), image.YCbCrSubsampleRatio420)
	add(flat, 0, "contrast")

	in, err := json.Marshal(frames)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "frames.json"), in, 0o600); err != nil {
		t.Fatal(err)
	}
	glass, err := filepath.Abs("page/glass.js")
	if err != nil {
		t.Fatal(err)
	}
	// Go's JSON gives []byte as base64.
	script := `
import { readFileSync } from "node:fs";
import { layout, readCode } from ` + jsString("file://"+glass) + `;
const frames = JSON.parse(readFileSync(process.argv[2], "utf8"));
const out = frames.map((f) => {
  const at = layout(f.W, f.H);
  if (!at || at.cell !== f.Cell || at.x0 !== f.X0 || at.y0 !== f.Y0) return { ok: false, reason: "layout " + JSON.stringify(at) };
  return readCode(Buffer.from(f.RGBA, "base64"), f.Stride, f.Cell);
});
console.log(JSON.stringify(out));
`
	mjs := filepath.Join(dir, "read.mjs")
	if err := os.WriteFile(mjs, []byte(script), 0o600); err != nil {
		t.Fatal(err)
	}
	outb, err := exec.Command("node", mjs, filepath.Join(dir, "frames.json")).CombinedOutput()
	if err != nil {
		t.Fatalf("node: %v\n%s", err, outb)
	}
	var got []struct {
		OK     bool   `json:"ok"`
		MS     uint32 `json:"ms"`
		Reason string `json:"reason"`
	}
	if err := json.Unmarshal(outb, &got); err != nil {
		t.Fatalf("node said %s: %v", outb, err)
	}
	if len(got) != len(frames) {
		t.Fatalf("%d results for %d frames", len(got), len(frames))
	}
	for i, f := range frames {
		g := got[i]
		switch {
		case f.Expect == "ok" && (!g.OK || g.MS != f.Want):
			t.Errorf("frame %d (%dx%d): glass.js read %+v, want %d", i, f.W, f.H, g, f.Want)
		case f.Expect != "ok" && (g.OK || g.Reason != f.Expect):
			t.Errorf("frame %d: glass.js read %+v, want refused (%s)", i, g, f.Expect)
		}
	}
}

func jsString(s string) string {
	b, _ := json.Marshal(s)
	return strings.TrimSpace(string(b))
}
