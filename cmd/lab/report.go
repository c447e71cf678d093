package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"lab/scenarios"
)

func newReportCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "report",
		Short: "Work with lab run's reports (merge the shards of a CI run)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return &usageError{errors.New("report: name a subcommand (lab report merge)")}
		},
	}
	cmd.AddCommand(newReportMergeCommand())
	return cmd
}

func newReportMergeCommand() *cobra.Command {
	var junit, jsonFile string
	cmd := &cobra.Command{
		Use:   "merge REPORT.json... [--junit FILE] [--json FILE]",
		Short: "Combine the --json reports of every shard into one report and summary",
		Long: `merge reads the JSON reports of the shards of one suite (lab run --shard K/N
--json, one per runner), checks that they are every shard of the same suite with
no scenario twice, and prints the summary table of the whole suite; --junit FILE
and --json FILE write the merged report as JUnit XML and JSON (the JSON is what
lab run --durations reads to balance the next run's shards).

Exit status: 0 when no scenario failed, 1 when one did or the reports do not fit
together (a shard missing or given twice, a scenario in two shards, shards of
different suites or shard counts).`,
		Example: `  lab report merge shard-*.json --junit report.xml --json report.json`,
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var reps []*scenarios.Report
			for _, f := range args {
				r, err := scenarios.ReadJSONFile(f)
				if err != nil {
					return err
				}
				reps = append(reps, r)
			}
			m, err := scenarios.Merge(args, reps)
			if err != nil {
				return err
			}
			if jsonFile != "" {
				if err := writeFile(jsonFile, m.WriteJSON); err != nil {
					return err
				}
			}
			return writeReport(cmd.OutOrStdout(), m, false, false, junit)
		},
	}
	cmd.Flags().StringVar(&junit, "junit", "", "write the merged report as JUnit XML to FILE")
	cmd.Flags().StringVar(&jsonFile, "json", "", "write the merged report as JSON to FILE")
	return cmd
}

// writeFile creates file and writes it with write.
func writeFile(file string, write func(io.Writer) error) error {
	f, err := os.Create(file)
	if err != nil {
		return fmt.Errorf("report: %w", err)
	}
	if err := errors.Join(write(f), f.Close()); err != nil {
		return fmt.Errorf("report: %s: %w", file, err)
	}
	return nil
}
