package proxy

import (
	"io"
	"unsafe"
)

// BuffersLent is how many pooled copy buffers the process's Joins hold now.
func BuffersLent() int64 { return lent.Load() }

const (
	IdleBufSize = idleBufSize
	MaxRecord   = maxRecord
)

// WriteChunk writes p as a copy writes a chunk.
func WriteChunk(w io.Writer, p []byte) (int, error) { return writeChunk(w, p) }

// GatheredSize is what a Gathered socket costs each TLS connection.
const GatheredSize = unsafe.Sizeof(Gathered{})
