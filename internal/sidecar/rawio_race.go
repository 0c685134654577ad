//go:build race

package sidecar

import "sync/atomic"

// raceIOSync stands in, under the race detector, for the happens-before edge net's own Read
// and Write declare between every write and any later read (internal/poll's ioSync): data
// handed to another goroutine through a socket is not a race. Without it, rawConn would make
// every such hand-off in the tests a reported race.
var raceIOSync atomic.Uint64

func raceReleaseIO() { raceIOSync.Add(1) }
func raceAcquireIO() { raceIOSync.Load() }
