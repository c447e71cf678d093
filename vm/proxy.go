package vm

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
)

// The hostagent's endpoint (ha.sock) is an SSH server. Each channel a client opens
// (session, direct-tcpip) is opened on the kept guest connection and spliced to it,
// requests and all (exec, pty-req, shell, subsystem sftp, window-change, signal,
// exit-status), so `lab exec` pays a local Go-to-Go handshake and one channel open
// instead of a TCP connect and a key exchange with the guest's sshd under TCG.
// It authenticates with the VM's own keys: the client key, and the guest's host key
// as the server key, so one pinned key covers both hops.

// healthRequest is the global request that returns the hostagent's Health as JSON.
const healthRequest = "lab-health@lab"

// reconnectRequest makes the hostagent replace its kept guest connection (see
// Client.Reconnect). The reply is true, or false with the error's text as payload.
const reconnectRequest = "reconnect@lab"

// requestSuffix ends the type of a request for a registered handler (Env.Handle): the
// handler "relay.stop" answers "relay.stop@lab". The reply's payload is the handler's
// JSON, or a callError when it is refused.
const requestSuffix = "@lab"

type proxyServer struct {
	l  net.Listener
	wg sync.WaitGroup
}

func (p *proxyServer) Close() error {
	err := p.l.Close()
	p.wg.Wait()
	return err
}

func (a *agent) serve(ctx context.Context) (*proxyServer, error) {
	sock := filepath.Join(a.in.StateDir, FileAgentSock)
	l, err := listenPrivate(sock)
	if err != nil {
		return nil, err
	}
	want := a.keys.client.PublicKey().Marshal()
	cfg := &ssh.ServerConfig{
		PublicKeyCallback: func(_ ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			if bytes.Equal(key.Marshal(), want) {
				return nil, nil
			}
			return nil, errors.New("unknown key")
		},
	}
	cfg.AddHostKey(a.keys.host)
	p := &proxyServer{l: l}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		var conns sync.WaitGroup
		defer conns.Wait()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go func() {
				defer conns.Done()
				a.serveConn(ctx, c, cfg)
			}()
		}
	}()
	return p, nil
}

func (a *agent) serveConn(ctx context.Context, nc net.Conn, cfg *ssh.ServerConfig) {
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	sc, chans, reqs, err := ssh.NewServerConn(nc, cfg)
	if err != nil {
		a.log.Debug("hostagent endpoint: handshake", "err", err)
		nc.Close()
		return
	}
	nc.SetDeadline(time.Time{})
	stop := context.AfterFunc(ctx, func() { sc.Close() })
	defer stop()
	defer sc.Close()
	// Requests end with the connection (a client that gave up) or the VM.
	connCtx, cancelConn := context.WithCancel(ctx)
	defer cancelConn()
	go func() {
		sc.Wait()
		cancelConn()
	}()
	go a.serveRequests(connCtx, reqs)
	var wg sync.WaitGroup
	defer wg.Wait()
	for nch := range chans {
		switch nch.ChannelType() {
		case "session", "direct-tcpip":
		default:
			nch.Reject(ssh.UnknownChannelType, "only session and direct-tcpip channels")
			continue
		}
		guest, release, err := a.acquireGuest(ctx)
		if err != nil {
			nch.Reject(ssh.ConnectionFailed, err.Error())
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer release()
			spliceChannel(nch, guest)
		}()
	}
}

// spliceChannel opens the same channel on guest and joins the two: data, extended
// data (stderr), EOF, requests in both directions, and close.
func spliceChannel(nch ssh.NewChannel, guest *ssh.Client) {
	gch, greqs, err := guest.OpenChannel(nch.ChannelType(), nch.ExtraData())
	if err != nil {
		var oe *ssh.OpenChannelError
		if errors.As(err, &oe) {
			nch.Reject(oe.Reason, oe.Message)
		} else {
			nch.Reject(ssh.ConnectionFailed, err.Error())
		}
		return
	}
	cch, creqs, err := nch.Accept()
	if err != nil {
		gch.Close()
		return
	}
	var out sync.WaitGroup // guest -> client data
	out.Add(2)
	go func() {
		defer out.Done()
		io.Copy(cch, gch)
	}()
	go func() {
		defer out.Done()
		io.Copy(cch.Stderr(), gch.Stderr())
	}()
	go func() {
		io.Copy(gch, cch)
		gch.CloseWrite()
	}()
	// Client -> guest requests; when the client closes its side, close the guest's.
	// reqMu keeps the client's channel open until a forwarded request's reply is
	// through: a quick command's guest channel can close before the exec reply is
	// relayed, and the client would see EOF instead of its command's result.
	var reqMu sync.Mutex
	go func() {
		for r := range creqs {
			reqMu.Lock()
			ok, err := gch.SendRequest(r.Type, r.WantReply, r.Payload)
			if err != nil {
				ok = false
			}
			if r.WantReply {
				r.Reply(ok, nil)
			}
			reqMu.Unlock()
		}
		gch.Close()
	}()
	// Guest -> client requests (exit-status, exit-signal). They are forwarded after
	// all output is through, as the client's Session.Wait expects output then status.
	var pending []*ssh.Request
	for r := range greqs {
		if r.Type == "exit-status" || r.Type == "exit-signal" {
			pending = append(pending, r)
			continue
		}
		ok, _ := cch.SendRequest(r.Type, r.WantReply, r.Payload)
		if r.WantReply {
			r.Reply(ok, nil)
		}
	}
	out.Wait()
	reqMu.Lock()
	defer reqMu.Unlock()
	for _, r := range pending {
		cch.SendRequest(r.Type, false, r.Payload)
	}
	cch.CloseWrite()
	cch.Close()
}

// serveRequests answers a connection's global requests in order: lab-health@lab,
// reconnect@lab, and NAME@lab for each handler registered with Env.Handle.
func (a *agent) serveRequests(ctx context.Context, reqs <-chan *ssh.Request) {
	for r := range reqs {
		switch r.Type {
		case healthRequest:
			b, _ := json.Marshal(a.healthNow(ctx))
			r.Reply(true, b)
		case reconnectRequest:
			rctx, cancel := context.WithTimeout(ctx, time.Minute)
			err := a.reconnect(rctx)
			cancel()
			if err != nil {
				a.log.Warn("reconnect to the guest failed", "err", err)
				r.Reply(false, []byte(err.Error()))
			} else {
				r.Reply(true, nil)
			}
		default:
			name, ok := strings.CutSuffix(r.Type, requestSuffix)
			var h Handler
			if ok {
				h = a.reg.handler(name)
			}
			if h == nil {
				b, _ := json.Marshal(callError{Error: "no such request " + strconv.Quote(r.Type) + " (is the hostagent older than this lab? lab down; lab up)"})
				r.Reply(false, b)
				continue
			}
			reply, err := h(ctx, r.Payload)
			if err != nil {
				b, _ := json.Marshal(callError{Error: err.Error(), NotResponding: errors.Is(err, ErrQEMUNotResponding)})
				r.Reply(false, b)
				continue
			}
			b, err := json.Marshal(reply)
			if err != nil {
				b, _ = json.Marshal(callError{Error: "encoding the reply: " + err.Error()})
				r.Reply(false, b)
				continue
			}
			r.Reply(true, b)
		}
	}
}
