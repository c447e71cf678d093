// Package bench measures lab's interop against its baselines in one run on one fresh VM
// (lab bench): launch latency of a trivial foreign program versus the same program run
// natively in the guest and on the host, a guest->host SSH exec and lab exec; pipe
// throughput through interop versus raw guest<->host vsock and an SSH pipe; 100
// concurrent launches; boot to first interop exec. Figures are measured inside the
// guest where the guest is the client (probe program labbench), so the SSH session that
// starts a measurement is not part of it.
package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	hostpkg "lab/host"
	"lab/images"
	"lab/machine"
	"lab/pefixtures"
	"lab/scenarios"
	"lab/scenarios/suite"
	"lab/vm"
	"lab/wineprefix"
)

// Options of a bench run. Zero values are documented per field.
type Options struct {
	Name        string    // VM name; zero: "bench"
	Accel       string    // zero: auto
	Vsock       string    // zero: auto
	Runs        int       // launches per latency figure; zero: 200
	Bytes       int64     // bytes per throughput figure; zero: 64 MiB
	Concurrent  int       // concurrent launches; zero: 1000
	Interpreter string    // lab-interop for the guest; zero: next to lab
	LabExe      string    // the lab binary (for the lab exec figure); zero: os.Executable
	Progress    io.Writer // nil: silent
	Breakdown   bool      // also trace launches and break them down by phase
	// Only names the one figure to measure (OnlyBoot, OnlyConcurrent, OnlyVsock); zero: all.
	Only string
	// Distro is the guest image (images.DistroDebian: the Debian guest, with its boot
	// aim and image figures); zero: the initramfs.
	Distro string
	// Arch is the guest's architecture (images.AMD64, images.ARM64); zero: the host's.
	// Another than the host's runs under TCG, with its own boot aim.
	Arch string
}

// Options.Only's values: the figures that can run alone.
const (
	// OnlyBoot: boot to first interop exec (with its phases) and re-provisioning.
	OnlyBoot = "boot"
	// OnlyConcurrent: the concurrent launches alone, after a boot without the Windows side.
	OnlyConcurrent = "concurrent"
	// OnlyVsock: raw vsock both ways alone, after a boot without the Windows side.
	OnlyVsock = "vsock"
)

// CheckOnly says whether only names a figure that can run alone.
func CheckOnly(only string) error {
	switch only {
	case "", OnlyBoot, OnlyConcurrent, OnlyVsock:
		return nil
	}
	return fmt.Errorf("bench: --only %q: the figures that can run alone are %q, %q and %q", only, OnlyBoot, OnlyConcurrent, OnlyVsock)
}

// Dist is a latency distribution in milliseconds.
type Dist struct {
	N    int     `json:"n"`
	P50  float64 `json:"p50_ms"`
	P99  float64 `json:"p99_ms"`
	Mean float64 `json:"mean_ms"`
	Note string  `json:"note,omitempty"`
}

// Rate is a throughput.
type Rate struct {
	Bytes   int64   `json:"bytes"`
	Seconds float64 `json:"seconds"`
	MiBps   float64 `json:"mib_per_s"`
	Note    string  `json:"note,omitempty"`
}

// Goal is one target of the design and whether this run met it.
type Goal struct {
	Name string  `json:"name"`
	Want string  `json:"want"`
	Got  float64 `json:"got_ratio"`
	Met  bool    `json:"met"`
}

