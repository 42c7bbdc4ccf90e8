package dendrite

import (
	"bytes"
	"io"
	"os"
)

// tailBytes bounds how much of a log tail reads: Dendrite's lines are long,
// but a few hundred of them fit.
const tailBytes = 256 << 10

// tail returns up to the last n lines of the file at path, or a note saying
// why it could not be read.
func tail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	defer f.Close()
	var off int64
	if fi, err := f.Stat(); err == nil && fi.Size() > tailBytes {
		off = fi.Size() - tailBytes
	}
	b, err := io.ReadAll(io.NewSectionReader(f, off, tailBytes))
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	return lastLines(b, n)
}

// readFrom returns the file at path from offset off, at most tailBytes of
// it, or nil.
func readFrom(path string, off int64) []byte {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
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
