package guest

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"lab/wire"
)

func TestBinfmtArgv(t *testing.T) {
	for _, tc := range []struct {
		args []string
		file string
		argv []string
		err  error
	}{
		// execve("/mnt/c/x.exe", ["/mnt/c/x.exe", "a"]): argv0 == path -> basename.
		{[]string{"/interp", "/mnt/c/x.exe", "/mnt/c/x.exe", "a"}, "/mnt/c/x.exe", []string{"x.exe", "a"}, nil},
		// ./x.exe from a shell: the kernel passes the path as given.
		{[]string{"/interp", "./x.exe", "./x.exe"}, "./x.exe", []string{"x.exe"}, nil},
		// PATH lookup: argv0 is the bare name, kept as is.
		{[]string{"/interp", "/usr/bin/x.exe", "x.exe", "-v", ""}, "/usr/bin/x.exe", []string{"x.exe", "-v", ""}, nil},
		// exec -a custom: argv0 differs from the path, kept.
		{[]string{"/interp", "/mnt/c/x.exe", "custom"}, "/mnt/c/x.exe", []string{"custom"}, nil},
		// An empty argv0 is possible (execve with argv {""}).
		{[]string{"/interp", "/mnt/c/x.exe", ""}, "/mnt/c/x.exe", []string{""}, nil},
		{[]string{"/interp", "/mnt/c/x.exe"}, "", nil, ErrNotBinfmt},
		{[]string{"/interp"}, "", nil, ErrNotBinfmt},
	} {
		file, argv, err := BinfmtArgv(tc.args)
		if file != tc.file || !reflect.DeepEqual(argv, tc.argv) || !errors.Is(err, tc.err) {
			t.Errorf("BinfmtArgv(%q) = %q, %q, %v; want %q, %q, %v", tc.args, file, argv, err, tc.file, tc.argv, tc.err)
		}
	}
}

func TestSelectEnv(t *testing.T) {
	env := map[string]string{
		"LABENV":  "P/p:L/l:U/u:W/w:UW/uw:BAD/x:MISSING:P:=:/p:EMPTY",
		"P":       "/mnt/c/x",
		"L":       "/mnt/c/a:/mnt/c/b",
		"U":       "host-only",
		"W":       "to-host",
		"UW":      "both",
		"BAD":     "skip",
		"EMPTY":   "",
		"UNNAMED": "never",
	}
	getenv := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	want := []wire.EnvVar{
		{Name: "LABENV", Value: env["LABENV"]},
		{Name: "P", Value: "/mnt/c/x", Flags: wire.EnvPath},
		{Name: "L", Value: "/mnt/c/a:/mnt/c/b", Flags: wire.EnvPathList},
		{Name: "W", Value: "to-host", Flags: wire.EnvToHost},
		{Name: "UW", Value: "both", Flags: wire.EnvToGuest | wire.EnvToHost},
		{Name: "MISSING", Flags: wire.EnvUnset},
		{Name: "EMPTY", Value: ""},
	}
	if got := SelectEnv(getenv); !reflect.DeepEqual(got, want) {
		t.Fatalf("got  %+v\nwant %+v", got, want)
	}
	if got := SelectEnv(func(string) (string, bool) { return "", false }); got != nil {
		t.Fatalf("no LABENV: %+v", got)
	}
	// What SelectEnv returns always encodes.
	if _, err := (&wire.Launch{Format: "pe", Argv: []string{"a"}, Env: SelectEnv(getenv)}).MarshalBinary(); err != nil {
		t.Fatal(err)
	}
}

