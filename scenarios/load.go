package scenarios

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"golang.org/x/tools/txtar"
)

// Load reads users' scenario files: each path is a directory (its *.txtar files, not
// recursive) or one .txtar file. Every file is checked before anything runs (Lint), so a
// typo is reported as FILE:LINE without booting or touching a VM; the error lists every
// problem found. Paths in the scenarios (and in their failure reports) are as given.
func Load(paths []string) ([]Scenario, error) {
	var out []Scenario
	var errs []error
	for _, p := range paths {
		files, err := scenarioFiles(p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				errs = append(errs, fmt.Errorf("scenarios: %w", err))
				continue
			}
			if err := Lint(f, b); err != nil {
				errs = append(errs, err)
				continue
			}
			a := txtar.Parse(b)
			out = append(out, Scenario{
				Name:    strings.TrimSuffix(filepath.Base(f), ".txtar"),
				Summary: summaryOf(a.Comment),
				Script:  string(a.Comment),
				File:    f,
			})
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if err := checkNames(out); err != nil {
		return nil, err
	}
	return out, nil
}

func scenarioFiles(p string) ([]string, error) {
	st, err := os.Stat(p)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, fmt.Errorf("scenarios: %s: %w", p, err)
	}
	if !st.IsDir() {
		if !strings.HasSuffix(p, ".txtar") {
			return nil, fmt.Errorf("scenarios: %s: not a .txtar file (give a directory of them or a FILE.txtar)", p)
		}
		return []string{p}, nil
	}
	files, err := filepath.Glob(filepath.Join(p, "*.txtar"))
	if err != nil {
		return nil, fmt.Errorf("scenarios: %w", err)
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("scenarios: %s holds no .txtar files", p)
	}
	sort.Strings(files)
	return files, nil
}

// checkNames refuses two scenarios with one name: reports, sharding and merging key on it.
func checkNames(list []Scenario) error {
	seen := map[string]Scenario{}
	for _, s := range list {
		if o, dup := seen[s.Name]; dup {
			return fmt.Errorf("scenarios: two scenarios are named %q: %s and %s (the name is the file name; rename one)", s.Name, o.source(), s.source())
		}
		seen[s.Name] = s
	}
	return nil
}

// Condition documents a lab condition (testscript's own are listed in the help topic).
type Condition struct{ Name, Summary string }

// Conditions are the conditions lab adds for [COND] prefixes.
var Conditions = []Condition{
	{"wine", "the host runs Windows programs (Wine installed) and the VM has the Windows personality (its Wine prefix's drive_c at /mnt/c); $PEFIX and $DRIVEC are set"},
	{"systemd", "the guest runs systemd (lab up --distro debian): systemd-binfmt, /etc/binfmt.d, apt"},
}

// builtinCmds are testscript's own commands (go-internal v1.16 testscript/cmd.go).
var builtinCmds = []string{
	"cd", "chmod", "cmp", "cmpenv", "cp", "env", "exec", "exists", "grep", "kill", "mkdir", "mv", "rm",
	"skip", "stderr", "stdin", "stdout", "stop", "symlink", "ttyin", "ttyout", "unix2dos", "unquote", "wait",
}

// builtinConds are testscript's own conditions besides exec:PROG and go1.N.
var builtinConds = []string{
	"short", "net", "link", "symlink", "unix", "gc", "gccgo",
	"aix", "android", "darwin", "dragonfly", "freebsd", "hurd", "illumos", "ios", "js", "linux", "netbsd",
	"openbsd", "plan9", "solaris", "wasip1", "windows", "zos",
	"386", "amd64", "arm", "arm64", "loong64", "mips", "mips64", "mips64le", "mipsle", "ppc64", "ppc64le",
	"riscv64", "s390x", "wasm",
}

var goVersionCond = regexp.MustCompile(`^go1\.[0-9]+$`)

