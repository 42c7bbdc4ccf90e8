// Package reexec runs the current test binary again as a helper process
// that speaks JSON lines over its stdin and stdout: the benchmarks'
// residents and viewers, kept in a process of their own so that their CPU
// is not counted as the door's.
package reexec

import (
	"bufio"
	"encoding/json"
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