// Result is one bench run.
type Result struct {
	Time  time.Time `json:"time"`
	Accel string    `json:"accel"`
	Vsock string    `json:"vsock"`
	// Only is Options.Only of the run: the report shows only what such a run measures.
	Only   string `json:"only,omitempty"`
	Launch struct {
		Interop      Dist `json:"interop"`           // host-true from the guest, through binfmt + relay
		GuestNative  Dist `json:"guest_native"`      // the same program run natively in the guest
		HostNative   Dist `json:"host_native"`       // the same program run on the host
		SSHGuestHost Dist `json:"ssh_guest_to_host"` // guest -> host SSH exec of it (new connection each)
		LabExec      Dist `json:"lab_exec"`          // lab exec -- true (host -> guest), the whole CLI
		// The Windows personality: echoargs.exe in /mnt/c run from the guest through interop,
		// and the same file run with Wine directly on the host, in the same warm prefix.
		PEInterop Dist `json:"pe_interop"`
		PEHost    Dist `json:"pe_host_wine"`
		// The same file started on the host as the relay starts it (host.WineExec: Wine's
		// loader without Debian's wrapper script and without the loader's exec of itself),
		// beside `wine`: how much of the ratio is the relay's cheaper start of Wine.
		PEHostLoader Dist `json:"pe_host_wine_loader"`
	} `json:"launch"`
	Throughput struct {
		InteropStdout Rate `json:"interop_stdout"` // host program -> guest pipe
		InteropStdin  Rate `json:"interop_stdin"`  // guest pipe -> host program
		VsockHostGst  Rate `json:"vsock_host_to_guest"`
		VsockGstHost  Rate `json:"vsock_guest_to_host"`
		SSHHostGst    Rate `json:"ssh_host_to_guest"`
		SSHGstHost    Rate `json:"ssh_guest_to_host"`
	} `json:"throughput"`
	Concurrent struct {
		N           int      `json:"n"`
		WallMS      float64  `json:"wall_ms"`
		OK          int      `json:"ok"`
		Failed      int      `json:"failed"`
		RelayRSSMiB float64  `json:"relay_rss_mib"`    // peak RSS of the hostagent (relay + vsock backend) while they ran
		Errors      []string `json:"errors,omitempty"` // what the failed launches said
	} `json:"concurrent"`
	Boot struct {
		UpSeconds        float64 `json:"up_s"`        // lab up: boot to SSH ready
		ProvisionSeconds float64 `json:"provision_s"` // provision + expose one command
		FirstExecSeconds float64 `json:"first_exec_s"`
		TotalSeconds     float64 `json:"boot_to_first_interop_exec_s"`
		// Where up's time went (see bootPhases); zero when the guest does not tell.
		BeforeQEMUSeconds float64 `json:"before_qemu_s,omitempty"`    // vm.Up's own work: image check, keys, initrd, hostagent
		FirmwareSeconds   float64 `json:"qemu_to_kernel_s,omitempty"` // QEMU start, firmware, kernel and initrd load
		KernelSeconds     float64 `json:"kernel_s,omitempty"`         // kernel start to /init
		UserspaceSeconds  float64 `json:"userspace_to_sshd_s,omitempty"`
		SSHDSeconds       float64 `json:"sshd_to_ready_s,omitempty"` // sshd start to SSH ready: listening, key exchange, auth, a session
	} `json:"boot"`
	// Image: the guest image's own figures (for the Debian guest: how long its clean
	// build took, when it was built, and a fresh machine's disk use on the host).
	Image struct {
		Distro       string    `json:"distro,omitempty"` // zero: initramfs
		Arch         string    `json:"arch,omitempty"`   // the guest's; zero (older runs): amd64
		BuildSeconds float64   `json:"build_s,omitempty"`
		Built        time.Time `json:"built,omitempty"`
		FreshDiskMB  float64   `json:"fresh_machine_disk_mb,omitempty"` // after the first provisioning
	} `json:"image"`
	// Reprovision: provisioning again with nothing changed (ms).
	Reprovision Dist `json:"reprovision"`
	// Aims: issue 11's figures next to their aims and baselines.
	Aims  []Aim  `json:"aims"`
	Goals []Goal `json:"goals"`
	// Breakdown: where the launches' time goes, with Options.Breakdown.
	Breakdown []Breakdown `json:"breakdown,omitempty"`
	// Failures lists the figures that could not be measured, and why.
	Failures []string `json:"failures,omitempty"`
}

// figureTimeout bounds one throughput figure, so a stalled transport is reported
// instead of hanging the run.
const figureTimeout = 3 * time.Minute

