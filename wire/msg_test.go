package wire

import (
	"bytes"
	"encoding/hex"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// goldenMessages: each message with its exact frame bytes.
var goldenMessages = []struct {
	name  string
	msg   Message
	frame string
}{
	{"hello", &Hello{Major: 2, Minor: 0, Token: []byte("tok")},
		"00000014 01 4c414257 0002 0000 00000000 00000003 746f6b"},
	{"hello-empty", &Hello{Major: 2, Minor: 2},
		"00000011 01 4c414257 0002 0002 00000000 00000000"},
	{"launch", &Launch{
		Format: "pe", Path: "/mnt/c/a.exe", Argv: []string{"a.exe", "x"}, Cwd: "/mnt/c",
		Env:   []EnvVar{{Name: "LABENV", Value: "P/p"}, {Name: "P", Value: "/mnt/c", Flags: EnvPath}},
		Flags: LaunchTTY, Rows: 24, Cols: 80},
		"0000005e 02" +
			"00000002 7065" +
			"0000000c 2f6d6e742f632f612e657865" +
			"00000002 00000005 612e657865 00000001 78" +
			"00000006 2f6d6e742f63" +
			"00000002 00000006 4c4142454e56 00000003 502f70 00" +
			"00000001 50 00000006 2f6d6e742f63 01" +
			"01 0018 0050"},
	// Protocol 1.1: the trace id follows cols when flag bit 1 is set.
	{"launch-trace", &Launch{Format: "host", Path: "hi", Argv: []string{"hi"}, Flags: LaunchTrace, TraceID: "t1"},
		"0000002c 02" +
			"00000004 686f7374" +
			"00000002 6869" +
			"00000001 00000002 6869" +
			"00000000" +
			"00000000" +
			"02 0000 0000" +
			"00000002 7431"},
	{"launch-result-ok", &LaunchResult{},
		"0000000d 03 00000000 00000000 00000000"},
	{"launch-result-enoent", &LaunchResult{Errno: ENOENT, Message: "no"},
		"0000000f 03 00000002 00000000 00000002 6e6f"},
	{"resize", &Resize{Rows: 50, Cols: 132, XPixel: 1, YPixel: 2},
		"00000009 04 0032 0084 0001 0002"},
	{"signal", &Signal{Signo: 2}, "00000002 05 02"},
	{"exit", &Exit{Code: 0xC0000005}, "00000007 06 c0000005 00 00"},
	{"exit-signal", &Exit{Signal: 9, Flags: ExitCoreDumped}, "00000007 06 00000000 09 01"},
	{"error", &SessionError{Message: "no"}, "00000007 07 00000002 6e6f"},
}

func TestGolden(t *testing.T) {
	for _, tc := range goldenMessages {
		t.Run(tc.name, func(t *testing.T) {
			want := unhex(t, tc.frame)
			got, err := AppendMessage(nil, tc.msg)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("encode:\n got %x\nwant %x", got, want)
			}
			m, err := ReadMessage(bytes.NewReader(want), make([]byte, MaxPayload))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(normalize(m), normalize(tc.msg)) {
				t.Fatalf("decode:\n got %#v\nwant %#v", m, tc.msg)
			}
			// Payload-level API agrees with the frame-level one.
			p, err := tc.msg.MarshalBinary()
			if err != nil || !bytes.Equal(p, want[HeaderSize:]) {
				t.Fatalf("MarshalBinary = %x, %v", p, err)
			}
		})
	}
}

// normalize makes nil and empty slices compare equal.
func normalize(m Message) Message {
	if h, ok := m.(*Hello); ok && len(h.Token) == 0 {
		c := *h
		c.Token = nil
		return &c
	}
	return m
}

