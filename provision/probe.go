package provision

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"

	"lab/internal/shell"
)

// state is what one probe learns about the guest: everything provisioning compares, in
// one SSH round trip (each one costs a guest process start, slow under TCG).
type state struct {
	goarch        string
	files         map[string]string // guest path -> sha256 hex; absent: no such file
	interpSum     bool              // files[InterpreterPath] came from InterpreterSumPath
	tokenMode     string            // octal permission bits of TokenPath, e.g. "600"
	etcLabMode    string            // octal permission bits of /etc/lab ("" when missing)
	labpath       string            // InterpreterPath when LabpathPath links to it, "?" for another link
	wslpath       string            // the same for WslpathPath
	wslConf       string            // WSLConfPath's text ("" when missing)
	binfmtMounted bool
	systemd       bool
	guardEnabled  bool   // lab-binfmt.service is enabled (systemd guests)
	apt           bool   // /etc/apt/apt.conf.d exists
	profileHook   bool   // ProfilePath reads /etc/profile.d
	sshdConfig    bool   // SSHDConfigPath exists (OpenSSH)
	sshdPath      string // its first `SetEnv ...` line, if any
	rules         map[string]ruleProbe
	mounts        map[string]string // 9p mount point -> tag
	stubs         map[string]string // StubDir entries starting with the stub magic: name -> sha256
	others        map[string]bool   // other StubDir entries
	manifest      []string          // StubsManifest: the stubs an earlier run installed
	entries       map[string][2]string
}

type ruleProbe struct {
	st  RuleStatus
	err error
}

