//! Cluster state machines: membership and the grain directory. No I/O: inputs (probe results,
//! table reads, registrations) come in as method calls with `now`, decisions come out.
