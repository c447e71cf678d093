package host_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"lab/host"
	"lab/internal/labtest"
	"lab/wire"
)

// TestRelayIdleConnectionsDoNotStarve: 200 connections that never say hello, on a relay
// with 8 session slots and a hello deadline far beyond the test, do not keep 50 real
// launches waiting: every launch completes while idle connections are still pending, and
// the idle connections pushed out of the budget are told EAGAIN rather than left hanging.
func TestRelayIdleConnectionsDoNotStarve(t *testing.T) {
	ip := startInproc(t, func(c *host.Config) {
		c.MaxSessions = 8
		c.HelloTimeout = 10 * time.Minute
		c.HandshakeTimeout = 10 * time.Minute
	}, nil)
	const idle, launches = 200, 50
	var held []net.Conn
	for range idle {
		c, err := net.Dial("unix", ip.sock)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		held = append(held, c)
	}
	waitStats(t, ip.relay, "all idle connections accepted", func(st host.Stats) bool { return st.Sessions == idle })

	var wg sync.WaitGroup
	errs := make(chan string, launches)
	sem := make(chan struct{}, 10)
	for i := range launches {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			conn, err := net.Dial("unix", ip.sock)
			if err != nil {
				errs <- err.Error()
				return
			}
			// Generous: a launch stuck behind the idle connections would wait 10 minutes.
			conn.SetDeadline(time.Now().Add(time.Minute))
			res := guestRunConn(conn, testToken, launchOf("/mnt/host/bin/echoargs", fmt.Sprint(i)), nil)
			if res.err != nil || res.launch.Errno != 0 || res.exit == nil || res.exit.Status() != 0 {
				errs <- fmt.Sprintf("launch %d: %+v", i, res)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	st := ip.relay.Stats()
	if st.Pending == 0 || st.Launched != launches {
		t.Errorf("after the launches: %+v; want idle connections still pending and %d launched", st, launches)
	}
	// The oldest idle connection was pushed out of the budget: it has its answer.
	held[0].SetDeadline(time.Now().Add(30 * time.Second))
	buf := make([]byte, wire.MaxPayload)
	if m, err := wire.ReadMessage(held[0], buf); err != nil {
		t.Fatalf("evicted connection: %v", err)
	} else if _, ok := m.(*wire.Hello); !ok {
		t.Fatalf("evicted connection: first reply %T", m)
	}
	m, err := wire.ReadMessage(held[0], buf)
	want := &wire.LaunchResult{Errno: wire.EAGAIN, Message: "lab relay: too many connections are waiting to authenticate (host limit 64); try again"}
	if lr, ok := m.(*wire.LaunchResult); !ok || *lr != *want {
		t.Errorf("evicted connection: %+v %v, want %+v", m, err, want)
	}
}

// TestRelayConnectStorm: 500 clients that die right after connecting (some halfway through
// their hello) leave nothing behind, and the next launch works.
func TestRelayConnectStorm(t *testing.T) {
	ip := startInproc(t, func(c *host.Config) { c.MaxSessions = 8 }, nil)
	hello, _ := wire.AppendMessage(nil, wire.NewHello(testToken))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 50)
	for i := range 500 {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := net.Dial("unix", ip.sock)
			if err != nil {
				t.Error(err)
				return
			}
			if i%2 == 1 {
				c.Write(hello[:len(hello)/2])
			}
			c.Close()
		}()
	}
	wg.Wait()
	waitStats(t, ip.relay, "the storm settled", func(st host.Stats) bool { return st.Sessions == 500 && st.Pending == 0 && st.Active == 0 })
	res := guestRun(t, ip.sock, testToken, launchOf("/mnt/host/bin/echoargs", "after"), nil)
	if res.err != nil || res.exit == nil || res.exit.Status() != 0 {
		t.Errorf("launch after the storm: %+v", res)
	}
	if st := ip.relay.Stats(); st.Refused != 500 || st.Launched != 1 {
		t.Errorf("stats: %+v, want 500 refused and 1 launched", st)
	}
}

