package webhook

import (
	"strings"
	"testing"
	"time"
)

func TestParseJobReadsGitHubsPayload(t *testing.T) {
	j, err := ParseJob(samplePayload(t))
	if err != nil {
		t.Fatal(err)
	}
	want := Job{Action: "queued", Repository: "acme/app", Owner: "acme", Workflow: "CI", Name: "build", ID: 29679449, RunID: 1784460155,
		Created: time.Date(2026, 1, 5, 10, 0, 0, 0, time.UTC), Started: time.Date(2026, 1, 5, 10, 0, 0, 0, time.UTC)}
	if j != want {
		t.Fatalf("ParseJob =\n%+v\nwant\n%+v", j, want)
	}
	if j.Key() != "repo:acme/app" {
		t.Fatalf("key %q", j.Key())
	}
}

func TestParseJobRefusesWhatGitHubDoesNotSend(t *testing.T) {
	for _, tc := range []struct{ body, want string }{
		{`not json`, "invalid character"},
		{`{"repository":{"full_name":"a/b"},"workflow_job":{}}`, "no action"},
		{`{"action":"queued","workflow_job":{}}`, "no repository"},
		{`{"action":"queued","repository":{"full_name":"a/b"}}`, "no workflow_job"},
		{`{"action":"queued","repository":{"full_name":"ab"},"workflow_job":{}}`, "not OWNER/NAME"},
		{`{"action":"queued","repository":{"full_name":"a/b/c"},"workflow_job":{}}`, "not a GitHub repository's"},
		{`{"action":"queued","repository":{"full_name":"a b/c"},"workflow_job":{}}`, "not a GitHub login"},
		{`{"action":"queued","repository":{"full_name":"a/.."},"workflow_job":{}}`, "not a GitHub repository's"},
		{`{"action":"queued","repository":{"full_name":"` + strings.Repeat("a", 40) + `/b"},"workflow_job":{}}`, "not a GitHub login"},
		{`{"action":"queued\n","repository":{"full_name":"a/b"},"workflow_job":{}}`, "bad action"},
		{`{"action":"queued","repository":{"full_name":"a/b"},"workflow_job":{"name":"x\u0007"}}`, "not printable"},
		{`{"action":"queued","repository":{"full_name":"a/b"},"workflow_job":{"created_at":"yesterday"}}`, "bad time"},
	} {
		if _, err := ParseJob([]byte(tc.body)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseJob(%s) = %v, want an error about %q", tc.body, err, tc.want)
		}
	}
}

// FuzzParseJob: the payload is the first thing of a delivery read after its
// signature; even one signed by a careless secret holder must not crash the
// gateway or smuggle a bad name into a placement key or a log line.
func FuzzParseJob(f *testing.F) {
	f.Add(samplePayload(f))
	f.Add([]byte(`{"action":"in_progress","repository":{"full_name":"o/r"},"workflow_job":{"workflow_name":null,"started_at":"2026-01-05T10:00:00+02:00"}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		j, err := ParseJob(body)
		if err != nil {
			return
		}
		owner, name, ok := strings.Cut(j.Repository, "/")
		if !ok || owner == "" || name == "" || strings.Contains(name, "/") || owner != j.Owner {
			t.Fatalf("accepted repository %q (owner %q)", j.Repository, j.Owner)
		}
		if j.Action == "" || !printable(j.Action) || !printable(j.Name) || !printable(j.Workflow) {
			t.Fatalf("accepted unprintable fields %+v", j)
		}
		if j.Key() != "repo:"+j.Repository {
			t.Fatalf("key %q for %q", j.Key(), j.Repository)
		}
	})
}
