// Package scenarios runs lab's interop scenarios: txtar files, each one behaviour, whose
// script drives a lab machine (the guest over SSH, the relay, the exposed commands) and
// checks what the guest and the host see. The built-in ones are in testdata (embedded);
// users run their own with lab run --scenarios DIR. The package holds the engine (Run),
// the scenario commands and conditions (Commands, Conditions: testdata/README.md and lab
// help scenarios are generated from them), reports and shards, and the fixture programs.
//
// # The engine: testscript, driven outside go test
//
// The script language is github.com/rogpeppe/go-internal/testscript's, and lab users
// write scenario files in it. Run drives testscript through testscript.RunT, the entry
// point testscript provides for running "outside of go test": RunT takes the T interface
// (Skip, Fatal, Parallel, Log, FailNow, Run, Verbose) instead of *testing.T. scriptT
// implements it as testing.T does: each scenario runs in its own goroutine, FailNow and
// Skip end that goroutine with runtime.Goexit (testscript relies on them not returning,
// and its deferred cleanups, such as killing background commands, still run), and Run
// waits for it and records the result. Scenarios run one at a time (Parallel does nothing):
// they share one guest and some change it.
//
// rsc.io/script (v0.0.2, the engine of the go command's own tests, built for embedding)
// was evaluated as a replacement and not taken, because it does not keep the language: run
// on it, users' scenario files would change meaning or stop working, several of the
// built-in ones among them. Measured differences:
//   - ${VAR@R} (a variable quoted for a regexp) expands to the empty string, without an
//     error: os.Expand looks up a variable named "VAR@R". Five built-in scenarios use it
//     (stdout '^'${SHARE@R}'/cwd/sub$' becomes stdout '^/cwd/sub$' and fails; under ! it
//     would pass for the wrong reason).
//   - The other way round, every variable in a regexp argument is quoted: stdout $PAT
//     with PAT=^hel+o$ matches the text `^hel+o$`, not hello.
//   - No stdin command (exec has no standard input at all), no kill, no named background
//     commands (&name&): "unknown command".
//   - Conditions: [linux], [amd64] are [GOOS:linux], [GOARCH:amd64] there; [exec:PROG] and
//     [short] exist only in its scripttest package (which reads go test's flags), [net] and
//     [go1.N] not at all: "unknown condition". lab help scenarios documents all of these.
//
// Supporting the same files on rsc.io/script would mean re-implementing those parts of
// testscript over it (its own stdout, stderr, grep and exec, the expansion rules), that is,
// maintaining a fork of the language; the fake T, with the result bookkeeping, is under a
// hundred lines.
package scenarios
