package fly

import (
	"net/http"
	"slices"
	"sync"
	"testing"

	"github.com/wakegate/wakegate/fly/flytest"
)

// TestObserveHearsEveryAPICallWithItsStatus: the hook hears each Machines
// API request, a failed one with the status the API answered.
func TestObserveHearsEveryAPICallWithItsStatus(t *testing.T) {
	w := newWorld(t, 1, flytest.Options{})
	var mu sync.Mutex
	var heard []string
	p := newProvider(t, Config{Observe: func(method string, status int) {
		mu.Lock()
		defer mu.Unlock()
		heard = append(heard, method+" "+http.StatusText(status))
	}})
	w.em.Inject(flytest.Fault{Action: "list", Status: http.StatusBadRequest})
	if _, err := p.Engines(t.Context()); err == nil {
		t.Fatal("Engines with the list failing: no error")
	}
	if _, err := p.Engines(t.Context()); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Contains(heard, "GET Bad Request") || !slices.Contains(heard, "GET OK") {
		t.Fatalf("heard %v, want a GET answered 400 and one answered 200", heard)
	}
}
