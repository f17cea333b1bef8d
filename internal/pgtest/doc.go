// Package pgtest gives wakegate's tests a real PostgreSQL: Debian's server
// binaries, a throwaway cluster in a temporary directory, run as an
// unprivileged user (initdb and postgres refuse root) and listening only on
// 127.0.0.1 at a free port, with trust authentication. Tests can stop and
// start it again on the same port and data, or kill it, to see how code
// copes with a database that goes away and comes back.
//
// A missing server fails the test with 'make deps', which installs it;
// nothing is skipped, so that CI never passes by not testing.
//
// Only tests import it. It must not import any wakegate package.
package pgtest
