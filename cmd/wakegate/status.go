package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/wakegate/wakegate/gateway"
)

// certWarnWithin is how near its expiry a certificate is flagged.
const certWarnWithin = 7 * 24 * time.Hour

func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("status", "status [--admin URL] [--json]", `
Prints what a running gateway reports on its admin endpoint (GET /status):
each engine's state, sessions, connections, build cache (running engines
are asked; a stopped one is not woken for it), last wake and uptime; the
connections open per client identity; and the certificates (the gateway's,
the CA's, each engine's as last seen) with those expiring within 7 days
flagged. --json prints the endpoint's JSON as
it came. Exits non-zero when the gateway is not ready (/readyz).`, stdout, stderr)
	admin := fs.String("admin", "http://127.0.0.1:8444", "the gateway's admin URL (its --admin address)")
	asJSON := fs.Bool("json", false, "print the admin endpoint's JSON")
	if err := parse(fs, args, stdout); err != nil {
		return helpOK(err)
	}
	if fs.NArg() > 0 {
		return usageError("status", "unexpected argument %q", fs.Arg(0))
	}
	base := strings.TrimSuffix(*admin, "/")
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", base+"/status", nil)
	if err != nil {
		return usageError("status", "--admin %q: %v", *admin, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("status: cannot reach the admin endpoint at %s (is the gateway running? pass --admin URL): %w", base, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("status: read %s/status: %w", base, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status: %s/status answered %s (a gateway older than this command? pass --admin URL of a gateway's admin endpoint)", base, resp.Status)
	}
	var st gateway.Status
	if err := json.Unmarshal(body, &st); err != nil {
		return fmt.Errorf("status: %s/status is not a gateway's status (pass --admin URL of a gateway's admin endpoint): %w", base, err)
	}
	if *asJSON {
		stdout.Write(body)
	} else {
		printStatus(stdout, st, time.Now())
	}
	if !st.Ready {
		return fmt.Errorf("status: the gateway is not ready: %s", st.NotReady)
	}
	return nil
}

// printStatus writes st as tables for a person.
func printStatus(w io.Writer, st gateway.Status, now time.Time) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ENGINE\tSTATE\tSESSIONS\tCONNECTIONS\tCACHE\tLAST WAKE\tUP FOR\tMACHINE TIME")
	for _, e := range st.Engines {
		up := "-"
		if !e.UpSince.IsZero() {
			up = now.Sub(e.UpSince).Round(time.Second).String()
		}
		wake := "-"
		if e.Wakes > 0 {
			wake = (time.Duration(e.LastWake) * time.Millisecond).String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\t%s\t%s\n", e.ID, e.State, e.Sessions, e.Conns, cacheCell(e), wake, up,
			(time.Duration(e.MachineSeconds) * time.Second).String())
	}
	tw.Flush()

	fmt.Fprintln(w)
	if len(st.Identities) == 0 {
		fmt.Fprintln(w, "No client connections open.")
	} else {
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "IDENTITY\tCONNECTIONS")
		ids := make([]string, 0, len(st.Identities))
		for id := range st.Identities {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		for _, id := range ids {
			fmt.Fprintf(tw, "%s\t%d\n", id, st.Identities[id])
		}
		tw.Flush()
	}

	if len(st.Certs) > 0 {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "CERTIFICATE\tEXPIRES\tIN")
		for _, c := range st.Certs {
			left := c.NotAfter.Sub(now)
			note := left.Round(time.Minute).String()
			switch {
			case left <= 0:
				note = "EXPIRED"
			case left < certWarnWithin:
				note += "  EXPIRES SOON"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\n", c.Name, c.NotAfter.UTC().Format(time.RFC3339), note)
		}
		tw.Flush()
	}
	if !st.Ready {
		fmt.Fprintf(w, "\nNOT READY: %s\n", st.NotReady)
	}
}

// cacheCell is an engine's cache usage for the status table: "-" when not
// asked (not running), "?" when the engine could not tell.
func cacheCell(e gateway.EngineStatus) string {
	switch {
	case e.CacheError != "":
		return "?"
	case e.State != gateway.Running:
		return "-"
	}
	return humanBytes(e.CacheBytes)
}

// humanBytes is n in the largest binary unit that keeps it at least 1.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
