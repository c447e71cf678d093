// Package xdg finds lab's own directories under the XDG base directories: the one place
// that reads XDG_STATE_HOME, XDG_CACHE_HOME and XDG_DATA_HOME.
//
// The XDG Base Directory spec says a relative path in these variables is invalid and must be
// ignored; every lab directory follows that rule here, so a stray relative value never puts
// VMs, images or Wine prefixes under whatever the current directory happens to be.
package xdg

import (
	"fmt"
	"os"
	"path/filepath"
)

// Kind is one of the base directories lab uses.
type Kind int

const (
	// State holds running VMs' state directories and the relay's Wine prefix
	// ($XDG_STATE_HOME, ~/.local/state).
	State Kind = iota
	// Cache holds rebuildable things: guest images, the Wine prefix template, PE fixtures
	// ($XDG_CACHE_HOME, ~/.cache).
	Cache
	// Data holds what lab down keeps: each VM's Wine prefix, its C: ($XDG_DATA_HOME,
	// ~/.local/share).
	Data
)

var kinds = [...]struct{ env, home string }{
	State: {"XDG_STATE_HOME", ".local/state"},
	Cache: {"XDG_CACHE_HOME", ".cache"},
	Data:  {"XDG_DATA_HOME", ".local/share"},
}

// Dir is lab's directory of kind k: $XDG_..._HOME/lab when that variable is an absolute
// path, else the spec's default under the home directory (~/.cache/lab for Cache).
func Dir(k Kind) (string, error) {
	kd := kinds[k]
	if d := os.Getenv(kd.env); filepath.IsAbs(d) {
		return filepath.Join(d, "lab"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("no %s directory for lab: set %s or HOME: %w", k, kd.env, err)
	}
	return filepath.Join(home, filepath.FromSlash(kd.home), "lab"), nil
}

func (k Kind) String() string {
	switch k {
	case State:
		return "state"
	case Cache:
		return "cache"
	case Data:
		return "data"
	}
	return fmt.Sprintf("xdg.Kind(%d)", int(k))
}
