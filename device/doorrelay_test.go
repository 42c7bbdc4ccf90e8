package device

import (
	"context"
	"errors"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	pgpio "periph.io/x/conn/v3/gpio"

	"github.com/doorbell/intercom/gpio"
	"github.com/doorbell/intercom/gpio/gpiofake"
)

// startDoor runs a door on a gpio.Relay over pin inside a synctest bubble,
// just after a ring (commands count only for door.window after one);
// stop ends Run and reports whether the relay was left energised.
func startDoor(t *testing.T, pin pgpio.PinOut, msg Messenger) (door *Door, relay *gpio.Relay, stop func()) {
	t.Helper()
	relay, err := gpio.NewRelay(pin, gpio.ActiveHigh)
	if err != nil {
		t.Fatal(err)
	}
	cfg := testDoorConfig()
	cfg.Pulse = time.Second
	door, err = NewDoor(DoorOptions{Policy: cfg, Relay: relay, Messenger: msg})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); _ = door.Run(ctx) }()
	door.rang() // a visitor: commands count for door.window
	return door, relay, func() {
		cancel()
		<-done
		if relay.Energised() {
			t.Error("relay energised after Run returned")
		}
	}
}

func joined(m *fakeMessenger) string {
	texts, _ := m.snapshot()
	return strings.Join(texts, "\n")
}

// The audit notice says the door opened only when the relay did; a pulse
// whose energising write failed is announced as a failure, loudly, and not
// counted as an opening.
func TestDoorNoticeOnlyAfterTheRelayOpened(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pin := gpiofake.NewFlakyPin("RELAY", pgpio.Low)
		msg := &fakeMessenger{}
		door, _, stop := startDoor(t, pin, msg)
		defer stop()

		pin.Set(1, 0) // the energising write
		now := time.Now()
		door.Handle(serverReq("$a", alice, now, now), now)
		time.Sleep(5 * time.Second)
		synctest.Wait()
		texts := joined(msg)
		if strings.Contains(texts, "Door opened") {
			t.Fatalf("notice claims the door opened though the relay write failed:\n%s", texts)
		}
		if !strings.Contains(texts, "|true|⚠️ Door NOT opened for @alice:hs.test") {
			t.Errorf("no loud failure notice:\n%s", texts)
		}
		if st := door.Status(); st.Opens != 0 || st.RelayFailures != 1 || st.LastOpen != nil || st.LastOn != nil {
			t.Errorf("status after a failed pulse: %+v", st)
		}

		// The relay works again: the next command opens and says so.
		time.Sleep(time.Minute)
		now = time.Now()
		door.Handle(serverReq("$b", alice, now, now), now)
		time.Sleep(5 * time.Second)
		synctest.Wait()
		if texts := joined(msg); !strings.Contains(texts, "|false|🔓 Door opened by @alice:hs.test") {
			t.Errorf("no audit notice after a good pulse:\n%s", texts)
		}
		if st := door.Status(); st.Opens != 1 || st.RelayFailures != 1 {
			t.Errorf("status after a good pulse: %+v", st)
		}
	})
}

// A relay that cannot be switched off after a pulse is announced loudly;
// the door keeps trying to release it, refuses to pulse meanwhile (a
// command queued now must not open the door whenever the relay recovers),
// and says when it is released.
func TestDoorKeepsReleasingAStuckRelay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pin := gpiofake.NewFlakyPin("RELAY", pgpio.Low)
		msg := &fakeMessenger{}
		door, relay, stop := startDoor(t, pin, msg)
		defer stop()

		now := time.Now()
		door.Handle(serverReq("$a", alice, now, now), now)
		synctest.Wait()
		if !relay.Energised() {
			t.Fatal("relay not energised")
		}
		pin.Set(-1, 0) // the driver dies mid-pulse
		time.Sleep(5 * time.Second)
		synctest.Wait()
		texts := joined(msg)
		if strings.Contains(texts, "Door opened") || !strings.Contains(texts, "|true|⚠️ The door relay could not be switched off") {
			t.Fatalf("notices after a failed release:\n%s", texts)
		}
		if !relay.Energised() || !door.Status().Energised || door.Status().RelayFailures != 1 {
			t.Fatalf("stuck relay reported off: %+v", door.Status())
		}

		// A command while stuck is refused, and stays refused.
		now = time.Now()
		door.Handle(serverReq("$b", alice, now, now), now)
		time.Sleep(5 * time.Second)
		synctest.Wait()
		if texts := joined(msg); !strings.Contains(texts, "|true|⚠️ Door NOT opened for @alice:hs.test") {
			t.Fatalf("command during the fault not refused:\n%s", texts)
		}

		pin.Set(0, 0)
		time.Sleep(time.Minute)
		synctest.Wait()
		if relay.Energised() || pin.Read() != pgpio.Low {
			t.Fatal("door gave up releasing the relay")
		}
		if texts := joined(msg); !strings.Contains(texts, "Door relay released") {
			t.Errorf("no notice of the release:\n%s", texts)
		}
		if st := door.Status(); st.Opens != 1 {
			t.Errorf("the command of the fault opened the door later: %+v", st)
		}
	})
}

// errRelay is a relay whose pulses fail with err.
type errRelay struct{ err error }

func (r errRelay) Pulse(context.Context, time.Duration) error { return r.err }
func (errRelay) Halt() error                                  { return nil }
func (errRelay) Energised() bool                              { return false }

// Each kind of failure gets its own words; none is called an opening it
// was not.
func TestDoorPulseFailureNotices(t *testing.T) {
	for _, tc := range []struct {
		name   string
		err    error
		notice string
		opens  uint64
	}{
		{"not energised", gpio.ErrNotEnergised, "|true|⚠️ Door NOT opened for @alice:hs.test", 0},
		{"both", errors.Join(gpio.ErrNotEnergised, gpio.ErrStillEnergised), "|true|⚠️ The door relay could not be switched off", 0},
		{"unknown", errors.New("driver gone"), "|true|⚠️ The door relay failed (command from @alice:hs.test", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				msg := &fakeMessenger{}
				door, err := NewDoor(DoorOptions{Policy: testDoorConfig(), Relay: errRelay{tc.err}, Messenger: msg})
				if err != nil {
					t.Fatal(err)
				}
				ctx, cancel := context.WithCancel(t.Context())
				done := make(chan struct{})
				go func() { defer close(done); _ = door.Run(ctx) }()
				door.rang()
				now := time.Now()
				door.Handle(serverReq("$a", alice, now, now), now)
				time.Sleep(time.Second)
				synctest.Wait()
				texts := joined(msg)
				if strings.Contains(texts, "Door opened") || !strings.Contains(texts, tc.notice) {
					t.Errorf("notices:\n%s\nwant %q", texts, tc.notice)
				}
				if st := door.Status(); st.Opens != tc.opens || st.RelayFailures != 1 {
					t.Errorf("status %+v", st)
				}
				cancel()
				<-done
			})
		})
	}
}
