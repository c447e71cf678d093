package labfile

import (
	"errors"
	"os/exec"
	"reflect"
	"strings"
	"testing"

	"lab/formats"
	"lab/share"
)

func fakeLookPath(name string) (string, error) {
	switch name {
	case "python3", "java", "qemu-aarch64-static", "sh":
		return "/usr/bin/" + name, nil
	}
	return "", &exec.Error{Name: name, Err: exec.ErrNotFound}
}

var opts = Options{LookPath: fakeLookPath, HostArch: "amd64"}

func TestParseExample(t *testing.T) {
	const src = `
name: ci
image: default
arch: x86_64
memory: 2G
cpus: 2
scratch: true
shares:
  - {host: ./src, guest: /mnt/src, readonly: true}
expose:
  - /usr/bin/printf
  - {program: notify-send, as: notify}
windows: false
env:
  allow: [MYAPP_*, LD_PRELOAD]
formats:
  - name: labpy
    magic: "23 21 6c 61 62 70 79"   # #!labpy
    interpreter: python3
  - name: jar
    extension: .jar
    interpreter: [java, -jar]
  - name: arm64
    qemu: aarch64
  - name: native
    magic: 7f454c46
    offset: 0
    mask: ffffffff
    runner: exec
`
	f, err := Parse("/w/lab.yaml", strings.NewReader(src), opts)
	if err != nil {
		t.Fatal(err)
	}
	no, yes := false, true
	magic, mask, _ := formats.QEMUELF("aarch64")
	want := &File{
		Path: "/w/lab.yaml", Name: "ci", Image: "default", Distro: "initramfs", Arch: "amd64", MemoryMiB: 2048, CPUs: 2,
		Scratch: &yes, Windows: &no,
		Shares:   []share.Share{{HostPath: "/w/src", GuestPath: "/mnt/src", ReadOnly: true}},
		Expose:   []Exposed{{Program: "/usr/bin/printf"}, {Program: "notify-send", As: "notify"}},
		EnvAllow: []string{"MYAPP_*", "LD_PRELOAD"},
		Formats: []formats.Format{
			{Name: "labpy", Magic: []byte("#!labpy"), Runner: formats.Runner{Kind: formats.Interpreter, Command: []string{"/usr/bin/python3"}}},
			{Name: "jar", Extension: "jar", Runner: formats.Runner{Kind: formats.Interpreter, Command: []string{"/usr/bin/java", "-jar"}}},
			{Name: "arm64", Magic: magic, Mask: mask, Runner: formats.Runner{Kind: formats.Interpreter, Command: []string{"/usr/bin/qemu-aarch64-static"}}},
			{Name: "native", Magic: []byte("\x7fELF"), Mask: []byte{0xff, 0xff, 0xff, 0xff}, Runner: formats.Runner{Kind: formats.Exec}},
		},
	}
	if !reflect.DeepEqual(f, want) {
		t.Errorf("got  %+v\nwant %+v", f, want)
	}
}

