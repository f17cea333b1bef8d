package certs

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	_ "github.com/jackc/pgx/v5/stdlib" // registers "pgx" with database/sql
	"github.com/smallstep/certificates/db"
	"github.com/smallstep/nosql/database"
)

// A shared CA database: PostgreSQL through smallstep's own nosql driver
// (what step-ca uses), so that several gateways on one CA see each other's
// single-use tokens, certificates and revocations. The embedded default
// stays bbolt in the CA directory, which one process opens at a time.

// dbTimeout bounds each query wakegate makes itself (revocation checks at
// every handshake, the revocation list, kills): a database that stops
// answering must not hold a handshake.
const dbTimeout = 2 * time.Second

// CheckDBURL validates a --ca-db value: "" (the CA directory's own
// database) or a PostgreSQL URL. The error names the form wanted.
func CheckDBURL(s string) error {
	if s == "" {
		return nil
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "postgresql" && u.Scheme != "postgres") || u.Host == "" {
		return fmt.Errorf("%q is not a PostgreSQL URL; want postgresql://USER@HOST:PORT/DATABASE (password in PGPASSWORD or ~/.pgpass), or nothing for the CA directory's own database", RedactDBURL(s))
	}
	if _, err := pgx.ParseConfig(s); err != nil {
		return fmt.Errorf("%s: %v", RedactDBURL(s), redactErr(err, s))
	}
	return nil
}

// RedactDBURL is s with any password replaced, for messages and logs.
func RedactDBURL(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.User == nil {
		if err != nil {
			return "(unparsable URL)"
		}
		return s
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	}
	return u.String()
}

// redactErr keeps a URL's password out of an error that quotes it.
func redactErr(err error, dsn string) string {
	msg := err.Error()
	if u, perr := url.Parse(dsn); perr == nil && u.User != nil {
		if pw, ok := u.User.Password(); ok && pw != "" {
			msg = strings.ReplaceAll(msg, pw, "xxxxx")
		}
	}
	return msg
}

// oneLine makes a driver's multi-line message one line, each distinct line
// once, without smallstep's wrapping.
func oneLine(msg string) string {
	msg = strings.TrimPrefix(msg, "Error opening database of Type postgresql: ")
	var out []string
	seen := map[string]bool{}
	for _, l := range strings.Split(msg, "\n") {
		l = strings.TrimSpace(l)
		if l != "" && !seen[l] {
			seen[l] = true
			out = append(out, l)
		}
	}
	return strings.Join(out, " ")
}

// sharedDB is smallstep's PostgreSQL driver with what it lacks for many
// processes: its CmpAndSwap of an absent key (how single-use tokens are
// spent and revocations recorded) is a SELECT … FOR UPDATE, which locks
// no row when there is none, then an upsert: two gateways spending one
// token at the same moment both succeed. Here that case is one INSERT …
// ON CONFLICT DO NOTHING, which exactly one caller wins. Queries of
// wakegate's own go through a pool of its own, with bounds.
type sharedDB struct {
	database.DB         // smallstep's nosql PostgreSQL driver
	pool        *sql.DB // the same database, through pgx
}

// withConnectTimeout adds a connect timeout to dsn unless it names one:
// pgx's default waits as long as the operating system does.
func withConnectTimeout(dsn string) string {
	if strings.Contains(dsn, "connect_timeout") {
		return dsn
	}
	sep := "?"
	if strings.Contains(dsn, "?") {
		sep = "&"
	}
	return dsn + sep + "connect_timeout=5"
}