// probeScript prints one "key value..." line per fact. stubs are the exposed commands'
// names with the sha256 of the stub each should have. The script is POSIX sh with few
// processes (each costs milliseconds under TCG; the facts are read with the shell's own
// read), and it does not hash the interpreter (megabytes; about half a second under TCG)
// when InterpreterSumPath records its hash for the file's current identity (device,
// inode, size, mtime and ctime: any write or rename changes one of them).
func probeScript(rules []Rule, stubs map[string]string) string {
	var b strings.Builder
	b.WriteString(`set -f
# Builtins and file tests where they do (each external command is a process start:
# milliseconds under TCG, more for a dynamic binary).
a=
[ -r /proc/sys/kernel/arch ] && read -r a < /proc/sys/kernel/arch
[ -n "$a" ] || a=$(uname -m)
echo "arch $a"
set --
for f in ` + ConfigPath + ` ` + TokenPath + ` ` + BinfmtConfPath + ` ` + StubsManifest + ` ` + WindowsPathFile + ` ` + WSLEnvFile + ` ` + GuardScriptPath + ` ` + GuardUnitPath + ` ` + oldGuardUnitPath + ` ` + GuardAptPath + `; do
  [ -f "$f" ] && set -- "$@" "$f"
done
I=` + InterpreterPath + `
# One stat for the modes and the interpreter's identity.
id=
while read -r n a rest; do
  case "$n" in
  "$I") id=$rest ;;
  ?*) echo "mode $n $a" ;;
  esac
done <<EOF
$(stat -c '%n %a ` + interpIDFormat + `' /etc/lab ` + TokenPath + ` $I 2>/dev/null)
EOF
if [ -f $I ]; then
  rec=
  [ -f ` + InterpreterSumPath + ` ] && read -r rec < ` + InterpreterSumPath + `
  if [ -n "$id" ] && [ "${rec% *}" = "$id" ]; then echo "file $I ${rec##* }"; echo "interpsum recorded"; else set -- "$@" $I; fi
fi
for l in ` + LabpathPath + ` ` + WslpathPath + `; do
  if [ -L $l ] && [ $l -ef $I ]; then echo "link $l $I"; elif [ -L $l ]; then echo "link $l ?"; fi
done
if [ -f ` + WSLConfPath + ` ]; then
  n=0
  while [ $n -lt 4096 ] && { IFS= read -r l || [ -n "$l" ]; }; do printf 'wslconf %s\n' "$l"; n=$((n+1)); done < ` + WSLConfPath + `
fi
while read -r dev mnt fs rest; do
  case "$fs" in
  9p) echo "mount $dev $mnt" ;;
  esac
done < /proc/mounts
# register exists once binfmt_misc is mounted; with systemd the dir is an automount that
# this access mounts (/proc/mounts shows autofs there until then).
[ -e ` + BinfmtDir + `/register ] && echo "binfmt mounted"
if [ -d /run/systemd/system ]; then
  echo "systemd yes"
  # Enabled: the links systemctl enable makes (a test, not systemctl: 0.7 s under TCG).
  g=yes
  for l in ` + strings.Join(guardWants, " ") + `; do [ -L $l ] && [ $l -ef ` + GuardUnitPath + ` ] || g=; done
  [ -n "$g" ] && echo "guard enabled"
fi
[ -d /etc/apt/apt.conf.d ] && echo "apt yes"
if [ -f ` + ProfilePath + ` ]; then
  while IFS= read -r l || [ -n "$l" ]; do case "$l" in *profile.d*) echo "profilehook yes"; break ;; esac; done < ` + ProfilePath + `
fi
if [ -f ` + SSHDConfigPath + ` ]; then
  echo "sshd yes"
  while IFS= read -r l || [ -n "$l" ]; do case "$l" in "SetEnv "*) printf 'sshdpath %s\n' "$l"; break ;; esac; done < ` + SSHDConfigPath + `
fi
`)
	for _, r := range rules {
		f := BinfmtDir + "/" + r.Name
		fmt.Fprintf(&b, "if [ -f %s ]; then printf 'rule %s '; while IFS= read -r l || [ -n \"$l\" ]; do printf '%%s|' \"$l\"; done < %s; echo; fi\n", f, r.Name, f)
	}
	names := make([]string, 0, len(stubs))
	for n := range stubs {
		names = append(names, n)
	}
	sort.Strings(names)
	// The entries: the stubs asked for and those an earlier run installed (the manifest).
	b.WriteString(`all=` + shell.Quote(" "+strings.Join(names, " ")+" ") + `
m=
if [ -f ` + StubsManifest + ` ]; then
  while IFS= read -r l || [ -n "$l" ]; do
    m="$m $l"
    case "$all" in *" $l "*) ;; *) all="$all$l " ;; esac
  done < ` + StubsManifest + `
  echo "manifest$m"
fi
for n in $all; do
  f=` + StubDir + `/$n
  if [ -f "$f" ] && [ ! -L "$f" ]; then set -- "$@" "$f"
  elif [ -e "$f" ] || [ -L "$f" ]; then echo "entry $n - -"
  fi
done
`)
	// One sha256sum for every file. A stub with the expected sum is a stub ("="); only
	// other entries have their first bytes read to tell stubs (the magic) from foreign files.
	b.WriteString(`[ $# -gt 0 ] && sha256sum "$@" 2>/dev/null | while read -r h f; do
  case "$f" in
  ` + StubDir + `/*)
    n=${f#` + StubDir + `/}
    case "$n $h" in
`)
	if len(names) > 0 {
		var pats []string
		for _, n := range names {
			pats = append(pats, shell.Quote(n+" "+stubs[n]))
		}
		b.WriteString("    " + strings.Join(pats, "|") + ") echo \"entry $n = $h\" ;;\n")
	}
	b.WriteString(`    *) printf 'entry %s %s %s\n' "$n" "$(od -An -tx1 -N32 "$f" | tr -d ' \n')" "$h" ;;
    esac ;;
  *) echo "file $f $h" ;;
  esac
done
true
`)
	return b.String()
}

// interpIDFormat is the stat(1) format of the interpreter's identity that
// InterpreterSumPath records next to its hash (%y, %z: nanoseconds, in busybox and
// coreutils alike).
const interpIDFormat = "%d:%i:%s:%y:%z"

func probe(ctx context.Context, g Guest, rules []Rule, magic []byte, stubs map[string]string) (*state, error) {
	var out, errb bytes.Buffer
	code, err := g.Run(ctx, probeScript(rules, stubs), nil, &out, &errb)
	if err != nil {
		return nil, fmt.Errorf("provision: probe the guest: %w", err)
	}
	if code != 0 {
		return nil, fmt.Errorf("provision: probe the guest: status %d: %s", code, strings.TrimSpace(errb.String()))
	}
	return parseProbe(out.String(), magic)
}

