package v4l2

import (
	"bytes"
	"fmt"
	"image"
	"image/jpeg"

	"github.com/doorbell/intercom/media"
)

// converter turns one captured frame into the stream's I420 picture.
type converter interface {
	convert(data []byte, dst *image.YCbCr) error
}

// yuyvConverter converts packed YUYV 4:2:2 (Y0 U Y1 V) of size w×h.
type yuyvConverter struct{ w, h int }

func (c yuyvConverter) convert(data []byte, dst *image.YCbCr) error {
	w, h := c.w, c.h
	if len(data) < w*h*2 {
		return fmt.Errorf("yuyv frame of %d bytes, want %d: %w", len(data), w*h*2, media.ErrBadFormat)
	}
	if dst.Rect.Dx() == w && dst.Rect.Dy() == h {
		yuyvToI420(data, w, h, dst)
		return nil
	}
	tmp := image.NewYCbCr(image.Rect(0, 0, w, h), image.YCbCrSubsampleRatio420)
	yuyvToI420(data, w, h, tmp)
	scaleInto(dst, tmp)
	return nil
}

// yuyvToI420 copies luma and averages the chroma of each pair of rows
// (4:2:2 has chroma on every row, 4:2:0 on every other).
func yuyvToI420(src []byte, w, h int, dst *image.YCbCr) {
	stride := 2 * w
	for y := 0; y < h; y++ {
		row := src[y*stride : (y+1)*stride]
		yd := dst.Y[y*dst.YStride : y*dst.YStride+w]
		for x := 0; x < w; x++ {
			yd[x] = row[2*x]
		}
	}
	for y := 0; y+1 < h; y += 2 {
		r0 := src[y*stride : (y+1)*stride]
		r1 := src[(y+1)*stride : (y+2)*stride]
		cb := dst.Cb[(y/2)*dst.CStride:]
		cr := dst.Cr[(y/2)*dst.CStride:]
		for x := 0; x < w/2; x++ {
			cb[x] = byte((uint16(r0[4*x+1]) + uint16(r1[4*x+1]) + 1) / 2)
			cr[x] = byte((uint16(r0[4*x+3]) + uint16(r1[4*x+3]) + 1) / 2)
		}
	}
}

// mjpegConverter decodes Motion-JPEG frames with image/jpeg.
type mjpegConverter struct{ fixed []byte }

func (c *mjpegConverter) convert(data []byte, dst *image.YCbCr) error {
	data = c.withHuffmanTables(data)
	img, err := jpeg.Decode(bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("decode mjpeg: %w", err)
	}
	src, ok := img.(*image.YCbCr)
	if !ok {
		return fmt.Errorf("mjpeg frame is %T, not YCbCr: %w", img, media.ErrBadFormat)
	}
	scaleInto(dst, src)
	return nil
}

// withHuffmanTables inserts the standard Huffman tables when a frame has
// none. UVC cameras commonly leave them out of MJPEG frames (the MJPEG
// convention is that decoders know the tables of JPEG Annex K.3), and
// image/jpeg refuses such a frame.
func (c *mjpegConverter) withHuffmanTables(data []byte) []byte {
	if len(data) < 4 || data[0] != 0xff || data[1] != 0xd8 {
		return data
	}
	for i := 2; i+3 < len(data); {
		if data[i] != 0xff {
			return data
		}
		marker := data[i+1]
		switch {
		case marker == 0xc4: // DHT present
			return data
		case marker == 0xda: // SOS without any DHT before it
			c.fixed = append(append(append(c.fixed[:0], data[:2]...), annexKTables...), data[2:]...)
			return c.fixed
		case marker == 0xd8 || (marker >= 0xd0 && marker <= 0xd7) || marker == 0x01:
			i += 2
			continue
		}
		i += 2 + (int(data[i+2])<<8 | int(data[i+3]))
	}
	return data
}

// annexKTables is the DHT segment image/jpeg writes: the example tables of
// JPEG Annex K.3, which MJPEG frames without tables assume. Taking them
// from the encoder avoids retyping 400 bytes of tables.
var annexKTables = func() []byte {
	var b bytes.Buffer
	img := image.NewRGBA(image.Rect(0, 0, 16, 16)) // colour: all four tables
	if err := jpeg.Encode(&b, img, nil); err != nil {
		panic(err)
	}
	data := b.Bytes()
	var out []byte
	for i := 2; i+3 < len(data); {
		marker := data[i+1]
		n := int(data[i+2])<<8 | int(data[i+3])
		if marker == 0xc4 {
			out = append(out, data[i:i+2+n]...)
		}
		if marker == 0xda {
			break
		}
		i += 2 + n
	}
	return out
}()

// scaleInto copies src into the I420 picture dst, converting any chroma
// subsampling and resizing by nearest neighbour when the camera's size
// differs from the stream's (a driver that adjusted the size asked for).
func scaleInto(dst, src *image.YCbCr) {
	dw, dh := dst.Rect.Dx(), dst.Rect.Dy()
	sw, sh := src.Rect.Dx(), src.Rect.Dy()
	sx0, sy0 := src.Rect.Min.X, src.Rect.Min.Y
	same := dw == sw && dh == sh
	for y := 0; y < dh; y++ {
		sy := y
		if !same {
			sy = y * sh / dh
		}
		srow := src.Y[(sy)*src.YStride:]
		drow := dst.Y[y*dst.YStride : y*dst.YStride+dw]
		if same {
			copy(drow, srow[:dw])
			continue
		}
		for x := range drow {
			drow[x] = srow[x*sw/dw]
		}
	}
	if same && src.SubsampleRatio == image.YCbCrSubsampleRatio420 {
		for y := 0; y < dh/2; y++ {
			copy(dst.Cb[y*dst.CStride:y*dst.CStride+dw/2], src.Cb[y*src.CStride:])
			copy(dst.Cr[y*dst.CStride:y*dst.CStride+dw/2], src.Cr[y*src.CStride:])
		}
		return
	}
	for cy := 0; cy < dh/2; cy++ {
		sy := sy0 + (2*cy)*sh/dh
		for cx := 0; cx < dw/2; cx++ {
			sx := sx0 + (2*cx)*sw/dw
			ci := src.COffset(sx, sy)
			dst.Cb[cy*dst.CStride+cx] = src.Cb[ci]
			dst.Cr[cy*dst.CStride+cx] = src.Cr[ci]
		}
	}
}
