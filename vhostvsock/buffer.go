package vhostvsock

import (
	"sync"
	"time"
)

// byteRing is a FIFO of bytes with a capacity limit. Its storage starts small and grows
// (by doubling) only as far as the data actually queued needs, so idle connections stay cheap.
type byteRing struct {
	buf  []byte
	size int // capacity limit
	r, n int
}

const minRing = 16 << 10

func (b *byteRing) free() int { return b.size - b.n }

func (b *byteRing) grow(need int) {
	c := max(len(b.buf), minRing)
	for c < need {
		c *= 2
	}
	c = min(c, b.size)
	if c <= len(b.buf) {
		return
	}
	nb := make([]byte, c)
	k := copy(nb, b.peek(b.n))
	copy(nb[k:], b.peek2())
	b.buf, b.r = nb, 0
}

// peek2 returns the wrapped-around second run of buffered bytes.
func (b *byteRing) peek2() []byte {
	if b.r+b.n <= len(b.buf) {
		return nil
	}
	return b.buf[:b.r+b.n-len(b.buf)]
}

func (b *byteRing) write(p []byte) int {
	if want := b.n + min(len(p), b.free()); want > len(b.buf) {
		b.grow(want)
	}
	total := 0
	for len(p) > 0 && b.n < len(b.buf) {
		w := (b.r + b.n) % len(b.buf)
		end := len(b.buf)
		if w < b.r {
			end = b.r
		}
		c := copy(b.buf[w:end], p)
		p = p[c:]
		b.n += c
		total += c
	}
	return total
}

// peek returns the first contiguous run of buffered bytes, at most max.
func (b *byteRing) peek(max int) []byte {
	if b.n == 0 {
		return nil
	}
	end := min(b.r+b.n, len(b.buf))
	s := b.buf[b.r:end]
	if len(s) > max {
		s = s[:max]
	}
	return s
}

func (b *byteRing) discard(n int) {
	if n == 0 {
		return
	}
	b.r = (b.r + n) % len(b.buf)
	b.n -= n
	if b.n == 0 {
		b.r = 0
	}
}

func (b *byteRing) read(p []byte) int {
	total := 0
	for len(p) > 0 && b.n > 0 {
		c := copy(p, b.peek(len(p)))
		b.discard(c)
		p = p[c:]
		total += c
	}
	return total
}

func (b *byteRing) release() { b.buf, b.r, b.n = nil, 0, 0 }

// deadline is a resettable deadline whose wait channel closes when it passes (the same
// pattern as net.Pipe).
type deadline struct {
	mu     sync.Mutex
	timer  *time.Timer
	cancel chan struct{}
}

func newDeadline() deadline { return deadline{cancel: make(chan struct{})} }

func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil && !d.timer.Stop() {
		<-d.cancel // the timer fired and closed cancel
	}
	d.timer = nil
	closed := isClosed(d.cancel)
	if t.IsZero() {
		if closed {
			d.cancel = make(chan struct{})
		}
		return
	}
	if dur := time.Until(t); dur > 0 {
		if closed {
			d.cancel = make(chan struct{})
		}
		cancel := d.cancel
		d.timer = time.AfterFunc(dur, func() { close(cancel) })
		return
	}
	if !closed {
		close(d.cancel)
	}
}

func (d *deadline) wait() chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cancel
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// signal wakes one waiter on c without blocking.
func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}
