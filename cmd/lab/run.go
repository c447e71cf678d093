package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"lab/machine"
	"lab/scenarios"
	"lab/scenarios/suite"
	"lab/vm"
)

func newRunCommand() *cobra.Command {
	var name, junit, interp, shard, durations, file string
	var tap, jsonOut, list, verbose, builtin bool
	var parallel int
	var dirs []string
	var isolated bool
	cmd := &cobra.Command{
		Use:   "run [PATTERN...] [--scenarios DIR]... [--builtin] [--shard K/N | --parallel N [-f lab.yaml]] [--durations REPORT] [--junit FILE] [--tap] [--json]",
		Short: "Run the interop scenarios in a running VM",
		Long: `run runs the scenario suite (one behaviour per scenario: streams, exit status,
signals, terminal, cwd, LABENV, labpath, interop off, relay errors, security, load)
in the guest over SSH, one scenario at a time, and prints a line per scenario and a
summary table; a failing scenario shows its command, expected vs got, and the
relay's and the guest's log lines. PATTERNs (globs or substrings) select scenarios.

--scenarios DIR (repeatable; a directory of *.txtar files or one FILE.txtar) runs
your own scenarios instead, written in the same language (lab help scenarios);
--builtin adds lab's. Every file is checked before the VM is touched: errors say
FILE:LINE.

Any VM from lab up will do: the suite builds its host fixtures (with the Go
toolchain) in the VM's scratch share (/mnt/lab, in its state directory) and exposes
them as host-* commands. A VM started with --no-scratch needs a writable --share.

--shard K/N runs part K of N of the selected scenarios, for N CI runners that each
have a VM: without --durations, round robin over the sorted names; with
--durations REPORT (an earlier lab run --json or lab report merge --json), greedy
longest-first by the recorded times. Every runner must select the same suite; the
shards' --json reports combine with lab report merge.

--parallel N boots N machines of its own (NAME-p1 ... NAME-pN, each as lab up
boots one, with its own scratch share; -f FILE boots them from a lab file), runs
shard K of N on machine K (with --durations, balanced by the recorded times), prints
one merged report and always takes the machines down again. The machines share the
one Windows side (Wine prefix) unless --isolated-windows gives each its own.

--tap and --json print that format on stdout instead of the table; --junit FILE
writes JUnit XML as well. Exit status: 0 when every selected scenario passed (or
was skipped), 1 when one failed.`,
		Example: `  lab run
  lab run stdin tty --tap
  lab run --junit report.xml
  lab run --scenarios ./scenarios --builtin
  lab run --shard 2/4 --durations last.json --json --junit shard2.xml > shard2.json
  lab run --parallel 2 --scenarios ./scenarios -f lab.yaml --junit report.xml`,
		RunE: func(cmd *cobra.Command, args []string) error {
			out := cmd.OutOrStdout()
			all, err := selectScenarios(dirs, builtin)
			if err != nil {
				return err
			}
			if tap && jsonOut {
				return &usageError{errors.New("run: choose one of --tap and --json")}
			}
			opts := scenarios.Options{Scenarios: all, Patterns: args, Verbose: verbose}
			if parallel != 0 && (shard != "" || parallel < 1 || parallel > 16) {
				return &usageError{errors.New("run: --parallel N wants 1 <= N <= 16, and no --shard")}
			}
			if file != "" && parallel == 0 {
				return &usageError{errors.New("run: -f goes with --parallel N (the machines it boots); a running VM is named by --name")}
			}
			if shard != "" {
				sh, err := scenarios.ParseShard(shard)
				if err != nil {
					return &usageError{err}
				}
				opts.Shard = &sh
			} else if durations != "" && parallel == 0 {
				return &usageError{errors.New("run: --durations goes with --shard K/N or --parallel N")}
			}
			if durations != "" {
				prev, err := scenarios.ReadJSONFile(durations)
				if err != nil {
					return err
				}
				opts.Durations = prev.Durations()
			}
			suiteNames, part := scenarios.Select(all, opts)
			if list {
				for _, s := range part {
					fmt.Fprintf(out, "%-24s %s\n", s.Name, s.Summary)
				}
				return nil
			}
			ctx := cmd.Context()
			if parallel > 0 {
				rep, err := runParallelCommand(ctx, cmd, parallelOptions{
					n: parallel, name: name, file: file, interp: interp, opts: opts, suite: len(suiteNames), isolated: isolated,
				})
				if err != nil {
					return err
				}
				return writeReport(out, rep, tap, jsonOut, junit)
			}
			if len(part) == 0 && len(suiteNames) > 0 {
				// More shards than scenarios: this runner has none to run, and its
				// (empty) report still counts for lab report merge.
				rep, err := scenarios.Run(ctx, scenarios.Env{}, opts)
				if err != nil {
					return err
				}
				return writeReport(out, rep, tap, jsonOut, junit)
			}
			m, err := machine.Open(name)
			if err != nil {
				return err
			}
			defer m.Close()
			progress := io.Writer(os.Stderr)
			env, err := suite.EnvOf(ctx, m, suite.Options{Interpreter: interp, Progress: progress})
			if err != nil {
				return err
			}
			opts.Progress = progress
			rep, err := scenarios.Run(ctx, env, opts)
			if err != nil {
				return err
			}
			return writeReport(out, rep, tap, jsonOut, junit)
		},
	}
	f := cmd.Flags()
	f.StringVar(&name, "name", vm.DefaultName, "VM name")
	f.StringVar(&junit, "junit", "", "also write a JUnit XML report to FILE")
	f.BoolVar(&tap, "tap", false, "print TAP on stdout")
	f.BoolVar(&jsonOut, "json", false, "print JSON on stdout")
	f.BoolVar(&list, "list", false, "list the scenarios (and their behaviour) without running them")
	f.BoolVar(&verbose, "verbose", false, "keep the full log of passing scenarios in the reports")
	f.StringVar(&interp, "interpreter", "", "lab-interop binary for the guest (default: next to lab)")
	f.StringVar(&shard, "shard", "", "run part K of N of the suite (K/N)")
	f.StringVar(&durations, "durations", "", "with --shard: balance the shards by the times in this JSON report")
	f.StringArrayVar(&dirs, "scenarios", nil, "run the scenarios in DIR (or one FILE.txtar); repeatable")
	f.BoolVar(&builtin, "builtin", false, "with --scenarios: run lab's built-in scenarios too")
	f.IntVar(&parallel, "parallel", 0, "boot N machines of its own, spread the scenarios over them, take them down")
	f.StringVarP(&file, "file", "f", "", "with --parallel: boot the machines from this lab file")
	f.BoolVar(&isolated, "isolated-windows", false, "with --parallel: a Wine prefix of each machine's own (default: all share one)")
	return cmd
}

