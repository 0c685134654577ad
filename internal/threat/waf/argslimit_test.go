package waf

import (
	"net/url"
	"strconv"
	"testing"
)

// TestArgumentsLimit: the CRS evaluates at most ArgumentsLimit arguments (its cost grows with
// each), so an attack past the cap is left to the built-in detectors and one inside it is
// caught; the default is the documented 256.
func TestArgumentsLimit(t *testing.T) {
	form := func(attackAt int) string {
		v := url.Values{}
		for i := 0; i < 600; i++ {
			val := "hello " + strconv.Itoa(i)
			if i == attackAt {
				val = "1' UNION SELECT password FROM users--"
			}
			v.Set("f"+strconv.Itoa(1000+i), val)
		}
		b := v.Encode()
		return "POST /x HTTP/1.1\r\nHost: x\r\nUser-Agent: curl/8\r\nAccept: */*\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: " +
			strconv.Itoa(len(b)) + "\r\n\r\n" + b
	}
	w := mustWAF(t, Config{})
	if got := w.Config().ArgumentsLimit; got != 256 {
		t.Fatalf("default arguments limit %d, want 256", got)
	}
	if f := w.Inspect(parse(t, form(5)), nil); len(f) != 1 {
		t.Fatalf("attack in argument 5 missed: %v", f)
	}
	if f := w.Inspect(parse(t, form(500)), nil); len(f) != 0 {
		t.Fatalf("argument 500 evaluated with a 256 cap: %v", f)
	}
	if f := mustWAF(t, Config{ArgumentsLimit: 1000}).Inspect(parse(t, form(500)), nil); len(f) != 1 {
		t.Fatalf("attack in argument 500 missed with a 1000 cap: %v", f)
	}
}
