package vm

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/crypto/ssh"
)

// The hostagent keeps one SSH connection to the guest's sshd: dialled once the guest
// answers (waitReady), redialled when it breaks (guestClient), replaced on request
// (reconnect), counted per proxied channel (acquireGuest) and kept alive (keepalive).

// qemuExited is closed when QEMU has exited (never, for an agent without QEMU: tests).
func (a *agent) qemuExited() <-chan struct{} {
	if a.qemu == nil {
		return nil
	}
	return a.qemu.done
}

// defaultConsoleFallback is how often waitReady dials anyway while it waits for the guest's
// console to say that sshd listens: both of sshd's lines (IPv4 and IPv6) garbled by
// kernel messages interleaved on the console would otherwise leave only the boot
// timeout. Rare, so seldom: each such dial before sshd listens is one more abandoned
// connection (3 s left 2-3 in a 40 s boot at load 19).
const defaultConsoleFallback = 10 * time.Second

// waitReady waits until the guest's SSH server answers and runs `true`, QEMU exits,
// or the boot timeout passes. A guest that says on its console when sshd listens
// (Instance.ConsoleReady) is dialled when it says so; others are redialled every 50 ms.
// Dialling early is not free: slirp's forward accepts before sshd listens, and each
// connection given up on is completed by slirp once sshd listens, an sshd fork
// competing with the real handshake for the CPU.
func (a *agent) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, time.Duration(a.in.BootTimeout))
	defer cancel()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(a.in.SSHPort))
	var listening <-chan struct{} // nil: dial every 50 ms
	if a.in.ConsoleReady != "" {
		var err error
		listening, err = consoleSays(ctx, filepath.Join(a.in.StateDir, FileConsoleLog), a.in.ConsoleReady)
		if err != nil {
			a.log.Warn("dialling the guest every 50 ms instead", "err", err)
		}
	}
	for dial := listening == nil; ; dial = true {
		if dial {
			c, err := dialReady(ctx, addr, a.keys.clientConfig())
			if err == nil {
				a.mu.Lock()
				a.guest = c
				a.mu.Unlock()
				go a.watchGuest(c)
				return nil
			}
			a.log.Debug("not ready yet", "err", err)
		}
		pause := 50 * time.Millisecond
		if listening != nil {
			pause = cmp.Or(a.consoleFallback, defaultConsoleFallback)
		}
		select {
		case <-listening:
			a.log.Debug("the guest's console says sshd listens")
			listening = nil // said once: redial at the usual pace if this dial fails
		case <-a.qemuExited():
			return a.bootError("QEMU exited before SSH was ready: " + qemuExitText(a.qemu.err))
		case err := <-a.vsockDone:
			// The backend also stops when QEMU exits; QEMU's exit is the better explanation.
			select {
			case <-a.qemuExited():
				return a.bootError("QEMU exited before SSH was ready: " + qemuExitText(a.qemu.err))
			case <-time.After(time.Second):
			}
			// The backend died before the guest came up; the VM could never use vsock.
			return a.bootError(fmt.Sprintf("the userspace vsock backend stopped during boot: %v", err))
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return a.bootError(fmt.Sprintf("SSH not ready after %v", time.Duration(a.in.BootTimeout)))
			}
			return ctx.Err()
		case <-time.After(pause):
		}
	}
}

// guestClient returns the kept guest SSH connection, redialling it if it broke.
func (a *agent) guestClient(ctx context.Context) (*ssh.Client, error) {
	select {
	case <-a.ready:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.guest != nil {
		return a.guest, nil
	}
	c, err := a.dialGuest(ctx)
	if err != nil {
		return nil, err
	}
	a.guest = c
	go a.watchGuest(c)
	return c, nil
}

// dialGuest opens a new connection to the guest's sshd (pinned to the VM's host key),
// retrying for up to 30s: right after sshd's SIGHUP, it is re-executing and refuses.
func (a *agent) dialGuest(ctx context.Context) (*ssh.Client, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		c, err := dialReady(ctx, net.JoinHostPort("127.0.0.1", strconv.Itoa(a.in.SSHPort)), a.keys.clientConfig())
		if err == nil {
			return c, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("vm: connecting to the guest: %w", err)
		case <-a.qemuExited():
			return nil, errors.New("vm: QEMU has exited")
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// acquireGuest is guestClient for a proxied channel: the connection counts the
// channel until release is called, so a reconnect does not close it under the channel.
func (a *agent) acquireGuest(ctx context.Context) (c *ssh.Client, release func(), err error) {
	for {
		c, err := a.guestClient(ctx)
		if err != nil {
			return nil, nil, err
		}
		a.mu.Lock()
		if a.guest != c { // replaced meanwhile: take the new one
			a.mu.Unlock()
			continue
		}
		if a.uses == nil {
			a.uses = map[*ssh.Client]int{}
		}
		a.uses[c]++
		a.mu.Unlock()
		return c, func() {
			a.mu.Lock()
			a.uses[c]--
			last := a.uses[c] == 0 && a.retired[c]
			if a.uses[c] == 0 {
				delete(a.uses, c)
				delete(a.retired, c)
			}
			a.mu.Unlock()
			if last {
				a.log.Info("closing the replaced guest SSH connection: its last session ended")
				c.Close()
			}
		}, nil
	}
}

// reconnect replaces the kept guest connection with a new one, so that new sessions
// get what sshd applies per connection (its config: SetEnv PATH after provisioning).
// Sessions open on the old connection keep running; it is closed when the last ends.
func (a *agent) reconnect(ctx context.Context) error {
	select {
	case <-a.ready:
	case <-ctx.Done():
		return ctx.Err()
	}
	a.reconnectMu.Lock()
	defer a.reconnectMu.Unlock()
	c, err := a.dialGuest(ctx)
	if err != nil {
		return err
	}
	a.mu.Lock()
	old := a.guest
	a.guest = c
	closeNow := old != nil && a.uses[old] == 0
	if old != nil && !closeNow {
		if a.retired == nil {
			a.retired = map[*ssh.Client]bool{}
		}
		a.retired[old] = true
	}
	n := a.uses[old]
	a.mu.Unlock()
	go a.watchGuest(c)
	a.log.Info("guest SSH connection replaced", "old_sessions", n)
	if closeNow {
		old.Close()
	}
	return nil
}

// watchGuest forgets the kept connection when it ends, so the next use redials.
func (a *agent) watchGuest(c *ssh.Client) {
	err := c.Wait()
	a.log.Warn("guest SSH connection ended", "err", err)
	a.mu.Lock()
	if a.guest == c {
		a.guest = nil
	}
	a.mu.Unlock()
}

// keepalive notices a dead guest connection (and keeps slirp's NAT entry warm).
func (a *agent) keepalive(ctx context.Context) {
	t := time.NewTicker(20 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			a.mu.Lock()
			if a.guest != nil {
				a.guest.Close()
			}
			for c := range a.retired {
				c.Close()
			}
			a.mu.Unlock()
			return
		case <-t.C:
		}
		a.mu.Lock()
		c := a.guest
		a.mu.Unlock()
		if c != nil {
			if _, _, err := c.SendRequest("keepalive@openssh.com", true, nil); err != nil {
				c.Close()
			}
		}
	}
}
