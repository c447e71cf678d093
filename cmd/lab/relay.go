package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"lab/host"
	"lab/host/proctree"
	"lab/trace"
	"lab/wire"
)

type relayOptions struct {
	listen           []string
	tokenFile        string
	shares           []string
	allow            []string
	allowEnv         []string
	peerCID          uint32
	maxSessions      int
	maxPending       int
	helloTimeout     time.Duration
	handshakeTimeout time.Duration
	grace            time.Duration
	fallbackDir      string
	wine             string
	winePrefix       string
	traceFile        string
}

func newRelayCommand() *cobra.Command {
	var o relayOptions
	cmd := &cobra.Command{
		Use:   "relay --token-file FILE [--listen unix:PATH|vsock:PORT]... [--share HOST:GUEST]... [--allow NAME=HOSTPATH]...",
		Short: "Run the host relay by itself (kernel vsock, Unix sockets, tests)",
		Long: `relay runs the host side of interop: guest interpreters connect to it to run
programs on this host. It accepts a connection only with the token read from
--token-file (and, on vsock, only from --peer-cid when given); it runs only
files that resolve, symlinks followed, inside a --share, or the host commands
exposed with --allow; never a shell. PE files (MZ) run with Wine in the lab's
own prefix.

Each --share HOST:GUEST says that the guest sees the host directory HOST at
GUEST. The guest's working directory maps through the shares; outside them
the program runs in --fallback-dir and the guest sees one warning line. Only
the variables the guest's LABENV names cross (WSLENV's syntax and flags),
and never one that can make a host program run other code (LD_*, BASH_ENV,
PYTHON*, GIT_*, PATH, WINE* and more: see docs/DESIGN.md): a launch that
sets one is refused, naming it, unless --allow-env lets it through.

The relay prints one line per listener on stdout ("lab relay: listening on
ADDR"). On SIGTERM or SIGINT it stops accepting, lets running programs finish
for --grace, then kills their process groups and exits 0. However the relay ends (SIGKILL
included), every program it started and all their descendants are killed:
they are held in a cgroup v2 of their own when this user may create one, else
marked with LAB_PROCTREE_OWNER in their environment (LAB_PROCTREE=fallback
forces that mode); leftovers of a relay that died are swept at start.`,
		Example: `  # a relay for tests, on a Unix socket, sharing /srv/lab as /mnt/host in the guest
  head -c 32 /dev/urandom | base64 > token && chmod 600 token
  lab relay --listen unix:/tmp/lab-relay.sock --token-file token --share /srv/lab:/mnt/host

  # kernel vsock on the default port, only for the guest with CID 3, exposing notify-send
  lab relay --listen vsock:5555 --peer-cid 3 --token-file token \
      --share "$HOME/lab:/mnt/host" --allow notify-send=/usr/bin/notify-send`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return relayAction(cmd, o)
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&o.listen, "listen", []string{"vsock:" + strconv.Itoa(wire.DefaultPort)}, "where to listen: unix:PATH or vsock:PORT (repeatable)")
	f.StringVar(&o.tokenFile, "token-file", "", "file holding the token guests must present (required; at least 16 bytes; surrounding whitespace is ignored)")
	f.StringArrayVar(&o.shares, "share", nil, "HOST:GUEST directory the guest sees HOST as (repeatable)")
	f.StringArrayVar(&o.allow, "allow", nil, "NAME=HOSTPATH host command the guest may run by name (repeatable)")
	f.StringArrayVar(&o.allowEnv, "allow-env", nil, "NAME (or PREFIX*) variable the guest may set although the built-in deny list names it (repeatable)")
	f.Uint32Var(&o.peerCID, "peer-cid", 0, "on vsock, accept only this guest context ID (0: any)")
	f.IntVar(&o.maxSessions, "max-sessions", 256, "concurrent running programs; more authorised launches wait for one to end")
	f.IntVar(&o.maxPending, "max-pending", 64, "connections waiting to present the token; over it the busiest peer's oldest is refused (EAGAIN)")
	f.DurationVar(&o.helloTimeout, "hello-timeout", 5*time.Second, "time a connection has to present the token")
	f.DurationVar(&o.handshakeTimeout, "handshake-timeout", 10*time.Second, "time a connection has to present a complete launch request")
	f.DurationVar(&o.grace, "grace", 10*time.Second, "on SIGTERM, how long running programs may finish before their process groups are killed")
	f.StringVar(&o.fallbackDir, "fallback-dir", "", "host working directory when the guest's is not in a share (default: your home directory)")
	f.StringVar(&o.wine, "wine", "", "wine loader for PE files (default: wine in PATH, then /usr/lib/wine/wine64)")
	f.StringVar(&o.winePrefix, "wine-prefix", "", "WINEPREFIX for PE files (default: $XDG_STATE_HOME/lab/wine)")
	f.StringVar(&o.traceFile, "trace-file", "", "append the steps of traced launches (lab trace) to this file as JSON lines")
	return cmd
}