// openSharedDB opens the CA's database at dsn for smallstep's authority
// (creating its tables, and wakegate's) with sharedDB in its place.
func openSharedDB(dsn string) (*db.DB, *sharedDB, error) {
	if err := CheckDBURL(dsn); err != nil {
		return nil, nil, err
	}
	given := dsn
	dsn = withConnectTimeout(dsn)
	adb, err := db.New(&db.Config{Type: "postgresql", DataSource: dsn})
	if err != nil {
		return nil, nil, fmt.Errorf("open the CA database %s: %s (is it running, and reachable from here? check with: psql '%s')",
			RedactDBURL(given), oneLine(redactErr(err, dsn)), RedactDBURL(given))
	}
	sdb, ok := adb.(*db.DB)
	if !ok {
		return nil, nil, fmt.Errorf("open the CA database: smallstep returned %T", adb)
	}
	pool, err := sql.Open("pgx", dsn)
	if err != nil {
		sdb.Shutdown()
		return nil, nil, fmt.Errorf("open the CA database %s: %s", RedactDBURL(given), oneLine(redactErr(err, dsn)))
	}
	shared := &sharedDB{DB: sdb.DB, pool: pool}
	sdb.DB = shared
	if err := shared.CreateTable(killsTable); err != nil {
		sdb.Shutdown()
		return nil, nil, fmt.Errorf("open the CA database: %w", err)
	}
	return sdb, shared, nil
}

// Close closes both connections to the database.
func (s *sharedDB) Close() error {
	return errors.Join(s.pool.Close(), s.DB.Close())
}

func table(bucket []byte) string { return pgx.Identifier{string(bucket)}.Sanitize() }

// CmpAndSwap is smallstep's, except that swapping an absent key is atomic.
func (s *sharedDB) CmpAndSwap(bucket, key, oldValue, newValue []byte) ([]byte, bool, error) {
	if oldValue != nil {
		return s.DB.CmpAndSwap(bucket, key, oldValue, newValue)
	}
	ctx, cancel := context.WithTimeout(context.Background(), dbTimeout)
	defer cancel()
	res, err := s.pool.ExecContext(ctx, "INSERT INTO "+table(bucket)+" (nkey, nvalue) VALUES ($1, $2) ON CONFLICT (nkey) DO NOTHING", key, newValue)
	if err != nil {
		return nil, false, fmt.Errorf("insert %s/%s: %w", bucket, key, err)
	}
	if n, err := res.RowsAffected(); err != nil || n != 1 {
		cur, gerr := s.DB.Get(bucket, key)
		if gerr != nil && !database.IsErrNotFound(gerr) {
			return nil, false, gerr
		}
		return cur, false, err
	}
	return newValue, true, nil
}

// has says whether bucket holds key, within dbTimeout.
func (s *sharedDB) has(ctx context.Context, bucket, key []byte) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, dbTimeout)
	defer cancel()
	var one int
	err := s.pool.QueryRowContext(ctx, "SELECT 1 FROM "+table(bucket)+" WHERE nkey = $1", key).Scan(&one)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return false, nil
	case err != nil:
		return false, err
	}
	return true, nil
}

// list reads every key and value of bucket, within dbTimeout.
func (s *sharedDB) list(ctx context.Context, bucket []byte) (map[string][]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, dbTimeout)
	defer cancel()
	rows, err := s.pool.QueryContext(ctx, "SELECT nkey, nvalue FROM "+table(bucket))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string][]byte{}
	for rows.Next() {
		var k, v []byte
		if err := rows.Scan(&k, &v); err != nil {
			return nil, err
		}
		out[string(k)] = v
	}
	return out, rows.Err()
}

// dbDown says whether a shared database fails to answer a ping within
// dbTimeout: a request that would write to it is then refused with a
// message that says so, rather than smallstep's "internal server error".
// The embedded database is never down.
func (a *Authority) dbDown(ctx context.Context) bool {
	if a.shared == nil {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, dbTimeout)
	defer cancel()
	if err := a.shared.pool.PingContext(ctx); err != nil {
		a.log.Warn("CA API request refused: the CA database does not answer", "err", err)
		return true
	}
	return false
}

// SharedDB is the shared database, for what gateways coordinate besides
// the CA's state (the engine leases of local and exec hosts); nil with the
// embedded database. Its CmpAndSwap of an absent key is atomic.
func (a *Authority) SharedDB() database.DB {
	if a.shared == nil {
		return nil
	}
	return a.shared
}
