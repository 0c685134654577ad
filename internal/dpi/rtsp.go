package dpi

// RTSP is the Real Time Streaming Protocol (RTSP/1.0, RFC 2326; RTSP/2.0 start lines too)
// over TCP: requests report the method and URL, CSeq and User-Agent; responses the status and
// Server. Interleaved '$' RTP/RTCP frames between messages are skipped by their length.
// Authorization headers are never read.
type RTSP struct{}

func (RTSP) Name() string            { return "rtsp" }
func (RTSP) Transports() Transport   { return TCP }
func (RTSP) Ports() []uint16         { return []uint16{554, 8554} }
func (RTSP) NewParser() Parser       { return newTextMsgParser(&rtspConf) }
func (RTSP) Detect(p *Probe) Verdict { return textMsgDetect(&rtspConf, p) }

var rtspConf = textMsgConf{
	proto:   "rtsp",
	version: []string{"RTSP/1.0", "RTSP/2.0"},
	methods: []string{"OPTIONS", "DESCRIBE", "ANNOUNCE", "SETUP", "PLAY", "PAUSE", "TEARDOWN",
		"GET_PARAMETER", "SET_PARAMETER", "REDIRECT", "RECORD", "PLAY_NOTIFY"},
	headers: map[string]string{
		"cseq": "cseq", "user-agent": AttrUserAgent, "server": AttrSoftware,
		"content-length": "content-length", "content-base": "content_base",
	},
	binary:  true,
	uriAttr: AttrPath,
}
