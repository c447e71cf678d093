package scenarios

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"lab/internal/shell"
	"lab/provision"

	"github.com/pkg/sftp"
	"github.com/rogpeppe/go-internal/testscript"
	"golang.org/x/tools/txtar"
)

//go:embed testdata/*.txtar
var scenarioFS embed.FS

// Guest runs commands in the guest over the kept SSH connection; *vm.Client satisfies it.
type Guest interface {
	Run(ctx context.Context, cmd string, stdin io.Reader, stdout, stderr io.Writer) (int, error)
	SFTP() (*sftp.Client, error)
}

// Control is what scenarios may change around the guest. Every method acts on the
// suite's VM; Restore puts everything back (re-provisioning) after a scenario that used
// any of the others.
type Control interface {
	Interop(ctx context.Context, on bool) error
	Expose(ctx context.Context, hostPath, name string) error
	Unexpose(ctx context.Context, name string) error
	RelayStop(ctx context.Context) error
	RelayStart(ctx context.Context) error
	// Provision provisions the guest again (it reads the guest's /etc/wsl.conf); wslNames
	// false installs lab's names only (lab provision --no-wsl-names).
	Provision(ctx context.Context, wslNames bool) error
	Restore(ctx context.Context) error
}

// Env describes the lab the suite runs against.
type Env struct {
	Guest   Guest
	Control Control
	// ShareHost and ShareGuest are one share of the VM: a host directory and where the
	// guest sees it. Scenarios put host fixtures there ($SHARE, $GSHARE).
	ShareHost, ShareGuest string
	// Fixtures is the directory of the built host fixtures ($FIXTURES; see BuildFixtures).
	Fixtures string
	// Conds are extra [conditions] (e.g. "wine": a PE runner works on the host).
	Conds map[string]bool
	// RelayLog returns the relay's log lines written since t (shown for a failing scenario).
	// Nil: none shown.
	RelayLog func(since time.Time) []string
	// Vars are extra variables for every scenario (host side).
	Vars map[string]string
	// GuestVars are exported to every guest command (GSHARE is always there).
	GuestVars map[string]string
	// Stub renders the stub file of an exposed command (the stub command).
	Stub func(name string) []byte
	// Machine, if set, is what the run runs on; the report names it.
	Machine *Machine
}

// Options select and present a run.
type Options struct {
	// Scenarios to run (List, Load, or both); nil: the built-in ones (List).
	Scenarios []Scenario
	Patterns  []string  // glob or substring of scenario names; none: all
	Progress  io.Writer // one line per scenario as it finishes; nil: silent
	Verbose   bool      // keep the whole log of passing scenarios too
	// Timeout bounds each guest command that names no -timeout. Zero: 2 minutes.
	Timeout time.Duration
	// Shard, if set, runs only that part of the selected scenarios (Assign, by
	// Durations when given: lab run --shard K/N --durations REPORT).
	Shard     *ShardSpec
	Durations map[string]time.Duration
}

// Scenario is one scenario file.
type Scenario struct {
	Name    string // file name without .txtar
	Summary string // its first comment line
	Script  string // the script part
	// File is the user's file (Load), as given; empty for a built-in scenario.
	File string
}

// BuiltinPrefix stands for the directory of the built-in scenarios in reports
// (builtin/args.txtar:12: ...).
const BuiltinPrefix = "builtin/"

// source is how reports name the scenario's file.
func (s Scenario) source() string {
	if s.File == "" {
		return BuiltinPrefix + s.Name + ".txtar"
	}
	return s.File
}

// List returns the built-in scenarios in name order.
func List() ([]Scenario, error) {
	ents, err := fs.Glob(scenarioFS, "testdata/*.txtar")
	if err != nil {
		return nil, err
	}
	sort.Strings(ents)
	var out []Scenario
	for _, e := range ents {
		b, err := scenarioFS.ReadFile(e)
		if err != nil {
			return nil, err
		}
		a := txtar.Parse(b)
		out = append(out, Scenario{Name: strings.TrimSuffix(path.Base(e), ".txtar"), Summary: summaryOf(a.Comment), Script: string(a.Comment)})
	}
	return out, nil
}

