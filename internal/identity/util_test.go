package identity_test

import (
	"runtime"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func runtimeGosched() { runtime.Gosched() }

func mustID(t interface{ Fatal(...any) }, s string) spiffeid.ID {
	id, err := spiffeid.FromString(s)
	if err != nil {
		t.Fatal(err)
	}
	return id
}
