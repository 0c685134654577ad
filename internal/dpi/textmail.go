package dpi

import "bytes"

// Detection shared by the text protocols whose servers speak first with look-alike banners
// (smtp, ftp, pop3, imap): the server's first line, its text, and the client's first command
// decide; an SMTP/FTP "220" banner without telling text waits for the client's command.

const (
	tmSMTP = iota
	tmFTP
	tmPOP3
	tmIMAP
)

// textMailDetect returns the verdict of each of smtp, ftp, pop3 and imap for a probe.
func textMailDetect(p *Probe) (v [4]Verdict) {
	if p.Transport != TCP {
		return v
	}
	s, sDone := firstLine(p.Server)
	c, cDone := firstLine(p.Client)
	cw, crest := cutWord(c)
	if len(p.Server) > 0 {
		switch {
		case len(s) >= 3 && isDigits(s[:3]) && (len(s) == 3 || s[3] == ' ' || s[3] == '-'):
			v[tmSMTP], v[tmFTP] = smtpOrFTP(p.Server, s, cw, crest, cDone)
			return v
		case bytes.HasPrefix(s, []byte("+OK")):
			// A POP3 greeting has text; Redis answers "+OK" bare, and only to a command.
			if len(c) > 0 && (c[0] == '*' || c[0] == '$') {
				return v
			}
			switch {
			case !sDone:
				v[tmPOP3] = NeedMore
			case len(s) > 4 && s[3] == ' ':
				v[tmPOP3] = Yes
			case len(c) == 0 && p.Midstream:
				v[tmPOP3] = NeedMore // a bare "+OK" is as much a Redis reply: the client decides
			case cDone && (pop3Only(cw) || eqWord(cw, "USER", "PASS", "RETR", "LIST", "DELE", "QUIT", "NOOP", "RSET", "AUTH")):
				v[tmPOP3] = Yes
			}
			return v
		case bytes.HasPrefix(s, []byte("-ERR")) && cDone && len(c) > 0 && c[0] != '*' &&
			(pop3Only(cw) || eqWord(cw, "USER", "PASS", "RETR", "LIST", "DELE", "NOOP", "RSET")):
			// A refused POP3 command; Redis says -ERR too but its clients speak RESP.
			v[tmPOP3] = Maybe
			return v
		case bytes.HasPrefix(s, []byte("* OK")) || bytes.HasPrefix(s, []byte("* PREAUTH")) || bytes.HasPrefix(s, []byte("* BYE")):
			v[tmIMAP] = Yes
			return v
		case !sDone && len(s) < 9 && (bytes.HasPrefix([]byte("+OK"), s) || bytes.HasPrefix([]byte("* PREAUTH"), s) || bytes.HasPrefix([]byte("* OK"), s) || len(s) < 4 && isDigits(s)):
			v[tmSMTP], v[tmFTP], v[tmPOP3], v[tmIMAP] = NeedMore, NeedMore, NeedMore, NeedMore
			return v
		}
		if !p.Midstream {
			return v
		}
		if len(p.Client) == 0 && (imapUntagged(s) || imapTagged(s) && imapTagLike(s)) {
			v[tmIMAP] = Maybe // "* 3 EXISTS", "* CAPABILITY ...": only IMAP talks like this
			return v
		}
	}
	if len(c) == 0 {
		return v
	}
	if !p.Midstream && len(p.Server) == 0 {
		// All four greet first: a client talking first on a flow seen from its start is
		// none of them.
		return v
	}
	if !cDone {
		if len(c) < 16 && isAlphaWord(c) || len(c) < 24 && bytes.IndexByte(c, ' ') > 0 && isAlphaWord(crest[:min(len(crest), 4)]) {
			v[tmSMTP], v[tmFTP], v[tmPOP3], v[tmIMAP] = NeedMore, NeedMore, NeedMore, NeedMore
		}
		return v
	}
	switch {
	case smtpOnly(cw, crest):
		v[tmSMTP] = Yes
	case ftpOnly(cw, crest):
		v[tmFTP] = Yes
	case pop3Only(cw):
		v[tmPOP3] = Yes
	case eqWord(cw, "USER", "PASS", "RETR", "LIST", "DELE", "QUIT", "NOOP"):
		// Words FTP and POP3 share: only the server's reply ("+OK"/"-ERR" or a 3-digit
		// code, handled above) tells them apart. Guessing would name the wrong protocol
		// half the time, so wait for the reply and stay unknown without it.
		switch {
		case len(p.Server) == 0:
			v[tmFTP], v[tmPOP3] = NeedMore, NeedMore
		}
	default:
		if iw, _ := cutWord(crest); len(cw) > 0 && len(cw) <= 32 && imapCommand(iw) {
			// "tag COMMAND" is easy for any text to look like: the server must answer as
			// IMAP does (untagged "* " data, or the status tagged with the same tag).
			switch s := p.Server; {
			case len(s) == 0:
				v[tmIMAP] = NeedMore
			case bytes.HasPrefix(s, []byte("* ")) && (imapUntagged(s) || bytes.HasPrefix(s, []byte("* OK"))):
				v[tmIMAP] = Yes
			case imapTagged(firstLineOf(s)):
				if tag, _ := cutWord(s); string(tag) == string(cw) {
					v[tmIMAP] = Yes // the status of this very command
				}
			}
		}
	}
	return v
}

