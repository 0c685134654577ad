// Command gen runs the small servers and clients behind the test captures that Debian does
// not ship: a DNS server (miekg/dns), an h2c server (prior knowledge and Upgrade) and a gRPC
// health server and client. scripts/captures/core.sh drives it; it only binds to loopback.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func main() {
	mode := flag.String("mode", "", "dns-server | h2c-server | grpc-server | grpc-client | grpc-watch")
	addr := flag.String("addr", "127.0.0.5:5300", "loopback address to listen on or dial")
	flag.Parse()
	if !strings.HasPrefix(*addr, "127.") {
		log.Fatalf("-addr %q: only loopback (127.0.0.0/8) addresses are allowed", *addr)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, os.Kill)
	defer stop()
	var err error
	switch *mode {
	case "dns-server":
		err = dnsServer(ctx, *addr)
	case "h2c-server":
		err = h2cServer(ctx, *addr)
	case "grpc-server":
		err = grpcServer(ctx, *addr)
	case "grpc-watch":
		err = grpcWatch(*addr)
	case "grpc-client":
		err = grpcClient(*addr)
	default:
		err = fmt.Errorf("-mode %q: want dns-server, h2c-server, grpc-server, grpc-client or grpc-watch", *mode)
	}
	if err != nil {
		log.Fatal(err)
	}
}

func dnsServer(ctx context.Context, addr string) error {
	h := dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		m.Authoritative = true
		for _, qq := range q.Question {
			name := strings.ToLower(qq.Name)
			switch {
			case name == "alias.meshguard.test.":
				m.Answer = append(m.Answer,
					&dns.CNAME{Hdr: rr(qq.Name, dns.TypeCNAME), Target: "www.meshguard.test."},
					&dns.A{Hdr: rr("www.meshguard.test.", dns.TypeA), A: net.IPv4(127, 0, 0, 10)})
			case !strings.HasSuffix(name, "meshguard.test."):
				m.Rcode = dns.RcodeNameError
			case qq.Qtype == dns.TypeA:
				m.Answer = append(m.Answer, &dns.A{Hdr: rr(qq.Name, dns.TypeA), A: net.IPv4(127, 0, 0, 10)})
			case qq.Qtype == dns.TypeAAAA:
				m.Answer = append(m.Answer, &dns.AAAA{Hdr: rr(qq.Name, dns.TypeAAAA), AAAA: net.ParseIP("fd00::10")})
			case qq.Qtype == dns.TypeTXT:
				m.Answer = append(m.Answer, &dns.TXT{Hdr: rr(qq.Name, dns.TypeTXT), Txt: []string{"v=meshguard1"}})
			case qq.Qtype == dns.TypeMX:
				m.Answer = append(m.Answer, &dns.MX{Hdr: rr(qq.Name, dns.TypeMX), Preference: 10, Mx: "mail.meshguard.test."})
			}
		}
		_ = w.WriteMsg(m)
	})
	errs := make(chan error, 2)
	for _, n := range []string{"udp", "tcp"} {
		s := &dns.Server{Addr: addr, Net: n, Handler: h}
		go func() { errs <- s.ListenAndServe() }()
		defer s.Shutdown()
	}
	select {
	case err := <-errs:
		return err
	case <-ctx.Done():
		return nil
	}
}

func rr(name string, t uint16) dns.RR_Header {
	return dns.RR_Header{Name: name, Rrtype: t, Class: dns.ClassINET, Ttl: 60}
}

func h2cServer(ctx context.Context, addr string) error {
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprintf(w, "hello %s over %s\n", r.URL.Path, r.Proto)
	})
	srv := &http.Server{Addr: addr, Handler: h2c.NewHandler(mux, &http2.Server{}), ReadHeaderTimeout: 5 * time.Second}
	go func() { <-ctx.Done(); srv.Close() }()
	if err := srv.ListenAndServe(); err != http.ErrServerClosed {
		return err
	}
	return nil
}

func grpcServer(ctx context.Context, addr string) error {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	s := grpc.NewServer()
	hs := health.NewServer()
	hs.SetServingStatus("meshguard.test.Orders", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(s, hs)
	go func() { // status flaps so Watch (a server stream) has updates to send
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for n := 0; ; n++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				st := healthpb.HealthCheckResponse_SERVING
				if n%2 == 0 {
					st = healthpb.HealthCheckResponse_NOT_SERVING
				}
				hs.SetServingStatus("meshguard.test.Flappy", st)
			}
		}
	}()
	go func() { <-ctx.Done(); s.Stop() }()
	return s.Serve(lis)
}

// grpcWatch reads four updates of a server-streaming call, then cancels it.
func grpcWatch(addr string) error {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	w, err := healthpb.NewHealthClient(conn).Watch(ctx, &healthpb.HealthCheckRequest{Service: "meshguard.test.Flappy"})
	if err != nil {
		return err
	}
	for i := 0; i < 4; i++ {
		resp, err := w.Recv()
		if err != nil {
			return err
		}
		fmt.Printf("watch: %v\n", resp.GetStatus())
	}
	return nil
}

func grpcClient(addr string) error {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	c := healthpb.NewHealthClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, svc := range []string{"", "meshguard.test.Orders", "meshguard.test.Missing"} {
		resp, err := c.Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
		fmt.Printf("check %q: %v %v\n", svc, resp.GetStatus(), err)
	}
	return nil
}
