package guest

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want *Config
		err  string
	}{
		{name: "empty gives defaults", in: "", want: &Config{
			Relay: "vsock:2:5555", TokenFile: DefaultTokenFile,
			ConnectTimeout: DefaultConnectTimeout, HandshakeTimeout: DefaultHandshakeTimeout}},
		{name: "full", in: `
# lab interop
relay = unix:/run/lab/relay.sock
token_file=/etc/lab/tok   # trailing comment
share = /mnt/c /home/me/.wine/drive_c c:
share = "/mnt/my share" "/home/me/my share"
format = elf-arm64 0 7f454c46 ffffffff
connect_timeout = 250ms
handshake_timeout = 2s
`, want: &Config{
			Relay: "unix:/run/lab/relay.sock", TokenFile: "/etc/lab/tok",
			Shares: []Share{
				{GuestPath: "/mnt/c", HostPath: "/home/me/.wine/drive_c", Drive: "C:"},
				{GuestPath: "/mnt/my share", HostPath: "/home/me/my share"},
			},
			Formats:        []Format{{Name: "elf-arm64", Magic: []byte{0x7f, 'E', 'L', 'F'}, Mask: []byte{0xff, 0xff, 0xff, 0xff}}},
			ConnectTimeout: 250 * time.Millisecond, HandshakeTimeout: 2 * time.Second}},
		{name: "vsock", in: "relay = vsock:2:6000", want: &Config{
			Relay: "vsock:2:6000", TokenFile: DefaultTokenFile,
			ConnectTimeout: DefaultConnectTimeout, HandshakeTimeout: DefaultHandshakeTimeout}},
		{name: "drives", in: "drive = c: /mnt/c\ndrive = D:/mnt/d\ndrive = E: \"/mnt/my e\"\n", want: &Config{
			Relay: "vsock:2:5555", TokenFile: DefaultTokenFile,
			Drives:         []Drive{{Letter: "C:", Guest: "/mnt/c"}, {Letter: "D:", Guest: "/mnt/d"}, {Letter: "E:", Guest: "/mnt/my e"}},
			ConnectTimeout: DefaultConnectTimeout, HandshakeTimeout: DefaultHandshakeTimeout}},
		{name: "drive twice", in: "drive = C: /mnt/c\ndrive = c: /mnt/x", err: "mapped twice"},
		{name: "drive relative", in: "drive = C: mnt/c", err: "absolute"},
		{name: "drive bad letter", in: "drive = CC /mnt/c", err: "look like C:"},
		{name: "drive no path", in: "drive = C:", err: "DRIVE GUEST"},
		{name: "drive arity", in: "drive = C: /a /b", err: "DRIVE GUEST"},
		{name: "no equals", in: "relay unix:/x", err: ":1: expected `key = value`"},
		{name: "cwd warning", in: "cwd_warning = true\n", want: &Config{
			Relay: "vsock:2:5555", TokenFile: DefaultTokenFile, CwdWarning: true,
			ConnectTimeout: DefaultConnectTimeout, HandshakeTimeout: DefaultHandshakeTimeout}},
		{name: "cwd warning not a bool", in: "cwd_warning = loud", err: "cwd_warning: want true or false"},
		{name: "unknown key", in: "\nrealy = unix:/x", err: ":2: unknown key \"realy\""},
		{name: "bad transport", in: "relay = tcp:1.2.3.4:5", err: "unknown transport"},
		{name: "bad vsock", in: "relay = vsock:host:5555", err: "must be numbers"},
		{name: "vsock no port", in: "relay = vsock:2", err: "CID:PORT"},
		{name: "empty unix", in: "relay = unix:", err: "empty socket path"},
		{name: "two values", in: "relay = unix:/a unix:/b", err: "one value"},
		{name: "relative token", in: "token_file = tok", err: "absolute"},
		{name: "bad duration", in: "connect_timeout = soon", err: "positive duration"},
		{name: "negative duration", in: "handshake_timeout = -1s", err: "positive duration"},
		{name: "share arity", in: "share = /mnt/c", err: "GUEST HOST"},
		{name: "relative share", in: "share = mnt/c /x", err: "absolute"},
		{name: "bad drive", in: "share = /mnt/c /x CC", err: "drive"},
		{name: "bad quote", in: `share = "/mnt/c /x`, err: "quoted"},
		{name: "builtin format", in: "format = pe 0 4d5a", err: "built in"},
		{name: "bad magic", in: "format = x 0 zz", err: "hex"},
		{name: "mask length", in: "format = x 0 4d5a ff", err: "mask"},
		{name: "magic too far", in: "format = x 127 4d5a", err: "first 128"},
		{name: "offset overflow", in: "format = x 9223372036854775807 4d5a", err: "first 128"}, // off+len wrapped negative once
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseConfig(strings.NewReader(tc.in), "test.conf")
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(c, tc.want) {
				t.Fatalf("got  %+v\nwant %+v", c, tc.want)
			}
		})
	}
}

