package vm

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"lab/images"
	"lab/internal/labtest"
	"lab/internal/shell"
)

// The integration tests boot one VM ("shared", through the real `lab up`) that all
// tests of this package use, plus one short-lived VM for "two at once" and kill -9.
// Everything lives under one temporary XDG_STATE_HOME; the image cache is shared.

var (
	tmpRoot string // short, for Unix socket paths

	buildOnce sync.Once
	labBin    string
	buildErr  error

	sharedOnce sync.Once
	shared     *sharedVM
	sharedErr  error
)

type sharedVM struct {
	base      string // XDG_STATE_HOME
	name, dir string
	hostShare string // shared with the guest at /mnt/host
}

func TestMain(m *testing.M) {
	if dir := os.Getenv(envKilledChild); dir != "" {
		os.Exit(killedChild(dir))
	}
	if labtest.NohupSetup() {
		os.Exit(m.Run()) // execs itself again at once: no tmpRoot to leave behind
	}
	var err error
	tmpRoot, err = os.MkdirTemp("", "labvm")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	if shared != nil {
		// The shared VM goes down with QEMU stopped (SIGSTOP): QMP cannot answer, so Down
		// must kill QEMU rather than wait on it (lab down's graceful path is
		// TestIntegrationSecondVMKilled's and cmd/lab's TestIntegrationCLI's).
		if pid := readPID(filepath.Join(shared.dir, FileQEMUPID)); pid > 0 {
			syscall.Kill(pid, syscall.SIGSTOP)
		}
		if err := downAndCheck(shared.dir); err != nil {
			fmt.Fprintln(os.Stderr, "tearing down the shared VM:", err)
			code = 1
		}
	}
	os.RemoveAll(tmpRoot)
	os.Exit(code)
}

// downAndCheck runs Down and checks that the VM's processes and state are gone.
func downAndCheck(dir string) error {
	agent := readPID(filepath.Join(dir, FileAgentPID))
	qemu := readPID(filepath.Join(dir, FileQEMUPID))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := Down(ctx, dir); err != nil {
		return err
	}
	return checkGone(dir, agent, qemu)
}

func checkGone(dir string, pids ...int) error {
	for _, pid := range pids {
		if pid > 0 && processAlive(pid, dir) {
			return fmt.Errorf("process %d is still running", pid)
		}
	}
	if _, err := os.Stat(dir); err == nil {
		return fmt.Errorf("state dir %s is still there", dir)
	}
	return nil
}

