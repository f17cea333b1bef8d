package certs

// TicketsPerClient is how many tickets a server keeps for each client
// certificate, for the tests of what that bound does.
const TicketsPerClient = ticketsPerClient