func (o *Options) setDefaults() error {
	if o.Name == "" {
		o.Name = "bench"
	}
	if o.Runs == 0 {
		o.Runs = 200
	}
	if o.Bytes == 0 {
		o.Bytes = 64 << 20
	}
	if o.Concurrent == 0 {
		o.Concurrent = 1000
	}
	if err := CheckOnly(o.Only); err != nil {
		return err
	}
	if o.LabExe == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("bench: %w", err)
		}
		o.LabExe = exe
	}
	return nil
}

func (o *Options) say(format string, a ...any) {
	if o.Progress != nil {
		fmt.Fprintf(o.Progress, "bench: "+format+"\n", a...)
	}
}

// Run boots a VM, measures, and stops the VM.
func Run(ctx context.Context, opts Options) (*Result, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	res := &Result{Time: time.Now(), Only: opts.Only}
	share, err := os.MkdirTemp("", "lab-bench-share-")
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	defer os.RemoveAll(share)
	fixDir := filepath.Join(share, suite.FixtureDirName)
	opts.say("building the fixtures and the guest probe")
	arch, err := images.NormalizeArch(opts.Arch)
	if err != nil {
		return nil, fmt.Errorf("bench: --arch: %w", err)
	}
	res.Image.Arch = arch
	fx, err := scenarios.BuildFixtures(ctx, fixDir, arch, false)
	if err != nil {
		return nil, err
	}
	probe := filepath.Join(fixDir, "labbench")
	if err := scenarios.BuildBenchProbe(ctx, probe, arch); err != nil {
		return nil, fmt.Errorf("bench: build the guest probe: %w", err)
	}

	// Boot to first interop exec, on a machine as lab up makes it (with the Windows
	// personality unless Wine is missing; provisioning seeded in its boot archive and
	// checked after boot), then the first exposed command and its first launch.
	debian := opts.Distro == images.DistroDebian
	if debian {
		// A fresh machine: its disk use is a figure, and bench removes the disk after.
		if dir, err := machine.DataDir(opts.Name); err == nil && machine.DiskUse(filepath.Join(dir, "disk.qcow2")) > 0 {
			return nil, fmt.Errorf("bench: machine %q already has a disk: lab delete %s first, or give bench another --name", opts.Name, opts.Name)
		}
	}
	opts.say("booting VM %q", opts.Name)
	lopts := machine.ProvisionOptions{Interpreter: opts.Interpreter}
	m, err := machine.Up(ctx, machine.Options{
		VM: vm.Config{Name: opts.Name, Accel: opts.Accel, Vsock: opts.Vsock, Distro: opts.Distro, Arch: arch,
			Shares: []vm.Share{{HostPath: share, GuestPath: "/mnt/lab"}}},
		Provision: lopts,
		NoWindows: opts.Only == OnlyConcurrent || opts.Only == OnlyVsock, // these need no Wine
		Progress:  opts.Progress,
	})
	if err != nil {
		return nil, err
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
		defer cancel()
		m.Down(dctx)
		if debian {
			machine.Delete(dctx, opts.Name, true, io.Discard)
		}
	}()
	if m.WindowsOff != nil {
		res.Failures = append(res.Failures, "pe launch: "+m.WindowsOff.Error())
	}
	prefix, in := m.Windows, m.Instance
	res.Accel, res.Vsock = in.Accel, in.Vsock
	ready := time.Now().Add(-m.Took.Provision)
	t0 := ready.Add(-m.Took.Boot) // the Wine prefix made before the boot is not part of it
	c, err := m.Guest(ctx)
	if err != nil {
		return nil, err
	}
	// Read where the boot's time went (one SSH command, not counted in the figure).
	bootPhases(ctx, c, in, t0, ready, res)
	t2 := time.Now()
	if _, err := m.Expose(ctx, []string{fx.Host["host-true"]}, "", lopts); err != nil {
		return nil, err
	}
	t3 := time.Now()
	if err := guestOK(ctx, c, "host-true"); err != nil {
		return nil, fmt.Errorf("bench: first interop exec: %w", err)
	}
	t4 := time.Now()
	res.Boot.UpSeconds = m.Took.Boot.Seconds()
	res.Boot.ProvisionSeconds = (m.Took.Provision + t3.Sub(t2)).Seconds()
	res.Boot.FirstExecSeconds = t4.Sub(t3).Seconds()
	res.Boot.TotalSeconds = res.Boot.UpSeconds + res.Boot.ProvisionSeconds + res.Boot.FirstExecSeconds
	opts.say("boot to first interop exec: %.1fs", res.Boot.TotalSeconds)
	if debian {
		res.Image.Distro = images.DistroDebian
		if im, err := images.ReadManifest(in.Image); err == nil {
			res.Image.BuildSeconds, res.Image.Built = im.BuildSeconds, im.Built
		}
		res.Image.FreshDiskMB = float64(machine.DiskUse(in.Disk)) / 1e6
	}
	if opts.Only != OnlyConcurrent && opts.Only != OnlyVsock {
		opts.say("re-provisioning with nothing changed, 5 times")
		if res.Reprovision, err = reprovision(ctx, m, lopts, 5); err != nil {
			res.Failures = append(res.Failures, err.Error())
		}
	}
	if opts.Only == OnlyBoot {
		res.Aims = res.aims()
		return res, nil
	}
	if _, err := m.Expose(ctx, []string{fx.Host["host-gen"], fx.Host["host-sha256"], fx.Host["host-echo"]}, "", lopts); err != nil {
		return nil, err
	}
	gfix := path.Join("/mnt/lab", suite.FixtureDirName)
	gprobe := "/tmp/labbench" // on the guest's tmpfs, like every guest-side program timed here
	if err := guestOK(ctx, c, "cp "+path.Join(gfix, "labbench")+" "+gprobe); err != nil {
		return nil, err
	}
	n := strconv.Itoa(opts.Runs)
	if opts.Only == OnlyConcurrent {
		opts.say("%d concurrent launches", opts.Concurrent)
		if err := concurrent(ctx, c, in.StateDir, gprobe, opts.Concurrent, res); err != nil {
			return nil, err
		}
		res.Aims = res.aims()
		return res, nil
	}
	if opts.Only == OnlyVsock {
		opts.say("raw vsock: %d MiB each way", opts.Bytes>>20)
		if err := vsockRates(ctx, c, in, gprobe, opts.Bytes, res); err != nil {
			res.Failures = append(res.Failures, err.Error())
		}
		res.Aims = res.aims()
		return res, nil
	}

	if prefix != nil {
		// Wine's side warms up on the host after the boot; the launch figures wait for it
		// rather than share the host's cores with it (they did: interop launch p50 62.6 ms
		// untraced against 59.6 traced later in the same run).
		opts.say("waiting for the Wine side to be warm")
		if err := waitWine(ctx, c); err != nil {
			res.Failures = append(res.Failures, "wine warm-up: "+err.Error())
		}
	}
	opts.say("launch latency: interop, %d runs", opts.Runs)
	if res.Launch.Interop, err = guestDist(ctx, c, gprobe+" launch "+n+" host-true"); err != nil {
		return nil, err
	}
	opts.say("launch latency: the same program natively in the guest")
	// Copied to the guest's tmpfs first: exec from the 9p share would time 9p reads
	// (the share is mounted without a page cache), not a launch.
	if err := guestOK(ctx, c, "cp "+path.Join(gfix, filepath.Base(fx.GuestLabfix))+" /tmp/labfix"); err != nil {
		return nil, err
	}
	if res.Launch.GuestNative, err = guestDist(ctx, c, gprobe+" launch "+n+" /tmp/labfix true"); err != nil {
		return nil, err
	}
	opts.say("launch latency: the same program on the host")
	res.Launch.HostNative = hostDist(opts.Runs, func() error { return exec.Command(filepath.Join(fixDir, "labfix"), "true").Run() })
	opts.say("launch latency: guest -> host SSH exec")
	if res.Launch.SSHGuestHost, err = sshBaseline(ctx, c, share, gprobe, opts.Runs, filepath.Join(fixDir, "labfix")+" true"); err != nil {
		return nil, err
	}
	opts.say("launch latency: lab exec (host -> guest)")
	res.Launch.LabExec = hostDist(opts.Runs, func() error {
		return exec.CommandContext(ctx, opts.LabExe, "exec", "--name", in.Name, "--", "true").Run()
	})
	res.Launch.LabExec.Note = "the whole lab exec process: start, connect to the hostagent, SSH session, true"
	if prefix != nil {
		if err := peLaunch(ctx, c, in.StateDir, prefix, gprobe, opts, res); err != nil {
			res.Failures = append(res.Failures, "pe launch: "+err.Error())
		}
	}

	if opts.Breakdown {
		breakdowns(ctx, c, in.StateDir, gprobe, opts, res)
	}

	b := strconv.FormatInt(opts.Bytes, 10)
	opts.say("throughput: %d MiB per figure", opts.Bytes>>20)
	if res.Throughput.InteropStdout, err = guestRate(ctx, c, gprobe+" pipe-from host-gen "+b); err != nil {
		return nil, err
	}
	if res.Throughput.InteropStdin, err = guestRate(ctx, c, gprobe+" pipe-to "+b+" host-sha256"); err != nil {
		return nil, err
	}
	// Baselines that fail (or stall: each is bounded) are reported as such; the run goes on.
	if err := vsockRates(ctx, c, in, gprobe, opts.Bytes, res); err != nil {
		res.Failures = append(res.Failures, err.Error())
	}
	sshRate := func(dst *Rate, cmd string, stdin io.Reader, stdout io.Writer) {
		fctx, cancel := context.WithTimeout(ctx, figureTimeout)
		defer cancel()
		r, err := hostRate(opts.Bytes, func() error {
			_, err := runOK(fctx, c, cmd, stdin, stdout)
			return err
		})
		if err != nil {
			res.Failures = append(res.Failures, fmt.Sprintf("ssh pipe %q: %v", cmd, err))
			return
		}
		*dst = r
	}
	sshRate(&res.Throughput.SSHHostGst, "cat > /dev/null", io.LimitReader(zeros{}, opts.Bytes), io.Discard)
	sshRate(&res.Throughput.SSHGstHost, "head -c "+b+" /dev/zero", nil, io.Discard)

	opts.say("%d concurrent launches", opts.Concurrent)
	if err := concurrent(ctx, c, in.StateDir, gprobe, opts.Concurrent, res); err != nil {
		return nil, err
	}
	res.goals()
	res.Aims = res.aims()
	return res, nil
}