// waitStats polls the relay's counters until ok (generously bounded).
func waitStats(t *testing.T, r *host.Relay, what string, ok func(host.Stats) bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !ok(r.Stats()) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: stats %+v", what, r.Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestRelayTellsWhyItEnds: a guest that breaks the protocol after its program started is
// told why (a SessionError frame) before the relay closes, and its program is killed.
func TestRelayTellsWhyItEnds(t *testing.T) {
	ip := startInproc(t, nil, nil)
	conn, err := net.Dial("unix", ip.sock)
	if err != nil {
		t.Fatal(err)
	}
	s := wire.NewSession(conn, wire.RoleGuest)
	defer s.Close()
	s.Send(wire.NewHello(testToken), launchOf("/mnt/host/bin/cat"))
	ctx := context.Background()
	s.Recv(ctx)
	if m, _ := s.Recv(ctx); m == nil || m.(*wire.LaunchResult).Errno != 0 {
		t.Fatalf("launch: %+v", m)
	}
	// Data on stdout, which only the relay sends.
	bad, _ := wire.AppendFrame(nil, wire.TypeData, []byte{byte(wire.Stdout), 'x'})
	conn.Write(bad)
	_, err = s.Recv(ctx)
	want := "wire: the peer ended the session: protocol error: data frame for stdout, which this side sends"
	var pe *wire.PeerError
	if !errors.As(err, &pe) || err.Error() != want {
		t.Fatalf("guest: %v, want %q", err, want)
	}
	waitStats(t, ip.relay, "the session ended", func(st host.Stats) bool { return st.Active == 0 && st.Errors == 1 })
}

// TestRelayNotALabPeer: an HTTP probe is told it is not talking to a lab peer (not that
// its request line spells an oversize frame), and the log says so.
func TestRelayNotALabPeer(t *testing.T) {
	var log labtest.SyncBuffer
	ip := startInproc(t, func(c *host.Config) { c.Logger = slog.New(slog.NewTextHandler(&log, nil)) }, nil)
	for _, probe := range []string{"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", "\x00\x00\x00\x09\x01NOPE\x00\x01\x00\x00"} {
		conn, err := net.Dial("unix", ip.sock)
		if err != nil {
			t.Fatal(err)
		}
		conn.Write([]byte(probe))
		conn.SetDeadline(time.Now().Add(30 * time.Second))
		buf := make([]byte, wire.MaxPayload)
		wire.ReadMessage(conn, buf)
		m, err := wire.ReadMessage(conn, buf)
		want := &wire.LaunchResult{Errno: wire.EPROTO, Message: "lab relay: not a lab peer: the connection does not speak the lab interop protocol"}
		if lr, ok := m.(*wire.LaunchResult); !ok || *lr != *want {
			t.Errorf("probe %q: %+v %v, want %+v", probe, m, err, want)
		}
		conn.Close()
	}
	waitStats(t, ip.relay, "three refusals", func(st host.Stats) bool { return st.Refused == 3 })
	if got := strings.Count(log.String(), `reason="not a lab peer: it sent `); got != 3 {
		t.Errorf("log has %d 'not a lab peer' lines, want 3:\n%s", got, log.String())
	}
}

// TestRelayLargestHello: a Hello with the largest token the protocol allows is read whole
// (and refused for the wrong token); one byte more is refused as too large.
func TestRelayLargestHello(t *testing.T) {
	ip := startInproc(t, nil, nil)
	token := make([]byte, wire.MaxToken)
	for i := range token {
		token[i] = 'x'
	}
	hello, err := wire.AppendMessage(nil, wire.NewHello(token))
	if err != nil {
		t.Fatal(err)
	}
	over := append([]byte(nil), hello...)
	over = append(over, 'x')
	over[3]++ // the length byte: one byte more than the largest Hello
	for _, tt := range []struct {
		name string
		send []byte
		want wire.LaunchResult
	}{
		{"largest", hello, wire.LaunchResult{Errno: wire.EACCES, Message: "lab relay: access denied (the token or the VM does not match this relay; rerun `lab provision`)"}},
		{"one more", over, wire.LaunchResult{Errno: wire.E2BIG, Message: "lab relay: request refused: the hello is larger than 1040 bytes"}},
	} {
		conn, err := net.Dial("unix", ip.sock)
		if err != nil {
			t.Fatal(err)
		}
		conn.Write(tt.send)
		conn.SetDeadline(time.Now().Add(30 * time.Second))
		buf := make([]byte, wire.MaxPayload)
		wire.ReadMessage(conn, buf)
		m, err := wire.ReadMessage(conn, buf)
		if lr, ok := m.(*wire.LaunchResult); !ok || *lr != tt.want {
			t.Errorf("%s: %+v %v, want %+v", tt.name, m, err, tt.want)
		}
		conn.Close()
	}
}
