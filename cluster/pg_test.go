package cluster

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/smallstep/nosql"

	"github.com/wakegate/wakegate/internal/pgtest"
)

// pgStores are two gateways' own connections to one real PostgreSQL
// database, through smallstep's nosql driver, as --ca-db opens it.
func pgStores(t *testing.T) (Store, Store) {
	t.Helper()
	_, a, b := pgServer(t)
	return a, b
}

func pgServer(t *testing.T) (*pgtest.Server, Store, Store) {
	t.Helper()
	srv := pgtest.Start(t)
	dsn := srv.CreateDB("wakegate")
	open := func() Store {
		db, err := nosql.New(nosql.PostgreSQLDriver, dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return db
	}
	return srv, open(), open()
}

// TestLeasesOnPostgreSQL runs the lease's life on PostgreSQL, each gateway
// with its own connections: the first take (an insert), proxying, a
// non-holder's stop, the holder's stop, a take-over after the holder died,
// and concurrent takes of a released row — which the driver's
// compare-and-swap serialises (SELECT … FOR UPDATE on the existing row),
// so they are safe even on smallstep's raw driver, whose insert is not.
func TestLeasesOnPostgreSQL(t *testing.T) {
	sa, sb := pgStores(t)
	a, b := newGateway(t, sa, "a"), newGateway(t, sb, "b")
	ctx := ctxFor(t)
	const id = "engine-0"

	addr, err := a.Start(ctx, id)
	if err != nil || addr != a.host.addr(id) {
		t.Fatalf("a's start = %q, %v", addr, err)
	}
	if got, err := b.Start(ctx, id); err != nil || got != addr {
		t.Fatalf("b's start = %q, %v; want a's address", got, err)
	}
	if err := b.Stop(ctx, id); err != nil {
		t.Fatal(err)
	}
	if _, stops := a.host.count(id); stops != 0 {
		t.Fatal("the non-holder's stop stopped the engine")
	}
	if l := row(t, sb, id); l.Holder != "a" || l.Addr != addr {
		t.Fatalf("lease read by b: %+v", l)
	}
	if err := a.Stop(ctx, id); err != nil {
		t.Fatal(err)
	}
	if _, stops := a.host.count(id); stops != 1 {
		t.Fatal("the holder's stop did not stop the engine")
	}

	// b takes the released lease, then dies; a takes over after TTL.
	if got, err := b.Start(ctx, id); err != nil || got != b.host.addr(id) {
		t.Fatalf("b's start of the released engine = %q, %v", got, err)
	}
	b.die(id)
	waitFor(t, "a to take over", func() bool {
		got, err := a.Start(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return got == addr
	})
	if l := row(t, sb, id); l.Holder != "a" || l.Addr != addr {
		t.Fatalf("lease after the take-over: %+v", l)
	}
	if err := a.Stop(ctx, id); err != nil {
		t.Fatal(err)
	}

	// Released rows taken concurrently: one gateway starts each engine.
	for i := range 8 {
		id := fmt.Sprintf("engine-%d", i)
		if _, err := a.Start(ctx, id); err != nil {
			t.Fatal(err)
		}
		if err := a.Stop(ctx, id); err != nil {
			t.Fatal(err)
		}
		sa0, _ := a.host.count(id)
		sb0, _ := b.host.count(id)
		go1 := make(chan struct{})
		var wg sync.WaitGroup
		addrs := make([]string, 2)
		for j, g := range []gw{a, b} {
			wg.Go(func() {
				<-go1
				var err error
				if addrs[j], err = g.Start(ctx, id); err != nil {
					t.Error(err)
				}
			})
		}
		close(go1)
		wg.Wait()
		sa1, _ := a.host.count(id)
		sb1, _ := b.host.count(id)
		if n := sa1 - sa0 + sb1 - sb0; n != 1 {
			t.Errorf("%s: started %d times, want once", id, n)
		}
		if addrs[0] != addrs[1] {
			t.Errorf("%s: a got %s, b got %s", id, addrs[0], addrs[1])
		}
	}
}

// TestLeaseOutlivesADatabaseOutage: with the database down, the holder's
// refreshes fail and it says so; once it is back, the holder's next
// refresh finds the row as it left it (nobody could take it meanwhile) and
// goes on holding the lease.
func TestLeaseOutlivesADatabaseOutage(t *testing.T) {
	srv, sa, sb := pgServer(t)
	a, b := newGateway(t, sa, "a"), newGateway(t, sb, "b")
	ctx := ctxFor(t)
	addr, err := a.Start(ctx, "engine-0")
	if err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	waitFor(t, "a's refresh to fail", func() bool { return strings.Contains(a.log.String(), "refresh of engine lease failed") })
	srv.Start()
	// A pooled connection the restart cut fails once: read until one serves.
	var before lease
	waitFor(t, "b to read the lease again", func() bool {
		b, err := sb.Get([]byte(DefaultTable), []byte("engine-0"))
		return err == nil && json.Unmarshal(b, &before) == nil
	})
	waitFor(t, "a's refresh to resume", func() bool { return row(t, sb, "engine-0").Expires > before.Expires })
	if !a.holds("engine-0") {
		t.Fatal("a no longer holds the lease")
	}
	if got, err := b.Start(ctx, "engine-0"); err != nil || got != addr {
		t.Errorf("b's start = %q, %v; want a's address", got, err)
	}
}
