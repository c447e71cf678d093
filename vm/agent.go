package vm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"

	"lab/host/proctree"
	"lab/internal/fsutil"
	"lab/vhostvsock"
)

// The hostagent, in files by job: agent.go (this: Run and the supervision loop),
// qemuproc.go (QEMU's process), monitor.go (its QMP monitor, through go-qemu),
// vsockenv.go (the vsock backend a Task sees), tasks.go (Tasks, their health and the
// handlers they register on ha.sock), guestconn.go (the kept guest SSH connection),
// proxy.go (ha.sock) and health.go (what lab status asks for).

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

	task string // the Task this Env was given to ("" for the hostagent's own)
	reg  *registry
}

// Task is something that lives exactly as long as the VM: it starts before QEMU
// (so a vsock listener is in place when the guest boots) and its ctx is cancelled
// when QEMU exits or the hostagent stops. An error is logged and shown by lab status;
// it does not stop the VM. The relay is served as a Task.
type Task struct {
	Name string
	Run  func(ctx context.Context, env *Env) error
}

// Hostagent supervises one VM: it owns QEMU, its QMP monitor, the userspace vsock
// backend and the Tasks, keeps one SSH connection to the guest and serves sessions
// and requests over it on ha.sock. `lab hostagent` runs it; Up starts that process.
type Hostagent struct {
	StateDir string
	Tasks    []Task
	Logger   *slog.Logger // nil: slog.Default()

	onReady func(*agent) // tests: called once the VM is ready
	// eventPipe, when Up runs the hostagent in its own process (tests), is the write
	// end of Up's event pipe; a hostagent process gets it as the fd EnvEventsFD names.
	eventPipe *os.File
}

// EnvEventsFD names the fd (Up passes 3) on which a hostagent process writes its
// events for Up, besides appending them to events.jsonl, and which it closes once
// ready or failed.
const EnvEventsFD = "LAB_HOSTAGENT_EVENTS_FD"

// inheritedEventPipe returns the event pipe Up handed this process, nil if none. It
// unsets EnvEventsFD and marks the fd close-on-exec, so QEMU and the Tasks' children
// neither hold the pipe open (Up would miss EOF) nor think it theirs.
func inheritedEventPipe(log *slog.Logger) *os.File {
	v, ok := os.LookupEnv(EnvEventsFD)
	if !ok {
		return nil
	}
	os.Unsetenv(EnvEventsFD)
	fd, err := strconv.Atoi(v)
	var st unix.Stat_t
	if err == nil && fd > 2 {
		err = unix.Fstat(fd, &st)
	}
	if err != nil || fd <= 2 || st.Mode&unix.S_IFMT != unix.S_IFIFO {
		log.Warn("ignoring "+EnvEventsFD+": not a pipe", "value", v, "err", err)
		return nil
	}
	unix.CloseOnExec(fd)
	return os.NewFile(uintptr(fd), "lab-events-pipe")
}

// Event is one line of events.jsonl and of Up's event pipe: the boot progress Up follows.
type Event struct {
	Time  time.Time `json:"time"`
	Phase string    `json:"phase"` // "starting", "qemu", "ready", "failed", "exited"
	Msg   string    `json:"msg,omitempty"`
	Error string    `json:"error,omitempty"`
}

type agent struct {
	h     *Hostagent
	in    *Instance
	procs *proctree.Tree
	keys  *keys
	log   *slog.Logger
	reg   *registry

	mu     sync.Mutex
	health Health
	guest  *ssh.Client // the kept connection new channels are opened on
	// Proxied channels open per guest connection, and connections a reconnect
	// replaced: one of those is closed when its last channel ends.
	uses    map[*ssh.Client]int
	retired map[*ssh.Client]bool

	reconnectMu sync.Mutex // one reconnect at a time

	ready     chan struct{}
	events    *os.File // events.jsonl
	pipe      *os.File // Up's event pipe until the verdict; nil: none or closed
	vsockDev  *vhostvsock.Device
	qemu      *qemuProc
	mon       *monitor // nil until connected, or when QMP failed
	vsockDone chan error
	// consoleFallback: how often waitReady dials while it waits for the console's
	// word; zero: defaultConsoleFallback.
	consoleFallback time.Duration
}

