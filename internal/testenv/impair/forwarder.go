package impair

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"
)

// Direction names a direction of the forwarded flow.
type Direction int

const (
	// Up is client → upstream (what the client sends).
	Up Direction = iota
	// Down is upstream → client (what the client receives).
	Down
)

func (d Direction) String() string {
	if d == Up {
		return "up"
	}
	return "down"
}

// Counters are one direction's packets since the forwarder started.
// Received = Lost + Dropped + Queued + Forwarded + WriteErrors at any
// quiet moment.
type Counters struct {
	Received, ReceivedBytes   uint64
	Lost                      uint64 // random loss (Link.Loss)
	Dropped                   uint64 // tail drop at the rate cap's queue
	Queued                    int    // waiting for their delivery time now
	Forwarded, ForwardedBytes uint64
	WriteErrors               uint64
	// Late is the sum of how late packets were written after their
	// scheduled time (timer and scheduling lag), and MaxLate the worst.
	Late, MaxLate time.Duration
}

// Stats are both directions' counters and the clients seen.
type Stats struct {
	Up, Down Counters
	Clients  int // distinct client addresses (each has its own upstream socket)
}

// Forwarder forwards UDP between clients and one upstream address, each
// direction through its own Link. Every client address gets its own
// socket towards the upstream (as a NAT would), so a TURN server sees one
// 5-tuple per client allocation; both directions' impairment is shared by
// all clients, like one access link.
//
// Goroutines: one reads the listening socket, one reads each client's
// upstream socket, and one per direction holds the packets until their
// delivery time and writes them. Run owns them all and returns once they
// have stopped.
type Forwarder struct {
	conn     *net.UDPConn
	upstream *net.UDPAddr
	dirs     [2]*direction

	mu       sync.Mutex
	sessions map[netip.AddrPort]*net.UDPConn
	running  bool
	wg       sync.WaitGroup
}

// ErrRunning is returned by a second Run.
var ErrRunning = errors.New("impair: forwarder already running")

// Listen opens the forwarder's socket on listen (e.g. "127.0.0.1:0") for
// packets to upstream; up and down are the directions' links, seed makes
// their random draws repeatable. Nothing is forwarded until Run.
func Listen(listen, upstream string, up, down Link, seed uint64) (*Forwarder, error) {
	la, err := net.ResolveUDPAddr("udp4", listen)
	if err != nil {
		return nil, fmt.Errorf("impair: resolve %q: %w", listen, err)
	}
	ua, err := net.ResolveUDPAddr("udp4", upstream)
	if err != nil {
		return nil, fmt.Errorf("impair: resolve upstream %q: %w", upstream, err)
	}
	conn, err := net.ListenUDP("udp4", la)
	if err != nil {
		return nil, fmt.Errorf("impair: listen %q: %w", listen, err)
	}
	f := &Forwarder{conn: conn, upstream: ua, sessions: map[netip.AddrPort]*net.UDPConn{}}
	f.dirs[Up] = newDirection(up, seed)
	f.dirs[Down] = newDirection(down, seed+1)
	return f, nil
}

// Addr is the address clients send to.
func (f *Forwarder) Addr() *net.UDPAddr { return f.conn.LocalAddr().(*net.UDPAddr) }

// SetLink replaces one direction's link for packets arriving from now on
// (packets already scheduled keep their times). Its random source is
// reseeded with seed, so a scenario is repeatable whatever ran before.
func (f *Forwarder) SetLink(d Direction, l Link, seed uint64) {
	f.dirs[d].setLink(l, seed)
}

// Stats returns the counters.
func (f *Forwarder) Stats() Stats {
	f.mu.Lock()
	n := len(f.sessions)
	f.mu.Unlock()
	return Stats{Up: f.dirs[Up].counters(), Down: f.dirs[Down].counters(), Clients: n}
}

// Run forwards until ctx ends, then closes every socket and returns once
// every goroutine it started has stopped. Packets still waiting for their
// delivery time are discarded.
func (f *Forwarder) Run(ctx context.Context) error {
	f.mu.Lock()
	if f.running {
		f.mu.Unlock()
		return ErrRunning
	}
	f.running = true
	f.mu.Unlock()

	f.wg.Add(3)
	go func() { defer f.wg.Done(); f.dirs[Up].run(ctx) }()
	go func() { defer f.wg.Done(); f.dirs[Down].run(ctx) }()
	go func() { defer f.wg.Done(); f.readClients(ctx) }()
	<-ctx.Done()
	// Closing the sockets ends the readers' blocked reads.
	f.mu.Lock()
	_ = f.conn.Close()
	for _, c := range f.sessions {
		_ = c.Close()
	}
	f.mu.Unlock()
	f.wg.Wait()
	return nil
}