// summaryOf is a script's first comment line: the behaviour it proves.
func summaryOf(script []byte) string {
	for _, l := range strings.Split(string(script), "\n") {
		if s, ok := strings.CutPrefix(l, "#"); ok {
			return strings.TrimSpace(s)
		}
	}
	return ""
}

// Match reports whether a scenario name is selected by patterns (globs or substrings).
func Match(name string, patterns []string) bool {
	if len(patterns) == 0 {
		return true
	}
	for _, p := range patterns {
		if ok, _ := path.Match(p, name); ok || strings.Contains(name, p) {
			return true
		}
	}
	return false
}

// Status of one scenario.
type Status string

const (
	Pass Status = "pass"
	Fail Status = "fail"
	Skip Status = "skip"
)

// Result is one scenario's outcome.
type Result struct {
	Name    string `json:"name"`
	Summary string `json:"summary"`
	// File is the scenario's file: the user's path, or builtin/NAME.txtar.
	File     string        `json:"file,omitempty"`
	Status   Status        `json:"status"`
	Duration time.Duration `json:"duration_ns"`
	// Log is the script's transcript: for a failure, the failing phase with the command,
	// its stdout/stderr and the FAIL line (expected vs got); for a skip, the reason.
	Log string `json:"log,omitempty"`
	// RelayLog holds the relay's log lines written during a failing scenario.
	RelayLog []string `json:"relay_log,omitempty"`
	// GuestLog holds the guest kernel's last messages for a failing scenario.
	GuestLog []string `json:"guest_log,omitempty"`
}

// Report is a whole run.
type Report struct {
	Start    time.Time     `json:"start"`
	Duration time.Duration `json:"duration_ns"`
	// Suite names every scenario selected before sharding, in run order; Shard is the
	// part this report ran (nil: all). Merge checks shards against both.
	Suite   []string   `json:"suite,omitempty"`
	Shard   *ShardSpec `json:"shard,omitempty"`
	Machine *Machine   `json:"machine,omitempty"` // what it ran on (Env.Machine)
	Results []Result   `json:"results"`
}

// Counts returns how many passed, failed and were skipped.
func (r *Report) Counts() (pass, fail, skip int) {
	for _, x := range r.Results {
		switch x.Status {
		case Pass:
			pass++
		case Fail:
			fail++
		case Skip:
			skip++
		}
	}
	return
}

// OK reports whether nothing failed and something ran.
func (r *Report) OK() bool {
	p, f, _ := r.Counts()
	return f == 0 && p > 0
}

// Run runs the selected scenarios one after the other (they share one guest and some
// change it) and returns the report. The error is for the run itself (no scenario
// matched, a broken environment), never for a failing scenario.
func Run(ctx context.Context, env Env, opts Options) (*Report, error) {
	all := opts.Scenarios
	if all == nil {
		var err error
		if all, err = List(); err != nil {
			return nil, err
		}
	}
	if err := checkNames(all); err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "lab-scenarios-")
	if err != nil {
		return nil, fmt.Errorf("scenarios: %w", err)
	}
	defer os.RemoveAll(dir)
	suite, selected := Select(all, opts)
	if len(suite) == 0 {
		return nil, fmt.Errorf("scenarios: no scenario matches %q (lab run --list shows them)", opts.Patterns)
	}
	var files []string
	for _, s := range selected {
		if s.File != "" {
			files = append(files, s.File)
			continue
		}
		b, err := scenarioFS.ReadFile("testdata/" + s.Name + ".txtar")
		if err != nil {
			return nil, err
		}
		f := filepath.Join(dir, s.Name+".txtar")
		if err := os.WriteFile(f, b, 0o644); err != nil {
			return nil, fmt.Errorf("scenarios: %w", err)
		}
		files = append(files, f)
	}
	var rep *Report
	if len(files) == 0 {
		// More shards than scenarios: this one has none, and says so in its report.
		rep = &Report{Start: time.Now()}
	} else if rep, err = runFiles(ctx, env, opts, files, dir); err != nil {
		return nil, err
	}
	rep.Suite, rep.Shard, rep.Machine = suite, opts.Shard, env.Machine
	return rep, nil
}

