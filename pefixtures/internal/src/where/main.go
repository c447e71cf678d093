// Command where is lab's where.exe (Wine 8's prints nothing and exits 0): it prints the full
// Windows path of every file matching each pattern in the current directory and then in each
// PATH directory, trying the pattern as given and with each PATHEXT extension, as Windows'
// where.exe does. Patterns may hold * and ?, and take Windows' `dir;dir:pattern` and
// `$VAR:pattern` forms; /R DIR searches DIR recursively instead, /Q prints nothing, /F quotes.
// Exit status: 0 when every pattern matched, 1 with Windows' INFO line when one did not, 2 on
// a bad option.
package main

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

const notFound = "INFO: Could not find files for the given pattern(s)."

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	var quiet, quote bool
	var root string
	var patterns []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if len(a) < 2 || (a[0] != '/' && a[0] != '-') {
			patterns = append(patterns, a)
			continue
		}
		switch strings.ToUpper(a[1:]) {
		case "?":
			fmt.Print("WHERE [/R dir] [/Q] [/F] pattern...\r\n\r\n" +
				"Displays the location of files that match the search pattern: the current directory,\r\n" +
				"then the PATH directories, with the PATHEXT extensions (lab's where.exe).\r\n")
			return 0
		case "Q":
			quiet = true
		case "F":
			quote = true
		case "R":
			if i+1 >= len(args) {
				return bad(a)
			}
			i++
			root = args[i]
		default:
			return bad(a)
		}
	}
	if len(patterns) == 0 {
		fmt.Fprint(os.Stderr, "ERROR: A search pattern must be specified.\r\nType \"WHERE /?\" for usage.\r\n")
		return 2
	}
	exts := []string{""}
	for _, e := range strings.Split(os.Getenv("PATHEXT"), ";") {
		if e != "" {
			exts = append(exts, e)
		}
	}
	status := 0
	seen := map[string]bool{}
	for _, p := range patterns {
		found := false
		for _, f := range search(p, root, exts) {
			found = true
			if seen[strings.ToLower(f)] {
				continue
			}
			seen[strings.ToLower(f)] = true
			if quote {
				f = `"` + f + `"`
			}
			if !quiet {
				fmt.Print(f + "\r\n")
			}
		}
		if !found {
			status = 1
		}
	}
	if status != 0 && !quiet {
		fmt.Fprint(os.Stderr, notFound+"\r\n")
	}
	return status
}

func bad(opt string) int {
	fmt.Fprintf(os.Stderr, "ERROR: Invalid argument or option - '%s'.\r\nType \"WHERE /?\" for usage.\r\n", opt)
	return 2
}

// search returns the files matching pattern, in Windows' order: /R's tree, or the pattern's
// own directory list, or the current directory followed by PATH.
func search(pattern, root string, exts []string) []string {
	var dirs []string
	if i := strings.LastIndex(pattern, ":"); i > 1 && root == "" {
		// `dir;dir:pattern` or `$VAR:pattern` (a drive letter's colon is at index 1).
		list := pattern[:i]
		pattern = pattern[i+1:]
		if strings.HasPrefix(list, "$") {
			list = os.Getenv(list[1:])
		}
		dirs = strings.Split(list, ";")
	} else if root == "" {
		cwd, _ := os.Getwd()
		dirs = append([]string{cwd}, strings.Split(os.Getenv("PATH"), ";")...)
	}
	var out []string
	if root != "" {
		filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				out = append(out, matches(p, pattern, exts)...)
			}
			return nil
		})
		return out
	}
	for _, d := range dirs {
		if d = strings.Trim(d, `"`); d != "" {
			out = append(out, matches(d, pattern, exts)...)
		}
	}
	return out
}

// matches lists dir's regular files whose name matches pattern (case-insensitively, as the
// Windows file system compares) as is or with one of exts appended, as dir\name.
func matches(dir, pattern string, exts []string) []string {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var out []string
	for _, ext := range exts {
		want := strings.ToLower(pattern + ext)
		for _, e := range ents {
			if ok, _ := filepath.Match(want, strings.ToLower(e.Name())); !ok {
				continue
			}
			if fi, err := os.Stat(filepath.Join(dir, e.Name())); err != nil || fi.IsDir() {
				continue
			}
			out = append(out, strings.TrimSuffix(dir, `\`)+`\`+e.Name())
		}
	}
	return out
}
