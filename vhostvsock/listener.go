package vhostvsock

import (
	"net"
	"sync"
)

// Listener accepts guest connections to one host port. It implements net.Listener.
type Listener struct {
	d    *Device
	addr *Addr
	ch   chan *Conn // accept backlog
	done chan struct{}
	once sync.Once
}

var _ net.Listener = &Listener{}

// Accept waits for the next guest connection.
func (l *Listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, &net.OpError{Op: "accept", Net: "vsock", Addr: l.addr, Err: net.ErrClosed}
	}
}

// Close stops listening; connections not yet accepted are reset.
func (l *Listener) Close() error {
	first := false
	l.once.Do(func() { first = true })
	if !first {
		return &net.OpError{Op: "close", Net: "vsock", Addr: l.addr, Err: net.ErrClosed}
	}
	d := l.d
	d.mu.Lock()
	if d.listeners[l.addr.Port] == l {
		delete(d.listeners, l.addr.Port)
	}
	close(l.done)
	for {
		select {
		case c := <-l.ch:
			c.closed = true
			close(c.done)
			d.abortLocked(c, true)
			continue
		default:
		}
		break
	}
	d.mu.Unlock()
	d.wake()
	return nil
}

// Addr returns the listening address (CID 2 and the port).
func (l *Listener) Addr() net.Addr { return l.addr }
