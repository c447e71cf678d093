package vm

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"

	"lab/images"
	"lab/internal/fsutil"
	"lab/internal/progress"
	"lab/internal/sigdefault"
	"lab/vm/qemu"
)

// Up boots a VM through a supervising hostagent process and waits until its SSH
// server runs commands. On any failure nothing is left running and the state
// directory is removed; the error holds the last console lines.
func Up(ctx context.Context, cfg Config) (*Instance, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	qemuBin, err := exec.LookPath(cfg.QEMU)
	if err != nil {
		pkg := "qemu-system-x86"
		if cfg.Arch == images.ARM64 {
			pkg = "qemu-system-arm"
		}
		return nil, fmt.Errorf("vm: %s not found: install QEMU (apt-get install %s, or run make deps): %w", cfg.QEMU, pkg, err)
	}
	for _, f := range []struct{ what, path string }{{"--kernel", cfg.Kernel}, {"--modules", cfg.Modules}} {
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			return nil, fmt.Errorf("vm: %s %s: %w", f.what, f.path, errors.Unwrap(err))
		}
	}
	for _, sh := range cfg.Shares {
		st, err := os.Stat(sh.HostPath)
		if err != nil {
			return nil, fmt.Errorf("vm: share %s: %w", sh.HostPath, err)
		}
		if !st.IsDir() {
			return nil, fmt.Errorf("vm: share %s: not a directory", sh.HostPath)
		}
	}
	agentCmd := cfg.Hostagent
	if len(agentCmd) == 0 {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("vm: finding the lab executable for the hostagent: %w", err)
		}
		agentCmd = []string{exe, "hostagent"}
	}

	// Claim the name: the base dir's lock serialises Up, allocation and stale cleanup.
	base := filepath.Dir(cfg.StateDir)
	if err := os.MkdirAll(base, 0o700); err != nil {
		return nil, fmt.Errorf("vm: %w", err)
	}
	baseLock, err := fsutil.LockFile(ctx, filepath.Join(base, ".lock"))
	if err != nil {
		return nil, fmt.Errorf("vm: %w", err)
	}
	cid, port, upLock, err := claim(cfg, base)
	if err != nil {
		baseLock.Unlock()
		return nil, err
	}
	defer upLock.Unlock()
	// From here on a failure removes the state dir (and the hostagent, if started).
	ok := false
	var agentPID int
	defer func() {
		if !ok {
			teardown(cfg.StateDir, agentPID)
		}
	}()
	// Reserve the CID and port for concurrent Ups before dropping the lock.
	if err := writeJSON(filepath.Join(cfg.StateDir, FileInstance), Instance{Name: cfg.Name, StateDir: cfg.StateDir, CID: cid, SSHPort: port}); err != nil {
		baseLock.Unlock()
		return nil, fmt.Errorf("vm: %w", err)
	}
	baseLock.Unlock()

	vsockMode, err := chooseVsock(cfg.Vsock)
	if err != nil {
		return nil, err
	}
	accel, reason, err := chooseAccel(ctx, qemuBin, cfg.Arch, cfg.Accel, base)
	if err != nil {
		return nil, err
	}

	img := cfg.Image
	if img == nil {
		img, err = images.Build(ctx, images.Options{CacheDir: cfg.CacheDir, Kernel: cfg.Kernel, Modules: cfg.Modules, Arch: cfg.Arch, Progress: cfg.Progress, Distro: cfg.Distro})
		if err != nil {
			return nil, fmt.Errorf("vm: guest image: %w", err)
		}
	}
	ks, hostPriv, err := generateKeys(cfg.StateDir)
	if err != nil {
		return nil, fmt.Errorf("vm: keys: %w", err)
	}
	var disk string
	if img.Disk != "" {
		// A disk image: the machine's own overlay; the keys go through fw_cfg.
		if cfg.Disk == "" {
			return nil, fmt.Errorf("vm: the %s image boots on a disk of the machine's own: Config.Disk is empty", img.Distro)
		}
		if disk, err = filepath.Abs(cfg.Disk); err != nil {
			return nil, fmt.Errorf("vm: disk: %w", err)
		}
		if _, err := ensureDisk(cfg.Name, disk, img, cfg.Progress); err != nil {
			return nil, err
		}
		if err := writeInstanceTar(filepath.Join(cfg.StateDir, FileInstanceTar), ks.client.PublicKey(), hostPriv); err != nil {
			return nil, err
		}
	}
	if err := writeSSHConfig(cfg.StateDir, port, ks.host.PublicKey()); err != nil {
		return nil, fmt.Errorf("vm: %w", err)
	}

	for name, data := range cfg.StateFiles { // names checked by withDefaults
		if err := os.WriteFile(filepath.Join(cfg.StateDir, name), data, 0o600); err != nil {
			return nil, fmt.Errorf("vm: %w", err)
		}
	}
	if cfg.Scratch != "" {
		dir := filepath.Join(cfg.StateDir, DirScratch)
		if err := os.Mkdir(dir, 0o755); err != nil {
			return nil, fmt.Errorf("vm: scratch share: %w", err)
		}
		cfg.Shares = append(cfg.Shares, Share{HostPath: dir, GuestPath: cfg.Scratch, Tag: ScratchTag})
	}
	in := &Instance{
		Name: cfg.Name, StateDir: cfg.StateDir, Created: time.Now().UTC(),
		Accel: accel, AccelReason: reason, Vsock: vsockMode, CID: cid, SSHPort: port,
		MemoryMiB: cfg.MemoryMiB, CPUs: cfg.CPUs, Shares: cfg.Shares,
		Arch: img.Arch(), Image: img.Dir,
		Kernel: img.Kernel, KernelVer: img.KernelVersion, BootTimeout: Duration(cfg.BootTimeout),
		Distro: img.Distro, Disk: disk, ConsoleReady: img.Manifest.ConsoleReady(),
	}
	// The initramfs guest always boots the state dir's initrd (its keys are in it); a disk
	// guest only when it gets BootFiles (its keys go through fw_cfg).
	instanceInitrd := img.Disk == "" || cfg.BootFiles != nil
	in.Argv, err = qemuArgv(qemuBin, in, img, instanceInitrd)
	if err != nil {
		return nil, err
	}
	if err := writeJSON(filepath.Join(cfg.StateDir, FileInstance), in); err != nil {
		return nil, fmt.Errorf("vm: %w", err)
	}
	if instanceInitrd {
		var extra []images.File
		if cfg.BootFiles != nil {
			if extra, err = cfg.BootFiles(in); err != nil {
				return nil, fmt.Errorf("vm: boot files: %w", err)
			}
		}
		files, err := instanceFiles(img, ks.client.PublicKey(), hostPriv, extra)
		if err != nil {
			return nil, err
		}
		if err := writeInitrd(filepath.Join(cfg.StateDir, FileInitrd), img.Initrd, files); err != nil {
			return nil, err
		}
	}

	// The hostagent writes its boot events (events.jsonl's lines) to this pipe and
	// closes it once ready or failed; EOF without a verdict means it died.
	evR, evW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("vm: %w", err)
	}
	defer evR.Close()
	var agentExit <-chan error
	if h := cfg.inProcess; h != nil {
		// Tests: the hostagent runs in this process; agentPID stays 0, so a failed Up
		// stops it by cancelling its context.
		actx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		exited, done := make(chan error, 1), make(chan struct{})
		h.StateDir, h.eventPipe = cfg.StateDir, evW // Run closes evW
		go func() { exited <- h.Run(actx); close(done) }()
		agentExit = exited
		defer func() {
			if !ok {
				cancel()
				<-done // not <-exited: waitBooted may have taken its value
			}
		}()
	} else {
		agentPID, agentExit, err = startAgent(agentCmd, cfg.StateDir, evW)
		evW.Close() // the hostagent holds its own copy
		if err != nil {
			return nil, err
		}
	}
	if err := waitBooted(ctx, cfg, in, evR, agentExit); err != nil {
		return nil, err
	}
	ok = true
	return in, nil
}

