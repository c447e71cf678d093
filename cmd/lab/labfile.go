package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"lab/labfile"
	"lab/machine"
	"lab/provision"
	"lab/vm"
)

// upSettings is what lab up boots and provisions; a lab file fills it, and the flags the
// user gave override it.
type upSettings struct {
	cfg                               vm.Config
	shares                            []string
	noProvision, noWindows, noWinPath bool
	noScratch, noWSLNames             bool
	isolatedWindows                   bool // a Wine prefix of the machine's own, not the shared one
}

// readLabFile parses a lab file (strict; errors name the key) with interpreters and
// exposed programs resolved on this host.
func readLabFile(path string) (*labfile.File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return labfile.Parse(path, f, labfile.Options{LookPath: exec.LookPath})
}

// applyLabFile puts the file's machine into s wherever the flag was not given on the
// command line (flags override the file; --share adds to the file's shares).
func applyLabFile(lf *labfile.File, flags *pflag.FlagSet, s *upSettings) error {
	unset := func(name string) bool { return !flags.Changed(name) }
	if lf.Name != "" && unset("name") {
		s.cfg.Name = lf.Name
	}
	if lf.MemoryMiB != 0 && unset("memory") {
		s.cfg.MemoryMiB = lf.MemoryMiB
	}
	if lf.CPUs != 0 && unset("cpus") {
		s.cfg.CPUs = lf.CPUs
	}
	if lf.Scratch != nil && unset("no-scratch") {
		s.noScratch = !*lf.Scratch
	}
	if lf.Windows != nil && unset("no-windows") {
		s.noWindows = !*lf.Windows
	}
	if lf.WindowsPath != nil && unset("no-windows-path") {
		s.noWinPath = !*lf.WindowsPath
	}
	if lf.Distro != "" && unset("distro") {
		s.cfg.Distro = lf.Distro
	}
	if lf.Arch != "" && unset("arch") {
		s.cfg.Arch = lf.Arch
	}
	if lf.IsolatedWindows != nil && unset("isolated-windows") {
		s.isolatedWindows = *lf.IsolatedWindows
	}
	s.cfg.Shares = append(s.cfg.Shares, lf.Shares...)
	files := map[string][]byte{}
	if len(lf.Formats) > 0 {
		b, err := machine.EncodeFormats(lf.Formats)
		if err != nil {
			return err
		}
		files[machine.FileFormats] = b
	}
	if len(lf.EnvAllow) > 0 {
		files[machine.FileEnvAllow] = []byte("# from " + lf.Path + " (env.allow)\n" + strings.Join(lf.EnvAllow, "\n") + "\n")
	}
	if len(lf.Expose) > 0 {
		var list []provision.Exposed
		for i, e := range lf.Expose {
			var err error
			if list, _, err = provision.AddExposed(list, []string{e.Program}, e.As); err != nil {
				return fmt.Errorf("%s: expose[%d]: %s", lf.Path, i, strings.TrimPrefix(err.Error(), "provision: "))
			}
		}
		b, err := json.MarshalIndent(list, "", "  ")
		if err != nil {
			return err
		}
		files[provision.ExposedFile] = append(b, '\n')
	}
	if len(files) > 0 {
		s.cfg.StateFiles = files
	}
	return nil
}

// labfileHelp is `lab help labfile`.
const labfileHelp = `A lab file declares one machine for lab up -f FILE (YAML, strict: an unknown key,
a wrong type or a bad value is an error naming the key, e.g.
lab.yaml: formats[1].magic: not hex: "zz"). Every key is optional; flags given with
-f override the file, and --share adds to its shares.

  name: ci                    # VM name (--name)
  distro: initramfs           # or debian (Debian 12, systemd, disk kept by lab down) (--distro;
                              # also spelled image: default)
  arch: amd64                 # guest architecture: amd64 or arm64 (--arch; default the host's;
                              # debian: amd64 only); single programs: a format (qemu:)
  memory: 2G                  # MiB (1024) or 512M, 2G (--memory)
  cpus: 2                     # (--cpus)
  scratch: true               # the scratch share at /mnt/lab (--no-scratch)
  shares:                     # (--share); relative host paths start at the file's directory
    - {host: ./src, guest: /mnt/src, readonly: true}
  expose:                     # host commands the guest runs by name (lab expose)
    - printf
    - {program: /usr/bin/notify-send, as: notify}
  windows: true               # the Windows personality when Wine is installed (--no-windows)
  windows_path: true          # /mnt/c/windows/system32 on the guest's PATH (--no-windows-path)
  isolated_windows: false     # a Wine prefix of the machine's own, not the shared one
                              # (--isolated-windows; needs windows)
  env:
    allow: [MYAPP_*]          # variables the relay's deny list names that may cross anyway
  formats:                    # executable formats beyond pe and host stubs
    - name: labpy             # Launch format and binfmt rule lab-labpy: [a-z0-9._-]
      magic: 23216c61627079   # hex ("#!labpy"); with optional offset: N and mask: HEX
      interpreter: python3    # host runner: python3 FILE ARGS...
    - name: jar
      extension: jar          # files named *.jar (binfmt type E)
      interpreter: [java, -jar]
    - name: arm64
      qemu: aarch64           # aarch64 ELF files, run by qemu-aarch64-static on the host
    - name: tool
      magic: 7f454c46
      runner: exec            # exec (run the host file itself), wine, or interpreter

Each format is a binfmt_misc rule in the guest (to lab's interpreter) and a runner on the
host: the relay reads the host file itself and runs it directly, with Wine, or as
INTERPRETER ARGS... FILE GUESTARGS... Files run only from a share, as always. An
interpreter named without a path is looked up in the host's PATH when lab up starts.
qemu knows: aarch64, arm, ppc64le, riscv64, s390x (Debian: apt-get install qemu-user-static).`

// newLabfileHelpTopic is `lab help labfile` (a help topic: no Run).
func newLabfileHelpTopic() *cobra.Command {
	return &cobra.Command{Use: "labfile", Short: "The lab file (lab up -f lab.yaml): keys, formats, an example", Long: labfileHelp}
}