// peLaunch measures a trivial PE program (echoargs.exe, no arguments) in /mnt/c: through
// interop from the guest, and with Wine directly on the host in the same prefix, warm
// (the hostagent's wine task warmed it; each figure starts with unmeasured runs).
func peLaunch(ctx context.Context, c *vm.Client, stateDir string, p *wineprefix.Prefix, gprobe string, opts Options, res *Result) error {
	if err := waitWine(ctx, c); err != nil {
		return err
	}
	fx, err := pefixtures.BuildWith(ctx, pefixtures.Options{OutDir: filepath.Join(p.DriveC(), "lab-bench"), Progress: opts.Progress})
	if err != nil {
		return err
	}
	exe := fx[pefixtures.EchoArgs]
	runs := min(opts.Runs, 50) // a Wine launch costs tens of ms on the host alone
	opts.say("launch latency: a PE program through interop and with Wine on the host, %d runs each, interleaved", runs)
	host := func() error { return p.Command(ctx, exe).Run() }
	loader, loaderEnv := hostpkg.WineExec(p.Loader)
	direct := func() error {
		cmd := p.Command(ctx, exe)
		cmd.Path, cmd.Args[0] = loader, loader
		cmd.Env = append(cmd.Env, loaderEnv...)
		return cmd.Run()
	}
	gexe := path.Join(machine.DriveCGuest, "lab-bench", pefixtures.EchoArgs)
	for range 3 {
		host()
		direct()
	}
	if err := guestOK(ctx, c, gexe); err != nil {
		return err
	}
	// In rounds, each figure a few runs per round: the machine's load changes within a
	// run (other VMs, builds), and all three then see the same moments; a figure taken
	// whole before the other was once the busier one (docs/DESIGN.md, lab bench).
	var wine, wineLoader, interop []float64
	var wineErr, loaderErr error
	for done := 0; done < runs; {
		k := min(peRound, runs-done)
		wine, wineErr = hostSamples(wine, k, host, wineErr)
		wineLoader, loaderErr = hostSamples(wineLoader, k, direct, loaderErr)
		var out bytes.Buffer
		if _, err := runOK(ctx, c, gprobe+" launch "+strconv.Itoa(k)+" "+gexe, nil, &out); err != nil {
			return err
		}
		interop = append(interop, parseKV(out.String())["ns"]...)
		done += k
	}
	res.Launch.PEHost = noted(dist(wine), "wine echoargs.exe on the host, warm prefix, stdio /dev/null: "+p.Loader, runs, wineErr)
	res.Launch.PEHostLoader = noted(dist(wineLoader), "the same, Wine started as the relay starts it: "+strings.Join(append(loaderEnv, loader), " "), runs, loaderErr)
	res.Launch.PEInterop = dist(interop)
	res.Launch.PEInterop.Note = "/mnt/c/lab-bench/echoargs.exe from the guest"
	return nil
}

