package main

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"lab/internal/xdg"
	"lab/machine"
)

func newImagePruneCommand() *cobra.Command {
	var dryRun bool
	var cache string
	cmd := &cobra.Command{
		Use:   "prune",
		Short: "Remove cached images, kernels and templates nothing uses",
		Long: `prune removes from the cache ($XDG_CACHE_HOME/lab or ~/.cache/lab) what no
machine uses and lab would not use now:
  images      but the newest of each kind (SSH server, distro, arch) and any that
              a machine's instance.json or machine.json names, or that a machine's
              disk overlay is backed by
  kernels     unpacked for no kept image
  debs        downloaded packages no kept image lists
  Wine        the prefix template of a Wine version other than the installed one
  fixtures    Windows programs built by another version of lab
  leftovers   of builds interrupted over an hour ago
--dry-run lists them with their sizes and removes nothing. Machines' data (Wine
prefixes, disks) is not touched: lab list shows it, lab delete removes it.`,
		Example: `  lab image prune --dry-run
  lab image prune`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if cache == "" {
				var err error
				if cache, err = xdg.Dir(xdg.Cache); err != nil {
					return err
				}
			}
			items, err := machine.FindUnused(cmd.Context(), cache)
			if err != nil {
				return err
			}
			return prune(cmd.Context(), cmd.OutOrStdout(), cache, items, dryRun)
		},
	}
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "list what would be removed, with sizes; remove nothing")
	cmd.Flags().StringVar(&cache, "cache-dir", "", "cache directory (default $XDG_CACHE_HOME/lab or ~/.cache/lab)")
	return cmd
}

// prune prints the items and, unless dryRun, removes them.
func prune(ctx context.Context, w io.Writer, cache string, items []machine.Unused, dryRun bool) error {
	var total int64
	for _, it := range items {
		total += it.Bytes
		fmt.Fprintf(w, "%-9s %8s  %s (%s)\n", it.Kind, humanBytes(it.Bytes), it.Path, it.Why)
	}
	switch {
	case len(items) == 0:
		fmt.Fprintf(w, "nothing to prune in %s\n", cache)
		return nil
	case dryRun:
		fmt.Fprintf(w, "would free %s (lab image prune without --dry-run removes them)\n", humanBytes(total))
		return nil
	}
	if err := machine.RemoveUnused(ctx, cache, items); err != nil {
		return err
	}
	fmt.Fprintf(w, "freed %s\n", humanBytes(total))
	return nil
}
