// Package qmp is a small client for the QEMU Machine Protocol: the greeting and
// capabilities negotiation, commands with typed results and errors, and
// asynchronous events.
//
// We wrote our own because digitalocean/go-qemu is not obtainable here, and lab needs
// only a handful of commands (query-status, query-kvm, system_powerdown, quit); the
// protocol is newline-free JSON objects on a stream, which encoding/json decodes as is.
package qmp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"time"
)

// Greeting is the server's first message.
type Greeting struct {
	QMP struct {
		Version struct {
			QEMU struct {
				Major int `json:"major"`
				Minor int `json:"minor"`
				Micro int `json:"micro"`
			} `json:"qemu"`
			Package string `json:"package"`
		} `json:"version"`
		Capabilities []string `json:"capabilities"`
	} `json:"QMP"`
}

// Event is an asynchronous notification (SHUTDOWN, STOP, RESUME, ...).
type Event struct {
	Name      string          `json:"event"`
	Data      json.RawMessage `json:"data,omitempty"`
	Timestamp struct {
		Seconds      int64 `json:"seconds"`
		Microseconds int64 `json:"microseconds"`
	} `json:"timestamp"`
}

// Time returns the event's timestamp.
func (e Event) Time() time.Time {
	return time.Unix(e.Timestamp.Seconds, e.Timestamp.Microseconds*1000)
}

// Error is an error reply from QEMU. Callers branch on Class (e.g. "CommandNotFound").
type Error struct {
	Class string `json:"class"`
	Desc  string `json:"desc"`
}

func (e *Error) Error() string { return "qmp: " + e.Class + ": " + e.Desc }

// ErrClosed is returned for commands that were pending or issued after the
// connection ended (QEMU exits right after answering "quit").
var ErrClosed = errors.New("qmp: connection closed")

// message is any server message; exactly one of its shapes is set.
type message struct {
	QMP    json.RawMessage `json:"QMP,omitempty"`
	Event  string          `json:"event,omitempty"`
	Return json.RawMessage `json:"return,omitempty"`
	Error  *Error          `json:"error,omitempty"`
	ID     json.RawMessage `json:"id,omitempty"`

	raw json.RawMessage // the whole message, to decode events fully
}

type reply struct {
	ret json.RawMessage
	err error
}

// Client is a QMP connection. Its methods are safe for concurrent use.
type Client struct {
	conn     net.Conn
	greeting Greeting
	events   chan Event

	wmu sync.Mutex // serialises writes

	mu      sync.Mutex
	nextID  uint64
	pending map[string]chan reply
	readErr error // set once the reader stops
	done    chan struct{}
}

// Dial connects to a QMP Unix socket and negotiates capabilities.
func Dial(ctx context.Context, socketPath string) (*Client, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", socketPath)
	if err != nil {
		return nil, fmt.Errorf("qmp: %w", err)
	}
	c, err := New(ctx, conn)
	if err != nil {
		conn.Close()
		return nil, err
	}
	return c, nil
}

// New runs the QMP handshake over conn (reads the greeting, sends qmp_capabilities)
// and returns a ready client that owns conn.
func New(ctx context.Context, conn net.Conn) (*Client, error) {
	dec := json.NewDecoder(conn)
	// The greeting must come promptly; bound it by ctx.
	stop := context.AfterFunc(ctx, func() { conn.SetReadDeadline(time.Unix(1, 0)) })
	var g Greeting
	err := dec.Decode(&g)
	if !stop() {
		return nil, fmt.Errorf("qmp: waiting for the greeting: %w", ctx.Err())
	}
	if err != nil {
		return nil, fmt.Errorf("qmp: reading the greeting: %w", err)
	}
	if g.QMP.Capabilities == nil && g.QMP.Version.QEMU.Major == 0 {
		return nil, errors.New("qmp: the peer did not send a QMP greeting")
	}
	c := &Client{
		conn:     conn,
		greeting: g,
		events:   make(chan Event, 64),
		pending:  map[string]chan reply{},
		done:     make(chan struct{}),
	}
	go c.read(dec)
	if err := c.Execute(ctx, "qmp_capabilities", nil, nil); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// Greeting returns the server's greeting (QEMU version, capabilities).
func (c *Client) Greeting() Greeting { return c.greeting }

// Events returns the event stream. It is buffered; when the buffer is full, new
// events are dropped rather than blocking command replies. It is closed when the
// connection ends.
func (c *Client) Events() <-chan Event { return c.events }

// Done is closed when the connection has ended (for example when QEMU exited).
func (c *Client) Done() <-chan struct{} { return c.done }

// Close closes the connection; pending commands fail with ErrClosed.
func (c *Client) Close() error {
	err := c.conn.Close()
	<-c.done
	return err
}

func (c *Client) read(dec *json.Decoder) {
	err := decodeMessages(dec, func(m *message) {
		switch {
		case m.Event != "":
			var ev Event
			if err := json.Unmarshal(m.raw, &ev); err == nil {
				select {
				case c.events <- ev:
				default:
				}
			}
		case m.Return != nil || m.Error != nil:
			id := string(m.ID)
			c.mu.Lock()
			ch := c.pending[id]
			delete(c.pending, id)
			c.mu.Unlock()
			if ch != nil {
				if m.Error != nil {
					ch <- reply{err: m.Error}
				} else {
					ch <- reply{ret: m.Return}
				}
			}
		}
	})
	c.mu.Lock()
	c.readErr = err
	for id, ch := range c.pending {
		ch <- reply{err: ErrClosed}
		delete(c.pending, id)
	}
	c.mu.Unlock()
	close(c.events)
	close(c.done)
}

// decodeMessages decodes server messages until the stream ends or holds something
// that is not a JSON object. It keeps the raw event for re-decoding.
func decodeMessages(dec *json.Decoder, handle func(*message)) error {
	for {
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			if errors.Is(err, io.EOF) {
				return ErrClosed
			}
			return fmt.Errorf("qmp: %w", err)
		}
		var m message
		if err := json.Unmarshal(raw, &m); err != nil {
			return fmt.Errorf("qmp: malformed message: %w", err)
		}
		m.raw = raw
		handle(&m)
	}
}

