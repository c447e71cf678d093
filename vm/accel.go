package vm

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"lab/internal/sigdefault"
	"lab/vm/qemu"
)

// chooseAccel turns --accel auto|kvm|tcg into the accelerator QEMU runs with and a
// reason a person can read in lab status. A /dev/kvm that exists proves nothing (on
// some hosts QEMU aborts in kvm_buf_set_msrs as soon as a vCPU resets), so KVM is
// trusted only after a trial run; the verdict is cached per host boot and QEMU binary.
// arch is the guest's ("amd64", "arm64"): KVM runs only the host's own.
func chooseAccel(ctx context.Context, qemuBin, arch, want, cacheDir string) (accel, reason string, err error) {
	switch want {
	case "tcg":
		return "tcg", "requested", nil
	case "kvm", "auto":
	default:
		return "", "", fmt.Errorf("vm: --accel %q: want auto, kvm or tcg", want)
	}
	if arch != runtime.GOARCH {
		why := fmt.Sprintf("an %s guest on an %s host", arch, runtime.GOARCH)
		if want == "kvm" {
			return "", "", fmt.Errorf("vm: --accel kvm: KVM cannot run %s; use --accel tcg or auto, or --arch %s", why, runtime.GOARCH)
		}
		return "tcg", "auto: " + why + " runs under TCG", nil
	}
	ok, why := kvmWorks(ctx, qemuBin, arch, cacheDir)
	switch {
	case ok:
		return "kvm", want + ": KVM trial passed", nil
	case want == "kvm":
		return "", "", fmt.Errorf("vm: --accel kvm: KVM does not work on this host (%s); use --accel tcg or auto", why)
	default:
		return "tcg", "auto: KVM unusable (" + why + ")", nil
	}
}

type kvmVerdict struct {
	BootID string `json:"boot_id"`
	QEMU   string `json:"qemu"` // path and mtime
	OK     bool   `json:"ok"`
	Why    string `json:"why"`
}

func kvmWorks(ctx context.Context, qemuBin, arch, cacheDir string) (bool, string) {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return false, "cannot open /dev/kvm: " + errors.Unwrap(err).Error()
	}
	f.Close()
	bootID, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	key := kvmVerdict{BootID: strings.TrimSpace(string(bootID)), QEMU: qemuBin}
	if st, err := os.Stat(qemuBin); err == nil {
		key.QEMU += "@" + st.ModTime().UTC().Format(time.RFC3339Nano)
	}
	cache := filepath.Join(cacheDir, "kvm-verdict.json")
	if b, err := os.ReadFile(cache); err == nil {
		var v kvmVerdict
		if json.Unmarshal(b, &v) == nil && v.BootID == key.BootID && v.QEMU == key.QEMU {
			return v.OK, v.Why + " (cached)"
		}
	}
	ok, why := kvmTrial(ctx, qemuBin, arch)
	key.OK, key.Why = ok, why
	if os.MkdirAll(cacheDir, 0o700) == nil {
		_ = writeJSON(cache, key)
	}
	return ok, why
}

// kvmTrial boots an empty q35 machine (arm64: virt) under KVM with the CPU model lab
// would use, lets its vCPUs run through reset and firmware for a moment, and checks
// through QMP that KVM is enabled and QEMU is still alive and exits cleanly.
func kvmTrial(ctx context.Context, qemuBin, arch string) (bool, string) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	dir, err := os.MkdirTemp("", "lab-kvm-trial-")
	if err != nil {
		return false, err.Error()
	}
	defer os.RemoveAll(dir)
	qmpf, err := listenQMP(dir)
	if err != nil {
		return false, err.Error()
	}
	fns := []qemu.Fn{qemu.WithBinary(qemuBin), qemu.WithArch(arch), qemu.WithAccel("kvm"), qemu.WithMemory(64), qemu.WithQMPListener(qmpFD)}
	if _, err := os.Stat(qemu.QbootROM); err == nil && arch == "amd64" {
		fns = append(fns, qemu.WithBIOS(qemu.QbootROM))
	}
	argv, err := qemu.Command(fns...)
	if err != nil {
		qmpf.Close()
		return false, err.Error()
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.ExtraFiles = []*os.File{qmpf}
	err = sigdefault.Start(cmd)
	qmpf.Close() // QEMU's is the only copy
	if err != nil {
		return false, err.Error()
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	// fail kills QEMU (which also ends a QMP call go-qemu cannot interrupt).
	fail := func(what string) (bool, string) {
		cmd.Process.Kill()
		err := <-exited
		msg := lastLine(stderr.String())
		if msg == "" && err != nil {
			msg = err.Error()
		}
		return false, what + ": " + msg
	}
	m, err := connectMonitor(ctx, filepath.Join(dir, FileQMPSock))
	if err != nil {
		select {
		case <-exited:
			exited <- nil
			return fail("QEMU exited at start")
		default:
		}
		return fail("no QMP answer")
	}
	defer m.close()
	// The known failure (kvm_buf_set_msrs) comes when the vCPUs reset; give them time.
	select {
	case <-exited:
		exited <- nil
		return fail("QEMU aborted")
	case <-time.After(300 * time.Millisecond):
	}
	k, err := m.queryKVM(ctx)
	if err != nil || !k.Enabled {
		return fail("KVM not enabled")
	}
	if st, err := m.queryStatus(ctx); err != nil || !st.Running {
		return fail("vCPUs not running")
	}
	_ = m.quit(ctx)
	select {
	case err := <-exited:
		if err != nil {
			return false, "QEMU under KVM: " + err.Error() + ": " + lastLine(stderr.String())
		}
		return true, "ok"
	case <-ctx.Done():
		return fail("QEMU did not quit")
	}
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	for _, b := range []string{qemu.DefaultBinary, qemu.BinaryARM64} {
		s = strings.TrimPrefix(s, b+": ")
	}
	return s
}
