// Package layering holds no code, only a test: each package's doc.go
// states what it must not import (or what alone it imports), and the test
// holds the module's real dependency graph (go list -deps) to those words,
// so the layering the docs describe is the layering the build has.
package layering