// Select applies opts' patterns and shard to all: suite is every matching name (the
// suite the shards are cut from), part the scenarios this run runs.
func Select(all []Scenario, opts Options) (suite []string, part []Scenario) {
	var selected []Scenario
	for _, s := range all {
		if Match(s.Name, opts.Patterns) {
			selected = append(selected, s)
			suite = append(suite, s.Name)
		}
	}
	sh := opts.Shard
	if sh == nil || len(suite) == 0 {
		return suite, selected
	}
	mine := map[string]bool{}
	for _, n := range Assign(suite, sh.N, opts.Durations)[sh.K-1] {
		mine[n] = true
	}
	for _, s := range selected {
		if mine[s.Name] {
			part = append(part, s)
		}
	}
	return suite, part
}

// RunFiles runs scenario files from disk (tests of the engine); use Load and Run for users' files.
func RunFiles(ctx context.Context, env Env, opts Options, files []string) (*Report, error) {
	return runFiles(ctx, env, opts, files, "")
}

// runFiles runs files; builtinDir, if set, holds the built-in ones, shown as builtin/ in reports.
func runFiles(ctx context.Context, env Env, opts Options, files []string, builtinDir string) (*Report, error) {
	if opts.Timeout == 0 {
		opts.Timeout = 2 * time.Minute
	}
	rep := &Report{Start: time.Now()}
	work, err := os.MkdirTemp("", "lab-scenario-work-")
	if err != nil {
		return nil, fmt.Errorf("scenarios: %w", err)
	}
	defer os.RemoveAll(work)
	r := &runner{env: env, opts: opts, ctx: ctx, summaries: map[string]string{}, files: map[string]string{}, builtinDir: builtinDir}
	for _, f := range files {
		name := strings.TrimSuffix(strings.TrimSuffix(filepath.Base(f), ".txtar"), ".txt")
		r.files[name] = f
		if a, err := txtar.ParseFile(f); err == nil {
			r.summaries[name] = summaryOf(a.Comment)
		}
	}
	top := &scriptT{r: r, verbose: opts.Verbose}
	p := testscript.Params{
		Files:       files,
		WorkdirRoot: work,
		Setup:       r.setup,
		Condition:   r.condition,
		Cmds:        r.cmds(),
	}
	if dl, ok := ctx.Deadline(); ok {
		p.Deadline = dl
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		testscript.RunT(top, p)
	}()
	<-done
	if top.failed {
		return nil, fmt.Errorf("scenarios: %s", strings.TrimSpace(top.log.String()))
	}
	rep.Results = r.results
	rep.Duration = time.Since(rep.Start)
	return rep, nil
}

// runner holds the state of one run; scenarios run one at a time.
type runner struct {
	env     Env
	opts    Options
	ctx     context.Context
	results []Result

	summaries map[string]string
	files     map[string]string // scenario name -> its file
	// builtinDir holds the built-in scenarios written out for testscript; reports name
	// it builtin/.
	builtinDir string

	mu      sync.Mutex
	dirty   bool // the current scenario changed the lab: Restore after it
	wslConf bool // the current scenario wrote /etc/wsl.conf: put the old one back first
}

func (r *runner) setup(e *testscript.Env) error {
	// $SCENARIODIR: the directory of the scenario's file, where a user keeps host
	// fixtures next to it (expose $SCENARIODIR/tool.sh tool, cp $SCENARIODIR/x $SHARE/x).
	if st, ok := e.T().(*scriptT); ok {
		if f, ok := r.files[st.name]; ok {
			d, err := filepath.Abs(filepath.Dir(f))
			if err != nil {
				return err
			}
			e.Setenv("SCENARIODIR", d)
		}
	}
	e.Setenv("SHARE", r.env.ShareHost)
	e.Setenv("GSHARE", r.env.ShareGuest)
	e.Setenv("FIXTURES", r.env.Fixtures)
	for k, v := range r.env.Vars {
		e.Setenv(k, v)
	}
	return nil
}

