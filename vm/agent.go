package vm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/mdlayher/vsock"
	"golang.org/x/crypto/ssh"

	"lab/host/proctree"
	"lab/internal/fsutil"
	"lab/internal/shell"
	"lab/vhostvsock"
)

// Env is what a hostagent Task sees: the VM's identity and its vsock transport,
// whichever backend (kernel or userspace) serves it.
type Env struct {
	Name     string
	StateDir string
	CID      uint32 // the guest's CID
	Vsock    string // "kernel" or "user"
	// Listen returns a listener for guest connections to the host (CID 2) on port.
	Listen func(port uint32) (net.Listener, error)
	// Dial connects to a port in the guest.
	Dial   func(ctx context.Context, port uint32) (net.Conn, error)
	Logger *slog.Logger
	// Ready is closed once the guest answers SSH; SSH then returns the kept
	// connection (shared: open sessions on it, never Close it). Call SSH for each
	// use rather than keeping its result: a reconnect (after provisioning changed
	// sshd's config) replaces the kept connection and closes the old one.
	Ready <-chan struct{}
	SSH   func(ctx context.Context) (*ssh.Client, error)
	// Procs holds QEMU and every process a Task starts (pass each exec.Cmd to
	// Procs.Prepare before Start; host.Config.Procs for the relay): they all die with the
	// hostagent, SIGKILL included (package proctree).
	Procs *proctree.Tree
}

// Task is something that lives exactly as long as the VM: it starts before QEMU
// (so a vsock listener is in place when the guest boots) and its ctx is cancelled
// when QEMU exits or the hostagent stops. An error is logged and shown by lab status;
// it does not stop the VM. The relay is served as a Task.
type Task struct {
	Name string
	Run  func(ctx context.Context, env *Env) error
}

// Hostagent supervises one VM: it owns QEMU, the userspace vsock backend and the
// Tasks, keeps one SSH connection to the guest and serves sessions over it on
// ha.sock. `lab hostagent` runs it; Up starts that process.
type Hostagent struct {
	StateDir string
	Tasks    []Task
	Logger   *slog.Logger // nil: slog.Default()

	onReady func(*agent) // tests: called once the VM is ready
}

// Event is one line of events.jsonl, the boot progress Up follows.
type Event struct {
	Time  time.Time `json:"time"`
	Phase string    `json:"phase"` // "starting", "qemu", "ready", "failed", "exited"
	Msg   string    `json:"msg,omitempty"`
	Error string    `json:"error,omitempty"`
}

// Health is the hostagent's view, served to lab status.
type Health struct {
	Phase       string       `json:"phase"` // "booting", "ready", "stopping"
	Started     time.Time    `json:"started"`
	BootSeconds float64      `json:"boot_seconds,omitempty"`
	GuestSSH    bool         `json:"guest_ssh"` // the kept connection is up
	VsockOK     bool         `json:"vsock_ok"`  // the vsock backend serves QEMU
	VsockError  string       `json:"vsock_error,omitempty"`
	Tasks       []TaskHealth `json:"tasks,omitempty"`
}

// TaskHealth is one Task's state.
type TaskHealth struct {
	Name  string `json:"name"`
	State string `json:"state"` // "running", "done", "failed"
	Error string `json:"error,omitempty"`
}

// QEMUExit is written to qemu.exit when QEMU ends.
type QEMUExit struct {
	Time    time.Time `json:"time"`
	Error   string    `json:"error,omitempty"` // "" for a clean exit
	Console string    `json:"console,omitempty"`
}

type agent struct {
	h     *Hostagent
	in    *Instance
	procs *proctree.Tree
	keys  *keys
	log   *slog.Logger

	mu     sync.Mutex
	health Health
	guest  *ssh.Client // the kept connection new channels are opened on
	// Proxied channels open per guest connection, and connections a reconnect
	// replaced: one of those is closed when its last channel ends.
	uses    map[*ssh.Client]int
	retired map[*ssh.Client]bool

	reconnectMu sync.Mutex // one reconnect at a time

	ready     chan struct{}
	events    *os.File
	vsockDev  *vhostvsock.Device
	qemuPID   int
	qemuStart time.Time
	qemuDone  chan struct{}
	qemuErr   error
	vsockDone chan error
}