// peRound is how many runs of each PE figure go in one round (peLaunch).
const peRound = 5

// hostSamples appends n timed runs of f to ns; a failed run is left out and its error kept.
func hostSamples(ns []float64, n int, f func() error, failed error) ([]float64, error) {
	for range n {
		t := time.Now()
		if err := f(); err != nil {
			failed = err
			continue
		}
		ns = append(ns, float64(time.Since(t).Nanoseconds()))
	}
	return ns, failed
}

// noted is d with note, and how many of want runs failed with the last error.
func noted(d Dist, note string, want int, failed error) Dist {
	d.Note = note
	if failed != nil {
		d.Note += fmt.Sprintf("; %d of %d runs failed: %v", want-d.N, want, failed)
	}
	return d
}

// waitWine waits until the machine's Wine side is warm (the hostagent's wine task: the
// wineserver and Wine's services started on the host after the boot).
func waitWine(ctx context.Context, c *vm.Client) error {
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	var st machine.WineState
	if err := c.Call(wctx, machine.RequestWineWait, nil, &st); err != nil {
		return fmt.Errorf("the VM's Wine prefix did not become warm (see lab status): %w", err)
	}
	if st.State == machine.WineFailed {
		return errors.New(st.Error)
	}
	return nil
}

func (r *Result) goals() {
	if w := r.Launch.PEHost.P50; w > 0 && r.Launch.PEInterop.P50 > 0 {
		got := r.Launch.PEInterop.P50 / w
		r.Goals = append(r.Goals, Goal{Name: "PE launch p50: interop vs Wine on the host (warm)", Want: "<= 1.3", Got: got, Met: got <= 1.3})
	}
	if ssh := r.Launch.SSHGuestHost.P50; ssh > 0 {
		got := r.Launch.Interop.P50 / ssh
		r.Goals = append(r.Goals, Goal{Name: "launch p50: interop vs guest->host SSH exec", Want: "<= 0.2", Got: got, Met: got <= 0.2})
	}
	if v := r.Throughput.VsockHostGst.MiBps; v > 0 {
		got := r.Throughput.InteropStdout.MiBps / v
		r.Goals = append(r.Goals, Goal{Name: "stdout pipe: interop vs raw vsock (host -> guest)", Want: ">= 0.8", Got: got, Met: got >= 0.8})
	}
	if v := r.Throughput.VsockGstHost.MiBps; v > 0 {
		got := r.Throughput.InteropStdin.MiBps / v
		r.Goals = append(r.Goals, Goal{Name: "stdin pipe: interop vs raw vsock (guest -> host)", Want: ">= 0.8", Got: got, Met: got >= 0.8})
	}
}

