package dpi

import "bytes"

// NATS is the NATS client protocol: the server greets with INFO {json}, the client answers
// CONNECT {json}; then PUB/HPUB/SUB/UNSUB from the client and MSG/HMSG from the server. Each
// protocol line becomes a message with the command and, where there is one, the subject;
// payloads are skipped by their declared size without buffering. CONNECT credentials (user,
// pass, auth_token, nkey, jwt, sig) are never read.
type NATS struct{}

func (NATS) Name() string          { return "nats" }
func (NATS) Transports() Transport { return TCP }
func (NATS) Ports() []uint16       { return []uint16{4222} }
func (NATS) NewParser() Parser     { return &natsParser{} }

func (NATS) Detect(p *Probe) Verdict {
	if v := natsDetectSide(p.Server, "INFO {"); v != No {
		return v
	}
	if v := natsDetectSide(p.Client, "CONNECT {"); v != No {
		return v
	}
	// Mid-stream: a client publishing or subscribing, a server delivering.
	for _, b := range [][]byte{p.Client, p.Server} {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			continue
		}
		var argv [4][]byte
		cmd, args := natsSplit(bytes.TrimSuffix(b[:i], []byte{'\r'}), &argv)
		switch cmd {
		case "PUB", "SUB", "MSG", "HPUB", "HMSG":
			if len(args) >= 2 && natsSubjectOK(args[0]) && natsNumber(args[len(args)-1]) >= 0 {
				return Maybe
			}
		}
	}
	return No
}

func natsDetectSide(b []byte, prefix string) Verdict {
	if len(b) == 0 {
		return No
	}
	if len(b) < len(prefix) {
		if bytes.HasPrefix([]byte(prefix), b) {
			return NeedMore
		}
		return No
	}
	if bytes.HasPrefix(b, []byte(prefix)) {
		return Yes
	}
	return No
}

type natsParser struct {
	r    [2]lineReasm
	msg  Message
	argv [4][]byte
}

// natsMaxLine is the server's default max_control_line is 4 KiB; INFO may be larger in
// clusters, so allow more, bounded.
const natsMaxLine = 16 << 10

func (p *natsParser) Feed(dir Direction, data []byte, emit func(*Message)) error {
	_, ok := p.r[dir&1].feed(data, natsMaxLine, func(l []byte) int {
		return p.line(dir, l, emit)
	})
	if !ok {
		return errNotThisProtocol("nats")
	}
	return nil
}

func (p *natsParser) line(dir Direction, l []byte, emit func(*Message)) int {
	if len(l) == 0 {
		return 0
	}
	cmd, args := natsSplit(l, &p.argv)
	if cmd == "" {
		return 0 // unknown line: skip it, resynchronise on the next
	}
	m := &p.msg
	typ := "command"
	if dir == ServerToClient {
		typ = "reply"
	}
	m.Reset(dir, typ)
	m.AddString(AttrCommand, cmd)
	skip := 0
	switch cmd {
	case "INFO":
		js := natsJSON(l)
		if v := jsonStringField(js, "version"); v != nil {
			m.Add(AttrVersion, v)
		}
		if v := jsonStringField(js, "server_name"); v != nil {
			m.Add(AttrName, capBytes(v, 256))
		}
		if v := jsonStringField(js, "server_id"); v != nil && m.Get(AttrName) == nil {
			m.Add(AttrName, capBytes(v, 256))
		}
	case "CONNECT":
		js := natsJSON(l)
		if v := jsonStringField(js, "name"); v != nil {
			m.Add(AttrClientID, capBytes(v, 256))
		}
		if v := jsonStringField(js, "lang"); v != nil {
			m.Add(AttrSoftware, capBytes(v, 64))
		}
		if v := jsonStringField(js, "version"); v != nil {
			m.Add(AttrVersion, capBytes(v, 64))
		}
		// Presence only: whether the client authenticated, never with what.
		for _, k := range []string{"user", "auth_token", "nkey", "jwt"} {
			if jsonStringField(js, k) != nil {
				m.AddString("auth", k)
				break
			}
		}
	case "PUB", "HPUB", "MSG", "HMSG":
		if len(args) > 0 {
			m.Add(AttrTopic, capBytes(args[0], 256))
		}
		if len(args) >= 2 {
			if n := natsNumber(args[len(args)-1]); n >= 0 {
				skip = n + 2 // payload and its CRLF
			}
		}
	case "SUB":
		if len(args) > 0 {
			m.Add(AttrTopic, capBytes(args[0], 256))
		}
		if len(args) == 3 {
			m.Add("queue", capBytes(args[1], 256))
		}
	case "-ERR":
		if i := bytes.IndexByte(l, ' '); i > 0 {
			m.Add(AttrStatus, capBytes(bytes.Trim(l[i+1:], " '"), 256))
		}
	}
	emit(m)
	return skip
}

