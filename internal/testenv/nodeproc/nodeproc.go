// Package nodeproc is the Go side of the browser harnesses' node drivers
// (internal/testenv/resident, internal/testenv/elementcall): it spawns
// `node driver.mjs`, reads the driver's stdout as JSON-line events, sends
// JSON-line commands on its stdin and matches their replies, keeps the event
// log that the harnesses' waits read, and stops the driver with a grace
// period. What the events and commands mean stays in each harness.
//
// The protocol, which driverlib.mjs implements on the node side:
//
//	stdout: {"event":NAME,"ts":MS,…} per line; {"event":"reply","id":N,
//	        "result":…} or {"event":"reply","id":N,"error":"…"} per command;
//	        "ready" when the page is up, "error" with "message" when it failed.
//	stdin:  {"cmd":NAME,"id":N,…} per line; EOF asks the driver to exit.
//	stderr: diagnostics, copied to Options.Log.
//
// The same directory holds driverlib.mjs and setup-lib.sh, the node and
// shell halves both harnesses share.
package nodeproc

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"
)

// closeGrace is how long Close waits after closing stdin before it sends
// SIGTERM, and again before SIGKILL.
const closeGrace = 10 * time.Second

// Options describe one driver process.
type Options struct {
	// Name is the harness's name, in front of its log lines ("resident").
	Name string
	Dir  string   // the harness's directory: driver.mjs and the working directory
	Args []string // flags after driver.mjs
	// Env is added to the process's environment. Credentials go here, not
	// in Args, so that they do not show in a process list.
	Env []string
	// Log receives the driver's stderr and every event not in Quiet. Nil
	// discards them.
	Log io.Writer
	// Quiet names events not copied to Log: the stats that come every
	// 250 ms would drown everything else.
	Quiet []string
	// Handle, if set, sees every event but replies on the reading
	// goroutine, before any wait does; it returns false to keep the event
	// out of the log the waits read. Either way waiters are woken
	// afterwards, so that Await sees what Handle recorded.
	Handle func(Event) (keep bool)
}

// Proc is one running driver. Its methods are safe for concurrent use.
type Proc struct {
	name   string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	log    io.Writer
	stderr *tailBuffer
	quiet  []string
	handle func(Event) bool

	writeMu sync.Mutex // serialises commands on stdin

	mu      sync.Mutex
	events  []Event        // every event Handle kept, in arrival order
	cursor  map[string]int // per wait key: where the next wait looks from
	changed chan struct{}  // closed and replaced on every event and on exit
	replies map[int]chan Event
	nextID  int

	exited  chan struct{} // closed when the driver has exited and been reaped
	exitErr error         // set before exited is closed

	closeOnce sync.Once
	closeErr  error
}

// Start spawns `node driver.mjs` in opts.Dir and waits until the driver
// says "ready", which it returns. An "error" event before it, the driver's
// exit or the end of ctx fail the start; the driver is then stopped and
// the error carries the tail of its stderr. ctx bounds only the start.
func Start(ctx context.Context, opts Options) (*Proc, Event, error) {
	node, err := exec.LookPath("node")
	if err != nil {
		return nil, Event{}, fmt.Errorf("find node: %w", err)
	}
	// The script's path must not depend on the working directory the
	// process gets.
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, Event{}, fmt.Errorf("driver directory: %w", err)
	}
	log := opts.Log
	if log == nil {
		log = io.Discard
	}
	p := &Proc{
		name:    opts.Name,
		log:     &syncWriter{w: log},
		stderr:  &tailBuffer{max: 8 << 10},
		quiet:   opts.Quiet,
		handle:  opts.Handle,
		cursor:  make(map[string]int),
		changed: make(chan struct{}),
		replies: make(map[int]chan Event),
		exited:  make(chan struct{}),
	}
	p.cmd = exec.Command(node, append([]string{filepath.Join(dir, "driver.mjs")}, opts.Args...)...)
	p.cmd.Dir = dir
	p.cmd.Env = append(os.Environ(), opts.Env...)
	p.cmd.Stderr = io.MultiWriter(p.log, p.stderr)
	// Its own process group: a terminal's Ctrl-C reaches the test binary
	// only, which then closes the driver's stdin; the driver closes
	// Chromium.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		return nil, Event{}, fmt.Errorf("pipe driver stdin: %w", err)
	}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		return nil, Event{}, fmt.Errorf("pipe driver stdout: %w", err)
	}
	if err := p.cmd.Start(); err != nil {
		return nil, Event{}, fmt.Errorf("start driver: %w", err)
	}
	go p.read(stdout)

	ready, err := p.waitReady(ctx)
	if err != nil {
		_ = p.Close()
		return nil, Event{}, fmt.Errorf("%w\n%s", err, p.stderr.String())
	}
	return p, ready, nil
}

// waitReady waits for "ready", failing early on an "error" event (a failed
// login, say) or the driver's exit.
func (p *Proc) waitReady(ctx context.Context) (Event, error) {
	ev, err := p.Wait(ctx, "", func(ev Event) bool { return ev.Name == "ready" || ev.Name == "error" })
	if err != nil {
		return Event{}, fmt.Errorf("wait for ready: %w", err)
	}
	if ev.Name == "error" {
		return Event{}, errors.New(ev.Str("message"))
	}
	return ev, nil
}

