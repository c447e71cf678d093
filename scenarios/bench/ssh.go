package bench

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"

	"github.com/mdlayher/vsock"
	"golang.org/x/crypto/ssh"

	"lab/internal/shell"
	"lab/vm"
)

func listenKernelVsock(port uint32) (net.Listener, error) { return vsock.Listen(port, nil) }

// sshBaseline measures a guest->host SSH exec: a throwaway SSH server (x/crypto/ssh) on
// a host loopback port, reached from the guest at 10.0.2.2 through QEMU's user network;
// each run starts a client process in the guest and makes a new TCP connection, key
// exchange, public-key authentication, one exec session and its exit status, as
// `ssh host prog` without a ControlMaster. The server execs the program directly (no
// login shell), which flatters the baseline.
func sshBaseline(ctx context.Context, c *vm.Client, share, gprobe string, runs int, cmdline string) (Dist, error) {
	_, hostKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return Dist{}, err
	}
	hostSigner, err := ssh.NewSignerFromKey(hostKey)
	if err != nil {
		return Dist{}, err
	}
	clientPub, clientKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return Dist{}, err
	}
	sshPub, err := ssh.NewPublicKey(clientPub)
	if err != nil {
		return Dist{}, err
	}
	block, err := ssh.MarshalPrivateKey(clientKey, "")
	if err != nil {
		return Dist{}, err
	}
	keyFile := filepath.Join(share, ".lab-bench-key")
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(block), 0o600); err != nil {
		return Dist{}, err
	}
	defer os.Remove(keyFile)
	cfg := &ssh.ServerConfig{
		PublicKeyCallback: func(_ ssh.ConnMetadata, k ssh.PublicKey) (*ssh.Permissions, error) {
			if bytes.Equal(k.Marshal(), sshPub.Marshal()) {
				return nil, nil
			}
			return nil, errors.New("unknown key")
		},
	}
	cfg.AddHostKey(hostSigner)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return Dist{}, err
	}
	defer l.Close()
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			go serveSSH(conn, cfg)
		}
	}()
	port := l.Addr().(*net.TCPAddr).Port
	// Each timed run starts a client process in the guest (labbench itself, a static
	// Go program like the interpreter), as `ssh host prog` starts ssh.
	key := "/tmp/lab-bench-key"
	if err := guestOK(ctx, c, "cp "+path.Join("/mnt/lab", ".lab-bench-key")+" "+key+" && chmod 600 "+key); err != nil {
		return Dist{}, err
	}
	cmd := fmt.Sprintf("%s launch %d %s ssh 1 10.0.2.2:%d bench %s %s", gprobe, runs, gprobe, port, key, shell.Quote(cmdline))
	return guestDist(ctx, c, cmd)
}

func serveSSH(conn net.Conn, cfg *ssh.ServerConfig) {
	sc, chans, reqs, err := ssh.NewServerConn(conn, cfg)
	if err != nil {
		conn.Close()
		return
	}
	defer sc.Close()
	go ssh.DiscardRequests(reqs)
	for nc := range chans {
		if nc.ChannelType() != "session" {
			nc.Reject(ssh.UnknownChannelType, "session only")
			continue
		}
		ch, creqs, err := nc.Accept()
		if err != nil {
			continue
		}
		go func() {
			defer ch.Close()
			for req := range creqs {
				if req.Type != "exec" || len(req.Payload) < 4 {
					req.Reply(false, nil)
					continue
				}
				n := binary.BigEndian.Uint32(req.Payload)
				line := string(req.Payload[4:][:min(int(n), len(req.Payload)-4)])
				req.Reply(true, nil)
				argv := strings.Fields(line)
				status := uint32(127)
				if len(argv) > 0 {
					cmd := exec.Command(argv[0], argv[1:]...)
					cmd.Stdout, cmd.Stderr = ch, ch.Stderr()
					err := cmd.Run()
					var ee *exec.ExitError
					switch {
					case err == nil:
						status = 0
					case errors.As(err, &ee):
						status = uint32(ee.ExitCode())
					}
				}
				ch.SendRequest("exit-status", false, binary.BigEndian.AppendUint32(nil, status))
				return
			}
		}()
	}
}
