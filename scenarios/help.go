package scenarios

import (
	"embed"
	"fmt"
	"strings"
)

//go:embed testdata/example/upper.txtar testdata/example/upper.sh
var exampleFS embed.FS

// Example returns the worked example of the help topic: a scenario file and the host
// program kept next to it (scenarios/testdata/example, run for real by the CLI test).
func Example() (scenario, program []byte) {
	s, err := exampleFS.ReadFile("testdata/example/upper.txtar")
	if err != nil {
		panic(err) // embedded: cannot fail
	}
	p, err := exampleFS.ReadFile("testdata/example/upper.sh")
	if err != nil {
		panic(err)
	}
	return s, p
}

// builtinCmdHelp summarises the testscript commands scenarios use most.
var builtinCmdHelp = []struct{ Usage, Summary string }{
	{"stdout [-count=N] REGEXP / stderr ...", "the last command's stdout (stderr) matches REGEXP (with !: does not)"},
	{"cmp FILE1 FILE2 / cmpenv ...", "files are equal (stdout and stderr name the last command's output); a failure shows the diff"},
	{"exec PROG ARGS...", "run a host program (in $WORK); & at the end runs it in the background, wait waits"},
	{"cp, mv, rm, mkdir, chmod, symlink, exists, grep, cd, env, stdin, skip, stop", "as in testscript"},
}

// HelpText is `lab help scenarios`: the scenario language with every lab command and
// condition (from Commands and Conditions, as testdata/README.md) and a worked example.
func HelpText() string {
	var b strings.Builder
	b.WriteString(`A scenario is one behaviour, written as a txtar file: a script, then the files it uses.

  # First comment line: the behaviour this scenario proves (shown in reports).
  COMMAND ARGS...          one command per line
  # A comment starts a new phase; a failure shows only the failing phase.
  -- FILE --               files of the scenario, written to $WORK before it runs
  file content

lab run --scenarios DIR (a directory of *.txtar files, or one FILE.txtar; repeatable)
runs your scenarios against a running VM, one at a time, like the built-in ones
(lab run --list). The script language is testscript's
(github.com/rogpeppe/go-internal/testscript): arguments are split at spaces,
'single quotes' keep one argument ('' is a quote inside), $VAR and ${VAR} expand
(${VAR@R} quotes it for a regexp), a line prefixed by ! must fail, and [COND] runs
the line only when COND holds ([!COND]: when it does not).

Lab commands (what a scenario does to the VM):
`)
	for _, c := range Commands {
		fmt.Fprintf(&b, "\n  %s\n", c.Usage)
		writeWrapped(&b, c.Summary, "      ", 80)
	}
	b.WriteString("\ntestscript commands (checks and host files):\n")
	for _, c := range builtinCmdHelp {
		fmt.Fprintf(&b, "\n  %s\n", c.Usage)
		writeWrapped(&b, c.Summary, "      ", 80)
	}
	b.WriteString("\nConditions:\n")
	for _, c := range Conditions {
		fmt.Fprintf(&b, "\n  [%s]\n", c.Name)
		writeWrapped(&b, c.Summary, "      ", 80)
	}
	b.WriteString(`
  [exec:PROG], [linux], [amd64], [short], [net], [go1.N]
      testscript's own: PROG is on the host's PATH; the host's OS, architecture, ...

Variables:

  $WORK         the scenario's scratch directory on the host (its files are there)
  $SCENARIODIR  the directory of the scenario's file: keep host programs and data
                next to it (expose $SCENARIODIR/tool.sh tool; cp $SCENARIODIR/x $SHARE/x)
  $SHARE        a writable host directory the guest sees at $GSHARE (lab's scratch
                share, /mnt/lab on a VM from lab up); guest commands start in $GSHARE
  $GSHARE       exported to every guest command
  $FIXTURES     lab's built host fixtures; they are exposed as host-hello, host-echo,
                host-cat, host-exit, ... (lab run --list shows the scenarios using them)
  $LABEXEC      (guest) a static probe that execve(2)s its arguments and prints strerror
  $LABIDLE      (guest) labidle N PORT SECONDS: N vsock connections to the host that never send a byte

Before anything runs, every file is checked: a malformed file, an unknown command or
condition, or an unterminated quote is reported as FILE:LINE: what. A failing line
is reported as FILE:LINE too, with the command, its output, expected vs got, and
the relay's and the guest's log lines.

Worked example (lab's own scenarios/testdata/example): a directory with upper.txtar

`)
	scen, prog := Example()
	for _, l := range strings.Split(strings.TrimRight(string(scen), "\n"), "\n") {
		b.WriteString(strings.TrimRight("    "+l, " ") + "\n")
	}
	b.WriteString("\nand the host program upper.sh beside it (chmod +x):\n\n")
	for _, l := range strings.Split(strings.TrimRight(string(prog), "\n"), "\n") {
		b.WriteString(strings.TrimRight("    "+l, " ") + "\n")
	}
	b.WriteString(`
runs with:

    lab up
    lab run --scenarios DIR            # DIR's scenarios only; add --builtin for lab's too
    lab run --scenarios DIR --junit report.xml
`)
	return b.String()
}

// writeWrapped writes s wrapped at width, each line indented.
func writeWrapped(b *strings.Builder, s, indent string, width int) {
	line := indent
	for _, w := range strings.Fields(s) {
		if len(line) > len(indent) && len(line)+1+len(w) > width {
			b.WriteString(line + "\n")
			line = indent
		}
		if len(line) > len(indent) {
			line += " "
		}
		line += w
	}
	if len(line) > len(indent) {
		b.WriteString(line + "\n")
	}
}