// claim prepares cfg.StateDir: it refuses a VM that is alive, removes a dead one's
// leftovers, and allocates the CID and SSH port.
// The returned file holds the state dir's up.lock until Up returns, so a concurrent
// Up of the same name sees the VM as starting rather than stale.
func claim(cfg Config, base string) (uint32, int, *fsutil.Lock, error) {
	dir := cfg.StateDir
	if _, err := os.Stat(dir); err == nil {
		if l, err := fsutil.TryLock(filepath.Join(dir, fileUpLock)); errors.Is(err, fsutil.ErrLocked) {
			return 0, 0, nil, fmt.Errorf("vm: a VM named %q is being started by another lab up", cfg.Name)
		} else if err == nil {
			l.Unlock()
		}
		if !isStateDir(dir) {
			return 0, 0, nil, fmt.Errorf("vm: %s exists and is not a lab state directory; choose another --name or state dir", dir)
		}
		if agentAlive(dir) || processAlive(readPID(filepath.Join(dir, FileQEMUPID)), dir) {
			return 0, 0, nil, fmt.Errorf("vm: a VM named %q is already running (lab status --name %s; lab down --name %s)", cfg.Name, cfg.Name, cfg.Name)
		}
		if err := os.RemoveAll(dir); err != nil {
			return 0, 0, nil, fmt.Errorf("vm: removing the stale state of %q: %w", cfg.Name, err)
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return 0, 0, nil, fmt.Errorf("vm: %w", err)
	}
	l, err := fsutil.TryLock(filepath.Join(dir, fileUpLock))
	if err != nil {
		return 0, 0, nil, fmt.Errorf("vm: %w", err)
	}
	cid, port, err := allocate(base, dir)
	if err != nil {
		l.Unlock()
		return 0, 0, nil, err
	}
	return cid, port, l, nil
}

func chooseVsock(want string) (string, error) {
	kernelOK := func() error {
		f, err := os.OpenFile("/dev/vhost-vsock", os.O_RDWR, 0)
		if err != nil {
			return err
		}
		return f.Close()
	}
	switch want {
	case "user":
		return "user", nil
	case "kernel":
		if err := kernelOK(); err != nil {
			return "", fmt.Errorf("vm: --vsock kernel: %w (load it with modprobe vhost_vsock, or use --vsock user)", err)
		}
		return "kernel", nil
	default:
		if kernelOK() == nil {
			return "kernel", nil
		}
		return "user", nil
	}
}

// qemuArgv is the VM's QEMU command line.
// instanceInitrd: the state dir's initrd (the image's followed by this boot's files),
// else the image's own.
func qemuArgv(bin string, in *Instance, img *images.Image, instanceInitrd bool) ([]string, error) {
	dir := in.StateDir
	cmdline := strings.Fields(img.Cmdline)
	initrd := filepath.Join(dir, FileInitrd)
	if !instanceInitrd {
		initrd = img.Initrd
	}
	fns := []qemu.Fn{
		qemu.WithBinary(bin), qemu.WithArch(in.Arch), qemu.WithAccel(in.Accel), qemu.WithSMP(in.CPUs), qemu.WithMemory(in.MemoryMiB),
		qemu.WithKernel(img.Kernel), qemu.WithInitrd(initrd),
		qemu.WithSerialFile(filepath.Join(dir, FileConsoleLog)),
		qemu.WithQMPListener(qmpFD), // the hostagent creates qmp.sock (listenQMP)
		qemu.WithUserNet(qemu.Forward{HostPort: in.SSHPort, GuestPort: 22}),
		qemu.WithRNG(),
	}
	// qboot jumps straight into a PVH kernel; other kernels need SeaBIOS.
	if img.Manifest.KernelPVH && in.Arch == images.AMD64 {
		if _, err := os.Stat(qemu.QbootROM); err == nil {
			fns = append(fns, qemu.WithBIOS(qemu.QbootROM))
		}
	}
	if in.Disk != "" {
		fns = append(fns, qemu.WithDisk(in.Disk), qemu.WithFwCfgFile(images.FwCfgInstance, filepath.Join(dir, FileInstanceTar)))
	}
	switch in.Vsock {
	case "kernel":
		fns = append(fns, qemu.WithKernelVsock(in.CID))
	case "user":
		fns = append(fns, qemu.WithUserVsock(filepath.Join(dir, FileVhostSock)))
	}
	for _, sh := range in.Shares {
		fns = append(fns, qemu.WithShare(sh.HostPath, sh.Tag, sh.ReadOnly))
		cmdline = append(cmdline, "lab.mount="+sh.Tag+":"+sh.GuestPath)
	}
	fns = append(fns, qemu.WithAppend(cmdline...))
	argv, err := qemu.Command(fns...)
	if err != nil {
		return nil, fmt.Errorf("vm: %w", err)
	}
	return argv, nil
}

// instanceFiles is this boot's cpio: the initramfs guest's keys, then extra (a disk
// guest's keys go through fw_cfg: its initrd hands the root only the seed).
func instanceFiles(img *images.Image, authorized ssh.PublicKey, hostKey ed25519.PrivateKey, extra []images.File) ([]images.File, error) {
	if img.Disk != "" {
		return extra, nil
	}
	files, err := images.InstanceFiles(authorized, hostKey)
	if err != nil {
		return nil, fmt.Errorf("vm: %w", err)
	}
	return append(files, extra...), nil
}

// writeInitrd writes the base image's cpio followed by this VM's (the initramfs guest's
// keys, then the BootFiles).
func writeInitrd(path, base string, files []images.File) error {
	src, err := os.Open(base)
	if err != nil {
		return fmt.Errorf("vm: guest image: %w", err)
	}
	defer src.Close()
	dst, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("vm: %w", err)
	}
	w := bufio.NewWriterSize(dst, 1<<20)
	n, err := io.Copy(w, src)
	if err == nil && n%4 != 0 {
		// The kernel finds the next archive only at a 4-byte boundary.
		_, err = w.Write(make([]byte, 4-n%4))
	}
	if err == nil {
		err = images.WriteCPIO(w, files)
	}
	if err == nil {
		err = w.Flush()
	}
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("vm: writing the instance initrd: %w", err)
	}
	return nil
}

