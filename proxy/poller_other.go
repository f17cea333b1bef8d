//go:build !linux

package proxy

import "time"

// poller is Linux's epoll (poller_linux.go); elsewhere a direction never
// parks, and waits in its read as ever.
type poller struct{}

var polls poller

func (p *poller) park(g *Gathered, resume func()) bool { return false }
func (p *poller) closing(g *Gathered)                  {}
func (p *poller) deadline(g *Gathered, t time.Time, both bool) error {
	return g.setDeadline(t, both)
}
