package host_test

import (
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The speed figures: run both pairs in one invocation so each figure has its baseline from
// the same run on the same machine:
//
//	go test -run '^$' -bench 'Launch|Stdout' -benchtime 2s ./host
//
// Launch: a trivial host program exec'd directly vs through lab-interop + lab relay over a
// Unix socket (the difference is the interop launch overhead). Stdout: MB/s of a host
// program's stdout through interop vs the same path with plain read/write copies in place of
// the relay and the interpreter: program -> pipe -> copy -> Unix socket -> copy -> pipe.

// benchWorld is a relay that logs at its default level (warn), as a user runs it.
func benchWorld(b *testing.B) *world {
	return newWorld(b, "--log-level", "warn")
}

func BenchmarkLaunchDirect(b *testing.B) {
	w := benchWorld(b)
	prog := filepath.Join(w.hostShare, "bin", "true")
	b.ResetTimer()
	for b.Loop() {
		cmd := exec.Command(prog)
		cmd.Dir = w.hostShare
		if err := cmd.Run(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkLaunchInterop(b *testing.B) {
	w := benchWorld(b)
	b.ResetTimer()
	for b.Loop() {
		// stdio as in BenchmarkLaunchDirect (/dev/null): the harness does the same work.
		if err := w.interop("true", "true").Run(); err != nil {
			out, _ := w.interop("true", "true").CombinedOutput()
			b.Fatalf("%v: %s", err, out)
		}
	}
}

// stdoutBytes is what one iteration moves.
const stdoutBytes = 256 << 20

func BenchmarkStdoutUnixCopy(b *testing.B) {
	w := benchWorld(b)
	prog := filepath.Join(w.hostShare, "bin", "zeros")
	b.SetBytes(stdoutBytes)
	b.ResetTimer()
	for b.Loop() {
		// The interop path with plain copies in place of the relay and the interpreter:
		// program -> pipe -> copy -> Unix socket -> copy -> pipe -> reader.
		fds, err := socketpair()
		if err != nil {
			b.Fatal(err)
		}
		cmd := exec.Command(prog, strconv.Itoa(stdoutBytes))
		out, err := cmd.StdoutPipe()
		if err != nil {
			b.Fatal(err)
		}
		pr, pw, err := os.Pipe()
		if err != nil {
			b.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		go func() {
			plainCopy(fds[0], out)
			fds[0].(*net.UnixConn).CloseWrite()
		}()
		go func() {
			plainCopy(pw, fds[1])
			pw.Close()
		}()
		n, _ := io.Copy(io.Discard, pr)
		if err := cmd.Wait(); err != nil || n != stdoutBytes {
			b.Fatalf("%v, %d bytes", err, n)
		}
		pr.Close()
		fds[0].Close()
		fds[1].Close()
	}
}

func BenchmarkStdoutInterop(b *testing.B) {
	w := benchWorld(b)
	b.SetBytes(stdoutBytes)
	b.ResetTimer()
	for b.Loop() {
		cmd := w.interop("zeros", "zeros", strconv.Itoa(stdoutBytes))
		out, err := cmd.StdoutPipe()
		if err != nil {
			b.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		n, _ := io.Copy(io.Discard, out)
		if err := cmd.Wait(); err != nil || n != stdoutBytes {
			b.Fatalf("%v, %d bytes", err, n)
		}
	}
}

// plainCopy copies with read(2)/write(2) through a 32 KiB buffer, as socat does and as the
// relay must (its frames interleave three streams), rather than io.Copy's splice(2)
// shortcut between pipes and sockets, which no framed protocol can use.
func plainCopy(dst io.Writer, src io.Reader) (int64, error) {
	return io.CopyBuffer(struct{ io.Writer }{dst}, struct{ io.Reader }{src}, make([]byte, 32<<10))
}

// socketpair returns a connected pair of Unix stream sockets.
func socketpair() ([2]net.Conn, error) {
	var c [2]net.Conn
	dir, err := os.MkdirTemp("", "sp")
	if err != nil {
		return c, err
	}
	defer os.RemoveAll(dir)
	l, err := net.Listen("unix", filepath.Join(dir, "s"))
	if err != nil {
		return c, err
	}
	defer l.Close()
	if c[0], err = net.Dial("unix", l.Addr().String()); err != nil {
		return c, err
	}
	c[1], err = l.Accept()
	return c, err
}

// BenchmarkLaunchOverhead alternates a direct exec of the trivial program and the same
// program through lab-interop + lab relay on the Unix transport, so both see the same
// machine at the same moment, and reports each one's p50 and p99 and the overhead of
// interop at p50 and p99 (aim: p50 overhead <= 2 ms):
//
//	go test -run '^$' -bench LaunchOverhead -benchtime 300x ./host
//
// On a loaded machine the wall times measure the scheduler (each launch waits for a core
// several times), so it also reports the CPU time each path costs, which load does not
// inflate nearly as much: the program's own (direct), and the interpreter's plus the relay's
// (its children, i.e. the program, included) for interop, as means per launch (the relay's
// from /proc in clock ticks, over all launches).
func BenchmarkLaunchOverhead(b *testing.B) {
	w := benchWorld(b)
	prog := filepath.Join(w.hostShare, "bin", "true")
	var direct, interop []float64
	var directCPU, interpCPU time.Duration
	relay0 := procCPU(b, w.relay.Process.Pid)
	for b.Loop() {
		t := time.Now()
		cmd := exec.Command(prog)
		cmd.Dir = w.hostShare
		if err := cmd.Run(); err != nil {
			b.Fatal(err)
		}
		lap(&direct, t)
		directCPU += cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
		t = time.Now()
		cmd = w.interop("true", "true")
		if err := cmd.Run(); err != nil {
			b.Fatal(err)
		}
		lap(&interop, t)
		interpCPU += cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	}
	relayCPU := procCPU(b, w.relay.Process.Pid) - relay0
	n := float64(len(direct))
	perLaunch := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / n / 1e6 }
	b.ReportMetric(perLaunch(directCPU), "direct-cpu-ms")
	b.ReportMetric(perLaunch(interpCPU), "interp-cpu-ms")
	b.ReportMetric(perLaunch(relayCPU), "relay-cpu-ms")
	b.ReportMetric(perLaunch(interpCPU+relayCPU-directCPU), "overhead-cpu-ms")
	q := msQuantile
	b.ReportMetric(q(direct, 0.5), "direct-p50-ms")
	b.ReportMetric(q(direct, 0.99), "direct-p99-ms")
	b.ReportMetric(q(interop, 0.5), "interop-p50-ms")
	b.ReportMetric(q(interop, 0.99), "interop-p99-ms")
	b.ReportMetric(q(interop, 0.5)-q(direct, 0.5), "overhead-p50-ms")
	b.ReportMetric(q(interop, 0.99)-q(direct, 0.99), "overhead-p99-ms")
	b.ReportMetric(0, "ns/op") // two launches per op: the metrics above are the figures
}

// lap appends the wall time since t, in ns, to the samples *d (the launch benchmarks').
func lap(d *[]float64, t time.Time) { *d = append(*d, float64(time.Since(t).Nanoseconds())) }

// msQuantile is the p quantile (0 to 1, nearest rank) of the samples v in ns, in ms.
func msQuantile(v []float64, p float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[min(len(s)-1, max(0, int(p*float64(len(s))+0.5)-1))] / 1e6
}

// procCPU is the CPU time of process pid and of its waited-for children, from
// /proc/PID/stat (utime, stime, cutime, cstime; clock ticks of 10 ms, USER_HZ on Linux).
func procCPU(b *testing.B, pid int) time.Duration {
	b.Helper()
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		b.Fatal(err)
	}
	s := string(raw)
	// The command name is in parentheses and may hold spaces: count fields after it.
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	var ticks int64
	for _, i := range []int{11, 12, 13, 14} { // fields 14-17 of proc(5), after pid and comm
		v, err := strconv.ParseInt(f[i], 10, 64)
		if err != nil {
			b.Fatalf("/proc/%d/stat: %v", pid, err)
		}
		ticks += v
	}
	return time.Duration(ticks) * 10 * time.Millisecond
}