func splitLines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// runOK runs cmd in the guest and fails on a non-zero status, with its stderr.
// Commands start in the share, so launches map their cwd instead of printing the
// fallback warning (which would add a write to every figure).
func runOK(ctx context.Context, c *vm.Client, cmd string, stdin io.Reader, stdout io.Writer) (string, error) {
	var errb bytes.Buffer
	code, err := c.Run(ctx, "cd /mnt/lab && "+cmd, stdin, stdout, &errb)
	if err != nil {
		return errb.String(), err
	}
	if code != 0 {
		return errb.String(), fmt.Errorf("bench: guest %q: status %d: %s", cmd, code, strings.TrimSpace(errb.String()))
	}
	return errb.String(), nil
}

func guestOK(ctx context.Context, c *vm.Client, cmd string) error {
	_, err := runOK(ctx, c, cmd, nil, io.Discard)
	return err
}

// parseKV reads "key value" lines; repeated keys accumulate.
func parseKV(out string) map[string][]float64 {
	m := map[string][]float64{}
	for _, l := range strings.Split(out, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(l), " ")
		if !ok {
			continue
		}
		if f, err := strconv.ParseFloat(v, 64); err == nil {
			m[k] = append(m[k], f)
		}
	}
	return m
}

func guestDist(ctx context.Context, c *vm.Client, cmd string) (Dist, error) {
	var out bytes.Buffer
	if _, err := runOK(ctx, c, cmd, nil, &out); err != nil {
		return Dist{}, err
	}
	return dist(parseKV(out.String())["ns"]), nil
}

