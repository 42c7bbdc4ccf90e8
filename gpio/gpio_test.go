package gpio

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	pgpio "periph.io/x/conn/v3/gpio"
)

func TestRingerCadence(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pin := SimPin("RINGER")
		r, err := NewRinger(pin, ActiveLow, Cadence{time.Second, 2 * time.Second}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if pin.Read() != pgpio.High {
			t.Fatal("active-low ringer not off at start")
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error)
		go func() { done <- r.Run(ctx) }()
		r.Set(true)
		synctest.Wait()
		if !r.Output() || pin.Read() != pgpio.Low {
			t.Fatal("not ringing")
		}
		time.Sleep(1500 * time.Millisecond)
		synctest.Wait()
		if r.Output() {
			t.Fatal("cadence off-phase not applied")
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if !r.Output() {
			t.Fatal("cadence did not repeat")
		}
		r.Set(false)
		synctest.Wait()
		if r.Output() || pin.Read() != pgpio.High {
			t.Fatal("still ringing after Set(false)")
		}
		r.Set(true)
		synctest.Wait()
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if r.Output() || pin.Read() != pgpio.High {
			t.Fatal("ringer left on after Run returned")
		}
	})
}

func TestRelayPulseIsBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pin := SimPin("RELAY")
		pin.L = pgpio.High // energised by whatever ran before us
		r, err := NewRelay(pin, ActiveHigh)
		if err != nil {
			t.Fatal(err)
		}
		if pin.Read() != pgpio.Low {
			t.Fatal("relay not de-energised at start")
		}
		start := time.Now()
		go func() {
			synctest.Wait()
			if !r.Energised() || pin.Read() != pgpio.High {
				t.Error("not energised during pulse")
			}
		}()
		if err := r.Pulse(t.Context(), time.Hour); err != nil {
			t.Fatal(err)
		}
		if got := time.Since(start); got != MaxPulse {
			t.Fatalf("pulse lasted %v, want the cap %v", got, MaxPulse)
		}
		if r.Energised() || pin.Read() != pgpio.Low {
			t.Fatal("relay left energised")
		}
		ctx, cancel := context.WithCancel(t.Context())
		go func() { time.Sleep(time.Second); cancel() }()
		if err := r.Pulse(ctx, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		if time.Since(start) != MaxPulse+time.Second || pin.Read() != pgpio.Low {
			t.Fatal("cancelled pulse not ended at once")
		}
	})
}
