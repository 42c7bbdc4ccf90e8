package media

import (
	"errors"
	"image"
	"testing"
	"time"
)

func TestCRC16CCITT(t *testing.T) {
	// The catalogue's check value of CRC-16/CCITT-FALSE.
	if got := crc16CCITT([]byte("123456789")); got != 0x29b1 {
		t.Fatalf("crc16(123456789) = %#04x, want 0x29b1", got)
	}
}

// TestGlassCodeRoundTrip: the test pattern's glass code reads back as the
// time it was rendered for, at the sizes a door sends.
func TestGlassCodeRoundTrip(t *testing.T) {
	times := []time.Time{
		time.Date(2026, 12, 6, 22, 40, 1, 234_000_000, time.UTC),
		time.UnixMilli(0),
		time.UnixMilli(1<<32 - 1), // the last millisecond before a wrap
		time.UnixMilli(1 << 32),
	}
	for _, f := range []VideoFormat{{640, 480, 15}, {1280, 720, 15}, {320, 240, 15}, {1920, 1080, 30}, {160, 120, 15}} {
		p, err := NewTestPattern(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, ts := range times {
			fr := p.Render(ts)
			got, err := ReadGlassCode(fr.Image)
			if err != nil {
				t.Fatalf("%dx%d %v: %v", f.Width, f.Height, ts, err)
			}
			if want := GlassCodeMillis(ts); got != want {
				t.Errorf("%dx%d: read %d, want %d", f.Width, f.Height, got, want)
			}
		}
	}
}

func TestGlassCodeTooSmall(t *testing.T) {
	p, err := NewTestPattern(VideoFormat{Width: 64, Height: 48, FPS: 15})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ReadGlassCode(p.Render(time.Now()).Image); !errors.Is(err, ErrNoGlassCode) {
		t.Fatalf("64x48: %v, want ErrNoGlassCode", err)
	}
}

// setCell paints the glass code's cell (col, row) of a 640x480 picture.
func setCell(img *image.YCbCr, col, row int, v byte) {
	x0, y0, c, _ := glassLayout(640, 480)
	fillRect(img.Y, img.YStride, 640, 480, x0+col*c, y0+row*c, c, c, v)
}

// dataCells lists the cells that carry bits, in bit order.
func dataCells() [][2]int {
	var cells [][2]int
	for row := range glassRows {
		for col := range glassCols {
			if ref, _ := glassRef(col, row); !ref {
				cells = append(cells, [2]int{col, row})
			}
		}
	}
	return cells
}

// TestGlassCodeRejectsMisreads: every pattern of one, two or three bits
// read wrongly fails the CRC (CRC-16/CCITT has Hamming distance 4 at this
// length), cells read wrongly in the picture are refused, and pictures
// without a clean code are refused, not read.
func TestGlassCodeRejectsMisreads(t *testing.T) {
	p, err := NewTestPattern(VideoFormat{Width: 640, Height: 480, FPS: 15})
	if err != nil {
		t.Fatal(err)
	}
	ms := GlassCodeMillis(time.Date(2026, 12, 6, 22, 41, 0, 0, time.UTC))
	clean := p.Render(time.UnixMilli(int64(ms))).Image
	word := glassWord(ms)
	n := 0
	for i := range glassBits {
		for j := i; j < glassBits; j++ {
			for k := j; k < glassBits; k++ {
				bad := word ^ 1<<i // j == i: one bit; k == j: two
				if j > i {
					bad ^= 1 << j
				}
				if k > j {
					bad ^= 1 << k
				}
				if glassWord(uint32(bad>>16)) == bad {
					t.Fatalf("bits %d,%d,%d flipped: the CRC still matches", i, j, k)
				}
				n++
			}
		}
	}
	cells := dataCells()
	if len(cells) != glassBits {
		t.Fatalf("%d data cells, want %d", len(cells), glassBits)
	}
	// In the picture: each cell painted the other colour, alone and with
	// its neighbour, is refused by the CRC.
	img := cloneYCbCr(clean)
	paint := func(i int, wrong bool) {
		on := word>>(glassBits-1-i)&1 == 1
		v := byte(glassBlack)
		if on != wrong {
			v = glassWhite
		}
		setCell(img, cells[i][0], cells[i][1], v)
	}
	for i := range glassBits {
		for _, pair := range [][]int{{i}, {i, (i + 1) % glassBits}} {
			for _, c := range pair {
				paint(c, true)
			}
			if got, err := ReadGlassCode(img); !errors.Is(err, ErrGlassCodeChecksum) {
				t.Fatalf("cells %v painted wrong: read %d, %v; want ErrGlassCodeChecksum", pair, got, err)
			}
			for _, c := range pair {
				paint(c, false)
			}
		}
	}
	if got, err := ReadGlassCode(img); err != nil || got != ms {
		t.Fatalf("restored picture: %d, %v", got, err)
	}
	t.Logf("%d bit patterns and %d painted ones rejected", n, 2*glassBits)

	grey := cloneYCbCr(clean)
	setCell(grey, cells[7][0], cells[7][1], 126)
	if _, err := ReadGlassCode(grey); !errors.Is(err, ErrNoGlassCode) {
		t.Errorf("a grey cell: %v, want ErrNoGlassCode", err)
	}
	flat := cloneYCbCr(clean)
	setCell(flat, 0, 0, glassBlack) // a white reference gone black
	if _, err := ReadGlassCode(flat); !errors.Is(err, ErrNoGlassCode) {
		t.Errorf("no contrast: %v, want ErrNoGlassCode", err)
	}
	// The same pattern without a code (a camera picture, the resident's
	// own fake camera) is refused.
	plain := cloneYCbCr(p.bg)
	if _, err := ReadGlassCode(plain); err == nil {
		t.Error("a picture without a code read")
	}
}

func TestGlassLatency(t *testing.T) {
	capture := time.UnixMilli(1<<32 - 40) // 40 ms before the code wraps
	code := GlassCodeMillis(capture)
	for _, d := range []time.Duration{0, 123 * time.Millisecond, 2 * time.Second, -5 * time.Millisecond} {
		if got := GlassLatency(code, capture.Add(d)); got != d {
			t.Errorf("latency %v read as %v", d, got)
		}
	}
}

func BenchmarkDrawGlassCode(b *testing.B) {
	img := image.NewYCbCr(image.Rect(0, 0, 640, 480), image.YCbCrSubsampleRatio420)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		DrawGlassCode(img, uint32(i))
	}
}