// startAgent starts the hostagent in its own session (it outlives `lab up`), with
// its output going to ha.log and events, the write end of Up's event pipe, as its
// fd 3 (named by EnvEventsFD).
func startAgent(argv []string, dir string, events *os.File) (int, <-chan error, error) {
	logf, err := os.OpenFile(filepath.Join(dir, FileAgentLog), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return 0, nil, fmt.Errorf("vm: %w", err)
	}
	defer logf.Close()
	cmd := exec.Command(argv[0], append(argv[1:], "--state-dir", dir)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = dir
	cmd.ExtraFiles = []*os.File{events}
	cmd.Env = append(os.Environ(), EnvEventsFD+"=3") // ExtraFiles[0] is fd 3
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	// Signals at their defaults, whatever lab inherited (nohup, a background job): QEMU
	// and the host programs start from the hostagent.
	if err := sigdefault.Start(cmd); err != nil {
		return 0, nil, fmt.Errorf("vm: starting the hostagent %s: %w", argv[0], err)
	}
	// Reap it if it exits while we wait; once Up returns it belongs to init.
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	return cmd.Process.Pid, exited, nil
}

// waitBooted reads the hostagent's event pipe until it reports ready or failed,
// showing a progress line. EOF without a verdict is the hostagent's death: its exit
// status and last log lines are the error.
func waitBooted(ctx context.Context, cfg Config, in *Instance, events *os.File, agentExit <-chan error) error {
	start := time.Now()
	prog := progress.New(cfg.Progress).Wait(fmt.Sprintf("lab: booting %s (%s, %s vsock)", in.Name, in.Accel, in.Vsock))
	defer prog.Stop()
	deadline := time.Duration(in.BootTimeout) + 30*time.Second
	timeout := time.NewTimer(deadline)
	defer timeout.Stop()
	verdict := make(chan error, 1)
	go func() { verdict <- followEvents(events) }()
	// Leaving early closes the read end, which ends followEvents' read.
	defer func() { events.Close(); <-verdict }()
	stopped := func() error {
		select {
		case <-ctx.Done():
			return fmt.Errorf("vm: boot interrupted: %w", ctx.Err())
		default:
			return fmt.Errorf("vm: no answer from the hostagent after %v; see %s", deadline, filepath.Join(in.StateDir, FileAgentLog))
		}
	}
	select {
	case err := <-verdict:
		verdict <- err // for the deferred receive
		if err == nil {
			prog.Done("lab: %s is ready (%.1fs)", in.Name, time.Since(start).Seconds())
			return nil
		}
		if !errors.Is(err, errNoVerdict) {
			return err
		}
	case <-ctx.Done():
		return stopped()
	case <-timeout.C:
		return stopped()
	}
	select {
	case agentErr := <-agentExit:
		return fmt.Errorf("vm: the hostagent exited during boot (%v); it said:\n%s", agentErr,
			indent(tail(filepath.Join(in.StateDir, FileAgentLog), 10)))
	case <-ctx.Done():
		return stopped()
	case <-timeout.C:
		return stopped()
	}
}

// errNoVerdict: the event stream ended before a ready or failed event.
var errNoVerdict = errors.New("vm: the hostagent's events ended without ready or failed")

// followEvents reads event lines (events.jsonl's) from r until the verdict: nil on
// ready, the hostagent's error on failed (or exited), errNoVerdict at EOF. Lines that
// are not events are skipped.
func followEvents(r io.Reader) error {
	br := bufio.NewReader(r)
	for {
		line, rerr := br.ReadBytes('\n')
		var e Event
		if len(line) > 0 && json.Unmarshal(line, &e) == nil {
			switch e.Phase {
			case "ready":
				return nil
			case "failed", "exited":
				if e.Error == "" {
					e.Error = "vm: the hostagent stopped during boot"
				}
				return errors.New(e.Error)
			}
		}
		if rerr == io.EOF {
			return errNoVerdict
		}
		if rerr != nil {
			return fmt.Errorf("vm: reading the hostagent's boot events: %w", rerr)
		}
	}
}

// teardown stops whatever a failed Up started and removes the state dir.
func teardown(dir string, agentPID int) {
	if agentPID > 0 {
		stopPID(agentPID, dir, 5*time.Second)
	}
	if pid := readPID(filepath.Join(dir, FileQEMUPID)); pid > 0 {
		stopPID(pid, dir, 2*time.Second)
	}
	os.RemoveAll(dir)
}

// stopPID sends SIGTERM, then SIGKILL after grace, to pid if it is still ours.
func stopPID(pid int, marker string, grace time.Duration) {
	if !processAlive(pid, marker) {
		return
	}
	syscall.Kill(pid, syscall.SIGTERM)
	if waitGone(context.Background(), pid, marker, grace) {
		return
	}
	syscall.Kill(pid, syscall.SIGKILL)
	waitGone(context.Background(), pid, marker, 2*time.Second)
}
