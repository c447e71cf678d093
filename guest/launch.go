package guest

import (
	"errors"
	"path"
	"strings"

	"lab/formats"
	"lab/wire"
)

// ErrNotBinfmt: the interpreter was not started the way binfmt_misc with
// flag P starts it.
var ErrNotBinfmt = errors.New("expected to be started by binfmt_misc (flag P): interp /full/path argv0 [args...]")

// BinfmtArgv splits the interpreter's own argv, `interp PATH ARGV0 ARGS...`
// (binfmt_misc flag P), into the program's path and the argv to send.
// As WSL does, an argv0 equal to the path is replaced by its basename
// (programs such as cmd.exe misread a Linux-style argv[0]).
func BinfmtArgv(args []string) (file string, argv []string, err error) {
	if len(args) < 3 {
		return "", nil, ErrNotBinfmt
	}
	file = args[1]
	argv = make([]string, len(args)-2)
	copy(argv, args[2:])
	if argv[0] == file {
		argv[0] = path.Base(file)
	}
	return file, argv, nil
}

// WSLEnv and LabEnv list what crosses to the host (WSLENV's syntax and flags). LABENV is
// lab's alias; it is also the name under which the selection travels to the relay.
const (
	WSLEnv = "WSLENV"
	LabEnv = "LABENV"
)

// SelectEnv returns the environment entries WSLENV and LABENV select, first a LABENV
// entry holding the selection (the relay reads it). Each entry of the lists is NAME or
// NAME/FLAGS with flags among p (path), l (path list), u (host to guest only: not sent),
// w (guest to host only); an entry with an unknown flag is skipped, as WSL does. An unset
// variable is sent with EnvUnset so the host removes it.
//
// Both lists count: WSLENV's entries first, then LABENV's; a name in both takes WSLENV's
// flags. When WSLENV is set it also crosses itself, as WSL's client always sends WSLENV,
// and the selection sent as LABENV is then WSLENV's entries, LABENV's and WSLENV, each name
// once (the relay reads the list itself, and a later entry of a name would win there).
func SelectEnv(getenv func(string) (string, bool)) []wire.EnvVar {
	spec, ok := getenv(LabEnv)
	if wsl, wok := getenv(WSLEnv); wok {
		var parts []string
		named := map[string]bool{}
		for _, ent := range strings.Split(wsl+":"+spec+":"+WSLEnv, ":") {
			name, _, _ := strings.Cut(ent, "/")
			if name != "" && !named[name] {
				named[name] = true
				parts = append(parts, ent)
			}
		}
		spec, ok = strings.Join(parts, ":"), true
	}
	if !ok {
		return nil
	}
	out := []wire.EnvVar{{Name: LabEnv, Value: spec}}
	seen := map[string]bool{LabEnv: true}
	for _, ent := range strings.Split(spec, ":") {
		name, flags, _ := strings.Cut(ent, "/")
		if name == "" || seen[name] || strings.ContainsAny(name, "=\x00") {
			continue
		}
		var f wire.EnvFlag
		valid := true
		for _, c := range flags {
			switch c {
			case 'p':
				f |= wire.EnvPath
			case 'l':
				f |= wire.EnvPathList
			case 'u':
				f |= wire.EnvToGuest
			case 'w':
				f |= wire.EnvToHost
			default:
				valid = false
			}
		}
		if !valid || f&wire.EnvToGuest != 0 && f&wire.EnvToHost == 0 {
			continue
		}
		seen[name] = true
		v, set := getenv(name)
		if !set {
			f |= wire.EnvUnset
			v = ""
		} else if strings.IndexByte(v, 0) >= 0 {
			continue
		}
		out = append(out, wire.EnvVar{Name: name, Value: v, Flags: f})
	}
	return out
}

// headSize is how much of a file format detection reads.
const headSize = wire.MaxStub

// DetectFormat names the format of a file from its first bytes: "pe"
// (MZ), "host" (a stub), or a configured format; "" when none matches.
func DetectFormat(head []byte, configured []Format) string {
	return DetectFormatOf("", head, configured)
}

// DetectFormatOf is DetectFormat for the file named file, so that extension formats match
// too: the built-in formats first, then the configured ones in order.
func DetectFormatOf(file string, head []byte, configured []Format) string {
	if f, ok := formats.Detect(formats.Builtin(), file, head); ok {
		return f.Name
	}
	if f, ok := formats.Detect(configured, file, head); ok {
		return f.Name
	}
	return ""
}

// ExitCodeFor maps a refused launch to the interpreter's exit status, as
// a shell does: 127 when the program was not found, 126 otherwise.
func ExitCodeFor(e wire.Errno) int {
	if e == wire.ENOENT {
		return 127
	}
	return 126
}