// The image keys: distro (or image) picks the guest image, arch its architecture (either
// on either host), isolated_windows the Wine prefix.
func TestParseMachineKeys(t *testing.T) {
	yes, no := true, false
	for _, tc := range []struct {
		src  string
		want File
	}{
		{"distro: debian", File{Image: "debian", Distro: "debian"}},
		{"image: default", File{Image: "default", Distro: "initramfs"}},
		{"distro: initramfs\narch: aarch64", File{Image: "initramfs", Distro: "initramfs", Arch: "arm64"}},
		{"arch: x86_64\ndistro: debian", File{Image: "debian", Distro: "debian", Arch: "amd64"}},
		{"arch: arm64", File{Arch: "arm64"}},
		{"isolated_windows: true", File{IsolatedWindows: &yes}},
		{"isolated_windows: false\nwindows: false", File{IsolatedWindows: &no, Windows: &no}},
		{"windows: true\nisolated_windows: true", File{IsolatedWindows: &yes, Windows: &yes}},
	} {
		f, err := Parse("lab.yaml", strings.NewReader(tc.src), opts)
		if err != nil {
			t.Errorf("%q: %v", tc.src, err)
			continue
		}
		tc.want.Path = "lab.yaml"
		if !reflect.DeepEqual(*f, tc.want) {
			t.Errorf("%q:\n got  %+v\n want %+v", tc.src, *f, tc.want)
		}
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct{ name, src, want string }{
		{"empty", "", "lab.yaml: empty: a lab file is a mapping of keys (name, memory, formats, ...)"},
		{"not yaml", "name: [", "lab.yaml: line 1: did not find expected node content"},
		{"list", "- a", "lab.yaml: want a mapping of keys, got a list"},
		{"unknown key", "nmae: x", "lab.yaml: nmae: unknown key (known here: name, image, distro, arch, memory, cpus, scratch, shares, expose, windows, windows_path, isolated_windows, env, formats)"},
		{"twice", "cpus: 1\ncpus: 2", "lab.yaml: cpus: given twice"},
		{"bad name", "name: -x", `lab.yaml: name: "-x": want letters, digits, '.', '_' or '-' (at most 63, not starting with a punctuation mark)`},
		{"image", "image: alpine", `lab.yaml: image: "alpine": want initramfs (lab's initramfs, the default; also named default) or debian (Debian 12 with systemd on a disk of its own)`},
		{"distro", "distro: ubuntu", `lab.yaml: distro: "ubuntu": want initramfs (lab's initramfs, the default; also named default) or debian (Debian 12 with systemd on a disk of its own)`},
		{"distro type", "distro: [debian]", `lab.yaml: distro: want a string, got a list`},
		{"image and distro", "image: default\ndistro: debian", "lab.yaml: distro: image and distro name the same thing; give one"},
		{"arch", "arch: mips", `lab.yaml: arch: "mips": want amd64 or arm64 (x86_64 and aarch64 name the same); run programs of other architectures through a format (qemu: aarch64, arm, ppc64le, riscv64, s390x)`},
		{"arch empty", "arch: ''", `lab.yaml: arch: "": want amd64 or arm64 (x86_64 and aarch64 name the same); run programs of other architectures through a format (qemu: aarch64, arm, ppc64le, riscv64, s390x)`},
		{"debian arm64", "arch: aarch64\ndistro: debian", `lab.yaml: arch: "aarch64": the Debian image is built for amd64 guests only (an arm64 guest boots lab's initramfs)`},
		{"isolated type", "isolated_windows: yes please", `lab.yaml: isolated_windows: want true or false, got "yes please"`},
		{"isolated without windows", "windows: false\nisolated_windows: true", "lab.yaml: isolated_windows: a Wine prefix of the machine's own needs the Windows personality, and windows is false"},
		{"memory unit", "memory: 2T", `lab.yaml: memory: "2T": want MiB (1024) or a size from 128M to 1024G (2G, 512M)`},
		{"memory small", "memory: 64", "lab.yaml: memory: want a number from 128 to 1048576, got 64"},
		{"cpus type", "cpus: two", `lab.yaml: cpus: want a whole number, got "two"`},
		{"windows type", "windows: maybe", `lab.yaml: windows: want true or false, got "maybe"`},
		{"share key", "shares:\n  - {host: /a, guest: /b, ro: true}", "lab.yaml: shares[0].ro: unknown key (known here: host, guest, readonly)"},
		{"share guest", "shares:\n  - {host: /a, guest: b}", `lab.yaml: shares[0].guest: "b": want an absolute guest path without spaces or ':'`},
		{"share missing", "shares:\n  - {guest: /b}", "lab.yaml: shares[0].host: missing: the host directory to share"},
		{"expose", "expose:\n  - {as: x}", "lab.yaml: expose[0].program: missing: the host program to expose"},
		{"env key", "env:\n  deny: [X]", "lab.yaml: env.deny: unknown key (known here: allow)"},
		{"env name", "env:\n  allow: [A, 'B=1']", `lab.yaml: env.allow[1]: "B=1": want a variable name, or a prefix ending in *`},
		{"formats not list", "formats: {name: x}", "lab.yaml: formats: want a list, got a mapping"},
		{"magic not hex", "formats:\n  - {name: a, magic: 7f}\n  - {name: b, magic: zz}", `lab.yaml: formats[1].magic: not hex: "zz"`},
		{"format key", "formats:\n  - {name: a, magik: 7f}", "lab.yaml: formats[0].magik: unknown key (known here: name, magic, mask, offset, extension, qemu, runner, interpreter)"},
		{"no name", "formats:\n  - {magic: 7f}", "lab.yaml: formats[0].name: missing: every format needs a name"},
		{"builtin name", "formats:\n  - {name: pe, magic: 7f}", `lab.yaml: formats[0].name: "pe" is built in; pick another name`},
		{"bad format name", "formats:\n  - {name: My Format, magic: 7f}", `lab.yaml: formats[0].name: name "My Format": only a-z, 0-9, '-', '_' and '.'`},
		{"dup", "formats:\n  - {name: a, magic: 7f}\n  - {name: a, extension: x}", `lab.yaml: formats[1].name: "a" is defined twice`},
		{"no match", "formats:\n  - {name: a, runner: exec}", "lab.yaml: formats[0]: needs one of magic, extension or qemu"},
		{"two matches", "formats:\n  - {name: a, magic: 7f, extension: x}", "lab.yaml: formats[0]: give one of magic, extension or qemu, not several"},
		{"mask length", "formats:\n  - {name: a, magic: 7f45, mask: ff}", "lab.yaml: formats[0].mask: 1 bytes, the magic has 2"},
		{"offset", "formats:\n  - {name: a, magic: 7f45, offset: 127}", "lab.yaml: formats[0].magic: offset + length is 129: the magic must lie in the first 128 bytes"},
		{"ext mask", "formats:\n  - {name: a, extension: jar, offset: 1}", "lab.yaml: formats[0]: mask and offset go with magic, not extension"},
		{"ext slash", "formats:\n  - {name: a, extension: a/b}", `lab.yaml: formats[0].extension: extension "a/b": want a word without '.', '/', ':' or spaces`},
		{"qemu arch", "formats:\n  - {name: a, qemu: mips}", `lab.yaml: formats[0].qemu: "mips": want one of aarch64, arm, ppc64le, riscv64, s390x`},
		{"runner", "formats:\n  - {name: a, magic: 7f, runner: docker}", `lab.yaml: formats[0].runner: "docker": want exec, wine or interpreter`},
		{"runner interp missing", "formats:\n  - {name: a, magic: 7f, runner: interpreter}", "lab.yaml: formats[0].interpreter: missing: runner interpreter needs the host program, e.g. interpreter: [python3]"},
		{"interp with exec", "formats:\n  - {name: a, magic: 7f, runner: exec, interpreter: [sh]}", "lab.yaml: formats[0].interpreter: only with runner interpreter (runner is exec)"},
		{"interp not found", "formats:\n  - {name: a, magic: 7f, interpreter: [python9]}", "lab.yaml: formats[0].interpreter: python9: not found on the host (executable file not found in $PATH)"},
		{"interp empty", "formats:\n  - {name: a, magic: 7f, interpreter: []}", "lab.yaml: formats[0].interpreter: empty: want the host program and its arguments, e.g. [java, -jar]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("lab.yaml", strings.NewReader(tc.src), opts)
			if err == nil || err.Error() != tc.want {
				t.Errorf("Parse(%q)\n got  %v\n want %s", tc.src, err, tc.want)
			}
			var le *Error
			if err != nil && tc.name != "not yaml" && !errors.As(err, &le) {
				t.Errorf("error %T is not a *labfile.Error", err)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte("name: x\nformats:\n  - {name: a, magic: 7f, mask: ff, interpreter: [sh]}\n"))
	f.Add([]byte("shares: [{host: a, guest: /b}]\nmemory: 1G\n"))
	f.Add([]byte("distro: debian\narch: x86_64\nisolated_windows: true\n"))
	f.Add([]byte("image: default\narch: aarch64\nwindows: false\nisolated_windows: false\n"))
	f.Add([]byte("distro: debian\narch: arm64\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		lf, err := Parse("lab.yaml", strings.NewReader(string(b)), opts)
		if err != nil {
			return
		}
		// Whatever is accepted is valid for the packages it feeds.
		if err := formats.ValidateTable(lf.Formats); err != nil {
			t.Fatalf("accepted formats fail validation: %v", err)
		}
		if lf.Distro != "" && lf.Distro != "initramfs" && lf.Distro != "debian" || lf.Arch != "" && lf.Arch != "amd64" && lf.Arch != "arm64" {
			t.Fatalf("accepted distro %q, arch %q", lf.Distro, lf.Arch)
		}
		if lf.Distro == "debian" && lf.Arch == "arm64" {
			t.Fatal("accepted a Debian arm64 guest")
		}
	})
}
