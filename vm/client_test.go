package vm

import (
	"bytes"
	"testing"
)

// groupFinder strips the wrapper's first stderr line however the stream is cut, and
// passes anything else through untouched.
func TestGroupFinder(t *testing.T) {
	tests := []struct {
		name    string
		chunks  []string
		pgid    int
		wantErr string
	}{
		{"one write", []string{"lab-exec-pgid 155\nerr\n"}, 155, "err\n"},
		{"split line", []string{"lab-exec", "-pgid 15", "5\n", "err\n"}, 155, "err\n"},
		{"line alone", []string{"lab-exec-pgid 9\n"}, 9, ""},
		{"not the marker", []string{"sh: printf: not found\nmore\n"}, 0, "sh: printf: not found\nmore\n"},
		{"bad number", []string{"lab-exec-pgid x\n"}, 0, "lab-exec-pgid x\n"},
		{"pgid 1 refused", []string{"lab-exec-pgid 1\n"}, 0, "lab-exec-pgid 1\n"},
		{"long first line", []string{string(bytes.Repeat([]byte("e"), 100))}, 0, string(bytes.Repeat([]byte("e"), 100))},
		{"unterminated", []string{"lab-exec-pg"}, 0, "lab-exec-pg"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			g := &groupFinder{w: &out, found: make(chan struct{})}
			for _, c := range tt.chunks {
				if n, err := g.Write([]byte(c)); n != len(c) || err != nil {
					t.Fatalf("Write(%q) = %d, %v", c, n, err)
				}
			}
			g.flush()
			<-g.found
			if g.pgid != tt.pgid || out.String() != tt.wantErr {
				t.Errorf("pgid %d, stderr %q; want %d, %q", g.pgid, out.String(), tt.pgid, tt.wantErr)
			}
		})
	}
}
