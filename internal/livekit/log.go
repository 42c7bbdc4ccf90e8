package livekit

import (
	"bytes"
	"io"
	"os"
)

// tailBytes bounds how much of the log a tail reads.
const tailBytes = 256 << 10

// readTail returns the last tailBytes of the file at path, or nil.
func readTail(path string) []byte {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var off int64
	if fi, err := f.Stat(); err == nil && fi.Size() > tailBytes {
		off = fi.Size() - tailBytes
	}
	b, _ := io.ReadAll(io.NewSectionReader(f, off, tailBytes))
	return b
}

// lastLines returns the last n lines of b.
func lastLines(b []byte, n int) string {
	b = bytes.TrimRight(b, "\n")
	if n <= 0 {
		return ""
	}
	start := len(b)
	for range n {
		i := bytes.LastIndexByte(b[:start], '\n')
		if i < 0 {
			return string(b)
		}
		start = i
	}
	return string(b[start+1:])
}
