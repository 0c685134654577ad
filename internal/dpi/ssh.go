package dpi

import "bytes"

// SSH detects the identification banner both sides send first ("SSH-2.0-OpenSSH_9.2p1
// Debian-2") and reports protocol version and software per side; the encrypted rest is skipped.
type SSH struct{}

func (SSH) Name() string          { return "ssh" }
func (SSH) Transports() Transport { return TCP }
func (SSH) Ports() []uint16       { return []uint16{22, 2222} }

const sshPrefix = "SSH-"

func (SSH) Detect(p *Probe) Verdict {
	if len(p.Client) >= len(sshPrefix) && !bytes.HasPrefix(p.Client, []byte(sshPrefix)) && !p.Midstream &&
		!bytes.HasPrefix(p.Server, []byte(sshPrefix)) {
		return No // an SSH client starts with its banner
	}
	v := No
	for _, b := range [2][]byte{p.Client, p.Server} {
		switch {
		case len(b) >= len(sshPrefix) && bytes.HasPrefix(b, []byte(sshPrefix)):
			if len(b) >= 8 && !isSSHVersionStart(b[4]) {
				continue
			}
			return Yes
		case len(b) > 0 && len(b) < len(sshPrefix) && bytes.HasPrefix([]byte(sshPrefix), b):
			v = NeedMore
		}
	}
	// RFC 4253 lets the server send other lines before its banner.
	if v == No && len(p.Client) == 0 {
		if i := bytes.Index(p.Server, []byte("\nSSH-2.0-")); i >= 0 && i < 1024 {
			return Maybe
		}
	}
	return v
}

func isSSHVersionStart(c byte) bool { return c >= '1' && c <= '2' }

// NewParser returns a parser reporting each side's banner.
func (SSH) NewParser() Parser { return &sshParser{} }

type sshParser struct {
	lines [2]lineReasm
	done  [2]bool
	pre   [2]int // non-banner lines seen before the banner
	msg   Message
}

// Feed reads lines until the banner; everything after it is encrypted or binary and skipped.
func (p *sshParser) Feed(dir Direction, data []byte, emit func(*Message)) error {
	d := dir & 1
	if p.done[d] {
		return nil
	}
	p.lines[d].feed(data, 255, func(l []byte) int {
		if p.done[d] {
			return 0
		}
		if !bytes.HasPrefix(l, []byte(sshPrefix)) {
			if p.pre[d]++; p.pre[d] > 32 {
				p.done[d] = true
			}
			return 0
		}
		p.done[d] = true
		p.banner(d, l, emit)
		return 0
	})
	if p.done[d] {
		p.lines[d] = lineReasm{} // release the buffer: the rest is binary
	}
	return nil
}

func (p *sshParser) banner(dir Direction, l []byte, emit func(*Message)) {
	m := &p.msg
	m.Reset(dir, "banner")
	rest := l[len(sshPrefix):]
	ver, rest, _ := bytes.Cut(rest, []byte("-"))
	m.Add(AttrVersion, ver)
	sw, comment, _ := bytes.Cut(rest, []byte(" "))
	if len(sw) > 0 {
		m.Add(AttrSoftware, sw)
	}
	if len(comment) > 0 {
		m.Add("comment", capBytes(comment, 128))
	}
	emit(m)
}
