package host

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Relay serves launch requests from guest interpreters. One Relay may serve several
// listeners at once (kernel vsock, the userspace backend, a Unix socket); MaxSessions
// bounds them together.
type Relay struct {
	cfg    Config
	reaper *reaper
	slots  chan struct{}
	nextID atomic.Uint64

	subOnce sync.Once
	subErr  error

	sessions, launched, refused, errs, bytesIn, bytesOut atomic.Uint64
	active                                               atomic.Int64
}

// Stats are the relay's counters since NewRelay.
type Stats struct {
	Sessions uint64 // connections accepted
	Active   int64  // connections being served now
	Launched uint64 // host programs started
	Refused  uint64 // requests refused: authentication, policy, malformed or oversize requests
	Errors   uint64 // sessions that failed after authentication (start failures, lost connections, protocol errors)
	BytesIn  uint64 // stdin bytes delivered to host programs
	BytesOut uint64 // stdout and stderr bytes sent to guests
	Orphans  uint64 // orphaned descendants reaped (Config.Subreaper)
}

// NewRelay checks cfg and returns a relay.
func NewRelay(cfg Config) (*Relay, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	rp := newReaper()
	rp.procs = c.Procs
	return &Relay{cfg: c, reaper: rp, slots: make(chan struct{}, c.MaxSessions)}, nil
}

// Stats returns a snapshot of the counters.
func (r *Relay) Stats() Stats {
	r.reaper.mu.Lock()
	orphans := r.reaper.orphans
	r.reaper.mu.Unlock()
	return Stats{
		Sessions: r.sessions.Load(),
		Active:   r.active.Load(),
		Launched: r.launched.Load(),
		Refused:  r.refused.Load(),
		Errors:   r.errs.Load(),
		BytesIn:  r.bytesIn.Load(),
		BytesOut: r.bytesOut.Load(),
		Orphans:  uint64(orphans),
	}
}

// Serve accepts connections on l until ctx ends or l fails, then drains: it stops
// accepting, lets the running sessions finish for up to Config.DrainTimeout, then kills
// their process groups. It closes l. It returns nil after a drain caused by ctx, or the
// listener's error.
func (r *Relay) Serve(ctx context.Context, l net.Listener) error {
	if r.cfg.Subreaper {
		r.subOnce.Do(func() { r.subErr = r.reaper.becomeSubreaper(nil) })
		if r.subErr != nil {
			return fmt.Errorf("host: become child subreaper: %w", r.subErr)
		}
	}
	// Sessions get their own context: ctx ending starts the drain, and only the drain's
	// deadline cancels them.
	sctx, kill := context.WithCancel(context.WithoutCancel(ctx))
	defer kill()
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()

	var wg sync.WaitGroup
	var serveErr error
	backoff := 5 * time.Millisecond
	for {
		select {
		case r.slots <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		conn, err := l.Accept()
		if err != nil {
			<-r.slots
			if ctx.Err() != nil {
				break
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporary(err) {
				r.cfg.Logger.Warn("relay: accept failed; retrying", "err", err)
				time.Sleep(backoff)
				backoff = min(2*backoff, time.Second)
				continue
			}
			serveErr = fmt.Errorf("host: accept: %w", err)
			break
		}
		backoff = 5 * time.Millisecond
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-r.slots }()
			r.serveConn(sctx, conn)
		}()
	}
	l.Close()

	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	default:
		r.cfg.Logger.Info("relay: draining", "active", r.active.Load(), "grace", r.cfg.DrainTimeout)
		t := time.NewTimer(r.cfg.DrainTimeout)
		select {
		case <-done:
			t.Stop()
		case <-t.C:
			r.cfg.Logger.Warn("relay: drain deadline reached; killing the remaining host programs", "active", r.active.Load())
			kill()
			<-done
		}
	}
	return serveErr
}

// isTemporary reports accept errors worth retrying (out of file descriptors, aborted
// connections).
func isTemporary(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}