// natsSplit returns the uppercased command as a constant and up to 4 space-separated args.
func natsSplit(l []byte, argv *[4][]byte) (string, [][]byte) {
	i := bytes.IndexAny(l, " \t")
	word := l
	rest := []byte(nil)
	if i >= 0 {
		word, rest = l[:i], l[i+1:]
	}
	cmd := ""
	for _, c := range [...]string{"PUB", "HPUB", "SUB", "UNSUB", "MSG", "HMSG", "INFO",
		"CONNECT", "PING", "PONG", "+OK", "-ERR"} {
		if bytes.EqualFold(word, []byte(c)) {
			cmd = c
			break
		}
	}
	if cmd == "" || cmd == "INFO" || cmd == "CONNECT" || cmd == "-ERR" {
		return cmd, nil
	}
	n := 0
	for len(rest) > 0 {
		for len(rest) > 0 && (rest[0] == ' ' || rest[0] == '\t') {
			rest = rest[1:]
		}
		if len(rest) == 0 {
			break
		}
		e := bytes.IndexAny(rest, " \t")
		if e < 0 {
			e = len(rest)
		}
		if n == len(argv) {
			return "", nil
		}
		argv[n] = rest[:e]
		n++
		rest = rest[e:]
	}
	return cmd, argv[:n]
}

func natsJSON(l []byte) []byte {
	if i := bytes.IndexByte(l, '{'); i >= 0 {
		return l[i:]
	}
	return nil
}

func natsSubjectOK(s []byte) bool {
	if len(s) == 0 || len(s) > 1024 {
		return false
	}
	for _, c := range s {
		if c <= ' ' || c >= 127 {
			return false
		}
	}
	return true
}

// natsNumber parses a non-negative decimal, -1 if it is not one (or absurdly large).
func natsNumber(b []byte) int {
	if len(b) == 0 || len(b) > 10 {
		return -1
	}
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return -1
		}
		n = n*10 + int(c-'0')
	}
	return n
}

// jsonStringField finds "key":"value" at any depth of a flat JSON object and returns the raw
// value (escapes left as they are). Good enough for INFO/CONNECT, and allocation-free.
func jsonStringField(js []byte, key string) []byte {
	for i := 0; i < len(js); {
		j := bytes.IndexByte(js[i:], '"')
		if j < 0 {
			return nil
		}
		start := i + j + 1
		end := start
		for end < len(js) && js[end] != '"' {
			if js[end] == '\\' {
				end++
			}
			end++
		}
		if end >= len(js) {
			return nil
		}
		tok := js[start:end]
		k := end + 1
		for k < len(js) && (js[k] == ' ' || js[k] == '\t') {
			k++
		}
		if k < len(js) && js[k] == ':' {
			k++
			for k < len(js) && (js[k] == ' ' || js[k] == '\t') {
				k++
			}
			if string(tok) == key {
				if k < len(js) && js[k] == '"' {
					vs := k + 1
					ve := vs
					for ve < len(js) && js[ve] != '"' {
						if js[ve] == '\\' {
							ve++
						}
						ve++
					}
					if ve > len(js) {
						ve = len(js)
					}
					return js[vs:ve]
				}
				return nil
			}
			i = k
			continue
		}
		i = end + 1
	}
	return nil
}
