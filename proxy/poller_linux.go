package proxy

import (
	"errors"
	"os"
	"sync"
	"syscall"
	"time"
)

// poller waits for the sockets of parked directions (park.go) on an
// epoll set of its own, each registered one-shot and level-triggered:
// armed when a direction parks, so bytes that came before are seen at
// once. A parked direction goes on, in a new goroutine, when its socket is
// readable (or hung up, or failed), when its connection is closed
// (Gathered.Close), or when it is given a read deadline: in every case it
// reads, and sees what a blocked read would have.
//
// The set's own descriptor is waited on by Go's poller, as a socket is:
// one goroutine, parked while nothing happens, and no thread held. It is
// made when the package is loaded, for the process's life, so that the
// descriptor and the goroutine are there before anything counts them.
type poller struct {
	epfd int
	file *os.File // the set's descriptor, as Go's poller waits on it
	err  error    // the set could not be made, or its wait ended: nothing parks (guarded by mu once made)

	mu sync.Mutex
	// owners is the connection that registered each descriptor. A
	// descriptor closed under a Gathered (not through it) leaves the set
	// without a word; its number, once reused, shows up here owned by
	// another, and the old owner is woken then.
	owners map[int32]*Gathered
}

var polls poller

func init() { polls.start() }

func (p *poller) start() {
	p.owners = map[int32]*Gathered{}
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		p.err = err
		return
	}
	if err := syscall.SetNonblock(epfd, true); err != nil {
		syscall.Close(epfd)
		p.err = err
		return
	}
	// os.NewFile gives a non-blocking descriptor to Go's poller.
	p.file = os.NewFile(uintptr(epfd), "proxy-poller")
	rc, err := p.file.SyscallConn()
	if err != nil {
		p.file.Close()
		p.err = err
		return
	}
	p.epfd = epfd
	go p.loop(rc)
}

// loop is the poller's goroutine. Go's poller reports the set readable
// when events came; they are taken until none is left (its report is
// edge-triggered), then it waits again. The wait never ends while the
// process runs; if it did, every parked direction would be woken (each
// then reads, as it would have) and none would park again.
func (p *poller) loop(rc syscall.RawConn) {
	events := make([]syscall.EpollEvent, 128)
	defer func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		p.err = errors.New("proxy: the poller's wait ended")
		for _, g := range p.owners {
			g.wakeLocked()
		}
	}()
	rc.Read(func(uintptr) bool {
		for {
			n, err := syscall.EpollWait(p.epfd, events, 0)
			if err == syscall.EINTR {
				continue
			}
			if n <= 0 {
				return false // nothing more: wait for the set to be readable
			}
			p.mu.Lock()
			for _, ev := range events[:n] {
				if g := p.owners[ev.Fd]; g != nil {
					g.wakeLocked()
				}
			}
			p.mu.Unlock()
		}
	})
}

// park registers resume to run, in a new goroutine, when g's socket is
// readable; false if g cannot be waited on so (closed, a read deadline
// set, no socket, no epoll).
func (p *poller) park(g *Gathered, resume func()) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err != nil || g.closed || g.readDeadline {
		return false
	}
	if !g.hasFD {
		if !g.fetchFD() {
			return false
		}
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT, Fd: g.fd}
	if g.registered {
		if err := syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_MOD, int(g.fd), &ev); err != nil {
			p.forgetLocked(g)
			return false
		}
	} else {
		if old := p.owners[g.fd]; old != nil {
			// Its descriptor was closed under it, and the number reused.
			p.forgetLocked(old)
			old.wakeLocked()
		}
		if err := syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_ADD, int(g.fd), &ev); err != nil {
			return false
		}
		g.registered = true
		p.owners[g.fd] = g
	}
	g.resume = resume
	return true
}

func (p *poller) forgetLocked(g *Gathered) {
	if p.owners[g.fd] == g {
		delete(p.owners, g.fd)
	}
	g.registered = false
}

// closing takes g out of the set before its socket is closed, and wakes
// a direction parked on it.
func (p *poller) closing(g *Gathered) {
	p.mu.Lock()
	defer p.mu.Unlock()
	g.closed = true
	if g.registered {
		if p.owners[g.fd] == g {
			syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_DEL, int(g.fd), nil)
		}
		p.forgetLocked(g)
	}
	g.wakeLocked()
}

// deadline sets g's read deadline (or both, its socket's), notes whether
// it has one, and wakes a direction parked on it: its read then waits
// under the deadline, as any read. The two in one step: a deadline set and
// cleared at once from two goroutines (a kick, and the kicked read) must
// leave the note as the socket is.
func (p *poller) deadline(g *Gathered, t time.Time, both bool) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	err := g.setDeadline(t, both)
	g.readDeadline = !t.IsZero()
	if g.readDeadline {
		g.wakeLocked()
	}
	return err
}
