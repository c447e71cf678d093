package host_test

import (
	"os"
	"path/filepath"
	"testing"

	"lab/formats"
	"lab/host"
)

// TestRelayConfiguredFormats: files in a share that match a configured format run with its
// runner: a script by extension through /bin/sh, a file with a custom magic through
// /bin/sh with a fixed argument, and the guest's argv after the file.
func TestRelayConfiguredFormats(t *testing.T) {
	ip := startInproc(t, func(c *host.Config) {
		c.Formats = []formats.Format{
			{Name: "labsh", Extension: "labsh", Runner: formats.Runner{Kind: formats.Interpreter, Command: []string{"/bin/sh"}}},
			{Name: "labmagic", Magic: []byte("#!labmagic"), Runner: formats.Runner{Kind: formats.Interpreter, Command: []string{"/bin/sh", "-e"}}},
		}
	}, nil)
	write := func(name, body string) {
		if err := os.WriteFile(filepath.Join(ip.share, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("t.labsh", "echo \"sh:$0:$1:$2\"; exit 7\n")
	write("m.bin", "#!labmagic\necho \"magic:$#:$1\"; false; echo not reached\n")
	write("plain.txt", "echo never\n")
	for _, tc := range []struct {
		file   string
		args   []string
		stdout string
		status int
		errno  uint32
	}{
		{"t.labsh", []string{"a b", ""}, "sh:" + filepath.Join(ip.share, "t.labsh") + ":a b:\n", 7, 0},
		{"m.bin", []string{"x"}, "magic:1:x\n", 1, 0},
		// No format matches a non-executable text file: exec fails (EACCES), as before.
		{"plain.txt", nil, "", 0, 13},
	} {
		l := launchOf("/mnt/host/"+tc.file, tc.args...)
		l.Format = tc.file
		res := guestRun(t, ip.sock, testToken, l, nil)
		if tc.errno != 0 {
			if uint32(res.launch.Errno) != tc.errno {
				t.Errorf("%s: errno %d, want %d (%+v)", tc.file, res.launch.Errno, tc.errno, res)
			}
			continue
		}
		if res.err != nil || res.launch.Errno != 0 || res.exit == nil {
			t.Fatalf("%s: %+v (stderr %q)", tc.file, res, res.stderr)
		}
		share, _ := filepath.EvalSymlinks(ip.share)
		want := tc.stdout
		if tc.file == "t.labsh" {
			want = "sh:" + filepath.Join(share, "t.labsh") + ":a b:\n"
		}
		if string(res.stdout) != want || res.exit.Status() != tc.status {
			t.Errorf("%s: stdout %q status %d, want %q %d (stderr %q)", tc.file, res.stdout, res.exit.Status(), want, tc.status, res.stderr)
		}
	}
}

func TestConfigFormatsValidated(t *testing.T) {
	for _, tc := range []struct {
		f    formats.Format
		want string
	}{
		{formats.Format{Name: "pe", Magic: []byte("MZ"), Runner: formats.Runner{Kind: formats.Exec}}, `host: formats: "pe" is a built-in format's name`},
		{formats.Format{Name: "x", Extension: "x", Runner: formats.Runner{Kind: formats.Interpreter, Command: []string{"python3"}}}, "host: formats: x: the interpreter must be an absolute host path"},
		{formats.Format{Name: "x", Runner: formats.Runner{Kind: formats.Exec}}, "host: formats: x: needs a magic or an extension"},
	} {
		_, err := host.NewRelay(host.Config{Token: testToken, Formats: []formats.Format{tc.f}})
		if err == nil || err.Error() != tc.want {
			t.Errorf("%+v: %v, want %s", tc.f, err, tc.want)
		}
	}
}
