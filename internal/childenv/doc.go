// Package childenv keeps wakegate's secrets out of the processes it starts
// and out of what they print: the environment a child gets (this process's
// own without the secret variables, plus what the child is explicitly
// given) and a scrubber that blanks secret values in text bound for a log
// or a client. The engine supervisor (buildkitd, a local engine) and the
// exec provider (an operator's command lines) share it.
//
// It imports the standard library only.
package childenv
