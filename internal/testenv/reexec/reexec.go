// Package reexec runs the current test binary again as a helper process
// that speaks JSON lines over its stdin and stdout: the benchmarks'
// residents and viewers, kept in a process of their own so that their CPU
// is not counted as the door's.
package reexec

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"testing"
	"time"
)

// Start re-executes the test binary with env ("NAME=value") added and no
// tests to run; the child's TestMain sees env and serves. It returns the
// child's stdin and stdout as JSON streams. At cleanup the child's stdin
// is closed, which asks it to exit; one that has not after 10 s is
// killed and reported. name labels the child in failures.
func Start(tb testing.TB, name, env string) (*json.Encoder, *json.Decoder) {
	tb.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), env)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start %s: %v", name, err)
	}
	tb.Cleanup(func() {
		stdin.Close()
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				tb.Errorf("%s: %v", name, err)
			}
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
			tb.Errorf("%s did not exit", name)
		}
	})
	return json.NewEncoder(stdin), json.NewDecoder(bufio.NewReader(stdout))
}

// Serve makes this process the child that Start asked for, when the
// environment variable env is set: it runs serve with the variable's
// value, stdin and stdout in place of the tests, then exits, with 0 when
// serve returned nil and with 1 and the error on stderr (after name)
// otherwise. Without env it returns at once. A TestMain calls it first;
// exiting here is what a TestMain does anyway.
func Serve(name, env string, serve func(value string, in io.Reader, out io.Writer) error) {
	v := os.Getenv(env)
	if v == "" {
		return
	}
	if err := serve(v, os.Stdin, os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		os.Exit(1)
	}
	os.Exit(0)
}
