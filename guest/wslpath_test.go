package guest

import (
	"bytes"
	"io/fs"
	"strings"
	"testing"
)

// wslDistro plays LXSS_DISTRO_NAME_TEST of WSL's tests ($WSL_DISTRO_NAME).
const wslDistro = "test_distro"

// wslConfig is a lab guest laid out as a WSL test distribution: C: at /mnt/c (the Windows
// personality) and an ordinary share whose host side is a Linux path.
var wslConfig = &Config{
	Shares: []Share{{GuestPath: "/mnt/host", HostPath: "/home/me/share"}},
	Drives: []Drive{{Letter: "C:", Guest: "/mnt/c"}},
}

// fakeRealpath resolves the link of WSL's symlink test (link -> target) and reports every
// other path as missing (so it is used as given, as realpath's ENOENT makes WSL do).
func fakeRealpath(p string) (string, error) {
	p = strings.TrimSuffix(p, "/")
	switch {
	case p == "/mnt/c/symlink_test_dir/link":
		return "/mnt/c/symlink_test_dir/target", nil
	}
	return "", &fs.PathError{Op: "lstat", Path: p, Err: fs.ErrNotExist}
}

// TestWslpathWSLCases replays the cases of WSL's own test suites that apply to a lab
// guest, through the program as `wslpath` (argument parsing, translation, messages).
// Sources, in microsoft/WSL:
//
//	LUT  test/linux/unit_tests/wslpath.c (variation functions named per row)
//	DFS  test/windows/DrvFsTests.cpp, WslPath (run from a directory on DrvFs)
//	REF  shared/research/wsl-reference.md (the project's research notes) §1 row 11 and §2 (WSL@3e27a6a: must-fail
//	     rows, the failure message), and src/linux/init/wslpath.cpp for usage and errors
//
// Not replayed, because a lab guest has no such thing (see docs/DESIGN.md, "wslpath"):
//   - LUT WslPathTestLxToWinPath (/ -> \\wsl.localhost\D\, /root, /proc/stat, /proc/1/) and
//     the -w halves of WslPathTestLxEscaped and WslPathTestTabCharacters: lab's host cannot
//     open the guest's own file system, so -w of a path outside the shares fails (rows
//     below assert that failure) instead of naming a \\wsl.localhost path nobody serves;
//   - LUT WslPathTestInvalidMountInfo (a tmpfs with an empty source in mountinfo): lab
//     reads its mappings from /etc/lab/interop.conf, not from /proc/self/mountinfo;
//   - DFS bind-mount rows (wslpath -w <bind> = the source): same reason, no mountinfo;
//   - WSL1-only behaviour (LxtWslVersion() == 1) and the DrvFs file creation itself (the
//     rows here are the translations those tests check once the files exist).
func TestWslpathWSLCases(t *testing.T) {
	for _, tc := range []struct {
		src    string
		cwd    string
		args   []string
		out    string // stdout without the newline; "" with a failure
		errOut string // stderr, exactly
	}{
		// LUT WslPathTestDrvFsFromWinPath
		{"LUT DrvFsFromWinPath", "/mnt/c", []string{`C:\`}, "/mnt/c/", ""},
		{"LUT DrvFsFromWinPath", "/mnt/c", []string{`C:\Foo`}, "/mnt/c/Foo", ""},
		{"LUT DrvFsFromWinPath", "/mnt/c", []string{`C:\Foo\`}, "/mnt/c/Foo/", ""},
		{"LUT DrvFsFromWinPath", "/mnt/c", []string{`C:\Foo\bar`}, "/mnt/c/Foo/bar", ""},
		{"LUT DrvFsFromWinPath", "/mnt/c", []string{`C:/Foo/bar`}, "/mnt/c/Foo/bar", ""},
		{"LUT DrvFsFromWinPath", "/mnt/c", []string{`foo`}, "foo", ""},
		{"LUT DrvFsFromWinPath", "/mnt/c", []string{`foo\`}, "foo/", ""},
		{"LUT DrvFsFromWinPath (cwd off DrvFs)", "/root", []string{`foo`}, "foo", ""},
		{"LUT DrvFsFromWinPath (cwd off DrvFs)", "/root", []string{`foo\`}, "foo/", ""},
		{"LUT DrvFsFromWinPath -u", "/mnt/c", []string{"-u", `C:\Foo`}, "/mnt/c/Foo", ""},
		// LUT WslPathTestDrvFsToWinPath
		{"LUT DrvFsToWinPath", "/", []string{"-w", "/mnt/c"}, `C:\`, ""},
		{"LUT DrvFsToWinPath", "/", []string{"-w", "/mnt/c/"}, `C:\`, ""},
		{"LUT DrvFsToWinPath", "/", []string{"-w", "/mnt/c/Users"}, `C:\Users`, ""},
		{"LUT DrvFsToWinPath", "/", []string{"-w", "/mnt/c/Users/"}, `C:\Users\`, ""},
		{"LUT DrvFsToWinPath", "/", []string{"-w", "/mnt/c/DOESNOTEXIST/"}, `C:\DOESNOTEXIST\`, ""},
		{"LUT DrvFsToWinPath -m", "/", []string{"-m", "/mnt/c/Users/"}, `C:/Users/`, ""},
		// LUT WslPathTestDrvFsEscaped: escaped to U+F000+c, and not unescaped back to DrvFs
		{"LUT DrvFsEscaped", "/", []string{"-w", `/mnt/c/wslpath_foo\:bar`}, "C:\\wslpath_foo\uf05c\uf03abar", ""},
		{"LUT DrvFsEscaped", "/", []string{"C:\\wslpath_foo\uf05c\uf03abar"}, "/mnt/c/wslpath_foo\uf05c\uf03abar", ""},
		{"LUT DrvFsEscaped (all of escape.cpp's table)", "/", []string{"-w", "/mnt/c/a\"*:<>?\\|\x01\tb"},
			"C:\\a\uf022\uf02a\uf03a\uf03c\uf03e\uf03f\uf05c\uf07c\uf001\tb", ""},
		{"LUT DrvFsEscaped -m keeps escapes", "/", []string{"-m", `/mnt/c/x\:y`}, "C:/x\uf05c\uf03ay", ""},
		// LUT WslPathTestDrvFsSymlink: DrvFs to Windows follows links, back is text
		{"LUT DrvFsSymlink", "/", []string{"-w", "/mnt/c/symlink_test_dir/link"}, `C:\symlink_test_dir\target`, ""},
		{"LUT DrvFsSymlink", "/", []string{`C:\symlink_test_dir\link`}, "/mnt/c/symlink_test_dir/link", ""},
		// LUT WslPathTestLxFromWinPath
		{"LUT LxFromWinPath", "/", []string{`\\wsl.localhost\` + wslDistro}, "/", ""},
		{"LUT LxFromWinPath", "/", []string{`\\wsl.localhost\` + wslDistro + `\`}, "/", ""},
		{"LUT LxFromWinPath", "/", []string{`\\wsl.localhost\` + wslDistro + `\root`}, "/root", ""},
		{"LUT LxFromWinPath", "/", []string{`\\wsl.localhost\` + wslDistro + `\proc\stat`}, "/proc/stat", ""},
		{"LUT LxFromWinPath", "/", []string{`\\wsl.localhost\` + wslDistro + `/proc/stat`}, "/proc/stat", ""},
		{"LUT LxFromWinPath", "/", []string{`\\wsl$\` + wslDistro + `\proc\stat`}, "/proc/stat", ""},
		{"LUT LxFromWinPath", "/", []string{`\\wsl$\` + wslDistro}, "/", ""},
		{"LUT LxFromWinPath", "/", []string{`\\?\C:\Users`}, "/mnt/c/Users", ""},
		{"LUT LxFromWinPath", "/", []string{`\\?\C:\Users\`}, "/mnt/c/Users/", ""},
		{"LUT LxFromWinPath", "/root", []string{`.`}, ".", ""},
		{"LUT LxFromWinPath (cwd on DrvFs)", "/mnt/c/Users", []string{`.`}, ".", ""},
		// LUT WslPathTestLxEscaped / WslPathTestTabCharacters, -u halves: \\wsl.localhost unescapes
		{"LUT LxEscaped", "/", []string{`\\wsl.localhost\` + wslDistro + "\\data\\wslpath_foo\uf05c\uf03abar"}, `/data/wslpath_foo\:bar`, ""},
		{"LUT TabCharacters", "/", []string{`\\wsl.localhost\` + wslDistro + "\\tmp\\test_dir_with\ttab"}, "/tmp/test_dir_with\ttab", ""},
		{"LUT TabCharacters (DrvFs: tab is legal)", "/", []string{"-w", "/mnt/c/test_dir_with\ttab"}, "C:\\test_dir_with\ttab", ""},
		// REF §2 must-fail: another distribution's name, and the same with \\wsl$
		{"REF must fail", "/", []string{`\\wsl.localhost\` + wslDistro + `-other\foo`}, "", "wslpath: \\\\wsl.localhost\\" + wslDistro + "-other\\foo: Invalid argument\n"},
		{"REF must fail", "/", []string{`\\wsl.localhost\` + wslDistro + `X\foo`}, "", "wslpath: \\\\wsl.localhost\\" + wslDistro + "X\\foo: Invalid argument\n"},
		{"REF must fail", "/", []string{`\\wsl$\` + wslDistro + `-other\foo`}, "", "wslpath: \\\\wsl$\\" + wslDistro + "-other\\foo: Invalid argument\n"},
		{"REF must fail", "/", []string{`\\wsl$\` + wslDistro + `X\foo`}, "", "wslpath: \\\\wsl$\\" + wslDistro + "X\\foo: Invalid argument\n"},
		// DFS WslPath (cwd: a directory on DrvFs with a Unicode name, and a plain one)
		{"DFS -aw", "/mnt/c/wsltest", []string{"-aw", "d"}, `C:\wsltest\d`, ""},
		{"DFS -wa", "/mnt/c/wsltest", []string{"-wa", "d"}, `C:\wsltest\d`, ""},
		{"DFS relative stays relative", "/mnt/c/wsltest", []string{"d"}, "d", ""},
		{"DFS -a starts with /mnt/", "/mnt/c/wsltest", []string{"-a", "d"}, "/mnt/c/wsltest/d", ""},
		{"DFS unicode -aw", "/mnt/c/wslpath-测试目录-テスト", []string{"-aw", "d"}, `C:\wslpath-测试目录-テスト\d`, ""},
		{"DFS unicode", "/mnt/c/wslpath-测试目录-テスト", []string{"d"}, "d", ""},
		{"DFS unicode -a", "/mnt/c/wslpath-测试目录-テスト", []string{"-a", "d"}, "/mnt/c/wslpath-测试目录-テスト/d", ""},
		// REF §1 row 11 and wslpath.cpp: usage, failures, the message WSL#8706 shows
		{"REF failure", "/", []string{`C:\..`}, "", "wslpath: C:\\..: Invalid argument\n"},
		{"REF failure: .. above the root", "/", []string{"-w", "/.."}, "", "wslpath: /..: Invalid argument\n"},
		{"REF failure: UNC of no distribution", "/", []string{`\\server\share\x`}, "", "wslpath: \\\\server\\share\\x: Invalid argument\n"},
		{"REF no path", "/", nil, "", "wslpath: Invalid argument\n"},
		{"REF --help", "/", []string{"--help"}, "", "wslpath: Invalid argument\n"},
		{"REF two paths", "/", []string{"a", "b"}, "", "Invalid command line argument: b\nPlease use 'wslpath --help' to get a list of supported arguments.\n"},
		{"REF unknown option", "/", []string{"-x", "a"}, "", "Invalid command line argument: -x\nPlease use 'wslpath --help' to get a list of supported arguments.\n"},
		// lab guest: -w of a path outside the shares (WSL: \\wsl.localhost\D\...) fails
		{"LUT LxToWinPath (not applicable: fails)", "/", []string{"-w", "/"}, "", "wslpath: /: Invalid argument\n"},
		{"LUT LxToWinPath (not applicable: fails)", "/", []string{"-w", "/proc/1/"}, "", "wslpath: /proc/1/: Invalid argument\n"},
		{"lab: relative -w from off-share cwd stays relative", "/root", []string{"-w", "a/b"}, `a\b`, ""},
		{"lab: share host path", "/", []string{"-w", "/mnt/host/x/"}, "/home/me/share/x/", ""},
		{"lab: share host path back", "/", []string{"/home/me/share/x/"}, "/mnt/host/x/", ""},
	} {
		var out, errb bytes.Buffer
		tool := PathTool{
			Name: "wslpath",
			Env:  PathEnv{Cwd: tc.cwd, Distro: wslDistro, Realpath: fakeRealpath},
			Load: func() (*Config, error) { return wslConfig, nil },
			Out:  &out, Err: &errb,
		}
		code := tool.Main(tc.args)
		wantOut, wantCode := "", 1
		if tc.out != "" {
			wantOut, wantCode = tc.out+"\n", 0
		}
		if len(tc.args) == 0 || tc.args[0] == "--help" {
			wantOut = WslpathUsage + "\n" // usage on stdout after the error line
		}
		if code != wantCode || out.String() != wantOut || errb.String() != tc.errOut {
			t.Errorf("%s: cd %s; wslpath %q = %d, stdout %q, stderr %q; want %d, %q, %q",
				tc.src, tc.cwd, tc.args, code, out.String(), errb.String(), wantCode, wantOut, tc.errOut)
		}
	}
}

// TestCollapse pins WSL's CollapsePath rules, quirks included.
func TestCollapse(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		ok       bool
	}{
		{"/a/b", "/a/b", true},
		{"/a//b", "/a/b", true},
		{"/a/./b", "/a/b", true},
		{"/a/b/", "/a/b/", true},
		{"/a/b/.", "/a/b/", true},
		{"/a/b/..", "/a/", true},
		{"/a/..", "/", true},
		{"/..", "", false},
		{"/a/../..", "", false},
		{"/a/b//../c", "/a/b/c", true}, // a pending ".." consumes the empty segment (as WSL)
		{`C:\x\..\y`, `C:\y`, true},
	} {
		sep := byte('/')
		if strings.Contains(tc.in, `\`) {
			sep = '\\'
		}
		got, ok := collapse(tc.in, sep)
		if got != tc.want || ok != tc.ok {
			t.Errorf("collapse(%q) = %q, %v; want %q, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestEscapeNTRoundTrip(t *testing.T) {
	in := "/a\"*:<>?\\|\x1f\t\x7fé"
	esc := EscapeNT(in)
	if strings.ContainsAny(esc, "\"*:<>?|/\x1f") {
		t.Fatalf("EscapeNT(%q) = %q still holds NTFS-illegal characters", in, esc)
	}
	// '\' inside a name escapes to U+F05C and comes back; separators are the caller's.
	if back := UnescapeNT(strings.ReplaceAll(esc, `\`, "/")); back != in {
		t.Errorf("UnescapeNT(EscapeNT(%q)) = %q", in, back)
	}
}
