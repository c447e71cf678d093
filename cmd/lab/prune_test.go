package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"lab/internal/labtest"
	"lab/internal/labtest/imagetest"
	"lab/machine"
)

// TestImagePrune: lab image prune [--dry-run] prints what machine.FindUnused found, removes
// it without --dry-run, and says when there is nothing.
func TestImagePrune(t *testing.T) {
	_, _, cache := labtest.TempXDG(t)
	img := func(k string) string { return filepath.Join(cache, "images", k) }
	imagetest.Fake(t, img("old"), "openssh", time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC))
	imagetest.Fake(t, img("new"), "openssh", time.Date(2026, 12, 3, 0, 0, 0, 0, time.UTC))
	ctx := context.Background()
	items, err := machine.FindUnused(ctx, cache)
	if err != nil {
		t.Fatal(err)
	}
	if len(items) != 1 || items[0].Path != img("old") {
		t.Fatalf("unused: %+v, want images/old", items)
	}
	var out bytes.Buffer
	if err := prune(ctx, &out, cache, items, true); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("image     %8s  %s (built 2026-12-01; new is newer)\nwould free %s (lab image prune without --dry-run removes them)\n",
		humanBytes(items[0].Bytes), img("old"), humanBytes(items[0].Bytes))
	if out.String() != want {
		t.Errorf("--dry-run printed:\n%s\nwant:\n%s", out.String(), want)
	}
	if _, err := os.Stat(img("old")); err != nil {
		t.Errorf("--dry-run removed images/old: %v", err)
	}
	out.Reset()
	if err := prune(ctx, &out, cache, items, false); err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(out.String(), "\nfreed "+humanBytes(items[0].Bytes)+"\n") {
		t.Errorf("prune printed:\n%s", out.String())
	}
	if _, err := os.Stat(img("old")); !os.IsNotExist(err) {
		t.Errorf("prune left images/old: %v", err)
	}
	if _, err := os.Stat(img("new")); err != nil {
		t.Errorf("prune removed images/new: %v", err)
	}
	out.Reset()
	prune(ctx, &out, cache, nil, false)
	if out.String() != "nothing to prune in "+cache+"\n" {
		t.Errorf("an empty prune printed %q", out.String())
	}
}
