package dpi

import "testing"

func TestRTSPCapture(t *testing.T) {
	for _, c := range []struct{ rel, port string }{{"rtsp/rtsp-554.pcap", "554"}, {"rtsp/rtsp-18554.pcap", "18554"}} {
		got := bbCheckCapture(t, RTSP{}, c.rel, Yes)
		url := "rtsp://127.0.0.1:" + c.port + "/live/cam1"
		bbWant(t, got,
			"client request method=OPTIONS path="+url+" cseq=1 user_agent=mg-rtsp-client/1.0",
			"server response status=200 reason=OK cseq=1 software=mg-rtsp/1.0",
			"client request method=DESCRIBE path="+url+" cseq=2 user_agent=mg-rtsp-client/1.0",
			"client request method=SETUP path="+url+"/track1 cseq=3 user_agent=mg-rtsp-client/1.0",
			"client request method=PLAY path="+url+" cseq=4 user_agent=mg-rtsp-client/1.0",
			"server response status=200 reason=OK cseq=4 software=mg-rtsp/1.0",
			// after two interleaved '$' RTP frames:
			"client request method=TEARDOWN path="+url+" cseq=5 user_agent=mg-rtsp-client/1.0",
			"server response status=200 reason=OK cseq=5 software=mg-rtsp/1.0")
		if len(got) != 10 {
			t.Errorf("%s: %d messages, want 10", c.rel, len(got))
		}
	}
}

func TestRTSPParser(t *testing.T) {
	rtp := append([]byte("$\x01\x00\x0a"), []byte("RTSP/1.0 2")...) // binary that looks like text
	f := bbFlow{TCP, []bbSeg{
		{ServerToClient, []byte("RTSP/1.0 200 OK\r\nCSeq: 4\r\nContent-Length: 0\r\n\r\n")},
		{ServerToClient, rtp},
		{ServerToClient, []byte("RTSP/1.0 401 Unauthorized\r\nCSeq: 5\r\nWWW-Authenticate: Basic realm=\"cam\"\r\n\r\n")},
		{ClientToServer, []byte("DESCRIBE rtsp://cam/stream RTSP/1.0\r\nCSeq: 6\r\nAuthorization: Basic YWRtaW46cGFzcw==\r\n\r\n")},
	}}
	got := bbFeed(t, RTSP{}, f, 1)
	bbWant(t, got, "server response status=200 reason=OK cseq=4", "server response status=401 reason=Unauthorized cseq=5",
		"client request method=DESCRIBE path=rtsp://cam/stream cseq=6")
	bbNoSecret(t, got, "YWRtaW46cGFzcw")
	if len(got) != 3 {
		t.Errorf("interleaved frame parsed as text: %q", got)
	}
	for _, c := range []struct {
		b    string
		want Verdict
	}{
		{"OPTIONS rtsp://cam RTSP/1.0\r\n", Yes},
		{"OPTIONS * HTTP/1.1\r\n", No},
		{"OPTIONS sip:a@b SIP/2.0\r\n", No},
		{"PLA", NeedMore},
	} {
		if v := (RTSP{}).Detect(&Probe{Transport: TCP, Client: []byte(c.b)}); v != c.want {
			t.Errorf("%q: %v, want %v", c.b, v, c.want)
		}
	}
}

func FuzzRTSP(f *testing.F) {
	bbSeeds(f, "rtsp/rtsp-554.pcap")
	f.Fuzz(func(t *testing.T, data []byte) { bbFuzz(t, RTSP{}, data) })
}

func BenchmarkRTSP(b *testing.B) { bbBench(b, RTSP{}, "rtsp/rtsp-554.pcap") }