func dist(ns []float64) Dist {
	if len(ns) == 0 {
		return Dist{}
	}
	s := slices.Clone(ns)
	slices.Sort(s)
	var sum float64
	for _, x := range s {
		sum += x
	}
	q := func(p float64) float64 {
		i := int(p*float64(len(s))+0.5) - 1
		return s[max(0, min(i, len(s)-1))] / 1e6
	}
	return Dist{N: len(s), P50: q(0.50), P99: q(0.99), Mean: sum / float64(len(s)) / 1e6}
}

func hostDist(n int, f func() error) Dist {
	var ns []float64
	var failed error
	for i := 0; i < n; i++ {
		t := time.Now()
		if err := f(); err != nil {
			failed = err
			continue
		}
		ns = append(ns, float64(time.Since(t).Nanoseconds()))
	}
	d := dist(ns)
	if failed != nil {
		d.Note = fmt.Sprintf("%d of %d runs failed: %v", n-len(ns), n, failed)
	}
	return d
}

func guestRate(ctx context.Context, c *vm.Client, cmd string) (Rate, error) {
	var out bytes.Buffer
	if _, err := runOK(ctx, c, cmd, nil, &out); err != nil {
		return Rate{}, err
	}
	kv := parseKV(out.String())
	if len(kv["bytes"]) == 0 || len(kv["ns"]) == 0 {
		return Rate{}, fmt.Errorf("bench: guest %q printed no figures: %q", cmd, out.String())
	}
	return rate(int64(kv["bytes"][0]), time.Duration(kv["ns"][0])), nil
}

func rate(n int64, d time.Duration) Rate {
	s := d.Seconds()
	r := Rate{Bytes: n, Seconds: s}
	if s > 0 {
		r.MiBps = float64(n) / (1 << 20) / s
	}
	return r
}

func hostRate(n int64, f func() error) (Rate, error) {
	t := time.Now()
	if err := f(); err != nil {
		return Rate{}, err
	}
	return rate(n, time.Since(t)), nil
}