// parseProbe reads the probe's output. magic, when non-nil, sorts StubDir entries into
// stubs and others (parseState does it later otherwise).
func parseProbe(out string, magic []byte) (*state, error) {
	st := &state{
		files:  map[string]string{},
		rules:  map[string]ruleProbe{},
		mounts: map[string]string{},
		stubs:  map[string]string{},
		others: map[string]bool{},
	}
	entries := map[string][2]string{}
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var wslConf strings.Builder
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "wslconf "); ok {
			wslConf.WriteString(rest + "\n")
			continue
		}
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		switch {
		case f[0] == "arch" && len(f) == 2:
			ga, ok := goarchOf(f[1])
			if !ok {
				return nil, fmt.Errorf("provision: guest architecture %q is not one lab builds an interpreter for", f[1])
			}
			st.goarch = ga
		case f[0] == "file" && len(f) == 3:
			st.files[f[1]] = f[2]
		case f[0] == "interpsum":
			st.interpSum = true
		case f[0] == "mode" && len(f) == 3 && f[1] == TokenPath:
			st.tokenMode = f[2]
		case f[0] == "mode" && len(f) == 3 && f[1] == "/etc/lab":
			st.etcLabMode = f[2]
		case f[0] == "link" && len(f) == 3 && f[1] == LabpathPath:
			st.labpath = f[2]
		case f[0] == "link" && len(f) == 3 && f[1] == WslpathPath:
			st.wslpath = f[2]
		case f[0] == "binfmt":
			st.binfmtMounted = true
		case f[0] == "systemd":
			st.systemd = true
		case f[0] == "guard":
			st.guardEnabled = true
		case f[0] == "apt":
			st.apt = true
		case f[0] == "profilehook":
			st.profileHook = true
		case f[0] == "sshd":
			st.sshdConfig = true
		case f[0] == "sshdpath" && len(f) >= 2:
			st.sshdPath = strings.Join(f[1:], " ")
		case f[0] == "rule" && len(f) >= 2:
			text := strings.ReplaceAll(strings.Join(f[2:], " "), "|", "\n")
			rs, err := ParseRuleStatus(text)
			st.rules[f[1]] = ruleProbe{rs, err}
		case f[0] == "mount" && len(f) == 3:
			st.mounts[f[2]] = f[1]
		case f[0] == "manifest":
			st.manifest = f[1:]
		case f[0] == "entry" && len(f) == 4:
			entries[f[1]] = [2]string{f[2], f[3]}
		}
	}
	if st.goarch == "" {
		return nil, fmt.Errorf("provision: probe the guest: no architecture in its answer %q", abbrev(out))
	}
	st.entries = entries
	st.wslConf = wslConf.String()
	if magic != nil {
		st.sortEntries(magic)
	}
	return st, nil
}

func (st *state) sortEntries(magic []byte) {
	for name, e := range st.entries {
		head, _ := hex.DecodeString(e[0])
		if e[0] == "=" || bytes.HasPrefix(head, magic) { // "=": the expected stub's sum
			st.stubs[name] = e[1]
		} else {
			st.others[name] = true
		}
	}
}

// goarchOf maps `uname -m` to Go's GOARCH.
func goarchOf(machine string) (string, bool) {
	switch machine {
	case "x86_64":
		return "amd64", true
	case "aarch64", "arm64":
		return "arm64", true
	case "i386", "i486", "i586", "i686":
		return "386", true
	case "armv6l", "armv7l":
		return "arm", true
	case "riscv64", "ppc64le", "s390x", "loong64":
		return machine, true
	}
	return "", false
}

// FindInterpreter finds lab-interop built for goarch: "lab-interop-<goarch>" or, for the
// host's own GOARCH, "lab-interop", next to the running executable (make build puts both
// in bin/), then in $LAB_INTEROP_DIR.
func FindInterpreter(goarch string) (string, error) {
	names := []string{"lab-interop-" + goarch}
	if goarch == runtime.GOARCH {
		names = append(names, "lab-interop")
	}
	var dirs []string
	if exe, err := os.Executable(); err == nil {
		dirs = append(dirs, filepath.Dir(exe))
	}
	if d := os.Getenv("LAB_INTEROP_DIR"); d != "" {
		dirs = append(dirs, d)
	}
	for _, d := range dirs {
		for _, n := range names {
			p := filepath.Join(d, n)
			if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
				return p, nil
			}
		}
	}
	return "", fmt.Errorf("provision: no interpreter for a %s guest (looked for %s in %s): run `make build`, or `CGO_ENABLED=0 GOARCH=%s go build -o bin/lab-interop-%s ./cmd/lab-interop`",
		goarch, strings.Join(names, ", "), strings.Join(dirs, ", "), goarch, goarch)
}
