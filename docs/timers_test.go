// Package docs holds tests that keep docs/DESIGN.md true to the code.
package docs

import (
	"bufio"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// fixtures are programs lab runs as test fixtures in a guest or under Wine, not lab's code:
// their sleeps are what they are for.
var fixtures = []string{
	"scenarios/internal/labidle",
	"scenarios/internal/labfix",
	"pefixtures/internal/src",
	"vhostvsock/internal/guestprog",
}

// timerCalls are the waits on a timer: calls of these functions of package time.
var timerCalls = []string{"Sleep", "NewTicker", "Tick", "After"}

// TestTimersDocumented: every wait on a timer in lab's non-test code is listed in
// DESIGN.md's "What still waits on a timer, and why" with its file and function, and every
// row there still exists. A new polling loop fails here until it is either made
// event-driven or justified in that table.
func TestTimersDocumented(t *testing.T) {
	inCode := map[string][]string{} // "file function" → positions
	err := filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel("..", path)
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			if rel != "." && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata" || slices.Contains(fixtures, rel)) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(rel, ".go") || strings.HasSuffix(rel, "_test.go") {
			return nil
		}
		fset := token.NewFileSet()
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		for _, decl := range f.Decls {
			fn, ok := decl.(*ast.FuncDecl)
			if !ok || fn.Body == nil {
				continue
			}
			ast.Inspect(fn.Body, func(n ast.Node) bool {
				call, ok := n.(*ast.CallExpr)
				if !ok {
					return true
				}
				sel, ok := call.Fun.(*ast.SelectorExpr)
				if !ok {
					return true
				}
				if pkg, ok := sel.X.(*ast.Ident); ok && pkg.Name == "time" && slices.Contains(timerCalls, sel.Sel.Name) {
					key := rel + " " + fn.Name.Name
					inCode[key] = append(inCode[key], fset.Position(call.Pos()).String())
				}
				return true
			})
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(inCode) == 0 {
		t.Fatal("no timer found in the code: the walk is broken")
	}
	inDoc := documented(t)
	for key, pos := range inCode {
		if !inDoc[key] {
			t.Errorf("%s waits on a timer (%s) but is not in DESIGN.md's \"What still waits on a timer, and why\": make it wait for an event, or add a row saying why it cannot", key, strings.Join(pos, ", "))
		}
	}
	for key := range inDoc {
		if inCode[key] == nil {
			t.Errorf("DESIGN.md's timer table lists %s, which has no timer any more: remove the row", key)
		}
	}
}

// documented reads the table's rows: "| `FILE` | `FUNCTION` | ...".
func documented(t *testing.T) map[string]bool {
	f, err := os.Open("DESIGN.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	row := regexp.MustCompile("^\\s*\\| `([^`]+\\.go)` \\| `([^`]+)` \\|")
	rows := map[string]bool{}
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.Contains(line, "**What still waits on a timer, and why.**") {
			in = true
			continue
		}
		if !in {
			continue
		}
		if m := row.FindStringSubmatch(line); m != nil {
			rows[m[1]+" "+m[2]] = true
		} else if len(rows) > 0 && !strings.HasPrefix(strings.TrimSpace(line), "|") {
			break // the table ended
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(rows) == 0 {
		t.Fatal("DESIGN.md has no \"What still waits on a timer, and why\" table")
	}
	return rows
}