// vsockRates measures raw vsock between a host listener and the probe's own socket in
// the guest (earlier runs piped socat through the probe, which was the limit): the
// userspace backend hands guest connections for port P to the Unix socket
// <state>/vsock.sock_P (Firecracker's convention); with kernel vsock the host listens
// on AF_VSOCK itself.
func vsockRates(ctx context.Context, c *vm.Client, in *vm.Instance, gprobe string, n int64, res *Result) error {
	const port = 5601
	var l net.Listener
	var err error
	if in.Vsock == "user" {
		p := filepath.Join(in.StateDir, vm.FileVsockUDS+"_"+strconv.Itoa(port))
		os.Remove(p)
		l, err = net.Listen("unix", p)
		if err == nil {
			defer os.Remove(p)
			// Owner only, like every socket lab makes (chmod: the umask is process-wide).
			if err = os.Chmod(p, 0o600); err != nil {
				l.Close()
			}
		}
	} else {
		l, err = listenKernelVsock(port)
	}
	if err != nil {
		return fmt.Errorf("bench: raw vsock listener: %w", err)
	}
	defer l.Close()
	serve := func(f func(net.Conn)) {
		go func() {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			defer conn.Close()
			f(conn)
		}()
	}
	b := strconv.FormatInt(n, 10)
	var errs []error
	fctx, cancel := context.WithTimeout(ctx, figureTimeout)
	// 256 KiB at a time on the host side too, so this process's syscalls are not what a
	// loaded 2-core host runs out of (io.Copy uses 32 KiB, and to io.Discard 8 KiB).
	serve(func(conn net.Conn) { io.CopyBuffer(conn, io.LimitReader(zeros{}, n), make([]byte, 256<<10)) })
	// The probe's own vsock socket, no pipe or socat between: the transport is measured.
	if res.Throughput.VsockHostGst, err = guestRate(fctx, c, gprobe+" vsock-read "+strconv.Itoa(port)); err != nil {
		errs = append(errs, fmt.Errorf("raw vsock host -> guest: %w", err))
	}
	cancel()
	fctx, cancel = context.WithTimeout(ctx, figureTimeout)
	defer cancel()
	serve(func(conn net.Conn) {
		buf := make([]byte, 256<<10)
		for {
			if _, err := conn.Read(buf); err != nil {
				return
			}
		}
	})
	if res.Throughput.VsockGstHost, err = guestRate(fctx, c, gprobe+" vsock-write "+b+" "+strconv.Itoa(port)); err != nil {
		errs = append(errs, fmt.Errorf("raw vsock guest -> host: %w", err))
	}
	return errors.Join(errs...)
}

// concurrent runs n launches at once while sampling the hostagent's RSS.
func concurrent(ctx context.Context, c *vm.Client, stateDir, gprobe string, n int, res *Result) error {
	pid := 0
	if b, err := os.ReadFile(filepath.Join(stateDir, vm.FileAgentPID)); err == nil {
		pid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
	}
	stop := make(chan struct{})
	peak := make(chan float64, 1)
	go func() {
		var max float64
		t := time.NewTicker(25 * time.Millisecond)
		defer t.Stop()
		for {
			if v := rssMiB(pid); v > max {
				max = v
			}
			select {
			case <-stop:
				peak <- max
				return
			case <-t.C:
			}
		}
	}()
	var out bytes.Buffer
	stderr, err := runOK(ctx, c, gprobe+" concurrent "+strconv.Itoa(n)+" host-echo x", nil, &out)
	close(stop)
	res.Concurrent.RelayRSSMiB = <-peak
	if err != nil {
		return err
	}
	res.Concurrent.Errors = splitLines(stderr)
	kv := parseKV(out.String())
	res.Concurrent.N = n
	if v := kv["wall_ns"]; len(v) > 0 {
		res.Concurrent.WallMS = v[0] / 1e6
	}
	if v := kv["ok"]; len(v) > 0 {
		res.Concurrent.OK = int(v[0])
	}
	if v := kv["failed"]; len(v) > 0 {
		res.Concurrent.Failed = int(v[0])
	}
	return nil
}

func rssMiB(pid int) float64 {
	if pid <= 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return kb / 1024
		}
	}
	return 0
}
