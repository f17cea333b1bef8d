package main

import (
	"flag"
	"io"
)

// The names one concept has on every command. Their earlier spellings
// still work for one release as hidden aliases, left out of help: certs'
// --dir, --name and --ttl, the engine's --name. They are silent: scripts
// that read a command's output (a token, a fingerprint) get what they got.
const (
	flagCADir    = "ca-dir"    // the CA directory made by 'certs init' (was --dir)
	flagIdentity = "identity"  // a certificate's common name: a client's or an engine's identity (was --name)
	flagCertTTL  = "cert-ttl"  // a certificate's lifetime (was --ttl)
	flagTokenTTL = "token-ttl" // how long a single-use token may wait to be used (was --ttl)
	flagCAName   = "ca-name"   // the name prefixing the CA certificates' common names (was --name)
)

// oldSpelling is a hidden alias of the flag now named now: it sets the same
// value, and help leaves it out.
type oldSpelling struct {
	flag.Value
	now string
}

// IsBoolFlag keeps a boolean flag's alias valueless (--old, not --old=true).
func (o oldSpelling) IsBoolFlag() bool {
	b, ok := o.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// Get lets flag errors name the kind of value the alias takes.
func (o oldSpelling) Get() any {
	if g, ok := o.Value.(flag.Getter); ok {
		return g.Get()
	}
	return o.Value.String()
}

// renamed makes old a hidden alias of the defined flag now.
func renamed(fs *flag.FlagSet, old, now string) {
	f := fs.Lookup(now)
	if f == nil {
		panic("renamed: no flag --" + now) // a wiring mistake, found by any test of the command
	}
	fs.Var(oldSpelling{Value: f.Value, now: now}, old, "")
}

// printVisibleDefaults is fs.PrintDefaults without the hidden aliases.
func printVisibleDefaults(fs *flag.FlagSet, w io.Writer) {
	vis := flag.NewFlagSet(fs.Name(), flag.ContinueOnError)
	vis.SetOutput(w)
	fs.VisitAll(func(f *flag.Flag) {
		if _, hidden := f.Value.(oldSpelling); !hidden {
			vis.Var(f.Value, f.Name, f.Usage)
			vis.Lookup(f.Name).DefValue = f.DefValue
		}
	})
	vis.PrintDefaults()
}
