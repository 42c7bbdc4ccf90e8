package media

import (
	"fmt"
	"image"
	"time"
)

// The glass code is the test pattern's capture time in a form a machine
// reads back from a decoded frame, so that glass-to-glass latency
// (capture → displayed) can be measured per frame at the far end: the
// wall clock's Unix milliseconds modulo 2^32 (it wraps every 49.7 days;
// a reader that knows the time within ±24 days recovers the full time)
// and a CRC-16 of them, 48 bits drawn as black and white luma cells in
// the picture's top-right corner.
//
// Layout, which the resident page's reader (internal/testenv/nodeproc/
// page/glass.js) repeats: cells of c×c pixels, c = max(height/30, 4)
// rounded down to even (16 at 480 lines: large enough that H.264 and
// VP8 at 150 kb/s keep each cell's mean, and cells never share a 4:2:0
// chroma sample with the picture around them). The grid is 13 columns by
// 4 rows, its top-left corner at (width − 14c, c). Its four corner cells
// are references, white at top-left and bottom-right, black at the
// other two; the 48 other cells carry the bits in row order, most
// significant first, white for 1: the 32 bits of the time, then the 16
// of CRC-16/CCITT-FALSE (polynomial 0x1021, initial value 0xFFFF, no
// reflection) over its four big-endian bytes.
//
// A reader takes the mean luma of the middle half of every cell (coding
// blurs the edges), sets its threshold halfway between the white and the
// black references, and rejects the frame when the references lack
// contrast, when any cell lies within a quarter of the contrast of the
// threshold, or when the CRC does not match: a misread frame is dropped,
// never reported with a wrong time.
const (
	glassCols  = 13
	glassRows  = 4
	glassBits  = glassCols*glassRows - 4
	glassWhite = 235 // BT.601 limited-range luma
	glassBlack = 16
	// glassMinContrast is the least difference between the white and the
	// black references a reader accepts (in luma levels; 219 drawn).
	glassMinContrast = 64
)

// glassLayout returns the grid's top-left corner and cell size for a
// picture of w×h, and false when the picture is too small to hold it
// beside the test pattern's clock.
func glassLayout(w, h int) (x0, y0, cell int, ok bool) {
	cell = max(h/30, 4) &^ 1
	x0, y0 = w-(glassCols+1)*cell, cell
	if x0 < w/2 || y0+(glassRows+1)*cell > h {
		return 0, 0, 0, false
	}
	return x0, y0, cell, true
}

// glassRef reports whether the cell at (col, row) is a reference and, if
// so, whether it is white.
func glassRef(col, row int) (ref, white bool) {
	top, left := row == 0, col == 0
	if (top || row == glassRows-1) && (left || col == glassCols-1) {
		return true, top == left
	}
	return false, false
}

