package vm

import (
	"context"
	"fmt"
	"net"
	"path/filepath"

	"github.com/mdlayher/vsock"

	"lab/internal/vsockdial"
	"lab/vhostvsock"
)

// vsockEnv starts the VM's vsock transport (instance's mode: "user" serves lab's
// userspace backend in this process until ctx ends, "kernel" uses /dev/vhost-vsock
// through mdlayher/vsock) and returns the Env the Tasks get, with its Listen and Dial.
func (a *agent) vsockEnv(ctx context.Context) (*Env, func(), error) {
	in := a.in
	env := &Env{Name: in.Name, StateDir: in.StateDir, CID: in.CID, Vsock: in.Vsock, Logger: a.log,
		Ready: a.ready, SSH: a.guestClient, Procs: a.procs, reg: a.reg}
	switch in.Vsock {
	case "user":
		dev, err := vhostvsock.New(vhostvsock.Config{
			SocketPath: filepath.Join(in.StateDir, FileVhostSock),
			GuestCID:   in.CID,
			UDSPath:    filepath.Join(in.StateDir, FileVsockUDS),
			Logger:     a.log.With("part", "vsock"),
		})
		if err != nil {
			return nil, nil, fmt.Errorf("vm: userspace vsock: %w", err)
		}
		env.Listen = func(port uint32) (net.Listener, error) { return dev.Listen(port) }
		env.Dial = dev.Dial
		go func() { a.vsockDone <- dev.Serve(ctx) }()
		a.setHealth(func(h *Health) { a.vsockDev, h.VsockOK = dev, true }) // healthNow reads it under a.mu
		return env, func() { dev.Close() }, nil
	case "kernel":
		env.Listen = func(port uint32) (net.Listener, error) { return vsock.Listen(port, nil) }
		env.Dial = kernelDialer(in.CID)
		a.setHealth(func(h *Health) { h.VsockOK = true })
		return env, func() {}, nil
	default:
		return nil, nil, fmt.Errorf("vm: unknown vsock mode %q in %s", in.Vsock, FileInstance)
	}
}

// kernelDialer dials cid's ports through kernel vsock, waiting for the guest's answer until
// ctx's deadline rather than the kernel's own 2 s connect timeout.
func kernelDialer(cid uint32) func(ctx context.Context, port uint32) (net.Conn, error) {
	return func(ctx context.Context, port uint32) (net.Conn, error) {
		c, err := vsockdial.Dial(ctx, cid, port)
		if err != nil {
			return nil, err
		}
		return c, nil
	}
}
