package main

// engineSANs is what the certificate of engine id, named name, names for
// the host it runs on, and no more:
//
//   - local: loopback, which is where the gateway dials it;
//   - fly: the machine's private DNS name, <id>.vm.<app>.internal, which
//     follows the machine when Fly moves it to another private address (an
//     IP SAN would go stale within the certificate's life);
//   - exec: only its name; the host's address is known once the start
//     command prints it, after the token is made.
//
// The gateway identifies an engine by its chain, server usage and name, not
// a host name, since hosts move machines; the SANs only say where the
// certificate belongs.
func (f *gatewayFlags) engineSANs(name, id string) []string {
	switch f.host.provider {
	case "local":
		return []string{name, "127.0.0.1", "localhost"}
	case "fly":
		return []string{name, id + ".vm." + f.host.fly.app + ".internal"}
	}
	return []string{name}
}
