package host

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"time"

	"lab/formats"
)

// FormatInterp is a configured format whose runner is a host interpreter (Config.Formats).
const FormatInterp Format = 100

// detectFormat picks the runner of a host file from its name and first bytes: the built-in
// formats (pe: Wine; anything else the host kernel runs itself) and then Config.Formats,
// in the order the guest's interpreter tries them. The guest's claim is not used: the
// relay reads the host file itself (through file, the checked share file, when there is
// one: the bytes of exactly what will run). interp is the interpreter's argv for FormatInterp.
func (c *Config) detectFormat(program string, file *os.File) (f Format, interp []string, err error) {
	open := program
	if file != nil {
		open = fdPath(int(file.Fd()))
	}
	fh, err := os.Open(open)
	if err != nil {
		return FormatNative, nil, fmt.Errorf("host: %w", err)
	}
	defer fh.Close()
	head := make([]byte, formats.MaxMagicEnd)
	n, err := io.ReadFull(fh, head)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return FormatNative, nil, fmt.Errorf("host: %w", err)
	}
	m, ok := formats.Detect(append(formats.Builtin(), c.Formats...), program, head[:n])
	if !ok {
		return FormatNative, nil, nil
	}
	switch m.Runner.Kind {
	case formats.Wine:
		return FormatPE, nil, nil
	case formats.Interpreter:
		return FormatInterp, m.Runner.Command, nil
	default: // exec, and a stub file in a share (the host kernel refuses it, as before)
		return FormatNative, nil, nil
	}
}

// interpCommand runs a file of a configured format as `INTERPRETER ARGS... FILE GUESTARGS...`
// (python3 f.py, java -jar f.jar, qemu-aarch64-static prog). argv[0] stays the
// interpreter's own: qemu-user and java read it.
func (c *Config) interpCommand(l launch) (*exec.Cmd, time.Duration, error) {
	if l.File != nil {
		// The interpreter opens the file by path (java -jar wants the name), so, as for
		// Wine, the last check is that the path still names the checked file.
		if err := checkSame(l.File, l.Program); err != nil {
			return nil, 0, err
		}
	}
	args := append(append([]string(nil), l.Interp...), l.Program)
	if len(l.Args) > 1 {
		args = append(args, l.Args[1:]...)
	}
	return &exec.Cmd{Path: l.Interp[0], Args: args, Dir: l.Dir, Env: l.Env}, c.OutputDrain, nil
}