func imapUntagged(s []byte) bool {
	if !bytes.HasPrefix(s, []byte("* ")) {
		return false
	}
	w, rest := cutWord(s[2:])
	if isDigits(w) {
		w, _ = cutWord(rest)
	}
	return eqWord(w, "CAPABILITY", "FLAGS", "EXISTS", "RECENT", "FETCH", "EXPUNGE", "LIST", "LSUB",
		"STATUS", "SEARCH", "NO", "BAD", "NAMESPACE", "ENABLED", "QUOTA", "QUOTAROOT", "ID")
}

// imapTagged recognises a tagged completion: "a12 OK [READ-WRITE] done".
func imapTagged(s []byte) bool {
	tag, rest := cutWord(s)
	st, text := cutWord(rest)
	if len(tag) == 0 || len(tag) > 16 || len(text) == 0 || !eqWord(st, "OK", "NO", "BAD") {
		return false
	}
	for _, c := range tag {
		if !(c >= '0' && c <= '9' || c|0x20 >= 'a' && c|0x20 <= 'z' || c == '.' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

func smtpOrFTP(server, s, cw, crest []byte, cDone bool) (smtp, ftp Verdict) {
	text := server[:min(len(server), 512)]
	if bytes.HasPrefix(s, []byte("220")) {
		switch {
		case containsFold(text, "ftp"):
			return No, Yes
		case containsFold(text, "smtp") || containsFold(text, "postfix") || containsFold(text, "exim") || containsFold(text, "sendmail") || containsFold(text, " mail"):
			return Yes, No
		}
	}
	// Only 220 (and 421/554 refusals, 120 "later") open an SMTP or FTP session; any other
	// code alone is any line protocol's status (NNTP greets with 200): the client decides.
	greeting := len(s) >= 3 && (string(s[:3]) == "220" || string(s[:3]) == "421" || string(s[:3]) == "554" || string(s[:3]) == "120")
	switch {
	case len(cw) == 0 || !cDone:
		if !greeting {
			return NeedMore, NeedMore
		}
		// FTP waits for the client's first command; if none comes, SMTP (far more common
		// behind a bare "220") is the fallback.
		return Maybe, NeedMore
	case smtpOnly(cw, crest):
		return Yes, No
	case ftpOnly(cw, crest) || greeting && eqWord(cw, "USER", "PASS"):
		return No, Yes
	}
	if !greeting {
		return No, No
	}
	return Maybe, Maybe
}

func smtpOnly(w, rest []byte) bool {
	return eqWord(w, "EHLO", "HELO", "LHLO", "STARTTLS") ||
		eqWord(w, "MAIL") && hasPrefixFold(rest, "FROM:") || eqWord(w, "RCPT") && hasPrefixFold(rest, "TO:")
}

func ftpOnly(w, rest []byte) bool {
	return eqWord(w, "SYST", "FEAT", "PWD", "XPWD", "CWD", "CDUP", "TYPE", "PASV", "EPSV", "PORT", "EPRT",
		"NLST", "MLSD", "MLST", "STOR", "STOU", "APPE", "SIZE", "MDTM", "OPTS", "HOST", "CLNT", "MKD", "RMD",
		"RNFR", "RNTO", "SITE", "ACCT", "REIN", "ABOR", "PBSZ", "PROT") ||
		eqWord(w, "AUTH") && (hasPrefixFold(rest, "TLS") || hasPrefixFold(rest, "SSL"))
}

func pop3Only(w []byte) bool {
	return eqWord(w, "CAPA", "STAT", "UIDL", "APOP", "STLS", "TOP")
}

func imapCommand(w []byte) bool {
	return eqWord(w, "CAPABILITY", "LOGIN", "AUTHENTICATE", "STARTTLS", "SELECT", "EXAMINE", "FETCH",
		"UID", "LIST", "LSUB", "STATUS", "NOOP", "LOGOUT", "IDLE", "ID", "APPEND", "SEARCH", "STORE",
		"COPY", "MOVE", "CLOSE", "EXPUNGE", "NAMESPACE", "ENABLE", "CREATE", "DELETE", "RENAME",
		"SUBSCRIBE", "UNSUBSCRIBE", "CHECK", "GETQUOTAROOT", "COMPRESS")
}

// firstLine returns the first line of b without its line end, and whether it was complete.
func firstLine(b []byte) ([]byte, bool) {
	i := bytes.IndexByte(b, '\n')
	if i < 0 {
		return b, false
	}
	return bytes.TrimSuffix(b[:i], []byte{'\r'}), true
}

// cutWord splits at the first space.
func cutWord(l []byte) (w, rest []byte) {
	w, rest, _ = bytes.Cut(l, []byte{' '})
	return w, rest
}

func eqWord(w []byte, words ...string) bool {
	for _, k := range words {
		if bytes.EqualFold(w, []byte(k)) {
			return true
		}
	}
	return false
}

func hasPrefixFold(b []byte, prefix string) bool {
	return len(b) >= len(prefix) && bytes.EqualFold(b[:len(prefix)], []byte(prefix))
}

func containsFold(b []byte, s string) bool {
	for i := 0; i+len(s) <= len(b); i++ {
		if bytes.EqualFold(b[i:i+len(s)], []byte(s)) {
			return true
		}
	}
	return false
}

// upperInto copies w uppercased into dst (bounded by its capacity).
func upperInto(dst, w []byte) []byte {
	dst = dst[:0]
	for _, c := range w {
		if len(dst) == cap(dst) {
			break
		}
		if c >= 'a' && c <= 'z' {
			c -= 32
		}
		dst = append(dst, c)
	}
	return dst
}

// replyCode parses "ddd text" or "ddd-text": the code, whether the line is final, and ok.
func replyCode(l []byte) (code []byte, final, ok bool) {
	if len(l) < 3 || !isDigits(l[:3]) || len(l) > 3 && l[3] != ' ' && l[3] != '-' {
		return nil, false, false
	}
	return l[:3], len(l) == 3 || l[3] == ' ', true
}

// clientFirst turns NeedMore into No once the server has answered: in a protocol where the
// client speaks first, its first message is complete by then, so "too short to tell" means
// "not this protocol" and must not hold up detection of the others.
func clientFirst(p *Probe, v Verdict) Verdict {
	if v == NeedMore && len(p.Server) > 0 {
		return No
	}
	return v
}

// firstLineOf is the first line of b without its line ending (all of b without one).
func firstLineOf(b []byte) []byte {
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		b = b[:i]
	}
	return bytes.TrimRight(b, "\r")
}

// imapTagLike: client tags are generated as a letter prefix and a counter ("a001", "A12"),
// which sets them apart from a word of any text protocol followed by "OK".
func imapTagLike(line []byte) bool {
	tag, _ := cutWord(line)
	letter, digit := false, false
	for _, c := range tag {
		letter = letter || c|0x20 >= 'a' && c|0x20 <= 'z'
		digit = digit || c >= '0' && c <= '9'
	}
	return letter && digit
}