// TestSelectEnvWSLENV: WSLENV is honoured with LABENV's flags and meaning; with both set
// the lists merge, WSLENV's flags winning for a name in both; WSLENV itself crosses.
func TestSelectEnvWSLENV(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  map[string]string
		want []wire.EnvVar
	}{
		{"WSLENV alone, WSL's flags", map[string]string{"WSLENV": "P/p:L/l:U/u:W/w:X/z:Q", "P": "/mnt/c/x", "L": "/a:/b", "U": "u", "W": "w", "X": "x"},
			[]wire.EnvVar{
				{Name: "LABENV", Value: "P/p:L/l:U/u:W/w:X/z:Q:WSLENV"},
				{Name: "P", Value: "/mnt/c/x", Flags: wire.EnvPath},
				{Name: "L", Value: "/a:/b", Flags: wire.EnvPathList},
				{Name: "W", Value: "w", Flags: wire.EnvToHost},
				{Name: "Q", Flags: wire.EnvUnset},
				{Name: "WSLENV", Value: "P/p:L/l:U/u:W/w:X/z:Q"},
			}},
		{"both: merged, WSLENV's flags win", map[string]string{"WSLENV": "A/p", "LABENV": "A/l:B", "A": "/x", "B": "b"},
			[]wire.EnvVar{
				{Name: "LABENV", Value: "A/p:B:WSLENV"}, // each name once: the relay reads this list
				{Name: "A", Value: "/x", Flags: wire.EnvPath},
				{Name: "B", Value: "b"},
				{Name: "WSLENV", Value: "A/p"},
			}},
		{"empty WSLENV still crosses (WSL always sends it)", map[string]string{"WSLENV": ""},
			[]wire.EnvVar{{Name: "LABENV", Value: "WSLENV"}, {Name: "WSLENV", Value: ""}}},
		{"neither", map[string]string{"A": "a"}, nil},
	} {
		getenv := func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok }
		got := SelectEnv(getenv)
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s:\ngot  %+v\nwant %+v", tc.name, got, tc.want)
		}
		// The relay reads the LABENV list and lets a later entry of a name win: each name
		// must appear once, with the flags the guest applied.
		if len(got) > 0 {
			seen := map[string]bool{}
			for _, ent := range strings.Split(got[0].Value, ":") {
				name, _, _ := strings.Cut(ent, "/")
				if seen[name] {
					t.Errorf("%s: %s named twice in the list sent: %q", tc.name, name, got[0].Value)
				}
				seen[name] = true
			}
		}
	}
}

func TestDetectFormat(t *testing.T) {
	formats := []Format{
		{Name: "elf", Magic: []byte("\x7fELF")},
		{Name: "masked", Offset: 2, Magic: []byte{0x10, 0x20}, Mask: []byte{0xf0, 0xff}},
	}
	for _, tc := range []struct{ head, want string }{
		{"MZ\x90\x00", "pe"},
		{"#!lab-host\nx\n", "host"},
		{"#!lab-hostile\n", ""},
		{"\x7fELF\x02", "elf"},
		{"ab\x1f\x20", "masked"},
		{"ab\x1f\x21", ""},
		{"ab\x1f", ""},
		{"", ""},
		{"#!/bin/sh\n", ""},
	} {
		if got := DetectFormat([]byte(tc.head), formats); got != tc.want {
			t.Errorf("DetectFormat(%q) = %q, want %q", tc.head, got, tc.want)
		}
	}
}

func TestExitCodeFor(t *testing.T) {
	for e, want := range map[wire.Errno]int{wire.ENOENT: 127, wire.EACCES: 126, wire.EPERM: 126, wire.EPROTO: 126, 999: 126} {
		if got := ExitCodeFor(e); got != want {
			t.Errorf("ExitCodeFor(%d) = %d, want %d", e, got, want)
		}
	}
}

func TestBinfmtRules(t *testing.T) {
	rules, err := BinfmtRules(DefaultInterpreter, false)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		":lab-pe:M::MZ::/usr/local/lib/lab/interop:POF",
		`:lab-host:M::#!lab-host\x0a::/usr/local/lib/lab/interop:POF`,
	}
	if !reflect.DeepEqual(rules, want) {
		t.Fatalf("got %q", rules)
	}
	for _, bad := range []string{"interop", "/a:b", "/" + string(make([]byte, 127))} {
		if _, err := BinfmtRules(bad, true); err == nil {
			t.Errorf("BinfmtRules(%q) accepted", bad)
		}
	}
}
