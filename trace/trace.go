// Package trace records and presents the steps of interop launches for `lab trace`:
// the guest interpreter and the relay each append one JSON object per step (JSON lines)
// to a file, and lab trace merges the two records of a launch into one timeline.
//
// An Event is recorded by the side that saw the step, with that side's CLOCK_MONOTONIC:
// guest and host clocks are never compared directly (see Merge for how they are aligned).
package trace

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Sides of a launch.
const (
	SideGuest = "guest" // the interpreter (lab-interop) in the guest
	SideRelay = "relay" // the relay on the host
)

// Event is one step of one launch, one JSON line in a trace file.
type Event struct {
	Trace string         `json:"trace"`          // the launch's trace id (wire Launch.TraceID)
	Side  string         `json:"side"`           // SideGuest or SideRelay
	Step  string         `json:"step"`           // what happened (the Step* names)
	Mono  int64          `json:"mono_ns"`        // the recording side's CLOCK_MONOTONIC, ns
	Wall  time.Time      `json:"wall"`           // the recording side's wall clock, for people only
	PID   int            `json:"pid,omitempty"`  // the recording process
	Text  string         `json:"text"`           // one line for people
	Data  map[string]any `json:"data,omitempty"` // the step's facts, for tools
}

// Steps recorded by the guest interpreter, in the order they happen.
const (
	StepArgv    = "interpreter argv" // the interpreter's argv exactly as the kernel passed it
	StepBinfmt  = "binfmt"           // the binfmt_misc rule(s) that match the file and name this interpreter
	StepConfig  = "config"           // /etc/lab/interop.conf: relay address, shares
	StepFile    = "file"             // format detected from the file's head, path or command sent
	StepEnv     = "env"              // what LABENV selects in the guest
	StepConnect = "connect"          // the connection to the relay
	StepSend    = "hello+launch"     // Hello and Launch frames written (sizes); again after a retry
	StepResult  = "launch result"    // the relay's Hello and LaunchResult read
	StepRetry   = "retry"            // the relay answered EAGAIN (nothing ran): connect again after a pause
	StepSignal  = "signal"           // a signal forwarded (guest) or delivered (relay)
	StepStream  = "stream"           // one stream ended: bytes moved
	StepExit    = "exit"             // the exit status
	StepError   = "error"            // the interpreter's own failure line
)

// Steps recorded by the relay.
const (
	StepAccept      = "accept"   // connection accepted (before the trace id is known; recorded with the launch)
	StepHello       = "hello"    // Hello read, token accepted
	StepLaunch      = "launch"   // Launch read (its size)
	StepDecision    = "decision" // share file or exposed command, host path, runner
	StepCwd         = "cwd"      // guest cwd mapped to a host directory, or the fallback
	StepHostEnv     = "environment"
	StepStart       = "start"          // host process started (pid)
	StepFirstOutput = "first output"   // the program's first bytes on stdout or stderr
	StepProgramExit = "program exited" // the started process itself exited (its wait status is ready); output may still be draining
	StepReply       = "reply"          // LaunchResult sent (started or refused)
	StepRefused     = "refused"        // the relay refused the launch
	StepLost        = "lost"           // the connection ended before the program
)

// Mono returns CLOCK_MONOTONIC in nanoseconds.
func Mono() int64 {
	var ts unix.Timespec
	if unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts) != nil {
		return time.Now().UnixNano()
	}
	return ts.Nano()
}

// Sink appends events to a writer, one JSON line per event and one Write per line (with
// O_APPEND, lines from several processes writing the same file do not interleave).
// A nil *Sink records nothing.
type Sink struct {
	mu   sync.Mutex
	w    io.Writer
	side string
	pid  int
	buf  []byte
}

// NewSink returns a sink writing the events of side to w.
func NewSink(w io.Writer, side string) *Sink {
	return &Sink{w: w, side: side, pid: os.Getpid()}
}

// Record appends one event of launch trace, timed now.
func (s *Sink) Record(trace, step, text string, data map[string]any) {
	s.RecordAt(Mono(), time.Now(), trace, step, text, data)
}

// RecordAt appends one event that happened at mono (wall for people).
func (s *Sink) RecordAt(mono int64, wall time.Time, trace, step, text string, data map[string]any) {
	if s == nil {
		return
	}
	e := Event{Trace: trace, Side: s.side, Step: step, Mono: mono, Wall: wall, PID: s.pid, Text: text, Data: data}
	b, err := json.Marshal(e)
	if err != nil {
		// A value JSON cannot hold (never in lab's own events): keep the step, drop the data.
		e.Data = map[string]any{"error": err.Error()}
		b, _ = json.Marshal(e)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.buf = append(append(s.buf[:0], b...), '\n')
	s.w.Write(s.buf)
}

// File is an append-only trace file that starts over when it grows past a limit: the
// previous content moves to NAME.1 (ReadFile reads both), so a relay that serves for
// weeks keeps at most twice the limit.
type File struct {
	mu   sync.Mutex
	path string
	max  int64
	f    *os.File
	size int64
}

// OpenFile opens (creating, mode 0600) the trace file at path; max <= 0 means 4 MiB.
func OpenFile(path string, max int64) (*File, error) {
	if max <= 0 {
		max = 4 << 20
	}
	t := &File{path: path, max: max}
	if err := t.open(); err != nil {
		return nil, err
	}
	return t, nil
}

func (t *File) open() error {
	f, err := os.OpenFile(t.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("trace: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("trace: %w", err)
	}
	t.f, t.size = f, st.Size()
	return nil
}

// Write appends p (one whole line), rotating first when the file is full.
func (t *File) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.f == nil {
		return 0, os.ErrClosed
	}
	if t.size > 0 && t.size+int64(len(p)) > t.max {
		t.f.Close()
		t.f = nil
		os.Rename(t.path, t.path+".1")
		if err := t.open(); err != nil {
			return 0, err
		}
	}
	n, err := t.f.Write(p)
	t.size += int64(n)
	return n, err
}

// Close closes the file.
func (t *File) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.f == nil {
		return nil
	}
	err := t.f.Close()
	t.f = nil
	return err
}

// Parse reads JSON lines of events. Lines that are not events (a torn last line of a
// process killed mid-write) are skipped and counted in bad.
func Parse(r io.Reader) (events []Event, bad int, err error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var e Event
		if json.Unmarshal(line, &e) != nil || e.Trace == "" || e.Step == "" || e.Side == "" {
			bad++
			continue
		}
		events = append(events, e)
	}
	if err := sc.Err(); err != nil {
		return events, bad, fmt.Errorf("trace: %w", err)
	}
	return events, bad, nil
}

// ReadFile reads the events of a trace file and of its rotated predecessor (NAME.1).
// A missing file has no events.
func ReadFile(path string) ([]Event, error) {
	var all []Event
	for _, p := range []string{path + ".1", path} {
		f, err := os.Open(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("trace: %w", err)
		}
		ev, _, err := Parse(f)
		f.Close()
		if err != nil {
			return nil, err
		}
		all = append(all, ev...)
	}
	return all, nil
}