// Lint checks a scenario file without running it: the txtar structure (a script before
// the first file, file markers, file names) and every script line (quoting, conditions,
// commands). Each problem is reported as FILE:LINE: what, the line numbers those of the file.
func Lint(file string, data []byte) error {
	lines := strings.Split(string(data), "\n")
	var errs []error
	bad := func(n int, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s:%d: %s", file, n, fmt.Sprintf(format, a...)))
	}
	known := map[string]bool{}
	for _, c := range builtinCmds {
		known[c] = true
	}
	for _, c := range Commands {
		known[c.Name] = true
	}
	conds := map[string]bool{}
	for _, c := range builtinConds {
		conds[c] = true
	}
	for _, c := range Conditions {
		conds[c.Name] = true
	}
	inScript, commands := true, 0
	files := map[string]int{}
	for i, l := range lines {
		n := i + 1
		l = strings.TrimSuffix(l, "\r")
		if name, ok := markerName(l); ok {
			inScript = false
			switch {
			case name == "":
				bad(n, "file marker with no file name (want \"-- NAME --\")")
			case files[name] > 0:
				bad(n, "file %q is in the archive twice (first at line %d)", name, files[name])
			default:
				files[name] = n
			}
			continue
		}
		if !inScript {
			continue
		}
		t := strings.TrimSpace(l)
		if t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		if strings.HasPrefix(t, "--") {
			bad(n, "%q looks like a txtar file marker but is not one (want \"-- NAME --\")", t)
			continue
		}
		args, err := splitArgs(t)
		if err != nil {
			bad(n, "%v", err)
			continue
		}
		if len(args) == 0 {
			continue
		}
		for len(args) > 0 && strings.HasPrefix(args[0], "[") && strings.HasSuffix(args[0], "]") {
			c := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(args[0][1:len(args[0])-1]), "!"))
			if !conds[c] && !strings.HasPrefix(c, "exec:") && !goVersionCond.MatchString(c) {
				bad(n, "unknown condition [%s] (lab help scenarios lists them)", c)
			}
			args = args[1:]
		}
		if len(args) > 0 && args[0] == "!" {
			args = args[1:]
		}
		if len(args) == 0 {
			bad(n, "no command after the condition or !")
			continue
		}
		commands++
		if !known[args[0]] {
			if s := suggest(args[0], known); s != "" {
				bad(n, "unknown command %q (did you mean %q?)", args[0], s)
			} else {
				bad(n, "unknown command %q (lab help scenarios lists them)", args[0])
			}
		}
	}
	if commands == 0 && len(errs) == 0 {
		bad(1, "no commands: a scenario starts with its script, then its files (-- NAME --); see lab help scenarios")
	}
	return errors.Join(errs...)
}

// markerName reports whether l is a txtar file marker (txtar's own rule) and its name.
func markerName(l string) (string, bool) {
	if !strings.HasPrefix(l, "-- ") || !strings.HasSuffix(l, " --") || len(l) < len("-- ")+len(" --") {
		return "", false
	}
	return strings.TrimSpace(l[len("-- ") : len(l)-len(" --")]), true
}

// splitArgs splits a script line as testscript does (single quotes, ” for a quote, a
// # outside quotes ends the line), without expanding variables.
func splitArgs(line string) ([]string, error) {
	var args []string
	var cur strings.Builder
	inArg, quoted := false, false
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case quoted && c == '\'' && i+1 < len(line) && line[i+1] == '\'':
			cur.WriteByte('\'')
			i++
		case c == '\'':
			quoted = !quoted
			inArg = true
		case !quoted && (c == ' ' || c == '\t'):
			if inArg {
				args = append(args, cur.String())
				cur.Reset()
				inArg = false
			}
		case !quoted && c == '#':
			i = len(line)
		default:
			cur.WriteByte(c)
			inArg = true
		}
	}
	if quoted {
		return nil, errors.New("unterminated quoted argument (a quote inside quotes is written '')")
	}
	if inArg {
		args = append(args, cur.String())
	}
	return args, nil
}

// suggest returns the known command closest to name, if it is a likely typo.
func suggest(name string, known map[string]bool) string {
	best, bestD := "", 3
	for k := range known {
		if d := editDistance(name, k); d < bestD || (d == bestD && k < best) {
			best, bestD = k, d
		}
	}
	if bestD > 2 || bestD >= len(name) {
		return ""
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}
