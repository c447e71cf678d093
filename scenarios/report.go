package scenarios

import (
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// writeFailure prints what a person needs to see of a failing scenario: the log of the
// failing phase (the command, its output, the FAIL line with expected vs got), then the
// relay's and the guest's log lines.
func writeFailure(w io.Writer, r Result) {
	writeLines(w, "", "     | ", splitLines(strings.TrimRight(r.Log, "\n")))
	writeLines(w, "     relay log:", "     | ", r.RelayLog)
	writeLines(w, "     guest log (dmesg):", "     | ", r.GuestLog)
}

// writeLines writes lines, each after prefix, under heading (none when it is ""); nothing
// when there are none.
func writeLines(w io.Writer, heading, prefix string, lines []string) {
	if len(lines) == 0 {
		return
	}
	if heading != "" {
		fmt.Fprintln(w, heading)
	}
	for _, l := range lines {
		fmt.Fprintf(w, "%s%s\n", prefix, l)
	}
}

// WriteTable prints the summary table: one row per scenario, then the totals.
func (r *Report) WriteTable(w io.Writer) error {
	width := len("SCENARIO")
	for _, x := range r.Results {
		width = max(width, len(x.Name))
	}
	if r.Machine != nil {
		fmt.Fprintf(w, "machine %s\n", r.Machine)
	}
	fmt.Fprintf(w, "%-*s  %-6s %8s  %s\n", width, "SCENARIO", "RESULT", "TIME", "BEHAVIOUR")
	for _, x := range r.Results {
		fmt.Fprintf(w, "%-*s  %-6s %7.1fs  %s\n", width, x.Name, strings.ToUpper(string(x.Status)), x.Duration.Seconds(), x.Summary)
	}
	p, f, s := r.Counts()
	_, err := fmt.Fprintf(w, "%d passed, %d failed, %d skipped in %.1fs\n", p, f, s, r.Duration.Seconds())
	return err
}

// WriteTAP writes TAP version 13: "ok N - name", "not ok N - name" with the log as a
// YAML block, "# SKIP reason" for skips.
func (r *Report) WriteTAP(w io.Writer) error {
	fmt.Fprintf(w, "TAP version 13\n1..%d\n", len(r.Results))
	if r.Machine != nil {
		fmt.Fprintf(w, "# machine %s\n", r.Machine)
	}
	for i, x := range r.Results {
		switch x.Status {
		case Pass:
			fmt.Fprintf(w, "ok %d - %s\n", i+1, x.Name)
		case Skip:
			fmt.Fprintf(w, "ok %d - %s # SKIP %s\n", i+1, x.Name, oneLine(lastLine(x.Log)))
		default:
			fmt.Fprintf(w, "not ok %d - %s\n  ---\n  duration_ms: %d\n  log: |\n", i+1, x.Name, x.Duration.Milliseconds())
			writeLines(w, "", "    ", splitLines(x.Log))
			writeLines(w, "  relay_log: |", "    ", x.RelayLog)
			writeLines(w, "  guest_log: |", "    ", x.GuestLog)
			fmt.Fprintf(w, "  ...\n")
		}
	}
	return nil
}

func lastLine(s string) string {
	l := splitLines(s)
	if len(l) == 0 {
		return ""
	}
	return l[len(l)-1]
}

func oneLine(s string) string { return strings.ReplaceAll(s, "\n", " ") }

type junitSuites struct {
	XMLName xml.Name     `xml:"testsuites"`
	Suites  []junitSuite `xml:"testsuite"`
}

type junitSuite struct {
	Name      string      `xml:"name,attr"`
	Tests     int         `xml:"tests,attr"`
	Failures  int         `xml:"failures,attr"`
	Skipped   int         `xml:"skipped,attr"`
	Time      string      `xml:"time,attr"`
	Timestamp string      `xml:"timestamp,attr"`
	Cases     []junitCase `xml:"testcase"`
}

// junitCase carries what CI UIs show: the file and line (GitLab, GitHub annotators read
// file/line), the time, the failure (message FILE:LINE: reason, type the failing
// command, body the failing phase with expected vs got), the relay's and the guest's
// log lines as system-out, and the behaviour as a property.
type junitCase struct {
	Name       string        `xml:"name,attr"`
	Classname  string        `xml:"classname,attr"`
	File       string        `xml:"file,attr,omitempty"`
	Line       int           `xml:"line,attr,omitempty"`
	Time       string        `xml:"time,attr"`
	Properties *junitProps   `xml:"properties,omitempty"`
	Failure    *junitFailure `xml:"failure,omitempty"`
	Skipped    *junitMessage `xml:"skipped,omitempty"`
	SystemOut  *junitCDATA   `xml:"system-out,omitempty"`
}

type junitCDATA struct {
	Text string `xml:",cdata"`
}

type junitProps struct {
	Props []junitProp `xml:"property"`
}

type junitProp struct {
	Name  string `xml:"name,attr"`
	Value string `xml:"value,attr"`
}

type junitFailure struct {
	Message string `xml:"message,attr"`
	Type    string `xml:"type,attr,omitempty"`
	Body    string `xml:",cdata"`
}

type junitMessage struct {
	Message string `xml:"message,attr"`
	Body    string `xml:",chardata"`
}

// WriteJUnit writes the JUnit XML that CI systems read.
func (r *Report) WriteJUnit(w io.Writer) error {
	p, f, s := r.Counts()
	name := "lab scenarios"
	if r.Shard != nil {
		name += " (shard " + r.Shard.String() + ")"
	}
	if r.Machine != nil {
		name += " on " + r.Machine.String()
	}
	suite := junitSuite{
		Name: name, Tests: p + f + s, Failures: f, Skipped: s,
		Time: secs(r.Duration), Timestamp: r.Start.UTC().Format(time.RFC3339),
	}
	for _, x := range r.Results {
		c := junitCase{Name: x.Name, Classname: "lab.scenarios", File: x.File, Time: secs(x.Duration)}
		if x.Summary != "" {
			c.Properties = &junitProps{[]junitProp{{Name: "behaviour", Value: x.Summary}}}
		}
		switch x.Status {
		case Fail:
			fl := parseFailure(x.Log)
			c.Line = fl.Line
			c.Failure = &junitFailure{Message: fl.Message, Type: fl.Command, Body: strings.TrimRight(x.Log, "\n")}
			if out := systemOut(x); out != "" {
				c.SystemOut = &junitCDATA{out}
			}
		case Skip:
			c.Skipped = &junitMessage{Message: oneLine(lastLine(x.Log))}
		}
		suite.Cases = append(suite.Cases, c)
	}
	if _, err := io.WriteString(w, xml.Header); err != nil {
		return err
	}
	enc := xml.NewEncoder(w)
	enc.Indent("", "  ")
	if err := enc.Encode(junitSuites{Suites: []junitSuite{suite}}); err != nil {
		return err
	}
	_, err := io.WriteString(w, "\n")
	return err
}

// systemOut is the relay's and the guest's log lines of a failing scenario.
func systemOut(x Result) string {
	var b strings.Builder
	if len(x.RelayLog) > 0 {
		b.WriteString("relay log:\n" + strings.Join(x.RelayLog, "\n") + "\n")
	}
	if len(x.GuestLog) > 0 {
		b.WriteString("guest log (dmesg):\n" + strings.Join(x.GuestLog, "\n") + "\n")
	}
	return b.String()
}

// Failure is what a failing scenario's log says about where and why it failed.
type Failure struct {
	Message string // FILE:LINE: reason (testscript's FAIL line without "FAIL: ")
	Line    int    // the failing line of the scenario's file; 0 if unknown
	Command string // the failing command as written in the script
}

var failRE = regexp.MustCompile(`^FAIL: (.*):(\d+): (.*)$`)

// parseFailure finds the FAIL line of a log and the command it belongs to (the last
// "> " line before it).
func parseFailure(log string) Failure {
	fl := Failure{Message: "failed"}
	cmd := ""
	for _, l := range splitLines(log) {
		if c, ok := strings.CutPrefix(l, "> "); ok {
			cmd = c
			continue
		}
		if m := failRE.FindStringSubmatch(l); m != nil {
			fl.Message = strings.TrimPrefix(l, "FAIL: ")
			fl.Line, _ = strconv.Atoi(m[2])
			fl.Command = cmd
			return fl
		}
		if rest, ok := strings.CutPrefix(l, "FAIL: "); ok {
			fl.Message = rest
			fl.Command = cmd
			return fl
		}
	}
	return fl
}

func secs(d time.Duration) string { return fmt.Sprintf("%.3f", d.Seconds()) }

// WriteJSON writes the report as one JSON document.
func (r *Report) WriteJSON(w io.Writer) error {
	p, f, s := r.Counts()
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(struct {
		*Report
		Passed  int `json:"passed"`
		Failed  int `json:"failed"`
		Skipped int `json:"skipped"`
	}{r, p, f, s})
}