// Execute runs one command. args (may be nil) is marshalled as "arguments"; a
// successful "return" is unmarshalled into result unless result is nil. QEMU's error
// replies come back as *Error.
func (c *Client) Execute(ctx context.Context, command string, args, result any) error {
	c.mu.Lock()
	if c.readErr != nil {
		c.mu.Unlock()
		return ErrClosed
	}
	c.nextID++
	id := strconv.FormatUint(c.nextID, 10)
	ch := make(chan reply, 1)
	c.pending[pendingKey(id)] = ch
	c.mu.Unlock()

	req := struct {
		Execute   string `json:"execute"`
		Arguments any    `json:"arguments,omitempty"`
		ID        string `json:"id"`
	}{command, args, id}
	b, err := json.Marshal(req)
	if err != nil {
		c.forget(id)
		return fmt.Errorf("qmp: %s: %w", command, err)
	}
	c.wmu.Lock()
	if dl, ok := ctx.Deadline(); ok {
		c.conn.SetWriteDeadline(dl)
	}
	_, err = c.conn.Write(append(b, '\n'))
	c.conn.SetWriteDeadline(time.Time{})
	c.wmu.Unlock()
	if err != nil {
		c.forget(id)
		return fmt.Errorf("qmp: %s: %w", command, err)
	}
	select {
	case r := <-ch:
		if r.err != nil {
			if errors.Is(r.err, ErrClosed) {
				return fmt.Errorf("qmp: %s: %w", command, ErrClosed)
			}
			return r.err
		}
		if result != nil {
			if err := json.Unmarshal(r.ret, result); err != nil {
				return fmt.Errorf("qmp: %s: decoding the reply: %w", command, err)
			}
		}
		return nil
	case <-ctx.Done():
		c.forget(id)
		return fmt.Errorf("qmp: %s: %w", command, ctx.Err())
	}
}

// pendingKey is the id as it appears (raw JSON) in replies.
func pendingKey(id string) string { return `"` + id + `"` }

func (c *Client) forget(id string) {
	c.mu.Lock()
	delete(c.pending, pendingKey(id))
	c.mu.Unlock()
}

// Status is the reply of query-status.
type Status struct {
	Status  string `json:"status"` // "running", "paused", "shutdown", ...
	Running bool   `json:"running"`
}

// QueryStatus returns the VM's run state.
func (c *Client) QueryStatus(ctx context.Context) (Status, error) {
	var s Status
	err := c.Execute(ctx, "query-status", nil, &s)
	return s, err
}

// KVM is the reply of query-kvm.
type KVM struct {
	Enabled bool `json:"enabled"`
	Present bool `json:"present"`
}

// QueryKVM says whether KVM is in use (Enabled) and available (Present).
func (c *Client) QueryKVM(ctx context.Context) (KVM, error) {
	var k KVM
	err := c.Execute(ctx, "query-kvm", nil, &k)
	return k, err
}

// SystemPowerdown presses the ACPI power button; the guest decides what to do.
func (c *Client) SystemPowerdown(ctx context.Context) error {
	return c.Execute(ctx, "system_powerdown", nil, nil)
}

// Quit makes QEMU exit at once (no guest shutdown). The connection closes right
// after the reply, so ErrClosed instead of a reply also counts as success.
func (c *Client) Quit(ctx context.Context) error {
	err := c.Execute(ctx, "quit", nil, nil)
	if errors.Is(err, ErrClosed) {
		return nil
	}
	return err
}

// WaitEvent waits for the next event with the given name.
func (c *Client) WaitEvent(ctx context.Context, name string) (Event, error) {
	for {
		select {
		case ev, ok := <-c.events:
			if !ok {
				return Event{}, ErrClosed
			}
			if ev.Name == name {
				return ev, nil
			}
		case <-ctx.Done():
			return Event{}, fmt.Errorf("qmp: waiting for %s: %w", name, ctx.Err())
		}
	}
}
