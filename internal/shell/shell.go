// Package shell quotes words for a POSIX shell: the guest's /bin/sh (provisioning scripts,
// lab exec, the scenario engine) and the host's (Wine's opener script, QEMU command lines in
// logs). It is the one quoting rule lab uses, so what lab shows a person is what it runs.
package shell

import "strings"

// Quote returns s as one single-quoted shell word: the shell reads it back as s, whatever
// s holds (spaces, $, quotes, newlines).
func Quote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// Join renders argv as a command line the shell splits back into argv; words made only of
// characters the shell takes literally stay bare, so a logged command reads as typed.
func Join(argv []string) string {
	var b strings.Builder
	for i, a := range argv {
		if i > 0 {
			b.WriteByte(' ')
		}
		if bare(a) {
			b.WriteString(a)
		} else {
			b.WriteString(Quote(a))
		}
	}
	return b.String()
}

// bare reports whether a is a non-empty word the shell reads literally.
func bare(a string) bool {
	return a != "" && strings.IndexFunc(a, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./:=,@%+", r))
	}) < 0
}