// selectScenarios is the suite of a run: the user's files (checked now, before any VM
// work), lab's built-in scenarios when asked for or when no --scenarios is given.
func selectScenarios(dirs []string, builtin bool) ([]scenarios.Scenario, error) {
	var all []scenarios.Scenario
	if builtin || len(dirs) == 0 {
		b, err := scenarios.List()
		if err != nil {
			return nil, err
		}
		all = b
	}
	if len(dirs) > 0 {
		user, err := scenarios.Load(dirs)
		if err != nil {
			return nil, err
		}
		all = append(all, user...)
	}
	return all, nil
}

// newScenariosHelpTopic is `lab help scenarios` (a help topic: no Run).
func newScenariosHelpTopic() *cobra.Command {
	return &cobra.Command{
		Use:   "scenarios",
		Short: "The scenario language: commands, conditions, variables, a worked example",
		Long:  scenarios.HelpText(),
	}
}

// writeReport prints the report in the chosen format and maps failures to exit status 1.
func writeReport(out io.Writer, rep *scenarios.Report, tap, jsonOut bool, junit string) error {
	var err error
	switch {
	case tap:
		err = rep.WriteTAP(out)
	case jsonOut:
		err = rep.WriteJSON(out)
	default:
		err = rep.WriteTable(out)
	}
	if err != nil {
		return err
	}
	if junit != "" {
		f, err := os.Create(junit)
		if err != nil {
			return fmt.Errorf("run: %w", err)
		}
		if err := errors.Join(rep.WriteJUnit(f), f.Close()); err != nil {
			return fmt.Errorf("run: junit: %w", err)
		}
	}
	if _, failed, _ := rep.Counts(); failed > 0 {
		return &exitError{1}
	}
	return nil
}
