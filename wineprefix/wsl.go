package wineprefix

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"unicode/utf16"

	"lab/internal/fsutil"
	"lab/internal/shell"
)

// wslAliases are the names WSL users and tools hard-code (`/mnt/c/Windows/System32/cmd.exe`,
// `/mnt/c/Users/NAME`) as relative symlinks to Wine's lowercase directories, path inside
// drive_c -> target. Wine's loader opens drive_c/windows/system32 by its exact Unix name
// (renaming the directories to WSL's casing made every program fail with "could not load
// kernel32.dll"), so the real directories keep Wine's names and the aliases sit beside
// them. Wine lists both (`dir C:\` shows users, Users, windows, Windows); see DESIGN.md.
var wslAliases = [][2]string{
	{"Windows", "windows"},
	{"Users", "users"},
	{"windows/System32", "system32"},
}

// OpenedLog is where, relative to drive_c, lab's opener records every URL or file that a
// Windows program asked the host to open (`cmd.exe /c start URL`, `explorer.exe URL`): the
// guest reads it as /mnt/c/ProgramData/lab/opened.txt.
const OpenedLog = "ProgramData/lab/opened.txt"

// OpenerName is lab's opener script, in the prefix directory (outside drive_c, so the guest
// cannot rewrite what the host runs). Wine's winebrowser runs it as `lab-open TARGET...`;
// the relay runs it as `lab-open --explorer RECORD OPEN` for the guest's `explorer.exe
// TARGET` (Wine's explorer.exe hangs on a directory when headless): it records RECORD (the
// Windows path, or the URL), opens OPEN (the host path, or the URL) and exits 1, as WSL's
// explorer.exe always does (microsoft/WSL#6565).
const OpenerName = "lab-open"

// layout adds WSL's aliases to drive_c and installs programs (system32 file name -> host
// file) into drive_c/windows/system32, rewriting a file only when its content differs.
func layout(dir string, programs map[string]string) error {
	driveC := filepath.Join(dir, "drive_c")
	for _, a := range wslAliases {
		link := filepath.Join(driveC, filepath.FromSlash(a[0]))
		if _, err := os.Lstat(link); err == nil {
			continue
		} else if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("wineprefix: %w", err)
		}
		if err := os.Symlink(a[1], link); err != nil {
			return fmt.Errorf("wineprefix: WSL's drive layout: %w", err)
		}
	}
	sys32 := filepath.Join(driveC, "windows", "system32")
	for name, src := range programs {
		if name != filepath.Base(name) || !strings.HasSuffix(strings.ToLower(name), ".exe") {
			return fmt.Errorf("wineprefix: program name %q: want a file name ending in .exe", name)
		}
		b, err := os.ReadFile(src)
		if err != nil {
			return fmt.Errorf("wineprefix: install %s: %w", name, err)
		}
		dst := filepath.Join(sys32, name)
		if old, err := os.ReadFile(dst); err == nil && bytes.Equal(old, b) {
			continue
		}
		if err := fsutil.WriteFile(dst, b, 0o755); err != nil {
			return fmt.Errorf("wineprefix: install %s: %w", name, err)
		}
	}
	return nil
}

// openerScript is the Unix program Wine's winebrowser runs for `start URL`, `explorer.exe
// URL` and anything else ShellExecute hands to it: it records the target in OpenedLog (so a
// headless test can assert it) and, when the process that warmed the prefix had a desktop
// (DISPLAY or WAYLAND_DISPLAY), opens it with the host's xdg-open.
func openerScript(driveC, display, wayland string) string {
	return "#!/bin/sh\n" +
		"# lab's opener for Windows programs (Wine's HKCU\\Software\\Wine\\WineBrowser Browsers),\n" +
		"# and for the relay's explorer.exe TARGET: lab-open --explorer RECORD OPEN (exits 1 as WSL's explorer.exe).\n" +
		"log=" + shell.Quote(filepath.Join(driveC, filepath.FromSlash(OpenedLog))) + "\n" +
		"status=0\n" +
		"if [ \"$1\" = --explorer ] && [ $# -eq 3 ]; then\n" +
		"\tstatus=1 rec=$2\n\tshift 2\nelse\n\trec=$*\nfi\n" +
		"mkdir -p \"${log%/*}\" && printf '%s\\n' \"$rec\" >>\"$log\"\n" +
		"# Bounded: the prefix is kept for good; past 1000 records keep the newest 500.\n" +
		"[ \"$(wc -l <\"$log\")\" -le 1000 ] || { tail -n 500 \"$log\" >\"$log.tmp\" && mv \"$log.tmp\" \"$log\"; }\n" +
		"DISPLAY=" + shell.Quote(display) + " WAYLAND_DISPLAY=" + shell.Quote(wayland) + "\n" +
		"if [ -n \"$DISPLAY$WAYLAND_DISPLAY\" ] && command -v xdg-open >/dev/null 2>&1; then\n" +
		"\texport DISPLAY WAYLAND_DISPLAY\n\txdg-open \"$@\" </dev/null >/dev/null 2>&1\nfi\n" +
		"exit $status\n"
}

// writeOpener writes the opener script into the prefix and returns its path.
func (p *Prefix) writeOpener() (string, error) {
	path := filepath.Join(p.Dir, OpenerName)
	if strings.Contains(path, ",") {
		// Browsers is a comma-separated list.
		return "", fmt.Errorf("wineprefix: the prefix path %s contains a comma, which Wine's Browsers setting cannot hold", p.Dir)
	}
	script := openerScript(p.DriveC(), os.Getenv("DISPLAY"), os.Getenv("WAYLAND_DISPLAY"))
	if old, err := os.ReadFile(path); err != nil || string(old) != script {
		if err := fsutil.WriteFile(path, []byte(script), 0o755); err != nil {
			return "", fmt.Errorf("wineprefix: %w", err)
		}
	}
	return path, nil
}

// regFileContent is a .reg file (version 5.00: UTF-16LE with a byte order mark) setting
// string values: key -> value name -> data.
func regFileContent(vals map[string]map[string]string) []byte {
	esc := strings.NewReplacer(`\`, `\\`, `"`, `\"`)
	var b strings.Builder
	b.WriteString("Windows Registry Editor Version 5.00\r\n")
	keys := make([]string, 0, len(vals))
	for k := range vals {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		b.WriteString("\r\n[" + k + "]\r\n")
		names := make([]string, 0, len(vals[k]))
		for n := range vals[k] {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			b.WriteString(`"` + esc.Replace(n) + `"="` + esc.Replace(vals[k][n]) + "\"\r\n")
		}
	}
	u := utf16.Encode([]rune(b.String()))
	out := make([]byte, 2, 2+2*len(u))
	out[0], out[1] = 0xFF, 0xFE
	for _, c := range u {
		out = append(out, byte(c), byte(c>>8))
	}
	return out
}