// Run boots the VM and supervises it until QEMU exits or ctx ends (then QEMU is
// stopped). It returns an error when the boot failed.
func (h *Hostagent) Run(ctx context.Context) (err error) {
	log := h.Logger
	if log == nil {
		log = slog.Default()
	}
	dir := h.StateDir
	lock, err := fsutil.TryLock(filepath.Join(dir, FileAgentLock))
	if errors.Is(err, fsutil.ErrLocked) {
		return fmt.Errorf("vm: a hostagent already runs for %s", dir)
	}
	if err != nil {
		return fmt.Errorf("vm: %w", err)
	}
	defer lock.Unlock()
	if err := os.WriteFile(filepath.Join(dir, FileAgentPID), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o600); err != nil {
		return fmt.Errorf("vm: %w", err)
	}
	in, err := readInstance(dir)
	if err != nil {
		return fmt.Errorf("vm: %w", err)
	}
	ks, err := loadKeys(dir)
	if err != nil {
		return err
	}
	ev, err := os.OpenFile(filepath.Join(dir, FileEvents), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("vm: %w", err)
	}
	defer ev.Close()
	// QEMU, the relay's host programs and Wine die with this process however it ends.
	procs, err := proctree.Open(proctree.Options{Name: "hostagent", Logger: log})
	if err != nil {
		return fmt.Errorf("vm: %w", err)
	}
	defer procs.Close()
	a := &agent{procs: procs, h: h, in: in, keys: ks, log: log.With("vm", in.Name), events: ev,
		ready: make(chan struct{}), qemuDone: make(chan struct{}), vsockDone: make(chan error, 1)}
	a.health = Health{Phase: "booting", Started: time.Now()}
	a.emit("starting", fmt.Sprintf("hostagent pid %d", os.Getpid()), nil)
	err = a.run(ctx)
	if err != nil {
		a.emit("failed", "", err)
	} else {
		a.emit("exited", "", nil)
	}
	return err
}

func (a *agent) emit(phase, msg string, err error) {
	e := Event{Time: time.Now(), Phase: phase, Msg: msg}
	if err != nil {
		e.Error = err.Error()
	}
	b, _ := json.Marshal(e)
	a.events.Write(append(b, '\n'))
	a.log.Info("event", "phase", phase, "msg", msg, "err", err)
}

