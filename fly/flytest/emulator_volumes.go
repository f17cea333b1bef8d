package flytest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"sort"
	"time"

	fly "github.com/superfly/fly-go"
)

// volume is one emulated volume and the request that created it (its
// compute hints, for tests); the emulator's mu guards it.
type volume struct {
	v   *fly.Volume
	req fly.CreateVolumeRequest
}

// volumeName is Fly's rule for volume names: lowercase letters, digits and
// underscores, at most 30 characters (a hyphenated name is refused:
// https://github.com/CurateLabs/graphforge/issues/884,
// https://github.com/fly-apps/terraform-provider-fly/issues/213).
var volumeName = regexp.MustCompile(`^[a-z0-9_]{1,30}$`)

func (e *Emulator) listVolumes(w http.ResponseWriter, r *http.Request, a *app) {
	e.mu.Lock()
	out := []fly.Volume{}
	for _, v := range a.volumes {
		out = append(out, *v.v)
	}
	e.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].CreatedAt.Before(out[j].CreatedAt) })
	writeJSON(w, out)
}

// createVolume answers as Fly's volumes resource does
// (https://fly.io/docs/machines/api/volumes-resource/#create-a-volume): a
// name, a size of at most 500 GB (https://fly.io/docs/volumes/overview/),
// daily snapshots kept 5 days unless told otherwise (auto_backup_enabled,
// snapshot_retention 1–60; billed per stored GB:
// https://fly.io/docs/about/pricing/#volume-snapshots), and a host
// ("zone") chosen with require_unique_zone — default true — among hosts
// holding no volume of the same name (of the app, with
// unique_zone_app_wide). When every host has one, Fly answers 400 "no
// capacity" (Kilo-Org/cloud kiloclaw/src/fly/client.test.ts, a production
// payload).
func (e *Emulator) createVolume(w http.ResponseWriter, r *http.Request, a *app) {
	var req fly.CreateVolumeRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		apiError(w, http.StatusBadRequest, "invalid volume request: "+err.Error())
		return
	}
	size := 3
	if req.SizeGb != nil {
		size = *req.SizeGb
	}
	retention := 5
	if req.SnapshotRetention != nil && *req.SnapshotRetention != 0 {
		retention = *req.SnapshotRetention
	}
	switch {
	case !volumeName.MatchString(req.Name):
		apiError(w, http.StatusBadRequest, fmt.Sprintf("invalid volume name %q: use at most 30 lowercase letters, digits or underscores", req.Name))
		return
	case req.Region == "":
		apiError(w, http.StatusBadRequest, "a volume needs a region")
		return
	case size < 1 || size > 500:
		apiError(w, http.StatusBadRequest, fmt.Sprintf("invalid size_gb %d: volumes are 1 to 500 GB", size))
		return
	case retention < 1 || retention > 60:
		apiError(w, http.StatusBadRequest, fmt.Sprintf("invalid snapshot_retention %d: 1 to 60 days", retention))
		return
	}
	unique := req.RequireUniqueZone == nil || *req.RequireUniqueZone
	appWide := req.UniqueZoneAppWide != nil && *req.UniqueZoneAppWide
	backups := req.AutoBackupEnabled == nil || *req.AutoBackupEnabled

	e.mu.Lock()
	used := map[string]bool{}
	for _, v := range a.volumes {
		if v.v.Region == req.Region && (appWide || v.v.Name == req.Name) {
			used[v.v.Zone] = true
		}
	}
	zone := ""
	for i := range e.opts.Zones {
		z := fmt.Sprintf("%s-z%d", req.Region, i)
		if !unique || !used[z] {
			zone = z
			break
		}
	}
	if zone == "" {
		e.mu.Unlock()
		apiError(w, http.StatusBadRequest, "no capacity")
		return
	}
	v := &fly.Volume{ID: "vol_" + newID(8), Name: req.Name, State: "created", SizeGb: size, Region: req.Region, Zone: zone,
		Encrypted: req.Encrypted == nil || *req.Encrypted, CreatedAt: time.Now().UTC(), SnapshotRetention: retention,
		AutoBackupEnabled: backups, HostStatus: "ok"}
	a.volumes[v.ID] = &volume{v: v, req: req}
	c := *v
	e.mu.Unlock()
	if err := os.MkdirAll(e.volumeDir(v.ID), 0o700); err != nil {
		apiError(w, http.StatusInternalServerError, err.Error())
		return
	}
	writeJSON(w, &c)
}

// Volumes lists an app's volumes (copies), oldest first.
func (e *Emulator) Volumes(appName string) []fly.Volume {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []fly.Volume
	for _, v := range e.appLocked(appName).volumes {
		out = append(out, *v.v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].CreatedAt.Before(out[j].CreatedAt) })
	return out
}

// VolumeRequest returns the request that created a volume: its compute
// hints among the rest.
func (e *Emulator) VolumeRequest(appName, id string) (fly.CreateVolumeRequest, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	v, ok := e.appLocked(appName).volumes[id]
	if !ok {
		return fly.CreateVolumeRequest{}, false
	}
	return v.req, true
}
