package identity_test

import "runtime"

func runtimeGosched() { runtime.Gosched() }
