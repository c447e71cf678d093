package vhostvsock

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"golang.org/x/sys/unix"

	vu "lab/vhostvsock/internal/vhostuser"
	"lab/vhostvsock/internal/virtq"
)

// Features offered to the front-end. No ACCESS_PLATFORM (it would demand an IOMMU and a
// back-end request channel), no RING_PACKED, no SEQPACKET (only stream sockets are implemented).
const (
	offeredFeatures = vu.FeatureVersion1 | vu.FeatureProtocolFeatures | vu.FeatureIndirectDesc | vu.FeatureEventIdx
	offeredProtocol = vu.ProtocolConfig | vu.ProtocolReplyAck
)

// Queue indices handled by the back-end; QEMU serves the event queue (2) itself.
const (
	rxQ     = 0 // device -> driver
	txQ     = 1 // driver -> device
	nQueues = 2
	wakeTag = nQueues
)

// frontend is the state of one connected vhost-user front-end. Guarded by Device.mu except
// where noted.
type frontend struct {
	conn     *vu.Conn // used only by the Serve goroutine
	epfd     int
	features uint64 // acknowledged virtio features
	protocol uint64
	acked    bool
	mem      *vu.Memory
	vq       [nQueues]vring
	err      error // set when the guest broke the rings: the device stops
	stop     bool  // worker must exit
	rxChain  virtq.Chain
	txChain  virtq.Chain

	// Coalesced tx-completion interrupts (see passLocked).
	txIrqPending  bool
	txIrqSince    time.Time
	txUnsignalled int
}

type vring struct {
	num     uint16
	addr    vu.VringAddr
	hasAddr bool
	base    uint16
	kick    int
	call    int
	errFD   int
	enabled bool
	started bool // a kick fd arrived since the last stop
	q       *virtq.Queue
}

// Serve serves one vhost-user front-end (QEMU): it accepts the connection on SocketPath and
// handles it until QEMU disconnects (returns nil), ctx ends (returns ctx.Err()) or the
// protocol or the guest's rings break (returns the error). Connections are reset when it returns.
func (d *Device) Serve(ctx context.Context) error {
	d.serveMu.Lock()
	defer d.serveMu.Unlock()
	d.mu.Lock()
	closed := d.closed
	d.mu.Unlock()
	if closed {
		return errDeviceClosed
	}

	stop := context.AfterFunc(ctx, func() { d.ln.SetDeadline(aLongTimeAgo) })
	uc, err := d.ln.AcceptUnix()
	stop()
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("vhostvsock: accept: %w", err)
	}
	f := &frontend{conn: vu.NewConn(uc)}
	for i := range f.vq {
		f.vq[i] = vring{kick: -1, call: -1, errFD: -1}
	}
	if f.epfd, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
		uc.Close()
		return fmt.Errorf("vhostvsock: epoll: %w", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: wakeTag}
	if err := unix.EpollCtl(f.epfd, unix.EPOLL_CTL_ADD, d.wakeFD, &ev); err != nil {
		unix.Close(f.epfd)
		uc.Close()
		return fmt.Errorf("vhostvsock: epoll: %w", err)
	}

	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		unix.Close(f.epfd)
		uc.Close()
		return errDeviceClosed
	}
	d.front = f
	d.mu.Unlock()
	d.log.Debug("vhostvsock: front-end connected", "socket", d.cfg.SocketPath)

	workerDone := make(chan struct{})
	go func() { defer close(workerDone); d.worker(f) }()
	stop = context.AfterFunc(ctx, func() { uc.Close() })
	err = d.serveFrontend(f)
	stop()

	d.mu.Lock()
	f.stop = true
	d.mu.Unlock()
	d.wake()
	<-workerDone

	d.mu.Lock()
	if f.err != nil {
		err = f.err // the guest broke a ring; the read error is only its consequence
	}
	d.front = nil
	d.resetAllLocked(errFrontendGone)
	for i := range f.vq {
		closeFD(&f.vq[i].kick)
		closeFD(&f.vq[i].call)
		closeFD(&f.vq[i].errFD)
		f.vq[i].q = nil
	}
	if f.mem != nil {
		f.mem.Unmap()
		f.mem = nil
	}
	d.mu.Unlock()
	unix.Close(f.epfd)
	uc.Close()
	d.wakePending.Store(false)

	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case errors.Is(err, io.EOF):
		d.log.Debug("vhostvsock: front-end disconnected")
		return nil
	case errors.Is(err, net.ErrClosed):
		d.mu.Lock()
		closed := d.closed
		d.mu.Unlock()
		if closed {
			return nil
		}
	}
	return err
}

func closeFD(fd *int) {
	if *fd >= 0 {
		unix.Close(*fd)
		*fd = -1
	}
}