func (r *runner) condition(cond string) (bool, error) {
	if v, ok := r.env.Conds[cond]; ok {
		return v, nil
	}
	switch cond {
	case "wine", "systemd":
		return false, nil
	}
	return false, fmt.Errorf("unknown condition %q (known: wine, systemd, exec:PROG, short, linux)", cond)
}

// scriptT adapts testscript's T to a run outside `go test`: each scenario runs in its
// own goroutine, and FailNow/Skip end it with runtime.Goexit, as testing.T does.
type scriptT struct {
	r       *runner
	name    string
	verbose bool

	log             strings.Builder
	failed, skipped bool
}

func (t *scriptT) Skip(args ...any) {
	t.skipped = true
	t.Log(args...)
	runtime.Goexit()
}

func (t *scriptT) Fatal(args ...any) {
	t.Log(args...)
	t.FailNow()
}

func (t *scriptT) Parallel() {} // one guest, scenarios that change it: one at a time

func (t *scriptT) Log(args ...any) {
	fmt.Fprintln(&t.log, args...)
}

func (t *scriptT) FailNow() {
	t.failed = true
	runtime.Goexit()
}

func (t *scriptT) Verbose() bool { return t.verbose }

func (t *scriptT) Run(name string, f func(testscript.T)) {
	r := t.r
	sub := &scriptT{r: r, name: name, verbose: t.verbose}
	start := time.Now()
	r.mu.Lock()
	r.dirty = false
	r.mu.Unlock()
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(sub)
	}()
	<-done
	res := Result{Name: name, File: r.source(name), Status: Pass, Duration: time.Since(start), Log: r.rewritePaths(sub.log.String())}
	switch {
	case sub.failed:
		res.Status = Fail
		if r.env.RelayLog != nil {
			res.RelayLog = r.env.RelayLog(start)
		}
		res.GuestLog = r.guestLog()
	case sub.skipped:
		res.Status = Skip
	}
	res.Summary = r.summaries[name]
	if res.Status == Pass && !t.verbose {
		res.Log = ""
	}
	r.mu.Lock()
	dirty := r.dirty
	r.mu.Unlock()
	if dirty && r.env.Control != nil {
		ctx, cancel := context.WithTimeout(r.ctx, 2*time.Minute)
		if err := r.restoreWSLConf(ctx); err != nil {
			res.Status = Fail
			res.Log += fmt.Sprintf("FAIL: restoring /etc/wsl.conf after %s: %v\n", name, err)
		}
		if err := r.env.Control.Restore(ctx); err != nil {
			res.Status = Fail
			res.Log += fmt.Sprintf("FAIL: restoring the lab after %s: %v\n", name, err)
		}
		cancel()
	}
	r.results = append(r.results, res)
	if w := r.opts.Progress; w != nil {
		fmt.Fprintf(w, "%-4s %-32s %6.1fs  %s\n", strings.ToUpper(string(res.Status)), name, res.Duration.Seconds(), res.Summary)
		if res.Status == Fail {
			writeFailure(w, res)
		}
	}
}

// source names a scenario's file as reports show it.
func (r *runner) source(name string) string {
	f := r.files[name]
	if r.builtinDir != "" && filepath.Dir(f) == r.builtinDir {
		return BuiltinPrefix + filepath.Base(f)
	}
	return f
}

// rewritePaths shows built-in scenarios' FAIL lines as builtin/NAME.txtar:LINE.
func (r *runner) rewritePaths(log string) string {
	if r.builtinDir == "" {
		return log
	}
	return strings.ReplaceAll(log, r.builtinDir+string(filepath.Separator), BuiltinPrefix)
}

func (r *runner) guestLog() []string {
	if r.env.Guest == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(r.ctx, 20*time.Second)
	defer cancel()
	var out bytes.Buffer
	if _, err := r.env.Guest.Run(ctx, "dmesg 2>/dev/null | tail -n 15", nil, &out, io.Discard); err != nil {
		return []string{"(guest log unavailable: " + err.Error() + ")"}
	}
	return splitLines(out.String())
}

