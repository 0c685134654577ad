package waf

import (
	"strconv"
	"testing"

	"github.com/meshguard/meshguard/internal/threat"
)

// TestClientShapesNotFlagged: what REST clients, browsers and upload tools send is not an
// anomaly by itself (issue 7), and the body-handling fixes in New do not open a hole.
func TestClientShapesNotFlagged(t *testing.T) {
	w := mustWAF(t, Config{})
	for _, raw := range []string{
		"PUT /api/v1/users/7 HTTP/2\r\nHost: api\r\nUser-Agent: python-requests/2.31.0\r\nAccept: */*\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: 35\r\n\r\n{\"name\":\"O'Brien\",\"tags\":[\"a\",\"b\"]}",
		"POST /api/v1/things HTTP/1.1\r\nHost: api\r\nUser-Agent: okhttp/4.12.0\r\nContent-Type: application/vnd.api+json\r\nContent-Length: 46\r\n\r\n{\"data\":{\"type\":\"things\",\"attributes\":{\"n\":1}}}",
		"POST /csp HTTP/1.1\r\nHost: web\r\nUser-Agent: Mozilla/5.0\r\nContent-Type: application/csp-report\r\nContent-Length: 43\r\n\r\n{\"csp-report\":{\"document-uri\":\"https://x/\"}}",
		"POST /beacon HTTP/1.1\r\nHost: web\r\nUser-Agent: Mozilla/5.0\r\nContent-Type: text/plain;charset=UTF-8\r\nContent-Length: 16\r\n\r\n{\"event\":\"view\"}",
		"GET /healthz HTTP/1.1\r\nHost: 10.0.0.7:8080\r\nUser-Agent: kube-probe/1.29\r\nAccept: */*\r\n\r\n",
		"DELETE /api/v1/items/3 HTTP/1.1\r\nHost: api\r\nUser-Agent: curl/8\r\nAccept: */*\r\nContent-Type: application/json\r\nContent-Length: 16\r\n\r\n{\"reason\":\"dup\"}",
		// Binary bodies: parsed as a form they gave garbage argument names (921150, 920270).
		"POST /grpc.Svc/Call HTTP/1.1\r\nHost: api\r\nContent-Type: application/grpc\r\nUser-Agent: grpc-go/1.60\r\nContent-Length: 7\r\n\r\n\x00\x00\x00\x00\x02\x08\x01",
		"PUT /bucket/cat.png HTTP/1.1\r\nHost: s3\r\nUser-Agent: aws-sdk-go-v2/1.30\r\nContent-Type: image/png\r\nContent-Length: 16\r\n\r\n\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
		// An apostrophe in an upload's file name (920120).
		multipart("John's CV.pdf"),
	} {
		if fl, rules := w.attackRules(t, []byte(raw)); fl {
			t.Errorf("benign request flagged by %v:\n%q", rules, raw)
		}
	}
	for _, raw := range []string{
		// The RAW processor for binary types does not hide the query, headers or the body.
		"PUT /bucket/x.png?id=1%27%20UNION%20SELECT%20password%20FROM%20users-- HTTP/1.1\r\nHost: s3\r\nUser-Agent: curl/8\r\nContent-Type: image/png\r\nContent-Length: 4\r\n\r\n\x89PNG",
		// 920120 still guards file names that can re-quote the header parameter.
		multipart("shell.php;.jpg"),
		multipart("a=b.php"),
		multipart(`1.j\s\p`),
	} {
		r := parse(t, raw)
		if f := w.Inspect(r, nil); len(f) == 0 {
			t.Errorf("attack not detected:\n%q", raw)
		}
	}
}

func multipart(filename string) string {
	body := "--B\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nHoliday\r\n--B\r\n" +
		"Content-Disposition: form-data; name=\"file\"; filename=\"" + filename + "\"\r\nContent-Type: application/pdf\r\n\r\n%PDF-1.4 x\r\n--B--\r\n"
	return "POST /upload HTTP/1.1\r\nHost: web\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\nContent-Type: multipart/form-data; boundary=B\r\nContent-Length: " +
		strconv.Itoa(len(body)) + "\r\n\r\n" + body
}

// FuzzInspect: hostile requests never panic the sensor (Coraza and its body processors).
func FuzzInspect(f *testing.F) {
	w := mustWAF(f, Config{})
	f.Add([]byte(multipart("a'b.png")))
	f.Add([]byte("PUT /x HTTP/1.1\r\nHost: a\r\nContent-Type: image/png\r\nContent-Length: 3\r\n\r\nabc"))
	f.Add([]byte("POST /api HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: 9\r\n\r\n{\"a\":[1}"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		r, err := threat.ParseHTTPRequest(raw)
		if err != nil {
			return
		}
		_ = w.Inspect(&r, nil)
	})
}