func (a *agent) run(ctx context.Context) error {
	in := a.in
	dir := in.StateDir
	// Everything that lives as long as QEMU gets vmCtx.
	vmCtx, stopVM := context.WithCancel(ctx)
	defer stopVM()

	env := &Env{Name: in.Name, StateDir: dir, CID: in.CID, Vsock: in.Vsock, Logger: a.log,
		Ready: a.ready, SSH: a.guestClient, Procs: a.procs}
	switch in.Vsock {
	case "user":
		dev, err := vhostvsock.New(vhostvsock.Config{
			SocketPath: filepath.Join(dir, FileVhostSock),
			GuestCID:   in.CID,
			UDSPath:    filepath.Join(dir, FileVsockUDS),
			Logger:     a.log.With("part", "vsock"),
		})
		if err != nil {
			return fmt.Errorf("vm: userspace vsock: %w", err)
		}
		a.vsockDev = dev
		defer dev.Close()
		env.Listen = func(port uint32) (net.Listener, error) { return dev.Listen(port) }
		env.Dial = dev.Dial
		go func() { a.vsockDone <- dev.Serve(vmCtx) }()
		a.setHealth(func(h *Health) { h.VsockOK = true })
	case "kernel":
		env.Listen = func(port uint32) (net.Listener, error) { return vsock.Listen(port, nil) }
		cid := in.CID
		env.Dial = func(ctx context.Context, port uint32) (net.Conn, error) {
			type res struct {
				c   net.Conn
				err error
			}
			ch := make(chan res, 1)
			go func() { c, err := vsock.Dial(cid, port, nil); ch <- res{c, err} }()
			select {
			case r := <-ch:
				return r.c, r.err
			case <-ctx.Done():
				go func() {
					if r := <-ch; r.c != nil {
						r.c.Close()
					}
				}()
				return nil, ctx.Err()
			}
		}
		a.setHealth(func(h *Health) { h.VsockOK = true })
	default:
		return fmt.Errorf("vm: unknown vsock mode %q in %s", in.Vsock, FileInstance)
	}

	var tasks sync.WaitGroup
	for i, t := range a.h.Tasks {
		a.setHealth(func(h *Health) { h.Tasks = append(h.Tasks, TaskHealth{Name: t.Name, State: "running"}) })
		tasks.Add(1)
		go func() {
			defer tasks.Done()
			err := t.Run(vmCtx, env)
			a.setHealth(func(h *Health) {
				h.Tasks[i].State = "done"
				if err != nil && vmCtx.Err() == nil {
					h.Tasks[i].State, h.Tasks[i].Error = "failed", err.Error()
				}
			})
			if err != nil && vmCtx.Err() == nil {
				a.log.Error("task failed", "task", t.Name, "err", err)
			}
		}()
	}
	defer func() {
		stopVM()
		waitTimeout(&tasks, 5*time.Second)
	}()

	if err := a.startQEMU(); err != nil {
		return err
	}
	a.emit("qemu", fmt.Sprintf("QEMU pid %d (%s)", a.qemuPID, in.Accel), nil)

	bootErr := a.waitReady(vmCtx)
	if bootErr != nil {
		a.stopQEMU()
		if ctx.Err() != nil {
			return fmt.Errorf("vm: boot interrupted: %w", ctx.Err())
		}
		return bootErr
	}
	close(a.ready)
	boot := time.Since(a.qemuStart).Seconds()
	a.setHealth(func(h *Health) { h.Phase, h.BootSeconds = "ready", boot })

	srv, err := a.serve(vmCtx)
	if err != nil {
		a.stopQEMU()
		return err
	}
	defer srv.Close()
	a.emit("ready", fmt.Sprintf("SSH ready after %.2fs", boot), nil)
	go a.keepalive(vmCtx)
	if a.h.onReady != nil {
		a.h.onReady(a)
	}

	for {
		select {
		case <-a.qemuDone:
			a.log.Info("QEMU exited", "err", a.qemuErr)
			return nil
		case err := <-a.vsockDone:
			// QEMU 7.2 cannot reconnect to a new backend: vsock is gone until the VM restarts.
			msg := "the userspace vsock backend stopped"
			if err != nil {
				msg += ": " + err.Error()
			}
			select {
			case <-a.qemuDone:
				return nil
			case <-time.After(500 * time.Millisecond):
			}
			a.log.Error(msg + "; guest vsock is dead until the VM restarts (lab down; lab up)")
			a.setHealth(func(h *Health) { h.VsockOK, h.VsockError = false, msg })
		case <-ctx.Done():
			a.setHealth(func(h *Health) { h.Phase = "stopping" })
			a.stopQEMU()
			return nil
		}
	}
}

func waitTimeout(wg *sync.WaitGroup, d time.Duration) {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
	}
}

func (a *agent) setHealth(f func(*Health)) {
	a.mu.Lock()
	f(&a.health)
	a.mu.Unlock()
}

func (a *agent) healthJSON() []byte {
	a.mu.Lock()
	h := a.health
	h.Tasks = append([]TaskHealth(nil), h.Tasks...)
	h.GuestSSH = a.guest != nil
	a.mu.Unlock()
	b, _ := json.Marshal(h)
	return b
}

