package webhook

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/wakegate/wakegate/identity"
)

// Job is what a workflow_job delivery says about its job.
type Job struct {
	Action     string // queued, waiting, in_progress or completed
	Repository string // OWNER/NAME (repository.full_name)
	Owner      string // OWNER, from Repository
	Workflow   string // workflow_job.workflow_name; "" if absent
	Name       string // the job's name
	ID         int64  // workflow_job.id
	RunID      int64  // workflow_job.run_id
	// Created is when the job was created (queued); Started when it started
	// on a runner (GitHub fills it at queued too). Zero when absent.
	Created, Started time.Time
}

// Key is the placement key the job's connections will have: a certificate
// naming repository OWNER/NAME is placed by identity.Peer.AffinityKey.
func (j Job) Key() string { return identity.Peer{Repo: j.Repository}.AffinityKey() }

// Since is when the delivery's news happened: the job's start for
// in_progress, its creation otherwise; zero when the payload says neither.
func (j Job) Since() time.Time {
	if j.Action == "in_progress" && !j.Started.IsZero() {
		return j.Started
	}
	if !j.Created.IsZero() {
		return j.Created
	}
	return j.Started
}

// payload is the part of a workflow_job delivery wakegate reads.
type payload struct {
	Action     string `json:"action"`
	Repository *struct {
		FullName string `json:"full_name"`
	} `json:"repository"`
	WorkflowJob *struct {
		ID           int64   `json:"id"`
		RunID        int64   `json:"run_id"`
		Name         string  `json:"name"`
		WorkflowName *string `json:"workflow_name"`
		CreatedAt    *string `json:"created_at"`
		StartedAt    *string `json:"started_at"`
	} `json:"workflow_job"`
}

// Limits on what a payload may name: GitHub's own (an owner's login has at
// most 39 characters, a repository's name 100; workflow and job names are
// short), so that nothing unbounded reaches a log line or a map key.
const (
	maxOwner    = 39
	maxRepoName = 100
	maxName     = 1024
)

// ParseJob reads a workflow_job delivery's body. It refuses a payload
// without an action, a repository named as GitHub names them, or a job.
func ParseJob(body []byte) (Job, error) {
	var p payload
	if err := json.Unmarshal(body, &p); err != nil {
		return Job{}, fmt.Errorf("workflow_job payload: %w", err)
	}
	switch {
	case p.Action == "":
		return Job{}, errors.New("workflow_job payload: no action")
	case len(p.Action) > 32 || !printable(p.Action):
		return Job{}, errors.New("workflow_job payload: bad action")
	case p.Repository == nil:
		return Job{}, errors.New("workflow_job payload: no repository")
	case p.WorkflowJob == nil:
		return Job{}, errors.New("workflow_job payload: no workflow_job")
	}
	owner, err := checkRepo(p.Repository.FullName)
	if err != nil {
		return Job{}, fmt.Errorf("workflow_job payload: %w", err)
	}
	wj := p.WorkflowJob
	j := Job{Action: p.Action, Repository: p.Repository.FullName, Owner: owner, Name: wj.Name, ID: wj.ID, RunID: wj.RunID}
	if wj.WorkflowName != nil {
		j.Workflow = *wj.WorkflowName
	}
	if len(j.Name) > maxName || len(j.Workflow) > maxName || !printable(j.Name) || !printable(j.Workflow) {
		return Job{}, errors.New("workflow_job payload: job or workflow name too long or not printable")
	}
	for _, t := range []struct {
		s   *string
		dst *time.Time
	}{{wj.CreatedAt, &j.Created}, {wj.StartedAt, &j.Started}} {
		if t.s == nil || *t.s == "" {
			continue
		}
		v, err := time.Parse(time.RFC3339, *t.s)
		if err != nil {
			return Job{}, fmt.Errorf("workflow_job payload: bad time %q", truncate(*t.s))
		}
		*t.dst = v
	}
	return j, nil
}

// checkRepo checks a repository's full name, OWNER/NAME, as GitHub allows
// them, and returns its owner.
func checkRepo(full string) (owner string, err error) {
	owner, name, ok := strings.Cut(full, "/")
	switch {
	case !ok || owner == "" || name == "":
		return "", fmt.Errorf("repository %q is not OWNER/NAME", truncate(full))
	case len(owner) > maxOwner || !validChars(owner, "-"):
		return "", fmt.Errorf("repository owner %q is not a GitHub login", truncate(owner))
	case len(name) > maxRepoName || !validChars(name, "-._") || name == "." || name == "..":
		return "", fmt.Errorf("repository name %q is not a GitHub repository's", truncate(name))
	}
	return owner, nil
}

func validChars(s, extra string) bool {
	for _, r := range s {
		if !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || strings.ContainsRune(extra, r)) {
			return false
		}
	}
	return true
}

// printable refuses control characters, which a log line should not carry.
func printable(s string) bool {
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return false
		}
	}
	return true
}

func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