// crc16CCITT is CRC-16/CCITT-FALSE of b.
func crc16CCITT(b []byte) uint16 {
	crc := uint16(0xffff)
	for _, v := range b {
		crc ^= uint16(v) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}

// glassWord is the 48 bits a code carries: ms, then its CRC.
func glassWord(ms uint32) uint64 {
	crc := crc16CCITT([]byte{byte(ms >> 24), byte(ms >> 16), byte(ms >> 8), byte(ms)})
	return uint64(ms)<<16 | uint64(crc)
}

// GlassCodeMillis is the value a glass code carries for time t.
func GlassCodeMillis(t time.Time) uint32 { return uint32(t.UnixMilli()) }

// DrawGlassCode draws the glass code of ms into img (4:2:0), with neutral
// chroma under it; a picture too small for it is left as it is. It costs
// 52 small fills.
func DrawGlassCode(img *image.YCbCr, ms uint32) {
	b := img.Bounds()
	w, h := b.Dx(), b.Dy()
	x0, y0, c, ok := glassLayout(w, h)
	if !ok {
		return
	}
	word := glassWord(ms)
	bit := glassBits - 1
	for row := range glassRows {
		for col := range glassCols {
			ref, refWhite := glassRef(col, row)
			on := refWhite
			if !ref {
				on = word>>bit&1 == 1
				bit--
			}
			v := byte(glassBlack)
			if on {
				v = glassWhite
			}
			fillRect(img.Y, img.YStride, w, h, x0+col*c, y0+row*c, c, c, v)
		}
	}
	fillRect(img.Cb, img.CStride, w/2, h/2, x0/2, y0/2, glassCols*c/2, glassRows*c/2, 128)
	fillRect(img.Cr, img.CStride, w/2, h/2, x0/2, y0/2, glassCols*c/2, glassRows*c/2, 128)
}

// ReadGlassCode reads the glass code from a decoded picture's luma. It
// returns ErrNoGlassCode when the picture holds no readable code (too
// small, no contrast, a cell neither black nor white) and
// ErrGlassCodeChecksum when the cells read but the CRC does not match.
func ReadGlassCode(img *image.YCbCr) (uint32, error) {
	b := img.Bounds()
	return readGlassCode(img.Y, img.YStride, b.Dx(), b.Dy())
}

func readGlassCode(y []byte, stride, w, h int) (uint32, error) {
	x0, y0, c, ok := glassLayout(w, h)
	if !ok || stride < w || len(y) < (h-1)*stride+w {
		return 0, fmt.Errorf("read glass code in %dx%d (stride %d, %d bytes): %w", w, h, stride, len(y), ErrNoGlassCode)
	}
	var means [glassRows][glassCols]int
	for row := range glassRows {
		for col := range glassCols {
			means[row][col] = cellMean(y, stride, x0+col*c, y0+row*c, c)
		}
	}
	whiteA, whiteB := means[0][0], means[glassRows-1][glassCols-1]
	blackA, blackB := means[0][glassCols-1], means[glassRows-1][0]
	if min(whiteA, whiteB)-max(blackA, blackB) < glassMinContrast {
		return 0, fmt.Errorf("read glass code: references white %d/%d black %d/%d: %w", whiteA, whiteB, blackA, blackB, ErrNoGlassCode)
	}
	// Twice the threshold and margin, to stay in integers.
	thr2 := (whiteA + whiteB + blackA + blackB) / 2
	margin2 := (whiteA + whiteB - blackA - blackB) / 4
	var word uint64
	for row := range glassRows {
		for col := range glassCols {
			if ref, _ := glassRef(col, row); ref {
				continue
			}
			v2 := 2 * means[row][col]
			if v2 > thr2-margin2 && v2 < thr2+margin2 {
				return 0, fmt.Errorf("read glass code: cell %d,%d luma %d near threshold %d: %w", col, row, means[row][col], thr2/2, ErrNoGlassCode)
			}
			word <<= 1
			if v2 >= thr2+margin2 {
				word |= 1
			}
		}
	}
	ms := uint32(word >> 16)
	if glassWord(ms) != word {
		return 0, fmt.Errorf("read glass code %#012x: %w", word, ErrGlassCodeChecksum)
	}
	return ms, nil
}

// cellMean is the mean luma of the middle half of the c×c cell at (x, y).
func cellMean(y []byte, stride, x, yy, c int) int {
	q := c / 4
	n := c - 2*q
	sum := 0
	for r := yy + q; r < yy+q+n; r++ {
		for _, v := range y[r*stride+x+q : r*stride+x+q+n] {
			sum += int(v)
		}
	}
	return sum / (n * n)
}

// GlassLatency is the time from the capture a glass code carries to
// shown, on the same wall clock: the difference is taken modulo 2^32 ms
// and read as signed, so it is right within ±24 days of the capture.
func GlassLatency(code uint32, shown time.Time) time.Duration {
	return time.Duration(int32(GlassCodeMillis(shown)-code)) * time.Millisecond
}
