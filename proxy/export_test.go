package proxy

// BuffersLent is how many pooled copy buffers the process's Joins hold now.
func BuffersLent() int64 { return lent.Load() }

const (
	IdleBufSize = idleBufSize
	MaxRecord   = maxRecord
)