// frameHex builds a frame from "TT payload..." hex, or takes "raw ..." as is.
func frameHex(t testing.TB, s string) []byte {
	if rest, ok := strings.CutPrefix(s, "raw "); ok {
		return unhex(t, rest)
	}
	p := unhex(t, s)
	b, err := AppendFrame(nil, Type(p[0]), p[1:])
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDecodeErrors(t *testing.T) {
	for _, tc := range []struct {
		name, frame, want string
	}{
		{"not lab", "01 48545450 0001 0000 00000000 00000000", "does not speak"},
		{"other major", "01 4c414257 0001 0005 00000000 00000000", "peer speaks 1.5, this side speaks 2.1"},
		{"token too long", "01 4c414257 0002 0000 00000000 00100000", "token too long"},
		{"token short", "01 4c414257 0002 0000 00000000 00000010 00", "truncated"},
		{"truncated", "01 4c414257 0002 0000 0000", "truncated"},
		{"trailing", "05 02 00", "trailing"},
		{"signal zero", "05 00", "out of range"},
		{"signal 65", "05 41", "out of range"},
		{"unknown type", "7f", "unknown control"},
		{"argv count lie", "02 00000002 7065 00000000 ffffff00 00000000", "too many arguments"},
		{"argv count short", "02 00000002 7065 00000000 00000100 00000000", "truncated"},
		{"nul in path", "02 00000002 7065 00000002 2f00 00000001 00000001 61 00000000 00000000 00 0000 0000", "NUL"},
		{"no argv", "02 00000002 7065 00000002 2f61 00000000 00000000 00000000 00 0000 0000", "argv[0]"},
		{"no format", "02 00000000 00000002 2f61 00000001 00000001 61 00000000 00000000 00 0000 0000", "without a format"},
		{"env name with =", "02 00000002 7065 00000002 2f61 00000001 00000001 61 00000000 00000001 00000003 613d62 00000000 00 00 0000 0000", "contains '='"},
		{"env name empty", "02 00000002 7065 00000002 2f61 00000001 00000001 61 00000000 00000001 00000000 00000000 00 00 0000 0000", "empty environment"},
		{"trace id missing", "02 00000004 686f7374 00000002 6869 00000001 00000002 6869 00000000 00000000 02 0000 0000", "truncated"},
		{"trace id empty", "02 00000004 686f7374 00000002 6869 00000001 00000002 6869 00000000 00000000 02 0000 0000 00000000", "trace id of 0 bytes"},
		{"trace id slash", "02 00000004 686f7374 00000002 6869 00000001 00000002 6869 00000000 00000000 02 0000 0000 00000003 612f62", `trace id "a/b": only letters`},
		{"trace id too long", "02 00000004 686f7374 00000002 6869 00000001 00000002 6869 00000000 00000000 02 0000 0000 00000041", "trace id too long"},
		{"message too long", "03 00000002 00000000 00100000", "too long"},
		{"too big", "raw 00020002 05 02", "frame too large"},
		{"empty frame", "raw 00000000 05 02", "empty frame"},
		{"cut frame", "raw 00000005 05", "unexpected EOF"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ReadMessage(bytes.NewReader(frameHex(t, tc.frame)), make([]byte, MaxPayload))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestVersionErrorType(t *testing.T) {
	_, err := ReadMessage(bytes.NewReader(frameHex(t, "01 4c414257 0003 0000 00000000 00000000")), make([]byte, MaxPayload))
	var ve *VersionError
	if !errors.As(err, &ve) || ve.Remote != 3 || ve.Local != Major {
		t.Fatalf("err = %#v", err)
	}
	if CheckVersion(NewHello(nil)) != nil {
		t.Fatal("own hello refused")
	}
}

func TestEncodeErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		msg  Message
		want string
	}{
		{"token", &Hello{Major: Major, Token: make([]byte, MaxToken+1)}, "token too long"},
		{"nul arg", &Launch{Format: "pe", Argv: []string{"a\x00b"}}, "NUL"},
		{"no format", &Launch{Argv: []string{"a"}}, "without a format"},
		{"env name", &Launch{Format: "pe", Argv: []string{"a"}, Env: []EnvVar{{Name: "A=B"}}}, "contains '='"},
		{"too large", &Launch{Format: "pe", Argv: []string{strings.Repeat("x", MaxPayload)}}, "frame too large"},
		{"trace flag without id", &Launch{Format: "pe", Argv: []string{"a"}, Flags: LaunchTrace}, "trace flag without a trace id"},
		{"trace id", &Launch{Format: "pe", Argv: []string{"a"}, TraceID: "a b"}, `trace id "a b"`},
		{"signal", &Signal{}, "out of range"},
		{"message", &LaunchResult{Errno: EINVAL, Message: strings.Repeat("m", MaxMessage+1)}, "too long"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := AppendMessage([]byte("keep"), tc.msg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
			if string(b) != "keep" {
				t.Fatalf("dst changed on error: %q", b)
			}
		})
	}
}

// A Launch with a TraceID carries the flag on the wire whether or not the caller set it,
// and one without is byte for byte a protocol 2.0 Launch (what a 2.0 relay accepts).
func TestLaunchTraceFlag(t *testing.T) {
	m := &Launch{Format: "host", Path: "hi", Argv: []string{"hi"}, TraceID: "t1"}
	b, err := m.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var got Launch
	if err := got.UnmarshalBinary(b); err != nil || got.Flags != LaunchTrace || got.TraceID != "t1" {
		t.Fatalf("decoded %+v, %v", got, err)
	}
	plain, err := (&Launch{Format: "host", Path: "hi", Argv: []string{"hi"}}).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if want := unhex(t, "00000004 686f7374 00000002 6869 00000001 00000002 6869 00000000 00000000 00 0000 0000"); !bytes.Equal(plain, want) {
		t.Fatalf("untraced launch = %x; want the 2.0 encoding %x", plain, want)
	}
}

func TestExitStatus(t *testing.T) {
	for _, tc := range []struct {
		exit Exit
		want int
	}{
		{Exit{}, 0},
		{Exit{Code: 3}, 3},
		{Exit{Code: 256}, 0},
		{Exit{Code: 0xC0000005}, 5},
		{Exit{Code: 0xffffffff}, 255},
		{Exit{Signal: 9}, 137},
		{Exit{Signal: 2}, 130},
		{Exit{Signal: 15, Code: 1}, 143},
	} {
		if got := tc.exit.Status(); got != tc.want {
			t.Errorf("%+v.Status() = %d, want %d", tc.exit, got, tc.want)
		}
	}
}

func TestStub(t *testing.T) {
	b, err := FormatStub("notify-send")
	if err != nil || string(b) != "#!lab-host\nnotify-send\n" {
		t.Fatalf("FormatStub = %q, %v", b, err)
	}
	for _, tc := range []struct {
		in, name, err string
	}{
		{"#!lab-host\nnotify-send\n", "notify-send", ""},
		{"#!lab-host\nxdg-open", "xdg-open", ""},
		{"#!lab-host\ngit\r\n# exposed by lab\n\n", "git", ""},
		{"#!lab-host\n\n", "", "without a command name"},
		{"#!lab-host\n../bin/sh\n", "", "may not start"},
		{"#!lab-host\n-rf\n", "", "may not start"},
		{"#!lab-host\na/b\n", "", "outside"},
		{"#!lab-host\na b\n", "", "outside"},
		{"#!lab-host\nok\nrm -rf /\n", "", "extra content"},
		{"#!/bin/sh\nok\n", "", "not a host command stub"},
		{"#!lab-host\n" + strings.Repeat("a", 65) + "\n", "", "too long"},
		{"#!lab-host\na\n" + strings.Repeat("#", MaxStub), "", "too large"},
	} {
		name, err := ParseStub([]byte(tc.in))
		if tc.err == "" {
			if err != nil || name != tc.name {
				t.Errorf("ParseStub(%q) = %q, %v; want %q", tc.in, name, err, tc.name)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("ParseStub(%q) err = %v; want %q", tc.in, err, tc.err)
		}
	}
}