// startQEMU starts QEMU as a child that dies with this process: Pdeathsig fires when
// the thread that started it exits, so that goroutine stays locked to its thread and
// lives until QEMU is gone.
func (a *agent) startQEMU() error {
	dir := a.in.StateDir
	logf, err := os.OpenFile(filepath.Join(dir, FileQEMULog), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("vm: %w", err)
	}
	qmpf, err := listenQMP(dir)
	if err != nil {
		logf.Close()
		return err
	}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer logf.Close()
		argv := a.in.Argv
		a.log.Info("starting QEMU", "cmd", shell.Join(argv))
		cmd := exec.Command(argv[0], argv[1:]...)
		cmd.Stdout, cmd.Stderr = logf, logf
		cmd.Dir = dir
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
		cmd.ExtraFiles = []*os.File{qmpf} // fd qmpFD
		a.procs.Prepare(cmd)
		err := cmd.Start()
		qmpf.Close() // QEMU's is the only copy now
		if err != nil {
			started <- fmt.Errorf("vm: starting QEMU: %w", err)
			return
		}
		a.qemuPID = cmd.Process.Pid
		a.qemuStart = time.Now()
		os.WriteFile(filepath.Join(dir, FileQEMUPID), []byte(strconv.Itoa(a.qemuPID)+"\n"), 0o600)
		started <- nil
		a.qemuErr = cmd.Wait()
		x := QEMUExit{Time: time.Now()}
		if a.qemuErr != nil {
			x.Error = a.qemuErr.Error()
			if q := tail(filepath.Join(dir, FileQEMULog), 5); q != "" {
				x.Error += ": " + q
			}
		}
		x.Console = tail(filepath.Join(dir, FileConsoleLog), 20)
		writeJSON(filepath.Join(dir, FileQEMUExit), x)
		close(a.qemuDone)
	}()
	return <-started
}

// stopQEMU ends QEMU: SIGTERM (QEMU exits cleanly on it), then SIGKILL.
func (a *agent) stopQEMU() {
	if a.qemuPID == 0 {
		return
	}
	select {
	case <-a.qemuDone:
		return
	default:
	}
	syscall.Kill(a.qemuPID, syscall.SIGTERM)
	select {
	case <-a.qemuDone:
	case <-time.After(5 * time.Second):
		syscall.Kill(a.qemuPID, syscall.SIGKILL)
		<-a.qemuDone
	}
}

// waitReady waits until the guest's SSH server answers and runs `true`, QEMU exits,
// or the boot timeout passes.
func (a *agent) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, time.Duration(a.in.BootTimeout))
	defer cancel()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(a.in.SSHPort))
	for {
		c, err := dialReady(ctx, addr, a.keys.clientConfig())
		if err == nil {
			a.mu.Lock()
			a.guest = c
			a.mu.Unlock()
			go a.watchGuest(c)
			return nil
		}
		a.log.Debug("not ready yet", "err", err)
		select {
		case <-a.qemuDone:
			return a.bootError("QEMU exited before SSH was ready: " + qemuExitText(a.qemuErr))
		case err := <-a.vsockDone:
			// The backend also stops when QEMU exits; QEMU's exit is the better explanation.
			select {
			case <-a.qemuDone:
				return a.bootError("QEMU exited before SSH was ready: " + qemuExitText(a.qemuErr))
			case <-time.After(time.Second):
			}
			// The backend died before the guest came up; the VM could never use vsock.
			return a.bootError(fmt.Sprintf("the userspace vsock backend stopped during boot: %v", err))
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return a.bootError(fmt.Sprintf("SSH not ready after %v", time.Duration(a.in.BootTimeout)))
			}
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func qemuExitText(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

// bootError adds the last lines of QEMU's stderr and of the console to msg.
func (a *agent) bootError(msg string) error {
	dir := a.in.StateDir
	if q := tail(filepath.Join(dir, FileQEMULog), 5); q != "" {
		msg += "\nQEMU said:\n" + indent(q)
	}
	// Inline, not as a path: a failed Up removes the state dir.
	if c := tail(filepath.Join(dir, FileConsoleLog), 15); c != "" {
		msg += "\nlast lines of the guest console:\n" + indent(c)
	} else {
		msg += "\nthe guest printed nothing on its console"
	}
	return errors.New("vm: " + msg)
}

func indent(s string) string {
	out := "  "
	for _, r := range s {
		out += string(r)
		if r == '\n' {
			out += "  "
		}
	}
	return out
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
		case <-a.qemuDone:
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