func splitLines(s string) []string {
	s = strings.TrimRight(s, "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

func (r *runner) markDirty() {
	r.mu.Lock()
	r.dirty = true
	r.mu.Unlock()
}

// cmds are the lab commands scenarios use besides testscript's own (exec, cmp, stdout...).
func (r *runner) cmds() map[string]func(ts *testscript.TestScript, neg bool, args []string) {
	m := map[string]func(ts *testscript.TestScript, neg bool, args []string){}
	add := func(name string, f func(ts *testscript.TestScript, neg bool, args []string)) {
		if _, dup := m[name]; dup {
			panic("scenarios: command " + name + " added twice")
		}
		m[name] = f
	}
	add("guest", r.cmdGuest)
	add("push", r.cmdPush)
	add("interop", r.cmdInterop)
	add("expose", r.cmdExpose)
	add("unexpose", r.cmdUnexpose)
	add("relay", r.cmdRelay)
	add("token", r.cmdToken)
	add("stub", r.cmdStub)
	add("provision", r.cmdProvision)
	add("wslconf", r.cmdWSLConf)
	return m
}

// Commands documents the scenario commands (lab run --help-scenarios, the README test).
var Commands = []struct{ Name, Usage, Summary string }{
	{"guest", "guest [-stdin FILE] [-tty ROWSxCOLS] [-exit N] [-timeout D] COMMAND... | -script FILE [ARGS...]",
		"run in the guest over SSH: one argument is a /bin/sh command line, several are words (quoted for the shell), -script runs FILE from the scenario with ARGS as $1...; stdout/stderr become the script's; the status must be 0 (or N with -exit, or non-zero with !)"},
	{"stub", "stub NAME HOSTFILE", "write a stub for the exposed command NAME at HOSTFILE (e.g. in $SHARE), mode 0755"},
	{"push", "push FILE GUESTPATH [MODE]", "copy FILE from $WORK to the guest over SFTP"},
	{"interop", "interop on|off", "enable or disable the lab's binfmt rules (as echo 0 > .../WSLInterop)"},
	{"expose", "expose HOSTPROGRAM NAME", "allow HOSTPROGRAM and put its stub NAME on the guest's PATH"},
	{"unexpose", "unexpose NAME", "remove an exposed command"},
	{"relay", "relay stop|start", "stop or restart the VM's relay"},
	{"token", "token corrupt", "replace the guest's token with a wrong one (restored after the scenario)"},
	{"provision", "provision [--no-wsl-names]", "provision the guest again (it reads /etc/wsl.conf); --no-wsl-names: lab's names only (restored after the scenario)"},
	{"wslconf", "wslconf FILE", "write FILE as the guest's /etc/wsl.conf (the previous one is put back after the scenario); provision applies it"},
}

var tsizeRE = regexp.MustCompile(`^(\d+)x(\d+)$`)

func (r *runner) cmdGuest(ts *testscript.TestScript, neg bool, args []string) {
	var stdinFile, scriptFile string
	wantExit := -1
	timeout := r.opts.Timeout
	tty := ""
	for len(args) > 0 && strings.HasPrefix(args[0], "-") {
		flag := args[0]
		if len(args) < 2 {
			ts.Fatalf("usage: guest [-stdin FILE] [-tty ROWSxCOLS] [-exit N] [-timeout D] COMMAND...")
		}
		val := args[1]
		args = args[2:]
		switch flag {
		case "-script":
			scriptFile = val
			goto parsed
		case "-stdin":
			stdinFile = val
		case "-exit":
			n, err := strconv.Atoi(val)
			ts.Check(err)
			wantExit = n
		case "-timeout":
			d, err := time.ParseDuration(val)
			ts.Check(err)
			timeout = d
		case "-tty":
			if !tsizeRE.MatchString(val) {
				ts.Fatalf("guest -tty wants ROWSxCOLS, e.g. 40x100")
			}
			tty = val
		default:
			ts.Fatalf("guest: unknown flag %s", flag)
		}
	}
parsed:
	if len(args) == 0 && scriptFile == "" {
		ts.Fatalf("guest: no command")
	}
	if neg && wantExit >= 0 {
		ts.Fatalf("guest: use either ! or -exit")
	}
	var cmd string
	switch {
	case scriptFile != "":
		body := ts.ReadFile(scriptFile)
		cmd = "set -- " + shell.Join(args) + "\n" + body
	case len(args) == 1:
		cmd = args[0]
	default:
		cmd = shell.Join(args)
	}
	if tty != "" {
		// A pty in the guest: busybox script runs the command on a new terminal whose
		// size stty sets first; its output is the terminal's (CRLF line ends).
		m := tsizeRE.FindStringSubmatch(tty)
		inner := fmt.Sprintf("stty rows %s cols %s; %s", m[1], m[2], cmd)
		cmd = "script -q -c " + shell.Quote(inner) + " /dev/null"
	}
	var stdin io.Reader
	if stdinFile != "" {
		f, err := os.Open(ts.MkAbs(stdinFile))
		ts.Check(err)
		defer f.Close()
		stdin = f
	}
	ctx, cancel := context.WithTimeout(r.ctx, timeout)
	defer cancel()
	code, err := r.env.Guest.Run(ctx, r.guestPrefix()+cmd, stdin, ts.Stdout(), ts.Stderr())
	if err != nil {
		if ctx.Err() != nil {
			ts.Fatalf("guest %s: no exit status after %v: %v", cmd, timeout, err)
		}
		ts.Fatalf("guest %s: %v", cmd, err)
	}
	switch {
	case wantExit >= 0 && code != wantExit:
		ts.Fatalf("guest %s: exit status %d, want %d", cmd, code, wantExit)
	case wantExit >= 0:
		ts.Logf("[exit status %d]", code)
	case neg && code == 0:
		ts.Fatalf("guest %s: exit status 0, want a failure", cmd)
	case !neg && code != 0:
		ts.Fatalf("guest %s: exit status %d, want 0", cmd, code)
	default:
		ts.Logf("[exit status %d]", code)
	}
}

func (r *runner) cmdPush(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 || len(args) > 3 {
		ts.Fatalf("usage: push FILE GUESTPATH [MODE]")
	}
	mode := os.FileMode(0o644)
	if len(args) == 3 {
		m, err := strconv.ParseUint(args[2], 8, 32)
		ts.Check(err)
		mode = os.FileMode(m)
	}
	data, err := os.ReadFile(ts.MkAbs(args[0]))
	ts.Check(err)
	c, err := r.env.Guest.SFTP()
	ts.Check(err)
	ts.Check(c.MkdirAll(path.Dir(args[1])))
	f, err := c.OpenFile(args[1], os.O_WRONLY|os.O_CREATE|os.O_TRUNC)
	ts.Check(err)
	_, err = f.Write(data)
	ts.Check(errors.Join(err, f.Chmod(mode), f.Close()))
}

func (r *runner) control(ts *testscript.TestScript) Control {
	if r.env.Control == nil {
		ts.Fatalf("this lab has no control over the VM (run the suite with lab run)")
	}
	r.markDirty()
	return r.env.Control
}

func (r *runner) cmdInterop(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 || (args[0] != "on" && args[0] != "off") {
		ts.Fatalf("usage: interop on|off")
	}
	ts.Check(r.control(ts).Interop(r.ctx, args[0] == "on"))
}

func (r *runner) cmdExpose(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: expose HOSTPROGRAM NAME")
	}
	ts.Check(r.control(ts).Expose(r.ctx, ts.MkAbs(args[0]), args[1]))
}

func (r *runner) cmdUnexpose(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: unexpose NAME")
	}
	ts.Check(r.control(ts).Unexpose(r.ctx, args[0]))
}