// FuzzReadGlassCode: any luma plane of any size reads without a panic, and
// a code it accepts is the code drawn there when redrawn.
func FuzzReadGlassCode(f *testing.F) {
	p, err := NewTestPattern(VideoFormat{Width: 320, Height: 240, FPS: 15})
	if err != nil {
		f.Fatal(err)
	}
	img := p.Render(time.UnixMilli(1_765_000_000_123)).Image
	f.Add(img.Y, uint16(320), uint16(240), uint16(320))
	f.Add([]byte{1, 2, 3}, uint16(2), uint16(1), uint16(2))
	f.Fuzz(func(t *testing.T, y []byte, w, h, stride uint16) {
		ms, err := readGlassCode(y, int(stride), int(w), int(h))
		if err != nil {
			if !errors.Is(err, ErrNoGlassCode) && !errors.Is(err, ErrGlassCodeChecksum) {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		if glassWord(ms)>>16 != uint64(ms) {
			t.Fatalf("accepted %d with a bad word", ms)
		}
	})
}

// FuzzGlassCodeNoise: noise of up to ±30 luma levels on every pixel,
// however it is arranged, never changes what is read: the code reads
// exactly. (The bound: a cell's mean may move 30 one way while the
// references move the other way or clip at 0 and 255; at ±48 a black
// cell can land in the refused band, which the seed in testdata found.)
func FuzzGlassCodeNoise(f *testing.F) {
	f.Add(uint32(0), []byte{50, 206, 0, 255})
	f.Add(uint32(0xdeadbeef), []byte{206, 206, 50})
	img := image.NewYCbCr(image.Rect(0, 0, 320, 240), image.YCbCrSubsampleRatio420)
	f.Fuzz(func(t *testing.T, ms uint32, noise []byte) {
		for i := range img.Y {
			img.Y[i] = 128
		}
		DrawGlassCode(img, ms)
		if len(noise) > 0 {
			for i := range img.Y {
				n := int(int8(noise[i%len(noise)]))
				n = max(min(n, 30), -30)
				img.Y[i] = byte(max(min(int(img.Y[i])+n, 255), 0))
			}
		}
		got, err := ReadGlassCode(img)
		if err != nil || got != ms {
			t.Fatalf("read %d, %v; want %d", got, err, ms)
		}
	})
}
