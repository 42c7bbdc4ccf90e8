package media

import (
	"bytes"
	"errors"
	"testing"
)

func TestPrimaryFromRED(t *testing.T) {
	opus := []byte{0xfc, 0xff, 0xfe}
	red1 := []byte{0xfc, 0x01}
	red2 := []byte{0xf8, 0x02, 0x03}
	for _, c := range []struct {
		name    string
		payload []byte
		want    []byte
		wantErr bool
	}{
		{"primary only", append([]byte{111}, opus...), opus, false},
		// One redundant block: F=1 PT=111, offset 960, length 2.
		{"one redundant block", append(append([]byte{0x80 | 111, 0x0f, 0x00, 0x02, 111}, red1...), opus...), opus, false},
		{"two redundant blocks", append(append(append([]byte{0x80 | 111, 0x1e, 0x00, 0x03, 0x80 | 111, 0x0f, 0x00, 0x02, 111}, red2...), red1...), opus...), opus, false},
		{"empty primary (DTX)", []byte{111}, []byte{}, false},
		{"empty", nil, nil, true},
		{"truncated header", []byte{0x80 | 111, 0x0f}, nil, true},
		{"block longer than payload", []byte{0x80 | 111, 0x0f, 0x03, 0xff, 111, 1, 2}, nil, true},
		{"no final header", []byte{0x80 | 111, 0, 0, 0}, nil, true},
	} {
		got, pt, err := PrimaryFromRED(c.payload)
		if c.wantErr {
			if !errors.Is(err, ErrRED) {
				t.Errorf("%s: err %v, want ErrRED", c.name, err)
			}
			continue
		}
		if err != nil || !bytes.Equal(got, c.want) || pt != 111 {
			t.Errorf("%s: %x pt %d err %v, want %x", c.name, got, pt, err, c.want)
		}
	}
}

func FuzzPrimaryFromRED(f *testing.F) {
	f.Add([]byte{0x80 | 111, 0x0f, 0x00, 0x02, 111, 1, 2, 3})
	f.Add([]byte{111})
	f.Fuzz(func(t *testing.T, b []byte) {
		p, _, err := PrimaryFromRED(b)
		if err == nil && len(p) > len(b) {
			t.Fatal("primary longer than the payload")
		}
	})
}