// serveFrontend reads and handles messages until an error.
func (d *Device) serveFrontend(f *frontend) error {
	for {
		m, err := f.conn.Read()
		if err != nil {
			return err
		}
		d.mu.Lock()
		reply, herr := d.handle(f, &m)
		d.mu.Unlock()
		m.CloseFDs() // whatever the handler did not keep
		if herr != nil {
			d.log.Warn("vhostvsock: request failed", "request", m.Request, "err", herr)
		}
		switch {
		case reply != nil:
			if err := f.conn.Reply(m.Request, reply); err != nil {
				return err
			}
		case m.NeedReply() && f.protocol&vu.ProtocolReplyAck != 0:
			var ack [8]byte
			if herr != nil {
				ack[0] = 1
			}
			if err := f.conn.Reply(m.Request, ack[:]); err != nil {
				return err
			}
		case herr != nil:
			// Without a way to report it, a failed request leaves QEMU and us disagreeing on
			// the device state: stop.
			return herr
		}
	}
}

func u64(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }

// takeFD removes and returns the message's single fd, or -1.
func takeFD(m *vu.Msg) int {
	if len(m.FDs) != 1 {
		return -1
	}
	fd := m.FDs[0]
	m.FDs = nil
	return fd
}

// handle applies one request. It returns the reply payload for requests that have one.
// Called with d.mu held.
func (d *Device) handle(f *frontend, m *vu.Msg) ([]byte, error) {
	p := m.Payload
	switch m.Request {
	case vu.GetFeatures:
		return u64(offeredFeatures), nil
	case vu.SetFeatures:
		v, err := vu.U64(p)
		if err != nil {
			return nil, err
		}
		if v&^offeredFeatures != 0 {
			return nil, fmt.Errorf("vhostvsock: front-end acknowledged features %#x that were not offered", v&^offeredFeatures)
		}
		if v&vu.FeatureVersion1 == 0 {
			return nil, errors.New("vhostvsock: driver without VIRTIO_F_VERSION_1 (legacy virtio is not supported)")
		}
		f.features, f.acked = v, true
		return nil, nil
	case vu.GetProtocolFeatures:
		return u64(offeredProtocol), nil
	case vu.SetProtocolFeatures:
		v, err := vu.U64(p)
		if err != nil {
			return nil, err
		}
		if v&^offeredProtocol != 0 {
			return nil, fmt.Errorf("vhostvsock: unsupported protocol features %#x", v&^offeredProtocol)
		}
		f.protocol = v
		return nil, nil
	case vu.SetOwner:
		return nil, nil
	case vu.ResetOwner, vu.ResetDevice:
		for i := range f.vq {
			d.stopRingLocked(f, i)
			f.vq[i].enabled = false
		}
		f.acked, f.features = false, 0
		return nil, nil
	case vu.GetQueueNum:
		return u64(nQueues), nil
	case vu.GetConfig:
		c, err := vu.ParseConfig(p)
		if err != nil {
			return nil, err
		}
		var space [8]byte
		binary.LittleEndian.PutUint64(space[:], uint64(d.cfg.GuestCID))
		if uint64(c.Offset)+uint64(c.Size) > uint64(len(space)) {
			// A zero-sized config payload tells the front-end the request failed.
			return vu.ConfigReq{Offset: c.Offset, Flags: c.Flags}.Marshal(nil),
				fmt.Errorf("vhostvsock: GET_CONFIG of %d bytes at offset %d beyond the 8-byte config space", c.Size, c.Offset)
		}
		c.Data = space[c.Offset : c.Offset+c.Size]
		return c.Marshal(nil), nil
	case vu.SetConfig:
		return nil, errors.New("vhostvsock: the vsock config space is read-only")
	case vu.SetMemTable:
		rs, err := vu.ParseMemTable(p)
		if err != nil {
			return nil, err
		}
		fds := m.FDs
		m.FDs = nil
		mem, err := vu.Map(rs, fds)
		if err != nil {
			return nil, err
		}
		if f.mem != nil {
			// Rings hold slices of the old mapping: rebuild them on the new one.
			old := f.mem
			f.mem = mem
			for i := range f.vq {
				if f.vq[i].q != nil {
					f.vq[i].base = f.vq[i].q.LastAvail()
					f.vq[i].q = nil
				}
			}
			old.Unmap()
		}
		f.mem = mem
		for i := range f.vq {
			if err := d.startRingLocked(f, i); err != nil {
				return nil, err
			}
		}
		d.log.Debug("vhostvsock: memory table", "regions", len(rs))
		return nil, nil
	case vu.SetVringNum, vu.SetVringBase, vu.GetVringBase, vu.SetVringEnable:
		s, err := vu.ParseVringState(p)
		if err != nil {
			return nil, err
		}
		if s.Index >= nQueues {
			return nil, fmt.Errorf("vhostvsock: %v for queue %d (only 0 and 1 are served here)", m.Request, s.Index)
		}
		vr := &f.vq[s.Index]
		switch m.Request {
		case vu.SetVringNum:
			if s.Num == 0 || s.Num > virtq.MaxSize || s.Num&(s.Num-1) != 0 {
				return nil, fmt.Errorf("vhostvsock: queue size %d is not a power of two up to %d", s.Num, virtq.MaxSize)
			}
			vr.num = uint16(s.Num)
		case vu.SetVringBase:
			if s.Num > 0xffff {
				return nil, fmt.Errorf("vhostvsock: vring base %d out of range", s.Num)
			}
			vr.base = uint16(s.Num)
		case vu.GetVringBase:
			d.stopRingLocked(f, int(s.Index))
			return vu.VringState{Index: s.Index, Num: uint32(vr.base)}.Marshal(nil), nil
		case vu.SetVringEnable:
			vr.enabled = s.Num != 0
			if vr.enabled {
				return nil, d.startRingLocked(f, int(s.Index))
			}
		}
		return nil, nil
	case vu.SetVringAddr:
		a, err := vu.ParseVringAddr(p)
		if err != nil {
			return nil, err
		}
		if a.Index >= nQueues {
			return nil, fmt.Errorf("vhostvsock: SET_VRING_ADDR for queue %d", a.Index)
		}
		vr := &f.vq[a.Index]
		vr.addr, vr.hasAddr = a, true
		if vr.q != nil {
			vr.base = vr.q.LastAvail()
			vr.q = nil
		}
		return nil, d.startRingLocked(f, int(a.Index))
	case vu.SetVringKick, vu.SetVringCall, vu.SetVringErr:
		v, err := vu.ParseVringFD(p)
		if err != nil {
			return nil, err
		}
		if v.Index >= nQueues {
			return nil, fmt.Errorf("vhostvsock: %v for queue %d", m.Request, v.Index)
		}
		fd := -1
		if !v.NoFD {
			if fd = takeFD(m); fd < 0 {
				return nil, fmt.Errorf("vhostvsock: %v without exactly one fd", m.Request)
			}
		}
		vr := &f.vq[v.Index]
		switch m.Request {
		case vu.SetVringKick:
			if fd < 0 {
				return nil, errors.New("vhostvsock: polling mode (SET_VRING_KICK without fd) is not supported")
			}
			if vr.kick >= 0 {
				unix.EpollCtl(f.epfd, unix.EPOLL_CTL_DEL, vr.kick, nil)
				closeFD(&vr.kick)
			}
			unix.SetNonblock(fd, true)
			ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(v.Index)}
			if err := unix.EpollCtl(f.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
				unix.Close(fd)
				return nil, fmt.Errorf("vhostvsock: watching kick fd: %w", err)
			}
			vr.kick = fd
			vr.started = true
			if !d.protocolFeaturesAcked(f) {
				vr.enabled = true // without PROTOCOL_FEATURES a ring is enabled when started
			}
			return nil, d.startRingLocked(f, int(v.Index))
		case vu.SetVringCall:
			closeFD(&vr.call)
			vr.call = fd
		case vu.SetVringErr:
			closeFD(&vr.errFD)
			vr.errFD = fd
		}
		return nil, nil
	case vu.SetVringEndian:
		return nil, errors.New("vhostvsock: only little-endian (VERSION_1) rings are supported")
	default:
		return nil, fmt.Errorf("vhostvsock: unsupported request %v", m.Request)
	}
}

