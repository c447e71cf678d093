package wineprefix

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"lab/internal/fsutil"
)

// ensureTemplate returns the template prefix for this Wine version, creating it under
// cache/wine-template when it is missing or was made by another Wine version. An flock on
// cache/wine-template.lock serialises concurrent callers (several test packages, several VMs).
func ensureTemplate(ctx context.Context, cache, loader, server, version string, prog io.Writer) (string, error) {
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return "", fmt.Errorf("wineprefix: %w", err)
	}
	dir := filepath.Join(cache, templateDir)
	lock, err := fsutil.LockFile(ctx, dir+".lock")
	if err != nil {
		return "", fmt.Errorf("wineprefix: %w", err)
	}
	defer lock.Unlock()
	if s, ok := readStamp(filepath.Join(dir, templateStamp)); ok && s.WineVersion == version {
		return dir, nil
	}
	progress(prog, "wine: creating the prefix template in %s (%s; about 10 s, once per Wine version)", dir, version)
	start := time.Now()
	tmp := dir + ".tmp"
	if err := os.RemoveAll(tmp); err != nil {
		return "", fmt.Errorf("wineprefix: %w", err)
	}
	if err := os.Mkdir(tmp, 0o755); err != nil {
		return "", fmt.Errorf("wineprefix: %w", err)
	}
	// wineboot -i returns while the services it started still write the registry; wait for
	// the server to exit by itself (it saves the registry then) rather than killing it.
	if err := internal(ctx, tmp, loader, "wineboot", "-i"); err != nil {
		_ = internal(context.Background(), tmp, server, "-k")
		return "", err
	}
	if err := internal(ctx, tmp, server, "-w"); err != nil {
		return "", err
	}
	if _, err := os.Stat(filepath.Join(tmp, "drive_c", "windows", "system32")); err != nil {
		return "", fmt.Errorf("wineprefix: wineboot -i made no prefix in %s: %w", tmp, err)
	}
	if err := cleanServerDir(tmp); err != nil {
		return "", err
	}
	os.Remove(filepath.Join(tmp, serverFile)) // each copy gets its own server directory
	if err := writeStamp(filepath.Join(tmp, templateStamp), version); err != nil {
		return "", err
	}
	if err := os.RemoveAll(dir); err != nil {
		return "", fmt.Errorf("wineprefix: %w", err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		return "", fmt.Errorf("wineprefix: %w", err)
	}
	progress(prog, "wine: template ready in %.1fs", time.Since(start).Seconds())
	return dir, nil
}

// UnusedTemplates lists the template dirs under cache that no Ensure would copy: the
// template of a Wine version other than the installed one (every one when Wine is not
// installed), and what an interrupted template build left (wine-template.tmp, when no
// build holds the lock). lab image prune removes them.
func UnusedTemplates(ctx context.Context, cache string) []string {
	var out []string
	dir := filepath.Join(cache, templateDir)
	if s, ok := readStamp(filepath.Join(dir, templateStamp)); ok {
		version := ""
		if loader, _, err := Find(Options{}); err == nil {
			version, _ = wineVersion(ctx, loader)
		}
		if s.WineVersion != version {
			out = append(out, dir)
		}
	}
	if _, err := os.Stat(dir + ".tmp"); err == nil {
		out = append(out, dir+".tmp")
	}
	return out
}

// RemoveTemplates removes what UnusedTemplates found, under the template lock (a template
// build in progress is waited for, and its wine-template.tmp is then gone or complete).
func RemoveTemplates(ctx context.Context, cache string, dirs []string) error {
	lock, err := fsutil.LockFile(ctx, filepath.Join(cache, templateDir)+".lock")
	if err != nil {
		return fmt.Errorf("wineprefix: %w", err)
	}
	defer lock.Unlock()
	for _, d := range dirs {
		if err := os.RemoveAll(d); err != nil {
			return fmt.Errorf("wineprefix: %w", err)
		}
	}
	return nil
}

// lockFile takes the exclusive lock on path (fsutil.LockFile) and returns its release.
func lockFile(ctx context.Context, path string) (func(), error) {
	l, err := fsutil.LockFile(ctx, path)
	if err != nil {
		return nil, fmt.Errorf("wineprefix: %w", err)
	}
	return func() { l.Unlock() }, nil
}