func TestParseConfigTooLarge(t *testing.T) {
	_, err := ParseConfig(strings.NewReader(strings.Repeat("#", maxConfig+1)), "big")
	if err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("err = %v", err)
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add("relay = unix:/x\nshare = /a /b C:\nformat = x 0 4d5a\n")
	f.Add(`share = "/a b" "/c\td"`)
	f.Add("format = jar .jar\nformat = \"a b\" .x\n")
	f.Add("drive = C: /mnt/c\ndrive = d:/x/../y\n")
	f.Fuzz(func(t *testing.T, in string) {
		c, err := ParseConfig(strings.NewReader(in), "fuzz")
		if err != nil {
			return
		}
		if _, _, err := ParseAddr(c.Relay); err != nil {
			t.Fatalf("accepted relay %q: %v", c.Relay, err)
		}
		for _, s := range c.Shares {
			if s.GuestPath == "" || s.GuestPath[0] != '/' || s.HostPath == "" || s.HostPath[0] != '/' {
				t.Fatalf("accepted share %+v", s)
			}
		}
		for _, d := range c.Drives {
			if len(d.Letter) != 2 || d.Letter[1] != ':' || d.Guest == "" || d.Guest[0] != '/' {
				t.Fatalf("accepted drive %+v", d)
			}
		}
		b, err := c.MarshalText()
		if err != nil {
			t.Fatalf("cannot write back %+v: %v", c, err)
		}
		back, err := ParseConfig(strings.NewReader(string(b)), "again")
		if err != nil || !reflect.DeepEqual(back, c) {
			t.Fatalf("round trip of %q:\n%s\n%+v, %v", in, b, back, err)
		}
	})
}

func TestConfigMarshalText(t *testing.T) {
	c := &Config{
		Relay: "vsock:2:5555", TokenFile: "/etc/lab/token",
		Shares: []Share{
			{GuestPath: "/mnt/c", HostPath: "/home/me/.wine/drive_c", Drive: "C:"},
			{GuestPath: "/mnt/my share", HostPath: `/home/me/odd "dir"#1`},
		},
		Drives:           []Drive{{Letter: "C:", Guest: "/mnt/c"}, {Letter: "E:", Guest: "/mnt/my e"}},
		Formats:          []Format{{Name: "elf", Offset: 0, Magic: []byte("\x7fELF"), Mask: []byte{0xff, 0xff, 0xff, 0xff}}},
		ConnectTimeout:   3 * time.Second,
		HandshakeTimeout: 1500 * time.Millisecond,
		CwdWarning:       true,
	}
	b, err := c.MarshalText()
	if err != nil {
		t.Fatal(err)
	}
	back, err := ParseConfig(strings.NewReader(string(b)), "gen")
	if err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	if !reflect.DeepEqual(back, c) {
		t.Fatalf("round trip:\n got %+v\nwant %+v\n%s", back, c, b)
	}
	if _, err := (&Config{Relay: "tcp:x"}).MarshalText(); err == nil {
		t.Fatal("bad relay accepted")
	}
}
