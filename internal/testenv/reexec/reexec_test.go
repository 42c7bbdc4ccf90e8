package reexec

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
)

const echoEnv = "REEXEC_TEST_ECHO"

// TestMain makes the test binary, when re-executed with echoEnv, a child
// that doubles every number it reads until its stdin closes, or fails at
// once with echoEnv=fail.
func TestMain(m *testing.M) {
	Serve("doubler", echoEnv, func(mode string, in io.Reader, out io.Writer) error {
		if mode == "fail" {
			return errors.New("asked to fail")
		}
		for {
			var n int
			if _, err := fmt.Fscan(in, &n); err == io.EOF {
				return nil
			} else if err != nil {
				return err
			}
			fmt.Fprintln(out, 2*n)
		}
	})
	os.Exit(m.Run())
}

func TestStartTalksToTheChild(t *testing.T) {
	in, out := Start(t, "doubler", echoEnv+"=1")
	for _, n := range []int{1, 21} {
		if err := in.Encode(n); err != nil {
			t.Fatal(err)
		}
		var got int
		if err := out.Decode(&got); err != nil {
			t.Fatal(err)
		}
		if got != 2*n {
			t.Fatalf("child answered %d to %d", got, n)
		}
	}
}

// A child whose serve fails exits with 1 and says why.
func TestServeFails(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), echoEnv+"=fail")
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 || !strings.Contains(string(out), "doubler: asked to fail") {
		t.Fatalf("failing child: %v, %q", err, out)
	}
}
