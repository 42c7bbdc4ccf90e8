package ring

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/doorbell/intercom/callengine"
	"github.com/doorbell/intercom/internal/runloop"
)

// Line is one path as the coordinator drives it. callengine.Engine is the
// direct path's Line; the household and MatrixRTC runners are the others.
type Line interface {
	// Ring starts ringing the residents on this path. It returns once
	// the path has taken the request (it may show ringing a little
	// later); callengine.ErrBusy if the path is busy on its own.
	Ring(ctx context.Context, residents []callengine.Resident) error
	// Withdraw: another path took the ring. Stop ringing; a call that is
	// already connected stays. It never blocks.
	Withdraw()
	// Hangup ends the path's calls and rings. It never blocks.
	Hangup()
	// Status is the path's status as the ring sees it.
	Status() callengine.Status
	// Subscribe delivers the latest status after every change (a slow
	// reader misses intermediate ones, never the last); cancel ends it.
	Subscribe() (<-chan callengine.Status, func())
}

// PathLine pairs a path with its line.
type PathLine struct {
	Path Path
	Line Line
}

// Config is a coordinator's paths, rung in this order.
type Config struct {
	Paths  []PathLine
	Logger *slog.Logger
	// AfterFunc schedules the machine's timers; time.AfterFunc by default
	// (tests run under testing/synctest, whose clock it follows).
	AfterFunc runloop.AfterFunc
	// Rings reports whether a press rings user on path (residents may
	// ask to be rung only one way: an Element X user gets no classic
	// call, which it shows as "Unsupported call"). It is asked at every
	// press, so a reload takes effect at the next one. nil: every
	// resident on every path.
	Rings func(p Path, user callengine.UserID) bool
}

// Coordinator runs the Machine on one goroutine (Run) against real lines.
// It is what the device rings through: device.Caller.
type Coordinator struct {
	cfg   Config
	log   *slog.Logger
	lines map[Path]Line

	inbox   runloop.Queue[any] // presses, path changes, timers
	stopped chan struct{}
	status  *runloop.Latest[callengine.Status]
	beat    runloop.Heartbeat // Run went round (the watchdog reads it)
}

// Heartbeat is when Run last went round: at least every
// runloop.HeartbeatEvery while it runs, unless a step is stuck.
func (c *Coordinator) Heartbeat() time.Time { return c.beat.Last() }

type pressRequest struct {
	residents []callengine.Resident
	reply     chan error
}

// NewCoordinator returns a coordinator; nothing runs until Run.
func NewCoordinator(cfg Config) *Coordinator {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.AfterFunc == nil {
		cfg.AfterFunc = runloop.SystemClock
	}
	c := &Coordinator{cfg: cfg, log: cfg.Logger, lines: map[Path]Line{}, stopped: make(chan struct{}),
		status: runloop.NewLatest(callengine.Status{Phase: callengine.PhaseIdle, Calls: []callengine.CallStatus{}})}
	for _, pl := range cfg.Paths {
		c.lines[pl.Path] = pl.Line
	}
	c.beat.Beat() // alive from the start, so a watchdog probe before Run passes
	return c
}

func (c *Coordinator) push(it any) { c.inbox.Push(it) }

// Ring rings every path (a press). It returns nil once at least one path
// rings, callengine.ErrBusy while a ring or call is under way.
func (c *Coordinator) Ring(ctx context.Context, residents []callengine.Resident) error {
	reply := make(chan error, 1)
	c.push(pressRequest{residents: residents, reply: reply})
	select {
	case err := <-reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-c.stopped:
		return callengine.ErrStopped
	}
}

// Hangup ends every path's calls and rings.
func (c *Coordinator) Hangup() {
	for _, pl := range c.cfg.Paths {
		pl.Line.Hangup()
	}
}

// Status is the merged status.
func (c *Coordinator) Status() callengine.Status { return c.status.Get() }

// Subscribe delivers the merged status after every change; a slow reader
// misses intermediate ones, never the last.
func (c *Coordinator) Subscribe() (<-chan callengine.Status, func()) { return c.status.Subscribe() }

// Run follows every line and answers presses until ctx ends. It owns the
// machine and waits for the goroutines it starts.
func (c *Coordinator) Run(ctx context.Context) error {
	defer close(c.stopped)
	paths := make([]Path, len(c.cfg.Paths))
	for i, pl := range c.cfg.Paths {
		paths[i] = pl.Path
	}
	m := New(paths...)
	var wg sync.WaitGroup
	defer wg.Wait()
	fctx, stopFollow := context.WithCancel(ctx)
	defer stopFollow()
	timers := runloop.NewTimers[string](c.cfg.AfterFunc)
	defer timers.StopAll()
	for _, pl := range c.cfg.Paths {
		updates, cancel := pl.Line.Subscribe()
		c.push(PathChanged{Path: pl.Path, Status: pl.Line.Status()})
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer cancel()
			for {
				select {
				case <-fctx.Done():
					return
				case st := <-updates:
					c.push(PathChanged{Path: pl.Path, Status: st})
				}
			}
		}()
	}
	tick := time.NewTicker(runloop.HeartbeatEvery)
	defer tick.Stop()
	for {
		c.beat.Beat()
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			continue
		case <-c.inbox.Wait():
		}
		for _, it := range c.inbox.Take() {
			var (
				ev    Event
				press *pressRequest
			)
			switch x := it.(type) {
			case pressRequest:
				ev, press = Pressed{}, &x
			case Event:
				ev = x
			}
			// Effects that need an outcome (RingPath) are carried out
			// here and fed back before the next input.
			queue := []Event{ev}
			for len(queue) > 0 {
				e := queue[0]
				queue = queue[1:]
				for _, eff := range m.Step(time.Now(), e) {
					switch x := eff.(type) {
					case RingPath:
						var err error
						if press != nil {
							err = c.ringPath(ctx, x.Path, press.residents)
						}
						switch {
						case errors.Is(err, errNobodyOnPath):
							c.log.Info("path not rung: no resident is rung this way", "path", x.Path)
						case err != nil:
							c.log.Warn("path did not ring", "path", x.Path, "err", err)
						}
						queue = append(queue, RingResult{Path: x.Path, Err: err})
					case Withdraw:
						c.log.Info("ring withdrawn: answered on another path", "path", x.Path, "answered_on", m.Winner())
						c.lines[x.Path].Withdraw()
					case Answered:
						c.log.Info("ring answered", "path", x.Path)
					case StartTimer:
						ring := x.Ring
						timers.Start("grace", x.After, func() { c.push(TimerFired{Ring: ring}) })
					case PressDone:
						if press != nil {
							press.reply <- x.Err
						}
					}
				}
			}
			c.status.Publish(m.Status())
		}
	}
}

// errNobodyOnPath: every resident of the press asked not to be rung on
// the path. Like a path without rooms, it does not stop the others.
var errNobodyOnPath = fmt.Errorf("%w rung on this path", callengine.ErrNoResidents)

// ringPath rings path with the residents who are rung that way.
func (c *Coordinator) ringPath(ctx context.Context, path Path, residents []callengine.Resident) error {
	if c.cfg.Rings != nil && len(residents) > 0 {
		who := make([]callengine.Resident, 0, len(residents))
		for _, r := range residents {
			if c.cfg.Rings(path, r.User) {
				who = append(who, r)
			}
		}
		if len(who) == 0 {
			return errNobodyOnPath
		}
		residents = who
	}
	return c.lines[path].Ring(ctx, residents)
}
