package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"lab/guest"
	"lab/internal/fsutil"
	"lab/internal/shell"
	"lab/machine"
	"lab/trace"
	"lab/vm"
)

func newTraceCommand() *cobra.Command {
	var o traceOptions
	cmd := &cobra.Command{
		Use:   "trace [--name VM] [--json] [-o FILE] -- CMD [ARG...]",
		Short: "Run a command in the guest and show each step of its interop launches",
		Long: `trace runs CMD in the guest as lab exec does (stdio and exit status pass
through) and then prints how every interop launch it made happened, step by step,
the way an strace of WSL's /init shows WSL's: the interpreter's argv as the kernel
built it (binfmt_misc flag P: argv[1] is the file execve was given, argv[2] the
caller's argv[0]), the binfmt_misc rule that matched (from
/proc/sys/fs/binfmt_misc/RULE), the configuration the interpreter read
(/etc/lab/interop.conf: relay address, shares), the format and what it asks for,
the environment LABENV selects, the vsock connection, the Hello and Launch frames
and their sizes, and on the relay's side the accept, the decision (share file or
exposed command, host path, runner exec or wine), the working directory mapping,
which variables crossed and which were refused, the host pid, the reply, then the
bytes of each stream and the exit status.

How: CMD runs with LAB_TRACE=FILE in its environment; the interpreter appends its
steps to FILE in the guest and sends a trace id in its Launch (protocol 2.1); the
relay records its steps under that id in <state>/relay-trace.jsonl. Times are ms
since the (first) interpreter started, on the guest's clock; the relay's steps are
placed on it with the handshake's round trip, as NTP does (offset =
((T2-T1)+(T3-T4))/2 from the guest's send and receive and the relay's receive and
reply): the two clocks are never compared directly, and the line above the steps
gives the error bound. A command that runs no foreign file says so.

Output: the text report on stdout after CMD's own output (with -o, in FILE).
--json prints one JSON document instead (CMD's stdout then goes to stderr, unless
-o is given):
  {"command": [ARG...], "vm": NAME, "vsock": "user"|"kernel", "exit_status": N,
   "interop": BOOL, "notes": [STRING...],
   "launches": [{"trace": ID, "method": "handshake"|"accept"|"none",
                 "offset_ns": N, "uncertainty_ns": N, "guest_events": N, "relay_events": N}],
   "steps": [{"launch": N, "t_ms": F, "side": "guest"|"relay", "step": NAME,
              "text": STRING, "trace": ID, "mono_ns": N, "wall": TIME, "pid": N,
              "data": {...}}]}
Steps (guest): interpreter argv, binfmt, config, file, env, connect, hello+launch,
launch result, stream, signal, exit, error; (relay): accept, hello, launch,
decision, refused, cwd, start, environment, reply, first output, signal, program exited, exit,
lost.

Exit status: CMD's, as lab exec.`,
		Example: `  lab expose /usr/bin/printf --as hostprintf
  lab trace -- hostprintf '%s\n' hi
  lab trace --json -- sh -c 'cd /mnt/c && cmd.exe /c echo hi' | jq .steps`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			stateDir, err := vm.StateDirOf(o.name)
			if err != nil {
				return err
			}
			c, err := vm.Connect(ctx, o.name)
			if err != nil {
				return err
			}
			defer c.Close()
			o.vsock = "?"
			if in, err := machine.Instance(stateDir); err == nil {
				o.vsock = in.Vsock
			}
			o.relayTrace = filepath.Join(stateDir, machine.FileRelayTrace)
			return traceAction(ctx, c, args, o, os.Stdin, os.Stdout, os.Stderr)
		},
	}
	cmd.Flags().StringVar(&o.name, "name", vm.DefaultName, "VM name")
	cmd.Flags().BoolVar(&o.json, "json", false, "print one JSON document (schema in --help)")
	cmd.Flags().StringVarP(&o.output, "output", "o", "", "write the report to FILE instead of stdout")
	cmd.Flags().SetInterspersed(false)
	return cmd
}

type traceOptions struct {
	name, output string
	json         bool
	vsock        string // the VM's vsock mode, for the report
	relayTrace   string // the relay's trace file on this host
}

// traceGuest is what lab trace needs of the guest (*vm.Client).
type traceGuest interface {
	Run(ctx context.Context, cmd string, stdin io.Reader, stdout, stderr io.Writer) (int, error)
	Output(ctx context.Context, cmd string) ([]byte, error)
}

// traceReport is the --json document.
type traceReport struct {
	Command    []string      `json:"command"`
	VM         string        `json:"vm"`
	Vsock      string        `json:"vsock"`
	ExitStatus int           `json:"exit_status"`
	Interop    bool          `json:"interop"`
	Notes      []string      `json:"notes"`
	Launches   []trace.Clock `json:"launches"`
	Steps      []trace.Step  `json:"steps"`
}

