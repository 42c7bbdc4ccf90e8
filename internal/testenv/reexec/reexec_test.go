package reexec

import (
	"fmt"
	"io"
	"os"
	"testing"
)

const echoEnv = "REEXEC_TEST_ECHO"

// TestMain makes the test binary, when re-executed with echoEnv, a child
// that doubles every number it reads until its stdin closes.
func TestMain(m *testing.M) {
	if os.Getenv(echoEnv) != "" {
		var n int
		for {
			_, err := fmt.Fscan(os.Stdin, &n)
			if err == io.EOF {
				os.Exit(0)
			} else if err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
			fmt.Println(2 * n)
		}
	}
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