func (r *runner) cmdRelay(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: relay stop|start")
	}
	c := r.control(ts)
	switch args[0] {
	case "stop":
		ts.Check(c.RelayStop(r.ctx))
	case "start":
		ts.Check(c.RelayStart(r.ctx))
	default:
		ts.Fatalf("usage: relay stop|start")
	}
}

func (r *runner) cmdProvision(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) > 1 || len(args) == 1 && args[0] != "--no-wsl-names" {
		ts.Fatalf("usage: provision [--no-wsl-names]")
	}
	ts.Check(r.control(ts).Provision(r.ctx, len(args) == 0))
}

// wslConfSaved is where cmdWSLConf keeps the guest's own /etc/wsl.conf meanwhile.
const wslConfSaved = "/etc/lab/wsl.conf.saved-by-scenario"

func (r *runner) cmdWSLConf(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: wslconf FILE")
	}
	r.control(ts)
	data, err := os.ReadFile(ts.MkAbs(args[0]))
	ts.Check(err)
	r.mu.Lock()
	first := !r.wslConf
	r.wslConf = true
	r.mu.Unlock()
	cmd := "set -e; cat > /etc/wsl.conf.lab-tmp; mv -f /etc/wsl.conf.lab-tmp /etc/wsl.conf"
	if first { // keep the guest's own file (or its absence) for restoreWSLConf
		cmd = "set -e; mkdir -p /etc/lab; rm -f " + wslConfSaved + "; if [ -e /etc/wsl.conf ]; then cp -p /etc/wsl.conf " + wslConfSaved + "; fi; " + cmd
	}
	var errb bytes.Buffer
	code, err := r.env.Guest.Run(r.ctx, cmd, bytes.NewReader(data), io.Discard, &errb)
	ts.Check(err)
	if code != 0 {
		ts.Fatalf("wslconf: status %d: %s", code, errb.String())
	}
}