func traceAction(ctx context.Context, g traceGuest, args []string, o traceOptions, stdin io.Reader, stdout, stderr io.Writer) error {
	var rnd [8]byte
	rand.Read(rnd[:])
	file := "/tmp/lab-trace-" + hex.EncodeToString(rnd[:]) + ".jsonl"

	report := io.Writer(stdout)
	cmdOut := stdout
	if o.output != "" {
		f, err := os.Create(o.output)
		if err != nil {
			return fmt.Errorf("trace: %w", err)
		}
		defer f.Close()
		report = f
	} else if o.json {
		cmdOut = stderr // stdout holds only the document
	}

	line := "export " + guest.TraceEnv + "=" + shell.Join([]string{file}) + "; " + shell.Join(args)
	code, err := g.Run(ctx, line, stdin, cmdOut, stderr)
	if err != nil {
		if ctx.Err() != nil {
			return &exitError{130}
		}
		return err
	}
	// A fresh context: the guest file is removed even when the command was interrupted
	// after it ended.
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	raw, err := g.Output(fctx, "cat "+shell.Join([]string{file})+" 2>/dev/null; rm -f "+shell.Join([]string{file}))
	if err != nil {
		return fmt.Errorf("trace: reading the guest's trace %s: %w", file, err)
	}
	gev, bad, err := trace.Parse(bytes.NewReader(raw))
	if err != nil {
		return err
	}
	rep := traceReport{Command: args, VM: o.name, Vsock: o.vsock, ExitStatus: code, Interop: len(gev) > 0, Notes: []string{}}
	if bad > 0 {
		rep.Notes = append(rep.Notes, fmt.Sprintf("%d unreadable line(s) in the guest's trace (an interpreter killed mid-write?)", bad))
	}
	rev, err := relayEvents(ctx, o.relayTrace, gev)
	if err != nil {
		rep.Notes = append(rep.Notes, fmt.Sprintf("no relay records: %v", err))
	}
	tl := trace.Merge(gev, rev)
	rep.Launches, rep.Steps = tl.Launches, tl.Steps
	if rep.Launches == nil {
		rep.Launches = []trace.Clock{}
		rep.Steps = []trace.Step{}
		rep.Notes = append(rep.Notes, "no interop launch: the command ran no file that a lab binfmt_misc rule hands to the interpreter (or interop is off: lab interop on)")
	}

	if o.json {
		b, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			return fmt.Errorf("trace: %w", err)
		}
		if _, err := report.Write(append(b, '\n')); err != nil {
			return fmt.Errorf("trace: %w", err)
		}
	} else if err := writeTraceText(report, rep, tl); err != nil {
		return fmt.Errorf("trace: %w", err)
	}
	if code != 0 {
		return &exitError{code}
	}
	return nil
}

// relayEvents reads the relay's records of the launches the guest recorded. The relay
// writes a launch's last record before the Exit frame (or the refusal) goes out, so they
// are complete by the time the command ends; a session the guest's end cut short is
// recorded (lost) when the relay sees the connection go. So it re-reads the file when it
// changes (inotify on its directory: the file may not exist yet, or be rotated) until every
// launch has its last record, for at most 2 s (a relay slower to write than the guest to
// exit, say under a loaded host; past that, the report says what is missing).
func relayEvents(ctx context.Context, path string, guestEv []trace.Event) ([]trace.Event, error) {
	want := map[string]bool{}
	for _, e := range guestEv {
		if e.Step == trace.StepSend {
			want[e.Trace] = true
		}
	}
	if len(want) == 0 || path == "" {
		return nil, nil
	}
	w, err := fsutil.WatchPath(filepath.Dir(path))
	if err != nil {
		return trace.ReadFile(path) // no directory to watch: what there is (nothing)
	}
	defer w.Close()
	wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	for {
		ev, err := trace.ReadFile(path)
		if err != nil {
			return nil, err
		}
		done := map[string]bool{}
		for _, e := range ev {
			if want[e.Trace] && (e.Step == trace.StepExit || e.Step == trace.StepRefused || e.Step == trace.StepLost) {
				done[e.Trace] = true
			}
		}
		if len(done) == len(want) {
			return ev, nil
		}
		if err := w.Next(wctx); err != nil {
			return ev, nil // what there is, by the deadline
		}
	}
}

func writeTraceText(w io.Writer, rep traceReport, tl trace.Timeline) error {
	var b strings.Builder
	fmt.Fprintf(&b, "lab trace: %s  (VM %s, vsock %s", shell.Join(rep.Command), rep.VM, rep.Vsock)
	if rep.Vsock == "user" {
		b.WriteString(": lab's vhost-user device in the hostagent; the guest sees AF_VSOCK either way")
	}
	b.WriteString(")\n")
	for _, n := range rep.Notes {
		fmt.Fprintf(&b, "  %s\n", n)
	}
	for i, c := range tl.Launches {
		fmt.Fprintf(&b, "launch %d, trace %s: %s\n", i+1, c.Trace, trace.DescribeClock(c))
	}
	if _, err := io.WriteString(w, b.String()); err != nil {
		return err
	}
	if err := trace.WriteText(w, tl); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "command exit status %d\n", rep.ExitStatus)
	return err
}
