package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"
	"lab/internal/labtest"
	"lab/machine"
	"lab/wire"
)

// TestIntegrationCLI walks the path a user takes, with the real binaries as `make build`
// lays them out (lab and lab-interop side by side): lab up (which provisions), lab
// provision again (idempotent), lab expose, a guest running the exposed host command
// through binfmt_misc + vsock + relay, lab interop off/on, lab status --json with the
// relay's counters, lab exec's exit status, lab down, and nothing left running.
func TestIntegrationCLI(t *testing.T) {
	labtest.NeedVM(t)
	if testing.Short() {
		t.Skip("boots a VM; not in -short mode")
	}
	bin := t.TempDir()
	build := func(env []string, args ...string) {
		t.Helper()
		c := exec.Command("go", append([]string{"build"}, args...)...)
		c.Env = append(os.Environ(), env...)
		if out, err := c.CombinedOutput(); err != nil {
			t.Fatalf("go build %v: %v\n%s", args, err, out)
		}
	}
	build(nil, "-o", filepath.Join(bin, "lab"), ".")
	build([]string{"CGO_ENABLED=0"}, "-o", filepath.Join(bin, "lab-interop"), "../lab-interop")

	base := t.TempDir()
	env := []string{"XDG_STATE_HOME=" + filepath.Join(base, "state"), "XDG_DATA_HOME=" + filepath.Join(base, "data")}
	type result struct {
		code           int
		stdout, stderr string
	}
	lab := func(args ...string) result {
		t.Helper()
		c := exec.Command(filepath.Join(bin, "lab"), args...)
		c.Env = append(os.Environ(), env...)
		var r result
		r.stdout, r.stderr, r.code = labtest.Output(t, c)
		return r
	}
	must := func(args ...string) result {
		t.Helper()
		r := lab(args...)
		if r.code != 0 {
			t.Fatalf("lab %v: exit %d\nstdout: %s\nstderr: %s", args, r.code, r.stdout, r.stderr)
		}
		return r
	}

	const name = "cli"
	// A bad lab file fails before anything boots, naming the key.
	bad := filepath.Join(t.TempDir(), "lab.yaml")
	os.WriteFile(bad, []byte("name: cli\nformats:\n  - {name: a, magic: 7f}\n  - {name: b, magic: zz}\n"), 0o644)
	if r := lab("up", "-f", bad); r.code != 2 || r.stderr != "lab: "+bad+": formats[1].magic: not hex: \"zz\"\n" {
		t.Errorf("lab up -f with a bad lab file: exit %d, stderr %q", r.code, r.stderr)
	}
	// lab up from a lab file: the machine's name, a share, and formats as data (a script
	// format by extension to the host's /bin/sh, one by magic to python3, aarch64 ELF
	// files to qemu-user on the host). The scratch share (lab run's) stays on.
	work := t.TempDir()
	python := "python3"
	if _, err := os.Stat("/usr/bin/python3"); err == nil {
		python = "/usr/bin/python3"
	}
	labYAML := filepath.Join(t.TempDir(), "lab.yaml")
	os.WriteFile(labYAML, []byte(`name: cli
image: default
cpus: 2
shares:
  - {host: `+work+`, guest: /mnt/work}
formats:
  - name: labsh
    extension: labsh
    interpreter: /bin/sh
  - name: labpy
    magic: 23216c6162707920        # "#!labpy "
    interpreter: [`+python+`, -S]
  - name: arm64
    qemu: aarch64
`), 0o644)
	r := lab("up", "-f", labYAML)
	stateDir := filepath.Join(base, "state", "lab", name)
	var pids []int
	for _, f := range []string{"ha.pid", "qemu.pid"} {
		if b, err := os.ReadFile(filepath.Join(stateDir, f)); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
				pids = append(pids, pid)
			}
		}
	}
	t.Cleanup(func() {
		lab("down", "--name", name)
		for _, pid := range pids {
			if running(pid) {
				t.Errorf("process %d of the VM is still running after lab down", pid)
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
	if r.code != 0 {
		t.Fatalf("lab up: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if len(pids) != 2 {
		t.Fatalf("lab up recorded pids %v; want the hostagent's and QEMU's", pids)
	}
	if !strings.Contains(r.stderr, "rule WSLInterop") {
		t.Errorf("lab up did not provision (no rule WSLInterop in its output):\n%s", r.stderr)
	}
	// The guest booted with provisioning's head start (provision.Seed in its instance
	// cpio): the provisioning after boot only checks.
	if !strings.Contains(r.stderr, "guest already provisioned: nothing changed") {
		t.Errorf("lab up: the provisioning after boot changed something; the boot archive should have seeded it all:\n%s", r.stderr)
	}

	if r := must("provision", "--name", name); !strings.Contains(r.stdout+r.stderr, "nothing changed") {
		t.Errorf("second provision changed something:\n%s%s", r.stdout, r.stderr)
	}
	labFileFormats(t, filepath.Join(stateDir, "scratch"), func(args ...string) (int, string, string) {
		r := lab(append([]string{"exec", "--name", name, "--"}, args...)...)
		return r.code, r.stdout, r.stderr
	})

	// The Windows PATH (sshd's SetEnv, written by lab up's provisioning) reaches lab
	// exec at once: provisioning made the hostagent renew its guest connection.
	if _, err := exec.LookPath("wine"); err != nil {
		t.Log("wine is not installed: skipping cmd.exe by name (the VM has no Windows personality)")
	} else {
		const want = "/mnt/c/Windows/System32/cmd.exe"
		if r := must("exec", "--name", name, "--", "sh", "-c", "command -v cmd.exe"); r.stdout != want+"\n" {
			t.Errorf("lab exec -- sh -c 'command -v cmd.exe' = %q; want %q", r.stdout, want+"\n")
		}
		if r := must("exec", "--name", name, "--", "cmd.exe", "/c", "echo", "hi"); r.stdout != "hi\r\n" {
			t.Errorf("lab exec -- cmd.exe /c echo hi = %q; want %q (stderr %q)", r.stdout, "hi\r\n", r.stderr)
		}
	}

	printf, err := exec.LookPath("printf")
	if err != nil {
		t.Fatal(err)
	}
	must("expose", "--name", name, printf, "--as", "hostprintf")
	// The guest has a printf of its own too; the relay's counters below prove the host ran it.
	r = must("exec", "--name", name, "--", "hostprintf", "%s|", "a", "b c", "ü")
	if r.stdout != "a|b c|ü|" {
		t.Errorf("hostprintf through interop printed %q; want %q", r.stdout, "a|b c|ü|")
	}

	// lab trace: the same launch, step by step, as the kernel, the interpreter and the
	// relay saw it.
	r = must("trace", "--name", name, "--", "hostprintf", "%s|", "t")
	report, ok := strings.CutPrefix(r.stdout, "t|")
	if !ok {
		t.Fatalf("lab trace: the command's output does not come first:\n%s", r.stdout)
	}
	t.Logf("lab trace -- hostprintf '%%s|' t:\n%s", report)
	for _, want := range []string{
		`(?m)^launch 1, trace [0-9a-f]{16}: relay times placed on the guest's clock by the handshake round trip \(±[0-9.]+ ms\)$`,
		`(?m)^ +[0-9.]+ ms  guest  interpreter argv  \["/usr/local/lib/lab/interop" "/usr/bin/hostprintf" "hostprintf" "%s\|" "t"\]  \(flag P: `,
		`(?m)^ +[0-9.]+ ms  guest  binfmt            rule lab-host: magic "#!lab-host\\n" at offset 0, flags POF \(P: keep the caller's argv\[0\]; O: file passed open; F: interpreter opened at registration\), interpreter /usr/local/lib/lab/interop$`,
		`(?m)^ +[0-9.]+ ms  guest  config            /etc/lab/interop.conf: relay vsock:2:5555, token /etc/lab/token, shares \[.*/mnt/lab = host `,
		`(?m)^ +[0-9.]+ ms  guest  connect           vsock vm\([0-9]+\):[0-9]+ -> host\(2\):5555 \(relay vsock:2:5555\) in [0-9.]+ ms$`,
		`(?m)^ +[0-9.]+ ms  guest  hello\+launch      Hello [0-9]+ B \(protocol VERSION, token [0-9]+ B\) \+ Launch [0-9]+ B`,
		`(?m)^ +[0-9.]+ ms  relay  accept            connection from vsock:vm\([0-9]+\):[0-9]+ on vsock:host\(2\):5555$`,
		`(?m)^ +[0-9.]+ ms  relay  decision          exposed command "hostprintf" -> ` + regexp.QuoteMeta(printf) + ` \(allow list\), runner exec$`,
		`(?m)^ +[0-9.]+ ms  relay  start             host pid [0-9]+ \(own process group\) on pipes: `,
		`(?m)^ +[0-9.]+ ms  guest  launch result     relay speaks VERSION; started`,
		`(?m)^ +[0-9.]+ ms  guest  stream            stdout: 2 bytes host -> guest$`,
		`(?m)^ +[0-9.]+ ms  relay  exit              exit status 0 `,
		`(?m)^ +[0-9.]+ ms  guest  exit              status 0 \(host exit code 0\)$`,
		`(?m)^command exit status 0$`,
	} {
		want = strings.ReplaceAll(want, "VERSION", fmt.Sprintf(`%d\.%d`, wire.Major, wire.Minor))
		if !regexp.MustCompile(want).MatchString(report) {
			t.Errorf("lab trace: no line matching %s", want)
		}
	}
	// Both ends name the same guest address (the guest's own CID, not VMADDR_CID_ANY).
	acc := regexp.MustCompile(`relay  accept +connection from vsock:vm\((\d+)\):(\d+) `).FindStringSubmatch(report)
	con := regexp.MustCompile(`guest  connect +vsock vm\((\d+)\):(\d+) -> `).FindStringSubmatch(report)
	if acc == nil || con == nil || acc[1] != con[1] || acc[2] != con[2] {
		t.Errorf("lab trace: the relay's peer %q and the guest's address %q differ", acc, con)
	}
	if r := must("trace", "--name", name, "--", "true"); !strings.Contains(r.stdout, "no interop launch") {
		t.Errorf("lab trace -- true:\n%s", r.stdout)
	}

	// Exit status of a guest command passes through lab exec.
	if r := lab("exec", "--name", name, "--", "sh", "-c", "exit 7"); r.code != 7 {
		t.Errorf("lab exec -- sh -c 'exit 7': exit %d; want 7", r.code)
	}

	// Signals reach the guest command, and its own exit status comes back.
	checkExecSignals(t, filepath.Join(bin, "lab"), env, name)

	// With interop off a stub is an ordinary #! file naming an interpreter that does not
	// exist (the scenarios check "Exec format error" for MZ files with an execve probe).
	must("interop", "off", "--name", name)
	if r := must("exec", "--name", name, "--", "head", "-1", "/proc/sys/fs/binfmt_misc/lab-host"); r.stdout != "disabled\n" {
		t.Errorf("lab-host rule after interop off: %q", r.stdout)
	}
	if r := lab("exec", "--name", name, "--", "hostprintf", "x"); r.code == 0 || r.stdout != "" {
		t.Errorf("with interop off the stub still ran: exit %d, stdout %q", r.code, r.stdout)
	}
	must("interop", "on", "--name", name)
	if r := must("exec", "--name", name, "--", "hostprintf", "back"); r.stdout != "back" {
		t.Errorf("after interop on: %q", r.stdout)
	}

	var st struct {
		State string `json:"state"`
		Relay *struct {
			State string `json:"state"`
			Stats struct {
				Launched uint64
				BytesOut uint64
			} `json:"stats"`
		} `json:"relay"`
		Formats []struct {
			Name string `json:"name"`
		} `json:"formats"`
	}
	// The relay publishes its counters a few times a second: wait for them to show the launches.
	for i := 0; ; i++ {
		r = must("status", "--name", name, "--json")
		if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
			t.Fatalf("lab status --json: %v\n%s", err, r.stdout)
		}
		if st.State != "running" || st.Relay == nil || st.Relay.State != "serving" {
			t.Fatalf("lab status: %s", r.stdout)
		}
		if st.Relay.Stats.Launched >= 2 && st.Relay.Stats.BytesOut > 0 {
			if len(st.Formats) != 3 || st.Formats[0].Name != "labsh" || st.Formats[2].Name != "arm64" {
				t.Errorf("lab status --json: the lab file's formats: %+v", st.Formats)
			}
			break
		}
		if i == 40 {
			t.Fatalf("the relay's counters do not show the two launches: %s", r.stdout)
		}
		time.Sleep(250 * time.Millisecond)
	}

	// lab image key names the image the VM booted, without building anything.
	var inst struct {
		Kernel string `json:"kernel"`
	}
	if b, err := os.ReadFile(filepath.Join(stateDir, "instance.json")); err != nil || json.Unmarshal(b, &inst) != nil {
		t.Fatalf("instance.json: %v", err)
	}
	if key := strings.TrimSpace(must("image", "key").stdout); key != filepath.Base(filepath.Dir(inst.Kernel)) {
		t.Errorf("lab image key = %q; the VM booted %s", key, inst.Kernel)
	}

	// A user's scenario directory (the worked example of lab help scenarios: a host
	// program next to the scenario, exposed, fed from the guest) on this plain VM.
	example, err := filepath.Abs("../../scenarios/testdata/example")
	if err != nil {
		t.Fatal(err)
	}
	if r := lab("run", "--name", name, "--scenarios", example, "--json"); r.code != 0 || !strings.Contains(r.stdout, `"passed": 1`) {
		t.Fatalf("lab run --scenarios %s: exit %d\n%s\n%s", example, r.code, r.stdout, r.stderr)
	}
	// A failing user scenario: exit 1, and the report names FILE:LINE and expected vs got.
	mine := t.TempDir()
	os.WriteFile(filepath.Join(mine, "wrong.txtar"), []byte("# The guest's kernel is not called Windows.\nguest 'uname -s'\nstdout '^Windows$'\n"), 0o644)
	if r := lab("run", "--name", name, "--scenarios", mine); r.code != 1 || !strings.Contains(r.stderr, "FAIL: "+mine+"/wrong.txtar:3: no match for `^Windows$` found in stdout") || !strings.Contains(r.stderr, "Linux") {
		t.Errorf("a failing user scenario: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	// The whole built-in suite and the example, in two shards, merged: every scenario
	// once, all passing on a VM from plain lab up.
	reports := t.TempDir()
	var shardFiles []string
	for k := 1; k <= 2; k++ {
		js := filepath.Join(reports, fmt.Sprintf("shard-%d.json", k))
		xml := filepath.Join(reports, fmt.Sprintf("shard-%d.xml", k))
		r := lab("run", "--name", name, "--scenarios", example, "--builtin", "--shard", fmt.Sprintf("%d/2", k), "--json", "--junit", xml)
		os.WriteFile(js, []byte(r.stdout), 0o644)
		if r.code != 0 {
			t.Errorf("lab run --shard %d/2: exit %d\n%s", k, r.code, r.stderr)
		}
		shardFiles = append(shardFiles, js)
	}
	merged := filepath.Join(reports, "all.json")
	r = lab(append(append([]string{"report", "merge"}, shardFiles...), "--json", merged, "--junit", filepath.Join(reports, "all.xml"))...)
	t.Logf("lab report merge:\n%s", r.stdout)
	if r.code != 0 {
		t.Errorf("lab report merge: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if list := must("run", "--scenarios", example, "--builtin", "--list"); strings.Count(r.stdout, "PASS")+strings.Count(r.stdout, "SKIP") != strings.Count(list.stdout, "\n") {
		t.Errorf("the merged report does not hold every scenario once:\n%s\nsuite:\n%s", r.stdout, list.stdout)
	}

	// One Windows side for both: a second machine joins the prefix (and the one wineserver)
	// that the first one's hostagent started; the first going down leaves it to the second.
	const second = "cli2"
	prefix := filepath.Join(base, "data", "lab", "windows")
	var servers []int
	_, noWine := exec.LookPath("wine")
	if noWine == nil {
		servers = labtest.Procs("wineserver", "WINEPREFIX="+prefix)
		t.Cleanup(func() { lab("delete", "--force", second) })
		must("up", "--name", second, "--no-scratch")
		if s := labtest.Procs("wineserver", "WINEPREFIX="+prefix); len(servers) != 1 || !slices.Equal(s, servers) {
			t.Errorf("wineservers of the shared prefix: %v with one machine, %v with two; want the same one", servers, s)
		}
		var l machine.Inventory
		if err := json.Unmarshal([]byte(must("list", "--json").stdout), &l); err != nil || len(l.Machines) != 2 || l.Windows == nil || l.Windows.Users != 2 ||
			l.Machines[0].Windows != "shared" || l.Machines[1].Windows != "shared" {
			t.Errorf("lab list --json with two machines: %+v, %v; want both on the shared Windows side", l, err)
		}
		var dirs []string
		ents, _ := os.ReadDir(filepath.Join(base, "data", "lab"))
		for _, e := range ents {
			if e.IsDir() {
				dirs = append(dirs, e.Name())
			}
		}
		if len(dirs) != 1 || dirs[0] != "windows" {
			t.Errorf("data dir holds %v; want only the shared windows prefix", dirs)
		}
		t.Logf("data dir with two machines: %s", humanBytes(machine.DiskUse(filepath.Join(base, "data"))))
	}

	must("down", "--name", name)
	for _, pid := range pids {
		if running(pid) {
			t.Errorf("process %d still runs after lab down", pid)
		}
	}
	if _, err := os.Stat(stateDir); !os.IsNotExist(err) {
		t.Errorf("state dir %s still exists after lab down (%v)", stateDir, err)
	}

	if noWine == nil {
		if r := must("exec", "--name", second, "--", "cmd.exe", "/c", "echo", "hi"); r.stdout != "hi\r\n" {
			t.Errorf("after the first machine went down, lab exec --name %s -- cmd.exe /c echo hi = %q; want %q (stderr %q)", second, r.stdout, "hi\r\n", r.stderr)
		}
		if s := labtest.Procs("wineserver", "WINEPREFIX="+prefix); !slices.Equal(s, servers) {
			t.Errorf("wineservers of the shared prefix after the first machine went down: %v; want %v still", s, servers)
		}
		if r := lab("list"); r.code != 0 || !strings.Contains(r.stdout, "\n"+second+"                 running   shared ") || !strings.Contains(r.stdout, "used by 1 running machine(s), wineserver running\n") {
			t.Errorf("lab list: exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
		if r := lab("delete", second); r.code != 1 || r.stderr != "lab: delete: machine \"cli2\" is running: stop it first (lab down --name cli2) or use lab delete --force cli2\n" {
			t.Errorf("lab delete of a running machine: exit %d, stderr %q", r.code, r.stderr)
		}
		if r := must("delete", "--force", second); !strings.HasPrefix(r.stdout, second+": deleted (") {
			t.Errorf("lab delete --force: %q", r.stdout)
		}
		if s := labtest.Procs("wineserver", "WINEPREFIX="+prefix); len(s) != 0 {
			t.Errorf("wineservers %v of the shared prefix remain after its last machine was deleted", s)
		}
		if r := must("list"); !strings.HasPrefix(r.stdout, "no machines (lab up makes one)\nshared Windows side: "+prefix+", ") || !strings.HasSuffix(r.stdout, ", used by 0 running machine(s), no wineserver\n") {
			t.Errorf("lab list after lab delete:\n%s", r.stdout)
		}
	}
}

// running reports whether pid is a live process; a zombie has exited (reaping it is its
// parent's or init's business).
func running(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i < 0 || i+2 >= len(b) || b[i+2] != 'Z'
}

// guestTrap prints "ready" once its SIGINT trap is set; on SIGINT it prints "got INT"
// and exits 7. Its sleep is long enough that only a delivered signal ends it in time.
const guestTrap = `trap "echo got INT; exit 7" INT; stty size 2>/dev/null; echo ready; sleep 1000`

// checkExecSignals checks lab exec's signal handling against the booted VM: without a
// terminal SIGINT to lab exec is forwarded to the command's process group; on a
// terminal ^C is a byte the guest pty turns into SIGINT.
func checkExecSignals(t *testing.T, lab string, env []string, name string) {
	t.Helper()
	// A guard, not a timing assertion: a signal that never arrives must fail, not hang.
	guard := func(c *exec.Cmd) (stop func()) {
		timer := time.AfterFunc(2*time.Minute, func() {
			t.Errorf("lab exec still runs 2 minutes after the signal: the guest command did not get it")
			c.Process.Kill()
		})
		return func() { timer.Stop() }
	}
	t.Run("no tty: SIGINT forwarded", func(t *testing.T) {
		c := exec.Command(lab, "exec", "--name", name, "--", "sh", "-c", guestTrap)
		c.Env = append(os.Environ(), env...)
		var stderr bytes.Buffer
		c.Stderr = &stderr
		out, err := c.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(out)
		line, err := br.ReadString('\n')
		if line != "ready\n" {
			c.Process.Kill()
			c.Wait()
			t.Fatalf("lab exec: first line %q, %v (stderr %q)", line, err, stderr.String())
		}
		c.Process.Signal(syscall.SIGINT)
		defer guard(c)()
		rest, _ := io.ReadAll(br)
		err = c.Wait()
		if code := c.ProcessState.ExitCode(); code != 7 || string(rest) != "got INT\n" {
			t.Errorf("after SIGINT: exit %d (%v), rest of stdout %q, stderr %q; want exit 7 and %q",
				code, err, rest, stderr.String(), "got INT\n")
		}
	})
	t.Run("tty: ^C through the guest pty", func(t *testing.T) {
		ptmx, tty, err := pty.Open()
		if err != nil {
			t.Fatal(err)
		}
		defer ptmx.Close()
		defer tty.Close()
		if err := pty.Setsize(ptmx, &pty.Winsize{Rows: 31, Cols: 97}); err != nil {
			t.Fatal(err)
		}
		before, err := unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS)
		if err != nil {
			t.Fatal(err)
		}
		c := exec.Command(lab, "exec", "--name", name, "--", "sh", "-c", guestTrap)
		c.Env = append(os.Environ(), env...)
		c.Stdin, c.Stdout, c.Stderr = tty, tty, tty
		// lab exec leads a session whose controlling terminal is tty: its foreground group.
		c.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true}
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		var screen bytes.Buffer
		drained := make(chan struct{}) // closed when the master reads EIO: every slave fd closed
		go func() {
			defer close(drained)
			b := make([]byte, 4096)
			for {
				n, err := ptmx.Read(b)
				mu.Lock()
				screen.Write(b[:n])
				mu.Unlock()
				if err != nil {
					return
				}
			}
		}()
		// waitFor waits until the terminal shows s (or lab exec exited).
		exited := make(chan struct{})
		var werr error
		go func() { werr = c.Wait(); close(exited) }()
		waitFor := func(s string) bool {
			for {
				mu.Lock()
				ok := strings.Contains(screen.String(), s)
				mu.Unlock()
				if ok {
					return true
				}
				select {
				case <-exited:
					return false
				case <-time.After(20 * time.Millisecond):
				}
			}
		}
		stop := guard(c)
		defer stop()
		if !waitFor("ready\r\n") {
			mu.Lock()
			defer mu.Unlock()
			t.Fatalf("lab exec on a terminal exited before the command was ready: %v\n%q", werr, screen.String())
		}
		ptmx.Write([]byte{3}) // ^C
		<-exited
		// lab exec restored the local terminal's modes.
		after, err := unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS)
		if err != nil {
			t.Fatal(err)
		}
		if *after != *before {
			t.Errorf("terminal modes not restored: before %+v, after %+v", *before, *after)
		}
		tty.Close()
		<-drained // everything lab exec wrote
		mu.Lock()
		out := screen.String()
		mu.Unlock()
		if code := c.ProcessState.ExitCode(); code != 7 || !strings.Contains(out, "got INT\r\n") {
			t.Errorf("after ^C: exit %d (%v); terminal showed %q; want exit 7 after \"got INT\"", code, werr, out)
		}
		// The guest pty had the local terminal's size.
		if !strings.Contains(out, "31 97\r\n") {
			t.Errorf("stty size in the guest: terminal showed %q; want 31 97", out)
		}
	})
}
