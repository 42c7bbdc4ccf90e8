package media

// glyphs is a 5×7 bitmap font for the characters the test pattern prints.
// Each row is five bits, the most significant bit on the left.
var glyphs = map[byte][7]uint8{
	'0': {0x0e, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0e},
	'1': {0x04, 0x0c, 0x04, 0x04, 0x04, 0x04, 0x0e},
	'2': {0x0e, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1f},
	'3': {0x1f, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0e},
	'4': {0x02, 0x06, 0x0a, 0x12, 0x1f, 0x02, 0x02},
	'5': {0x1f, 0x10, 0x1e, 0x01, 0x01, 0x11, 0x0e},
	'6': {0x06, 0x08, 0x10, 0x1e, 0x11, 0x11, 0x0e},
	'7': {0x1f, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08},
	'8': {0x0e, 0x11, 0x11, 0x0e, 0x11, 0x11, 0x0e},
	'9': {0x0e, 0x11, 0x11, 0x0f, 0x01, 0x02, 0x0c},
	':': {0x00, 0x0c, 0x0c, 0x00, 0x0c, 0x0c, 0x00},
	'.': {0x00, 0x00, 0x00, 0x00, 0x00, 0x0c, 0x0c},
	'#': {0x0a, 0x0a, 0x1f, 0x0a, 0x1f, 0x0a, 0x0a},
	' ': {},
}

const (
	glyphW = 5
	glyphH = 7
)

// drawText writes s into a luma plane at (x, y), each font pixel scale×scale
// luma pixels, on a black box one font pixel wider than the text. Pixels
// outside the plane are clipped.
func drawText(y []byte, stride, width, height, x0, y0, scale int, s []byte) {
	const fg, bg = 235, 16
	advance := (glyphW + 1) * scale
	boxW := len(s)*advance + scale
	boxH := (glyphH + 2) * scale
	fillRect(y, stride, width, height, x0-scale, y0-scale, boxW, boxH, bg)
	for i, c := range s {
		g := glyphs[c]
		cx := x0 + i*advance
		for row := 0; row < glyphH; row++ {
			bits := g[row]
			if bits == 0 {
				continue
			}
			for col := 0; col < glyphW; col++ {
				if bits&(0x10>>col) != 0 {
					fillRect(y, stride, width, height, cx+col*scale, y0+row*scale, scale, scale, fg)
				}
			}
		}
	}
}

// fillRect sets a clipped rectangle of a plane to v.
func fillRect(p []byte, stride, width, height, x, y, w, h int, v byte) {
	if x < 0 {
		w += x
		x = 0
	}
	if y < 0 {
		h += y
		y = 0
	}
	if x+w > width {
		w = width - x
	}
	if y+h > height {
		h = height - y
	}
	if w <= 0 || h <= 0 {
		return
	}
	for r := y; r < y+h; r++ {
		row := p[r*stride+x : r*stride+x+w]
		for i := range row {
			row[i] = v
		}
	}
}