// restoreWSLConf puts back the guest's /etc/wsl.conf (or its absence) after a scenario
// that wrote one.
func (r *runner) restoreWSLConf(ctx context.Context) error {
	r.mu.Lock()
	wrote := r.wslConf
	r.wslConf = false
	r.mu.Unlock()
	if !wrote {
		return nil
	}
	var errb bytes.Buffer
	code, err := r.env.Guest.Run(ctx, "if [ -e "+wslConfSaved+" ]; then mv -f "+wslConfSaved+" /etc/wsl.conf; else rm -f /etc/wsl.conf; fi", nil, io.Discard, &errb)
	if err == nil && code != 0 {
		err = fmt.Errorf("status %d: %s", code, strings.TrimSpace(errb.String()))
	}
	return err
}

// cmdToken corrupts the guest's copy of the token; Restore re-provisions the right one.
func (r *runner) cmdToken(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 || args[0] != "corrupt" {
		ts.Fatalf("usage: token corrupt")
	}
	r.control(ts)
	var errb bytes.Buffer
	code, err := r.env.Guest.Run(r.ctx, "printf 'not-the-token-of-this-vm-0123456789abcdef' > "+provision.TokenPath, nil, io.Discard, &errb)
	ts.Check(err)
	if code != 0 {
		ts.Fatalf("token corrupt: status %d: %s", code, errb.String())
	}
}

// guestPrefix exports the suite's guest variables to a guest command and starts it in
// the share (so launches do not print the cwd-fallback warning unless a scenario cds
// out of the share on purpose).
func (r *runner) guestPrefix() string {
	vars := map[string]string{"GSHARE": r.env.ShareGuest}
	for k, v := range r.env.GuestVars {
		vars[k] = v
	}
	keys := make([]string, 0, len(vars))
	for k := range vars {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%s; export %s; ", k, shell.Quote(vars[k]), k)
	}
	if r.env.ShareGuest != "" {
		b.WriteString("cd \"$GSHARE\" 2>/dev/null; ")
	}
	return b.String()
}

func (r *runner) cmdStub(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: stub NAME HOSTFILE")
	}
	if r.env.Stub == nil {
		ts.Fatalf("stub: this lab has no stub format")
	}
	f := ts.MkAbs(args[1])
	ts.Check(os.MkdirAll(filepath.Dir(f), 0o755))
	ts.Check(os.WriteFile(f, r.env.Stub(args[0]), 0o755))
	ts.Check(os.Chmod(f, 0o755))
}