// readClients reads what clients send and hands it to the up direction,
// opening an upstream socket for each new client.
func (f *Forwarder) readClients(ctx context.Context) {
	buf := make([]byte, 65536)
	for {
		n, from, err := f.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return // closed by Run
		}
		up, err := f.session(ctx, from)
		if err != nil {
			continue // counted nowhere: only while shutting down
		}
		f.dirs[Up].admit(ctx, buf[:n], up, netip.AddrPort{})
	}
}

// session returns the upstream socket of a client, creating it and its
// reader on first use.
func (f *Forwarder) session(ctx context.Context, client netip.AddrPort) (*net.UDPConn, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c, ok := f.sessions[client]; ok {
		return c, nil
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	c, err := net.DialUDP("udp4", nil, f.upstream)
	if err != nil {
		return nil, fmt.Errorf("impair: dial upstream: %w", err)
	}
	f.sessions[client] = c
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		buf := make([]byte, 65536)
		for {
			n, err := c.Read(buf)
			if err != nil {
				var op *net.OpError
				// A connected UDP socket reports an ICMP port unreachable
				// (upstream not listening yet) as a read error: go on.
				if errors.As(err, &op) && !errors.Is(err, net.ErrClosed) && ctx.Err() == nil {
					continue
				}
				return
			}
			f.dirs[Down].admit(ctx, buf[:n], f.conn, client)
		}
	}()
	return c, nil
}

// packet is one datagram waiting for its delivery time.
type packet struct {
	at   time.Time
	seq  uint64 // arrival order, to keep equal times in order
	data []byte
	conn *net.UDPConn   // the socket to write it on
	to   netip.AddrPort // zero for a connected socket
}

type packetHeap []*packet

func (h packetHeap) Len() int { return len(h) }
func (h packetHeap) Less(i, j int) bool {
	if h[i].at.Equal(h[j].at) {
		return h[i].seq < h[j].seq
	}
	return h[i].at.Before(h[j].at)
}
func (h packetHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *packetHeap) Push(x any)   { *h = append(*h, x.(*packet)) }
func (h *packetHeap) Pop() any {
	old := *h
	p := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return p
}

// direction is one direction's link, its counters and the queue of
// packets its goroutine delivers.
type direction struct {
	in chan *packet

	mu  sync.Mutex
	sh  *shaper
	seq uint64
	c   Counters
}

func newDirection(l Link, seed uint64) *direction {
	return &direction{in: make(chan *packet, 1024), sh: newShaper(l, seed)}
}

func (d *direction) setLink(l Link, seed uint64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	// Keep FIFO order with what is already scheduled.
	last := d.sh.lastOut
	d.sh = newShaper(l, seed)
	d.sh.lastOut = last
}

func (d *direction) counters() Counters {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.c
}

// admit runs a packet through the link (on the reader's goroutine: the
// decision needs only the arrival time) and queues it for delivery.
func (d *direction) admit(ctx context.Context, data []byte, conn *net.UDPConn, to netip.AddrPort) {
	now := time.Now()
	d.mu.Lock()
	d.c.Received++
	d.c.ReceivedBytes += uint64(len(data))
	at, v := d.sh.admit(now, len(data))
	switch v {
	case lost:
		d.c.Lost++
	case tailDrop:
		d.c.Dropped++
	default:
		d.c.Queued++
		d.seq++
	}
	seq := d.seq
	d.mu.Unlock()
	if v != pass {
		return
	}
	p := &packet{at: at, seq: seq, data: append([]byte(nil), data...), conn: conn, to: to}
	select {
	case d.in <- p:
	case <-ctx.Done():
	}
}

// run delivers queued packets at their times until ctx ends.
func (d *direction) run(ctx context.Context) {
	var q packetHeap
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		if len(q) > 0 {
			timer.Reset(time.Until(q[0].at))
		}
		select {
		case <-ctx.Done():
			return
		case p := <-d.in:
			heap.Push(&q, p)
		case <-timer.C:
		}
		now := time.Now()
		for len(q) > 0 && !q[0].at.After(now) {
			d.write(heap.Pop(&q).(*packet), now)
		}
	}
}

func (d *direction) write(p *packet, now time.Time) {
	var err error
	if p.to.IsValid() {
		_, err = p.conn.WriteToUDPAddrPort(p.data, p.to)
	} else {
		_, err = p.conn.Write(p.data)
	}
	late := now.Sub(p.at)
	d.mu.Lock()
	defer d.mu.Unlock()
	d.c.Queued--
	if err != nil {
		d.c.WriteErrors++
		return
	}
	d.c.Forwarded++
	d.c.ForwardedBytes += uint64(len(p.data))
	d.c.Late += late
	d.c.MaxLate = max(d.c.MaxLate, late)
}