func (d *Device) protocolFeaturesAcked(f *frontend) bool {
	return f.acked && f.features&vu.FeatureProtocolFeatures != 0
}

// startRingLocked builds the queue when everything it needs is known.
func (d *Device) startRingLocked(f *frontend, i int) error {
	vr := &f.vq[i]
	if vr.q != nil || !vr.started || !vr.enabled || !vr.hasAddr || vr.num == 0 || f.mem == nil {
		return nil
	}
	n := vr.num
	desc, err := f.mem.VA(vr.addr.Desc, uint64(virtq.DescSize(n)))
	if err != nil {
		return fmt.Errorf("vhostvsock: queue %d descriptor table: %w", i, err)
	}
	avail, err := f.mem.VA(vr.addr.Avail, uint64(virtq.AvailSize(n)))
	if err != nil {
		return fmt.Errorf("vhostvsock: queue %d avail ring: %w", i, err)
	}
	used, err := f.mem.VA(vr.addr.Used, uint64(virtq.UsedSize(n)))
	if err != nil {
		return fmt.Errorf("vhostvsock: queue %d used ring: %w", i, err)
	}
	q, err := virtq.New(f.mem, virtq.Config{
		Size: n, Desc: desc, Avail: avail, Used: used, Base: vr.base,
		EventIdx: f.features&vu.FeatureEventIdx != 0, Indirect: f.features&vu.FeatureIndirectDesc != 0,
	})
	if err != nil {
		return fmt.Errorf("vhostvsock: queue %d: %w", i, err)
	}
	vr.q = q
	d.log.Debug("vhostvsock: queue started", "queue", i, "size", n, "base", vr.base)
	d.wake()
	return nil
}

// stopRingLocked stops a queue (GET_VRING_BASE): no chain is ever held across the lock, so
// nothing is in flight and last_avail is the resume point.
func (d *Device) stopRingLocked(f *frontend, i int) {
	vr := &f.vq[i]
	if vr.q != nil {
		vr.base = vr.q.LastAvail()
		vr.q = nil
	}
	vr.started = false
}