func relayAction(cmd *cobra.Command, o relayOptions) error {
	if o.tokenFile == "" {
		return &usageError{errors.New("relay: --token-file is required")}
	}
	token, err := readTokenFile(o.tokenFile)
	if err != nil {
		return fmt.Errorf("relay: read the token: %w", err)
	}
	token = []byte(strings.TrimSpace(string(token)))
	cfg := host.Config{
		Token:            token,
		PeerCID:          o.peerCID,
		MaxSessions:      o.maxSessions,
		MaxPending:       o.maxPending,
		HelloTimeout:     o.helloTimeout,
		HandshakeTimeout: o.handshakeTimeout,
		DrainTimeout:     o.grace,
		FallbackDir:      o.fallbackDir,
		EnvAllow:         o.allowEnv,
		Wine:             host.WineConfig{Path: o.wine, Prefix: o.winePrefix},
		Subreaper:        true, // this process runs nothing but the relay's programs
		Logger:           slog.Default(),
	}
	for _, s := range o.shares {
		hostPath, guestPath, ok := strings.Cut(s, ":")
		if !ok || hostPath == "" || guestPath == "" {
			return &usageError{fmt.Errorf("relay: --share %q: want HOST:GUEST", s)}
		}
		cfg.Shares = append(cfg.Shares, host.Share{HostPath: hostPath, GuestPath: guestPath})
	}
	for _, a := range o.allow {
		name, hostPath, ok := strings.Cut(a, "=")
		if !ok || name == "" || hostPath == "" {
			return &usageError{fmt.Errorf("relay: --allow %q: want NAME=HOSTPATH", a)}
		}
		cfg.Allow = append(cfg.Allow, host.Exposed{Name: name, HostPath: hostPath})
	}
	if o.traceFile != "" {
		tf, err := trace.OpenFile(o.traceFile, 0)
		if err != nil {
			return fmt.Errorf("relay: %w", err)
		}
		defer tf.Close()
		cfg.Trace = trace.NewSink(tf, trace.SideRelay)
	}
	// Every host program and its descendants die with this process, SIGKILL included.
	procs, err := proctree.Open(proctree.Options{Name: "relay", Logger: slog.Default()})
	if err != nil {
		return fmt.Errorf("relay: %w", err)
	}
	defer procs.Close()
	cfg.Procs = procs
	relay, err := host.NewRelay(cfg)
	if err != nil {
		return relayError(err)
	}

	// One listener failing stops (and drains) the others.
	ctx, cancel := context.WithCancel(cmd.Context())
	defer cancel()
	var listeners []net.Listener
	for _, addr := range o.listen {
		l, err := host.Listen(addr)
		if err != nil {
			for _, l := range listeners {
				l.Close()
			}
			return relayError(err)
		}
		listeners = append(listeners, l)
	}
	errc := make(chan error, len(listeners))
	for i, l := range listeners {
		fmt.Fprintf(cmd.OutOrStdout(), "lab relay: listening on %s\n", o.listen[i])
		go func() { errc <- relay.Serve(ctx, l) }()
	}
	var errs []error
	for range listeners {
		if err := <-errc; err != nil {
			errs = append(errs, err)
			cancel()
		}
	}
	slog.Info("relay: stopped", "stats", fmt.Sprintf("%+v", relay.Stats()))
	if len(errs) > 0 {
		return fmt.Errorf("relay: %w", errors.Join(errs...))
	}
	return nil
}

// relayError says "relay: ..." once instead of "relay: host: ...".
func relayError(err error) error {
	return fmt.Errorf("relay: %s", strings.TrimPrefix(err.Error(), "host: "))
}

// readTokenFile reads the token, warning when other users can read it too: whoever
// has the token can run programs on this host through the relay.
func readTokenFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Mode().Perm()&0o044 != 0 {
		slog.Warn("relay: the token file is readable by other users, who can then run programs on this host through the relay; chmod 600 it",
			"file", path, "mode", fi.Mode().Perm().String())
	}
	return io.ReadAll(f)
}