// read owns the driver's stdout: it records events, hands replies to the
// commands waiting for them, and reaps the process at EOF.
func (p *Proc) read(stdout io.Reader) {
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		ev, err := ParseEvent(sc.Bytes())
		if err != nil {
			fmt.Fprintf(p.log, "%s: %v\n", p.name, err)
			continue
		}
		if ev.Name == "reply" {
			p.mu.Lock()
			if ch, ok := p.replies[int(ev.Num("id"))]; ok {
				ch <- ev // buffered, one reply per id
				delete(p.replies, int(ev.Num("id")))
			}
			p.mu.Unlock()
			continue
		}
		if !slices.Contains(p.quiet, ev.Name) {
			fmt.Fprintf(p.log, "%s event: %s\n", p.name, ev.Raw)
		}
		keep := p.handle == nil || p.handle(ev)
		p.mu.Lock()
		if keep {
			p.events = append(p.events, ev)
		}
		p.broadcastLocked()
		p.mu.Unlock()
	}
	// Drain whatever is left so the driver never blocks on a full pipe.
	_, _ = io.Copy(io.Discard, stdout)
	err := p.cmd.Wait()
	p.mu.Lock()
	p.exitErr = err
	close(p.exited)
	p.broadcastLocked()
	p.mu.Unlock()
}

func (p *Proc) broadcastLocked() {
	close(p.changed)
	p.changed = make(chan struct{})
}

func (p *Proc) isExited() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// exitError waits for the driver's exit and returns ErrExited with its
// exit status.
func (p *Proc) exitError() error {
	<-p.exited
	if p.exitErr != nil {
		return fmt.Errorf("%w: %v", ErrExited, p.exitErr)
	}
	return ErrExited
}

// Wait returns the first kept event that match accepts. With a key it
// looks from after the event it returned last for that key, so that
// successive waits with one key see successive events; without, from the
// first event. It fails with the context's cause, or ErrExited once the
// driver has exited and no event matches.
func (p *Proc) Wait(ctx context.Context, key string, match func(Event) bool) (Event, error) {
	for {
		p.mu.Lock()
		start := 0
		if key != "" {
			start = p.cursor[key]
		}
		for i := start; i < len(p.events); i++ {
			if match(p.events[i]) {
				if key != "" {
					p.cursor[key] = i + 1
				}
				ev := p.events[i]
				p.mu.Unlock()
				return ev, nil
			}
		}
		if key != "" {
			p.cursor[key] = len(p.events)
		}
		changed := p.changed
		p.mu.Unlock()
		if p.isExited() {
			return Event{}, p.exitError()
		}
		select {
		case <-ctx.Done():
			return Event{}, context.Cause(ctx)
		case <-changed:
		}
	}
}

// WaitFor returns the next event called name: the first one after the
// event of that name WaitFor returned last, whether it already came or is
// still to come. Events of other names do not affect it.
func (p *Proc) WaitFor(ctx context.Context, name string) (Event, error) {
	ev, err := p.Wait(ctx, "name:"+name, func(ev Event) bool { return ev.Name == name })
	if err != nil {
		return Event{}, fmt.Errorf("wait for %s: %w", name, err)
	}
	return ev, nil
}

// Await returns once cond, called after every event (kept or not) and
// once at first, reports true. cond reads what Options.Handle recorded,
// under the harness's own lock. It fails like Wait.
func (p *Proc) Await(ctx context.Context, cond func() bool) error {
	for {
		// Take the channel before asking cond, so that an event between
		// the two still wakes this wait.
		p.mu.Lock()
		changed := p.changed
		p.mu.Unlock()
		if cond() {
			return nil
		}
		if p.isExited() {
			return p.exitError()
		}
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-changed:
		}
	}
}

// Events returns a copy of every kept event so far.
func (p *Proc) Events() []Event {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Event(nil), p.events...)
}

// Do sends msg (which must hold "cmd") as one command, with an "id" of its
// own, and waits for its reply. A reply with "error" comes back with that
// error; the reply's "result" holds what the page's method returned.
func (p *Proc) Do(ctx context.Context, msg map[string]any) (Event, error) {
	ch := make(chan Event, 1)
	p.mu.Lock()
	p.nextID++
	id := p.nextID
	p.replies[id] = ch
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.replies, id)
		p.mu.Unlock()
	}()
	line, err := json.Marshal(withID(msg, id))
	if err != nil {
		return Event{}, fmt.Errorf("encode command: %w", err)
	}
	p.writeMu.Lock()
	_, err = p.stdin.Write(append(line, '\n'))
	p.writeMu.Unlock()
	if err != nil {
		return Event{}, fmt.Errorf("send command: %w", err)
	}
	select {
	case ev := <-ch:
		if msg := ev.Str("error"); msg != "" {
			return ev, errors.New(msg)
		}
		return ev, nil
	case <-p.exited:
		return Event{}, p.exitError()
	case <-ctx.Done():
		return Event{}, context.Cause(ctx)
	}
}

// withID copies msg with "id" set, leaving the caller's map alone.
func withID(msg map[string]any, id int) map[string]any {
	out := make(map[string]any, len(msg)+1)
	for k, v := range msg {
		out[k] = v
	}
	out["id"] = id
	return out
}

// Close stops the driver: it closes its stdin (the driver then closes
// Chromium and exits), sends SIGTERM to the driver's PID if it has not
// exited after a grace period, and SIGKILL after another. It returns the
// driver's exit error, if any.
func (p *Proc) Close() error {
	p.closeOnce.Do(func() {
		p.writeMu.Lock()
		_ = p.stdin.Close()
		p.writeMu.Unlock()
		pid := p.cmd.Process.Pid
		for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
			if p.waitExit(closeGrace) {
				break
			}
			fmt.Fprintf(p.log, "%s: driver %d still running, sending %v\n", p.name, pid, sig)
			_ = syscall.Kill(pid, sig)
		}
		<-p.exited
		p.closeErr = p.exitErr
	})
	return p.closeErr
}

// waitExit reports whether the driver exits within d.
func (p *Proc) waitExit(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-p.exited:
		return true
	case <-t.C:
		return false
	}
}
