// Package logtail reads the end of the log files the test harnesses
// (internal/testenv/dendrite, internal/testenv/livekit) keep for their
// servers, to show in failures.
package logtail

import (
	"bytes"
	"io"
	"os"
)

// MaxBytes bounds how much of a log is read: server lines are long, but a
// few hundred of them fit.
const MaxBytes = 256 << 10

// Read returns the last MaxBytes of the file at path, or nil.
func Read(path string) []byte {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var off int64
	if fi, err := f.Stat(); err == nil && fi.Size() > MaxBytes {
		off = fi.Size() - MaxBytes
	}
	b, _ := io.ReadAll(io.NewSectionReader(f, off, MaxBytes))
	return b
}

// ReadFrom returns the file at path from offset off, at most MaxBytes of
// it, or nil: what a server wrote since a run started.
func ReadFrom(path string, off int64) []byte {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	b, _ := io.ReadAll(io.NewSectionReader(f, off, MaxBytes))
	return b
}

// Tail returns up to the last n lines of the file at path, or a note
// saying why it could not be read.
func Tail(path string, n int) string {
	if _, err := os.Stat(path); err != nil {
		return "(no log: " + err.Error() + ")"
	}
	return LastLines(Read(path), n)
}

// LastLines returns the last n lines of b.
func LastLines(b []byte, n int) string {
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
