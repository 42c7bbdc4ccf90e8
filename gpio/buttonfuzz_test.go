package gpio

import (
	"testing"
	"testing/synctest"
	"time"

	pgpio "periph.io/x/conn/v3/gpio"
)

// FuzzButton drives an active-low button with any train of edges (the
// bytes are the times between them, in odd milliseconds from 1 to 127,
// so that no stretch lasts exactly a hold time) and checks Run against
// the button's contract, stated as the smallest model of it: released,
// a stretch down of at least the press hold is one press; pressed, only
// a stretch up of at least the debounce time releases. So a press is
// never lost and never doubled, whatever the bounce looks like.
func FuzzButton(f *testing.F) {
	f.Add([]byte{20})                            // one clean press, released at the end
	f.Add([]byte{2, 3, 2, 1, 40, 7, 1, 60})      // bounces both ways
	f.Add([]byte{4, 1, 4, 1, 4, 1, 4, 1, 4, 30}) // a buzzing line: no stretch is long enough
	f.Add([]byte{9, 7, 9, 30, 9, 20, 9})         // presses and short releases
	f.Fuzz(func(t *testing.T, gaps []byte) {
		if len(gaps) > 64 {
			gaps = gaps[:64]
		}
		synctest.Test(t, func(t *testing.T) {
			pin, presses, stop := runButton(t, ActiveLow, nil)
			defer stop()
			hold := DefaultDebounce / pressHoldDivisor
			level := pgpio.High // released
			pressed, want := false, int64(0)
			// stretch lets the line hold level for d and advances the model.
			stretch := func(d time.Duration) {
				switch {
				case !pressed && level == pgpio.Low && d >= hold:
					pressed = true
					want++
				case pressed && level == pgpio.High && d >= DefaultDebounce:
					pressed = false
				}
			}
			for _, g := range gaps {
				level = !level
				d := time.Duration(2*(g%64)+1) * time.Millisecond
				pin.edge(level, d)
				stretch(d)
			}
			if level == pgpio.Low {
				level = pgpio.High
				pin.edge(level, time.Second)
				stretch(time.Second)
			}
			if n := presses.Load(); n != want {
				t.Fatalf("edges %v ms apart: %d presses, the contract says %d", gaps, n, want)
			}
		})
	})
}