// Run boots the VM and supervises it until QEMU exits or ctx ends (then QEMU is
// stopped). It returns an error when the boot failed.
func (h *Hostagent) Run(ctx context.Context) (err error) {
	log := h.Logger
	if log == nil {
		log = slog.Default()
	}
	ctx, stopOwner := withOwner(ctx, log)
	defer stopOwner()
	pipe := h.eventPipe
	if pipe == nil {
		pipe = inheritedEventPipe(log)
	}
	if pipe != nil {
		// However Run ends, Up sees EOF; emit closes it sooner, at the verdict.
		defer pipe.Close()
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
	a := &agent{procs: procs, h: h, in: in, keys: ks, log: log.With("vm", in.Name), events: ev, pipe: pipe,
		reg: newRegistry(), ready: make(chan struct{}), vsockDone: make(chan error, 1)}
	a.health = Health{Phase: PhaseBooting, Started: time.Now()}
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
	b = append(b, '\n')
	a.events.Write(b)
	a.log.Info("event", "phase", phase, "msg", msg, "err", err)
	// Called from Run's goroutine only, so a.pipe needs no lock.
	if a.pipe == nil {
		return
	}
	if _, werr := a.pipe.Write(b); werr != nil {
		a.log.Debug("event pipe", "err", werr) // Up is gone; events.jsonl has it
	}
	switch phase {
	case "ready", "failed", "exited":
		a.pipe.Close()
		a.pipe = nil
	}
}

// run: vsock backend, Tasks, QEMU and its monitor, readiness, ha.sock, then supervise.
func (a *agent) run(ctx context.Context) error {
	// Everything that lives as long as QEMU gets vmCtx.
	vmCtx, stopVM := context.WithCancel(ctx)
	defer stopVM()

	env, closeVsock, err := a.vsockEnv(vmCtx)
	if err != nil {
		return err
	}
	defer closeVsock()
	a.registerQMP()
	tasks := a.startTasks(vmCtx, env)
	defer func() {
		stopVM()
		waitTimeout(tasks, 5*time.Second)
	}()

	q, err := startQEMU(a.in, a.procs, a.log)
	if err != nil {
		return err
	}
	a.qemu = q
	a.emit("qemu", fmt.Sprintf("QEMU pid %d (%s)", q.pid, a.in.Accel), nil)
	if err := a.connectMonitor(vmCtx); err != nil {
		q.stop()
		return err
	}
	defer a.mon.close()

	bootErr := a.waitReady(vmCtx)
	if bootErr != nil {
		q.stop()
		if ctx.Err() != nil {
			return fmt.Errorf("vm: boot interrupted: %w", ctx.Err())
		}
		return bootErr
	}
	close(a.ready)
	boot := time.Since(q.started).Seconds()
	a.setHealth(func(h *Health) { h.Phase, h.BootSeconds = PhaseReady, boot })

	srv, err := a.serve(vmCtx)
	if err != nil {
		q.stop()
		return err
	}
	defer srv.Close()
	a.emit("ready", fmt.Sprintf("SSH ready after %.2fs", boot), nil)
	go a.keepalive(vmCtx)
	if a.h.onReady != nil {
		a.h.onReady(a)
	}
	return a.supervise(ctx)
}

// monitorConnectTimeout bounds QMP's greeting and handshake at start. go-qemu cannot
// interrupt them, so a QEMU that does not answer in time is killed rather than waited on.
const monitorConnectTimeout = 30 * time.Second

// connectMonitor takes the VM's one QMP connection and asks once what does not change
// (query-kvm).
func (a *agent) connectMonitor(ctx context.Context) error {
	mctx, cancel := context.WithTimeout(ctx, monitorConnectTimeout)
	defer cancel()
	m, err := connectMonitor(mctx, filepath.Join(a.in.StateDir, FileQMPSock))
	if err != nil {
		// A refused or reset connection is QEMU dying: its exit says more than QMP's error.
		select {
		case <-a.qemu.done:
			return a.bootError("QEMU exited before SSH was ready: " + qemuExitText(a.qemu.err))
		case <-time.After(5 * time.Second):
		}
		return a.bootError(strings.TrimPrefix(err.Error(), "vm: "))
	}
	a.mon = m
	if k, err := m.queryKVM(mctx); err == nil {
		a.setHealth(func(h *Health) { h.QEMU.KVMEnabled = &k.Enabled })
	}
	return nil
}

// supervise waits for QEMU's exit, the vsock backend's death, or ctx (then stops QEMU).
func (a *agent) supervise(ctx context.Context) error {
	for {
		select {
		case <-a.qemu.done:
			a.log.Info("QEMU exited", "err", a.qemu.err)
			return nil
		case err := <-a.vsockDone:
			// QEMU 7.2 cannot reconnect to a new backend: vsock is gone until the VM restarts.
			msg := "the userspace vsock backend stopped"
			if err != nil {
				msg += ": " + err.Error()
			}
			// The backend also stops when QEMU exits; give that the chance to be the news.
			select {
			case <-a.qemu.done:
				return nil
			case <-time.After(500 * time.Millisecond):
			}
			a.log.Error(msg + "; guest vsock is dead until the VM restarts (lab down; lab up)")
			a.setHealth(func(h *Health) { h.VsockOK, h.VsockError = false, msg })
		case <-ctx.Done():
			a.setHealth(func(h *Health) { h.Phase = PhaseStopping })
			a.qemu.stop()
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