func labBinary(t testing.TB) string {
	t.Helper()
	labtest.NeedVM(t)
	buildOnce.Do(func() {
		labBin = filepath.Join(tmpRoot, "lab")
		buildErr = labtest.GoBuild(labBin, "lab/cmd/lab", false)
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return labBin
}

// connect is a Client of the VM in dir, closed at the end of tb.
func connect(ctx context.Context, tb testing.TB, dir string) *Client {
	tb.Helper()
	c, err := Connect(ctx, dir)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

type result struct {
	stdout, stderr string
	code           int
}

// lab runs the lab binary with XDG_STATE_HOME=base.
func lab(t testing.TB, base string, stdin string, args ...string) result {
	t.Helper()
	return labEnv(t, []string{"XDG_STATE_HOME=" + base}, stdin, args...)
}

func labEnv(t testing.TB, env []string, stdin string, args ...string) result {
	t.Helper()
	return labUmask(t, env, "", stdin, args...)
}

// labUmask runs lab under umask mask ("" keeps this process's).
func labUmask(t testing.TB, env []string, mask, stdin string, args ...string) result {
	t.Helper()
	cmd := exec.Command(labBinary(t), args...)
	if mask != "" {
		cmd = exec.Command("sh", append([]string{"-c", `umask "$0" && exec "$@"`, mask, labBinary(t)}, args...)...)
	}
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = strings.NewReader(stdin)
	var r result
	r.stdout, r.stderr, r.code = labtest.Output(t, cmd)
	return r
}

func sharedGuest(t testing.TB) *sharedVM {
	t.Helper()
	labBinary(t)
	sharedOnce.Do(func() {
		s := &sharedVM{base: filepath.Join(tmpRoot, "st"), name: "shared", hostShare: filepath.Join(tmpRoot, "share")}
		s.dir = filepath.Join(s.base, "lab", s.name)
		os.MkdirAll(s.hostShare, 0o755)
		// Under umask 000, so that TestIntegrationSocketModes sees what lab chose itself.
		r := labUmask(t, []string{"XDG_STATE_HOME=" + s.base}, "000", "", "up", "--no-provision", "--no-windows", "--name", s.name, "--share", s.hostShare+":/mnt/host")
		if r.code != 0 {
			sharedErr = fmt.Errorf("lab up: exit %d\n%s%s", r.code, r.stdout, r.stderr)
			return
		}
		shared = s
	})
	if sharedErr != nil {
		t.Fatal(sharedErr)
	}
	return shared
}

func statusJSON(t testing.TB, base, name string) *Status {
	t.Helper()
	r := lab(t, base, "", "status", "--name", name, "--json")
	if r.code != 0 {
		t.Fatalf("lab status: exit %d: %s", r.code, r.stderr)
	}
	var st Status
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		t.Fatalf("lab status --json: %v\n%s", err, r.stdout)
	}
	return &st
}

func TestIntegrationExecUname(t *testing.T) {
	s := sharedGuest(t)
	img, err := images.Build(context.Background(), images.Options{})
	if err != nil {
		t.Fatal(err)
	}
	r := lab(t, s.base, "", "exec", "--name", s.name, "--", "uname", "-r")
	if r.code != 0 || strings.TrimSpace(r.stdout) != img.KernelVersion {
		t.Fatalf("lab exec -- uname -r = %q (exit %d, stderr %q), want %q", r.stdout, r.code, r.stderr, img.KernelVersion)
	}
}

func TestIntegrationExecStreams(t *testing.T) {
	s := sharedGuest(t)
	r := lab(t, s.base, "abc\n", "exec", "--name", s.name, "--", "sh", "-c", "echo out; echo err >&2; read x; echo got $x; exit 3")
	if r.code != 3 || r.stdout != "out\ngot abc\n" || r.stderr != "err\n" {
		t.Fatalf("lab exec = exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	r = lab(t, s.base, "", "exec", "--name", s.name, "--", "sh", "-c", "kill -TERM $$")
	if r.code != 128+15 {
		t.Errorf("a command killed by SIGTERM: exit %d, want 143", r.code)
	}
}

// TestIntegrationExecSignal: a signal sent through ExecOptions.Signals reaches the
// command's process group in the guest (sshd's killpg: the sleep dies, so the shell's
// trap runs at once) and the command's own exit status comes back.
func TestIntegrationExecSignal(t *testing.T) {
	s := sharedGuest(t)
	// A guard, not a timing assertion: a lost signal leaves the sleep running.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := connect(ctx, t, s.dir)
	pr, pw := io.Pipe()
	sigs := make(chan ssh.Signal, 1)
	rest := make(chan string, 1)
	go func() {
		br := bufio.NewReader(pr)
		if line, _ := br.ReadString('\n'); line == "ready\n" {
			sigs <- ssh.SIGTERM
		}
		b, _ := io.ReadAll(br)
		rest <- string(b)
	}()
	code, err := c.Exec(ctx, shell.Join([]string{"sh", "-c", `trap "echo got TERM; exit 9" TERM; echo ready; sleep 1000`}),
		ExecOptions{Stdout: pw, Signals: sigs})
	pw.Close()
	if out := <-rest; err != nil || code != 9 || out != "got TERM\n" {
		t.Errorf("Exec with SIGTERM forwarded: exit %d, %v, output after ready %q; want exit 9 and %q", code, err, out, "got TERM\n")
	}
}

func TestIntegrationStatus(t *testing.T) {
	s := sharedGuest(t)
	st := statusJSON(t, s.base, s.name)
	if st.State != "running" || !st.QEMUAlive || !st.AgentAlive || st.QEMUStatus != "running" {
		t.Errorf("status: state %s, qemu alive %v (%s), agent alive %v; problems %v", st.State, st.QEMUAlive, st.QEMUStatus, st.AgentAlive, st.Problems)
	}
	if st.KVMEnabled == nil || *st.KVMEnabled != (st.Accel == "kvm") {
		t.Errorf("accel %s but QEMU says kvm enabled = %v", st.Accel, st.KVMEnabled)
	}
	if st.Health == nil || st.Health.Phase != "ready" || !st.Health.VsockOK || !st.Health.GuestSSH {
		t.Errorf("hostagent health = %+v", st.Health)
	}
	if st.CID < 3 || st.SSHPort == 0 {
		t.Errorf("CID %d, port %d", st.CID, st.SSHPort)
	}
	r := lab(t, s.base, "", "status", "--name", s.name)
	if !strings.Contains(r.stdout, "state:     running") || !strings.Contains(r.stdout, "accel:     "+st.Accel) {
		t.Errorf("lab status text:\n%s", r.stdout)
	}
}

// TestIntegrationStatusQEMUStopped: with QEMU stopped (SIGSTOP), lab status still
// answers, and says QEMU is not responding (the hostagent bounds its QMP question);
// resumed, QEMU answers the hostagent again.
func TestIntegrationStatusQEMUStopped(t *testing.T) {
	s := sharedGuest(t)
	pid := readPID(filepath.Join(s.dir, FileQEMUPID))
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := true
	defer func() {
		if stopped {
			syscall.Kill(pid, syscall.SIGCONT)
		}
	}()
	// Twice: the second finds the first's question still unanswered.
	for i := range 2 {
		st := statusJSON(t, s.base, s.name)
		if st.State != StateUnresponsive || st.QEMUStatus != "not responding" || !st.QEMUAlive || !st.AgentAlive {
			t.Errorf("status %d with QEMU stopped: state %s, qemu %q (alive %v), agent alive %v; problems %q",
				i, st.State, st.QEMUStatus, st.QEMUAlive, st.AgentAlive, st.Problems)
		}
		if !strings.Contains(strings.Join(st.Problems, "\n"), "QEMU is not responding to QMP") {
			t.Errorf("problems do not say QEMU is not responding: %q", st.Problems)
		}
	}
	r := lab(t, s.base, "", "status", "--name", s.name)
	if !strings.Contains(r.stdout, "state:     unresponsive") || !strings.Contains(r.stdout, "not responding") {
		t.Errorf("lab status text with QEMU stopped:\n%s", r.stdout)
	}
	if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	stopped = false
	// Resumed, QEMU answers the questions left behind and then ours.
	c, err := Connect(context.Background(), s.dir)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var rs QEMURunState
	for deadline := time.Now().Add(2 * time.Minute); ; {
		err = c.Call(context.Background(), RequestQueryStatus, nil, &rs)
		if err == nil || !errors.Is(err, ErrQEMUNotResponding) || time.Now().After(deadline) {
			break
		}
	}
	if err != nil || rs.Status != "running" || !rs.Running {
		t.Errorf("query-status after SIGCONT = %+v, %v", rs, err)
	}
	if st := statusJSON(t, s.base, s.name); st.State != StateRunning || st.QEMUStatus != "running" {
		t.Errorf("status after SIGCONT: state %s, qemu %q; problems %q", st.State, st.QEMUStatus, st.Problems)
	}
}

func TestIntegrationSFTP(t *testing.T) {
	s := sharedGuest(t)
	ctx := context.Background()
	c := connect(ctx, t, s.dir)
	sc, err := c.SFTP()
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 64<<20)
	rand.Read(data)
	sum := sha256.Sum256(data)
	want := hex.EncodeToString(sum[:])
	f, err := sc.Create("/tmp/big")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := f.ReadFrom(bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	t.Logf("upload 64 MiB: %v", time.Since(start))
	out, err := c.Output(ctx, "sha256sum /tmp/big")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Fields(string(out)); len(got) == 0 || got[0] != want {
		t.Fatalf("guest sha256 = %q, want %s", out, want)
	}
	start = time.Now()
	f, err = sc.Open("/tmp/big")
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	if _, err := f.WriteTo(h); err != nil {
		t.Fatal(err)
	}
	f.Close()
	t.Logf("download 64 MiB: %v", time.Since(start))
	if got := hex.EncodeToString(h.Sum(nil)); got != want {
		t.Fatalf("downloaded sha256 = %s, want %s", got, want)
	}
	c.Run(ctx, "rm -f /tmp/big", nil, nil, nil)
}

func TestIntegration9p(t *testing.T) {
	s := sharedGuest(t)
	ctx := context.Background()
	c := connect(ctx, t, s.dir)
	if err := os.WriteFile(filepath.Join(s.hostShare, "from-host"), []byte("hello from the host\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := c.Output(ctx, "cat /mnt/host/from-host")
	if err != nil || string(out) != "hello from the host\n" {
		t.Fatalf("guest read of the share = %q, %v", out, err)
	}
	if _, err := c.Output(ctx, "echo written by the guest > /mnt/host/from-guest"); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(s.hostShare, "from-guest"))
	if err != nil || string(b) != "written by the guest\n" {
		t.Fatalf("host read of the guest's file = %q, %v", b, err)
	}
}

func TestIntegrationOpenSSHConfig(t *testing.T) {
	s := sharedGuest(t)
	if _, err := exec.LookPath("ssh"); err != nil {
		t.Skip("no OpenSSH client (run make deps)")
	}
	out, err := exec.Command("ssh", "-F", filepath.Join(s.dir, FileSSHConfig), "lab", "echo", "openssh-ok").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "openssh-ok" {
		t.Fatalf("ssh -F ssh_config lab: %v\n%s", err, out)
	}
}

// TestIntegrationSecondVMKilled boots a second VM next to the shared one, with its
// hostagent in this process carrying two Tasks (as the relay will be carried), and
// checks: both VMs answer, with distinct CIDs and ports; a Task serves a vsock port
// and a failed Task shows in lab status; a dead vsock backend makes the VM "broken";
// after QEMU is killed with SIGKILL lab status says why and lab down cleans up.
func TestIntegrationSecondVMKilled(t *testing.T) {
	s := sharedGuest(t)
	const name = "second"
	dir := filepath.Join(s.base, "lab", name)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	echo := Task{Name: "echo", Run: func(ctx context.Context, env *Env) error {
		l, err := env.Listen(7000)
		if err != nil {
			return err
		}
		context.AfterFunc(ctx, func() { l.Close() })
		for {
			c, err := l.Accept()
			if err != nil {
				return ctx.Err()
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}}
	failing := Task{Name: "failing", Run: func(context.Context, *Env) error { return io.ErrUnexpectedEOF }}
	// A host process tree started the way the relay and the wine task start theirs
	// (Env.Procs), with a daemon that setsid()s away from the group: it must die with QEMU.
	marker, treeScript := labtest.HostTree(t)
	treeStarted := make(chan error, 1)
	tree := Task{Name: "tree", Run: func(ctx context.Context, env *Env) error {
		cmd := exec.Command(treeScript)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		env.Procs.Prepare(cmd)
		err := cmd.Start()
		treeStarted <- err
		if err == nil {
			go cmd.Wait()
		}
		<-ctx.Done()
		return nil
	}}
	agents := make(chan *agent, 1)
	h := &Hostagent{Tasks: []Task{echo, failing, tree}, onReady: func(a *agent) { agents <- a }}
	if _, err := Up(ctx, Config{Name: name, StateDir: dir, inProcess: h}); err != nil {
		t.Fatal(err)
	}
	defer Down(context.Background(), dir)
	a := <-agents
	st1, st2 := statusJSON(t, s.base, s.name), statusJSON(t, s.base, name)
	if st1.CID == st2.CID || st1.SSHPort == st2.SSHPort {
		t.Errorf("two VMs share CID (%d, %d) or port (%d, %d)", st1.CID, st2.CID, st1.SSHPort, st2.SSHPort)
	}
	for _, n := range []string{s.name, name} {
		if r := lab(t, s.base, "", "exec", "--name", n, "--", "hostname"); r.code != 0 {
			t.Errorf("exec on %s: exit %d %s", n, r.code, r.stderr)
		}
	}
	all := lab(t, s.base, "", "status", "--all", "--json")
	var sts []Status
	if err := json.Unmarshal([]byte(all.stdout), &sts); err != nil || len(sts) != 2 {
		t.Errorf("status --all: %v, %d VMs", err, len(sts))
	}

	// The echo Task answers on vsock port 7000; the failing Task shows in status.
	c, err := Connect(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	out, err := c.Output(ctx, "echo via-task | socat - VSOCK-CONNECT:2:7000")
	c.Close()
	if err != nil || string(out) != "via-task\n" {
		t.Errorf("echo task over vsock = %q, %v", out, err)
	}
	tasks := map[string]TaskState{}
	for _, th := range st2.Health.Tasks {
		tasks[th.Name] = th.State
	}
	if tasks["echo"] != "running" || tasks["failing"] != "failed" {
		t.Errorf("task health = %+v", st2.Health.Tasks)
	}
	if !strings.Contains(strings.Join(st2.Problems, "\n"), "task failing failed") {
		t.Errorf("problems do not name the failed task: %q", st2.Problems)
	}

	// The userspace backend dies: QEMU 7.2 cannot reconnect, so the VM is broken.
	if st2.Vsock == "user" {
		a.vsockDev.Close()
		var st *Status
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			if st = statusJSON(t, s.base, name); st.State == "broken" {
				break
			}
		}
		if st.State != "broken" || !strings.Contains(strings.Join(st.Problems, "\n"), "vsock is dead") {
			t.Errorf("after the vsock backend died: state %s, problems %q", st.State, st.Problems)
		}
		if r := lab(t, s.base, "", "status", "--name", name); !strings.Contains(r.stdout, "DEAD") {
			t.Errorf("lab status does not show the dead backend:\n%s", r.stdout)
		}
	}

	if err := <-treeStarted; err != nil {
		t.Fatalf("starting the host process tree: %v", err)
	}
	waitTree(t, marker, 3, 20*time.Second)

	qemuPID, agentPID := st2.QEMUPID, st2.AgentPID
	if err := syscall.Kill(qemuPID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// The hostagent ends with QEMU, and so does every process in its tree.
	waitTree(t, marker, 0, 30*time.Second)
	// The hostagent notices and exits; status then says stopped and why.
	deadline := time.Now().Add(20 * time.Second)
	var st *Status
	for {
		st = statusJSON(t, s.base, name)
		if st.State == "stopped" || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if st.State != "stopped" || st.QEMUAlive || st.AgentAlive || st.LastExit == nil || !strings.Contains(st.LastExit.Error, "killed") {
		t.Errorf("after kill -9: state %s, qemu alive %v, agent alive %v, last exit %+v", st.State, st.QEMUAlive, st.AgentAlive, st.LastExit)
	}
	if len(st.Problems) == 0 || !strings.Contains(st.Problems[0], "QEMU exited") {
		t.Errorf("problems = %q", st.Problems)
	}
	if r := lab(t, s.base, "", "exec", "--name", name, "--", "true"); r.code == 0 {
		t.Error("exec on a dead VM succeeded")
	}
	if r := lab(t, s.base, "", "down", "--name", name); r.code != 0 {
		t.Fatalf("lab down after kill -9: exit %d: %s", r.code, r.stderr)
	}
	if err := checkGone(dir, qemuPID, agentPID); err != nil {
		t.Error(err)
	}
	// The shared VM is unaffected.
	if r := lab(t, s.base, "", "exec", "--name", s.name, "--", "true"); r.code != 0 {
		t.Errorf("shared VM after the second's death: exit %d %s", r.code, r.stderr)
	}
}

func TestIntegrationUpErrors(t *testing.T) {
	s := sharedGuest(t)
	emptyPath := filepath.Join(tmpRoot, "empty-path")
	os.MkdirAll(emptyPath, 0o755)
	tests := []struct {
		name string
		env  []string
		args []string
		want string
	}{
		{"bad kernel", nil, []string{"--name", "badk", "--kernel", "/nonexistent/vmlinuz"}, "/nonexistent/vmlinuz"},
		{"missing qemu in PATH", []string{"PATH=" + emptyPath}, []string{"--name", "noqemu"}, "qemu-system-x86_64 not found"},
		{"missing qemu binary", nil, []string{"--name", "noqemu2", "--qemu", "/nonexistent/qemu"}, "/nonexistent/qemu not found"},
		{"occupied name", nil, []string{"--name", s.name}, "already running"},
		{"bad share", nil, []string{"--name", "badshare", "--share", "/nonexistent:/mnt/x"}, "/nonexistent"},
		{"bad accel", nil, []string{"--name", "badaccel", "--accel", "hvf"}, "--accel"},
	}
	if f, err := os.OpenFile("/dev/vhost-vsock", os.O_RDWR, 0); err != nil {
		tests = append(tests, struct {
			name string
			env  []string
			args []string
			want string
		}{"kernel vsock unavailable", nil, []string{"--name", "kvsock", "--vsock", "kernel"}, "/dev/vhost-vsock"})
	} else {
		f.Close()
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := labEnv(t, append([]string{"XDG_STATE_HOME=" + s.base}, tt.env...), "", append([]string{"up", "--no-provision", "--no-windows"}, tt.args...)...)
			if r.code == 0 || !strings.Contains(r.stderr, tt.want) {
				t.Fatalf("lab up %v: exit %d, stderr %q; want an error mentioning %q", tt.args, r.code, r.stderr, tt.want)
			}
			if n := strings.Count(strings.TrimSpace(r.stderr), "\n"); n > 0 {
				t.Errorf("the error spans %d lines:\n%s", n+1, r.stderr)
			}
			if tt.args[1] != s.name {
				if _, err := os.Stat(filepath.Join(s.base, "lab", tt.args[1])); err == nil {
					t.Errorf("a failed up left its state dir behind")
				}
			}
		})
	}
	if st := statusJSON(t, s.base, s.name); st.State != "running" {
		t.Errorf("the shared VM after a second up with its name: %s", st.State)
	}
}

// TestIntegrationBootFailures: QEMU exiting at once, and a boot timeout, both leave
// nothing behind and show what the console / QEMU said.
func TestIntegrationBootFailures(t *testing.T) {
	labBinary(t)
	img, err := images.Build(context.Background(), images.Options{})
	if err != nil {
		t.Fatal(err)
	}
	garbage := filepath.Join(tmpRoot, "not-a-kernel")
	os.WriteFile(garbage, bytes.Repeat([]byte("junk"), 1000), 0o644)
	bad := *img
	bad.Kernel = garbage
	bad.Manifest.KernelPVH = false
	tests := []struct {
		name    string
		img     *images.Image
		timeout time.Duration
		want    []string
	}{
		{"qemu exits", &bad, time.Minute, []string{"QEMU exited before SSH was ready", "QEMU said"}},
		{"timeout", img, time.Second, []string{"SSH not ready after 1s"}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(tmpRoot, "fail", strconv.Itoa(i))
			_, err := Up(context.Background(), Config{Name: "fail", StateDir: dir, Image: tt.img, Accel: "tcg",
				Hostagent: []string{labBin, "hostagent"}, BootTimeout: tt.timeout})
			if err == nil {
				Down(context.Background(), dir)
				t.Fatal("Up succeeded")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not mention %q:\n%v", w, err)
				}
			}
			if _, serr := os.Stat(dir); serr == nil {
				t.Errorf("state dir left behind")
			}
			if out, _ := exec.Command("pgrep", "-f", dir).Output(); len(out) > 0 {
				t.Errorf("processes left behind: %s", out)
			}
		})
	}
}

// BenchmarkExec compares a command over the hostagent's kept connection (Go API and
// the lab exec process) with the baseline of a new SSH connection to the guest. Next
// to ns/op (a mean, easily skewed by a loaded host) each reports its median.
func BenchmarkExec(b *testing.B) {
	s := sharedGuest(b)
	ctx := context.Background()
	timed := func(b *testing.B, op func()) {
		var ms []float64
		for b.Loop() {
			t := time.Now()
			op()
			ms = append(ms, float64(time.Since(t).Microseconds())/1000)
		}
		b.ReportMetric(median(ms), "median-ms")
	}
	b.Run("kept-connection", func(b *testing.B) {
		c := connect(ctx, b, s.dir)
		// Warm up: right after boot the guest is still busy.
		for range 5 {
			c.Run(ctx, "true", nil, nil, nil)
		}
		timed(b, func() {
			if code, err := c.Run(ctx, "true", nil, nil, nil); err != nil || code != 0 {
				b.Fatal(code, err)
			}
		})
	})
	b.Run("lab-exec-process", func(b *testing.B) {
		timed(b, func() {
			if r := lab(b, s.base, "", "exec", "--name", s.name, "--", "true"); r.code != 0 {
				b.Fatal(r.stderr)
			}
		})
	})
	b.Run("baseline-new-ssh-connection", func(b *testing.B) {
		ks, err := loadKeys(s.dir)
		if err != nil {
			b.Fatal(err)
		}
		in, _ := readInstance(s.dir)
		addr := "127.0.0.1:" + strconv.Itoa(in.SSHPort)
		timed(b, func() {
			c, err := dialReady(ctx, addr, ks.clientConfig())
			if err != nil {
				// Under heavy load the banner may miss dialReady's 1 s deadline once.
				if c, err = dialReady(ctx, addr, ks.clientConfig()); err != nil {
					b.Fatal(err)
				}
			}
			c.Close()
		})
	})
}

// BenchmarkUp boots and stops a VM per iteration and reports medians: boot-s is QEMU
// start to SSH ready (the hostagent's figure) next to up-s, the whole Up (trial,
// keys, initrd, hostagent); memory figures are of the idle VM (QEMU's PSS counts
// the guest pages it touched, shared memfd pages split with the vsock backend).
func BenchmarkUp(b *testing.B) {
	labBinary(b)
	img, err := images.Build(context.Background(), images.Options{})
	if err != nil {
		b.Fatal(err)
	}
	var boot, up, qemuRSS, qemuPSS, agentRSS []float64
	n := 0
	for b.Loop() {
		dir := filepath.Join(tmpRoot, "bench", strconv.Itoa(n))
		start := time.Now()
		_, err := Up(context.Background(), Config{Name: "bench", StateDir: dir, Image: img, Hostagent: []string{labBin, "hostagent"}})
		if err != nil {
			b.Fatal(err)
		}
		up = append(up, time.Since(start).Seconds())
		b.StopTimer()
		st, err := Inspect(context.Background(), dir)
		if err != nil || st.Health == nil {
			b.Fatal(err)
		}
		boot = append(boot, st.Health.BootSeconds)
		time.Sleep(2 * time.Second) // idle
		r, p := memKiB(st.QEMUPID)
		qemuRSS, qemuPSS = append(qemuRSS, r/1024), append(qemuPSS, p/1024)
		r, _ = memKiB(st.AgentPID)
		agentRSS = append(agentRSS, r/1024)
		if err := downAndCheck(dir); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		n++
	}
	b.ReportMetric(median(boot), "boot-s")
	b.ReportMetric(median(up), "up-s")
	b.ReportMetric(median(qemuRSS), "qemu-RSS-MiB")
	b.ReportMetric(median(qemuPSS), "qemu-PSS-MiB")
	b.ReportMetric(median(agentRSS), "hostagent-RSS-MiB")
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s[len(s)/2]
}

// memKiB returns the RSS and PSS of pid in KiB.
func memKiB(pid int) (rss, pss float64) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return 0, 0
	}
	defer f.Close()
	b, _ := io.ReadAll(f)
	for _, line := range strings.Split(string(b), "\n") {
		fs := strings.Fields(line)
		if len(fs) >= 2 {
			v, _ := strconv.ParseFloat(fs[1], 64)
			switch fs[0] {
			case "Rss:":
				rss = v
			case "Pss:":
				pss = v
			}
		}
	}
	return rss, pss
}

// TestIntegrationSocketModes: the shared VM was started under umask 000, yet every
// Unix socket in its state dir (lab's, and QMP's, which QEMU serves) is 0600.
func TestIntegrationSocketModes(t *testing.T) {
	s := sharedGuest(t)
	want := []string{FileAgentSock, FileQMPSock}
	if st := statusJSON(t, s.base, s.name); st.Vsock == "user" {
		want = append(want, FileVhostSock, FileVsockUDS)
	}
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, e := range ents {
		fi, err := e.Info()
		if err != nil || fi.Mode()&os.ModeSocket == 0 {
			continue
		}
		seen[e.Name()] = true
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v; want 0600", e.Name(), fi.Mode())
		}
	}
	for _, n := range want {
		if !seen[n] {
			t.Errorf("no socket %s in the state dir", n)
		}
	}
}

// TestIntegrationVsock checks the vsock wiring both ways through the userspace
// backend's host side (Firecracker convention in the state dir), with socat in the guest.
func TestIntegrationVsock(t *testing.T) {
	s := sharedGuest(t)
	st := statusJSON(t, s.base, s.name)
	if st.Vsock != "user" {
		t.Skipf("vsock mode %s: the host-side Unix sockets exist only with the userspace backend", st.Vsock)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := connect(ctx, t, s.dir)

	// Guest -> host: a connection to CID 2 port 1234 reaches "<dir>/vsock.sock_1234".
	l, err := net.Listen("unix", filepath.Join(s.dir, FileVsockUDS+"_1234"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	got := make(chan string, 1)
	go func() {
		conn, err := l.Accept()
		if err != nil {
			got <- err.Error()
			return
		}
		b, _ := io.ReadAll(conn)
		conn.Close()
		got <- string(b)
	}()
	if _, err := c.Output(ctx, "echo hello-host | socat -u - VSOCK-CONNECT:2:1234"); err != nil {
		t.Fatal(err)
	}
	if g := <-got; g != "hello-host\n" {
		t.Errorf("host received %q", g)
	}

	// Host -> guest: CONNECT 5000 on "<dir>/vsock.sock" reaches a guest listener.
	done := make(chan error, 1)
	go func() {
		_, err := c.Output(ctx, "timeout 30 socat -u VSOCK-LISTEN:5000 CREATE:/tmp/vsock.out")
		done <- err
	}()
	var conn net.Conn
	for {
		conn, err = net.Dial("unix", filepath.Join(s.dir, FileVsockUDS))
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(conn, "CONNECT 5000\n")
		line, _ := bufio.NewReader(conn).ReadString('\n')
		if strings.HasPrefix(line, "OK ") {
			break
		}
		conn.Close()
		if ctx.Err() != nil {
			t.Fatal("the guest listener never answered")
		}
		time.Sleep(100 * time.Millisecond)
	}
	io.WriteString(conn, "hello-guest\n")
	conn.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if out, err := c.Output(ctx, "cat /tmp/vsock.out"); err != nil || string(out) != "hello-guest\n" {
		t.Errorf("guest received %q, %v", out, err)
	}
}

// TestIntegrationAccel runs the real KVM trial: auto and kvm must agree, and the
// verdict must be cached.
func TestIntegrationAccel(t *testing.T) {
	labtest.NeedVM(t)
	qemuBin, _ := exec.LookPath("qemu-system-x86_64")
	ctx := context.Background()
	cache := t.TempDir()
	auto, reason, err := chooseAccel(ctx, qemuBin, runtime.GOARCH, "auto", cache)
	if err != nil || (auto != "kvm" && auto != "tcg") || reason == "" {
		t.Fatalf("auto = %q (%s), %v", auto, reason, err)
	}
	t.Logf("auto: %s (%s)", auto, reason)
	kvm, _, err := chooseAccel(ctx, qemuBin, runtime.GOARCH, "kvm", cache)
	if auto == "kvm" && (err != nil || kvm != "kvm") {
		t.Errorf("auto chose kvm but --accel kvm = %q, %v", kvm, err)
	}
	if auto == "tcg" {
		if err == nil || !strings.Contains(err.Error(), "KVM does not work") {
			t.Errorf("auto fell back to tcg but --accel kvm = %q, %v", kvm, err)
		}
		if _, statErr := os.Stat("/dev/kvm"); statErr == nil && !strings.Contains(err.Error(), "cached") {
			t.Errorf("the second trial was not cached: %v", err)
		}
	}
	if tcg, _, err := chooseAccel(ctx, qemuBin, runtime.GOARCH, "tcg", cache); tcg != "tcg" || err != nil {
		t.Errorf("tcg = %q, %v", tcg, err)
	}
}

// TestIntegrationReconnect: sshd applies its config per connection, so Reconnect must
// give new sessions a new guest connection (a new per-connection sshd process, the
// shells' parent), while a session started before keeps running on the old one,
// which ends with that session.
func TestIntegrationReconnect(t *testing.T) {
	s := sharedGuest(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := connect(ctx, t, s.dir)
	ppid := func() string {
		t.Helper()
		out, err := c.Output(ctx, "echo $PPID")
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(out))
	}
	before := ppid()
	if again := ppid(); again != before {
		t.Fatalf("two sessions on the kept connection have parents %s and %s; want one sshd process", before, again)
	}
	pr, pw := io.Pipe()
	var out labtest.SyncBuffer
	done := make(chan error, 1)
	go func() {
		code, err := c.Run(ctx, "echo $PPID; cat", pr, &out, nil)
		if err == nil && code != 0 {
			err = fmt.Errorf("exit %d", code)
		}
		done <- err
	}()
	waitFor(t, func() bool { return out.String() == before+"\n" })

	if err := c.Reconnect(ctx); err != nil {
		t.Fatal(err)
	}
	after := ppid()
	if after == before {
		t.Fatalf("after Reconnect sessions still run under sshd process %s", before)
	}
	io.WriteString(pw, "still here\n")
	waitFor(t, func() bool { return out.String() == before+"\nstill here\n" })
	pw.Close()
	if err := <-done; err != nil {
		t.Fatalf("the session started before Reconnect: %v", err)
	}
	// The old connection's sshd process ends once its last session has.
	waitFor(t, func() bool {
		code, err := c.Run(ctx, "kill -0 "+before, nil, nil, nil)
		return err == nil && code != 0
	})
}

// waitTree polls until exactly n processes hold marker, or fails after d.
func waitTree(t *testing.T, marker string, n int, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		pids := labtest.Procs(marker, "")
		if len(pids) == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("processes of the host tree %s: %v, want %d", marker, pids, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
