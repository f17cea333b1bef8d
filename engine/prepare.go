package engine

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.etcd.io/bbolt"
	"golang.org/x/sys/unix"
)

// checkCacheDBs opens every BuildKit metadata database under root read-only.
// BuildKit crash-loops on a database it cannot open; wakegate sets the whole
// cache aside instead, loudly, and lets the engine start empty: a cold cache
// costs a slow build, a crash loop costs the engine.
func checkCacheDBs(root string, log *slog.Logger) error {
	var bad []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil // unreadable corners are buildkitd's to judge
		}
		if d.IsDir() {
			// Snapshot and content stores hold build data, not databases:
			// root/*/snapshots/snapshots, root/*/content, cache mounts.
			base, parent := d.Name(), filepath.Base(filepath.Dir(p))
			if base == "snapshots" && parent == "snapshots" || base == "content" || base == "cachemounts" || base == "executor" {
				return fs.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(d.Name(), ".db") || !d.Type().IsRegular() {
			return nil
		}
		db, err := bbolt.Open(p, 0o600, &bbolt.Options{ReadOnly: true, Timeout: time.Second})
		if err != nil {
			bad = append(bad, fmt.Sprintf("%s: %v", p, err))
			return nil
		}
		return db.Close()
	})
	if err != nil || len(bad) == 0 {
		return err
	}
	aside := root + ".corrupt-" + time.Now().UTC().Format("20060102T150405Z")
	if err := os.Rename(root, aside); err != nil {
		return fmt.Errorf("set aside corrupt cache %s: %w", root, err)
	}
	log.Error("CACHE DATABASE CORRUPT: the cache was set aside and the engine starts empty; delete it once inspected",
		"bad", strings.Join(bad, "; "), "set_aside", aside)
	return nil
}

// overlaySupported tries an overlay mount inside dir: the overlayfs
// snapshotter is much faster than native on large layers, but needs a
// filesystem that can be an overlay's upper layer (not overlayfs itself,
// for instance).
func overlaySupported(dir string) bool {
	tmp, err := os.MkdirTemp(dir, ".overlay-check-")
	if err != nil {
		return false
	}
	defer os.RemoveAll(tmp)
	for _, d := range []string{"lower", "upper", "work", "merged"} {
		if err := os.Mkdir(filepath.Join(tmp, d), 0o700); err != nil {
			return false
		}
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", filepath.Join(tmp, "lower"), filepath.Join(tmp, "upper"), filepath.Join(tmp, "work"))
	merged := filepath.Join(tmp, "merged")
	if err := unix.Mount("overlay", merged, "overlay", 0, opts); err != nil {
		return false
	}
	return unix.Unmount(merged, 0) == nil
}

// GC bounds derived from the volume: the cache may use up to 80% of it,
// garbage collection tries to keep 10% free, and 10% (at most 10 GB) is
// always kept so a sweep never empties a warm cache.
func gcBounds(dir string) (maxUsed, minFree, reserved uint64, err error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, 0, 0, fmt.Errorf("size of the volume at %s: %w", dir, err)
	}
	total := st.Blocks * uint64(st.Bsize)
	if total == 0 {
		return 0, 0, 0, errors.New("volume reports no size")
	}
	return total / 10 * 8, total / 10, min(total/10, 10<<30), nil
}

// writeConfig writes dir/buildkitd.toml with a GC policy bounded by the
// volume's size, using BuildKit's current policy fields (maxUsedSpace,
// minFreeSpace, reservedSpace; keepBytes alone is deprecated, and a lone
// keepDuration would pin everything).
func writeConfig(dir string) (string, error) {
	maxUsed, minFree, reserved, err := gcBounds(dir)
	if err != nil {
		return "", err
	}
	conf := fmt.Sprintf(`# Written by wakegate engine at every start; pass --buildkitd-config to use your own.
[worker.oci]
  gc = true
  maxUsedSpace = "%d"
  minFreeSpace = "%d"
  reservedSpace = "%d"
`, maxUsed, minFree, reserved)
	p := filepath.Join(dir, "buildkitd.toml")
	if err := os.WriteFile(p, []byte(conf), 0o644); err != nil {
		return "", fmt.Errorf("write %s: %w", p, err)
	}
	return p, nil
}
