package threat

import (
	"bytes"
)

// Dangerous administrative commands: harmless from the operator's tooling, an attack (or a
// compromised workload) from anywhere else. The caller says whether the source is allowed to
// administer (for example a group listed in the policy); allowed sources produce no findings.

// InspectRedis checks one Redis command (cmd as dpi's AttrCommand, args after it).
func InspectRedis(cmd []byte, args [][]byte, allowed bool, dst []Finding) []Finding {
	if allowed || len(cmd) == 0 {
		return dst
	}
	arg := func(i int) []byte {
		if i < len(args) {
			return args[i]
		}
		return nil
	}
	eq := func(b []byte, s string) bool { return bytes.EqualFold(b, []byte(s)) }
	var why string
	switch {
	case eq(cmd, "CONFIG") && !eq(arg(0), "GET"):
		why = "CONFIG " + string(upperASCII(arg(0))) + " rewrites the server (dir/dbfilename is the classic webshell/cron write)"
	case eq(cmd, "SLAVEOF"), eq(cmd, "REPLICAOF"):
		why = "replication to an attacker-controlled master loads its data and modules"
	case eq(cmd, "MODULE") && (eq(arg(0), "LOAD") || eq(arg(0), "LOADEX")):
		why = "MODULE LOAD runs native code in the server"
	case eq(cmd, "DEBUG"):
		why = "DEBUG can crash or stall the server"
	case eq(cmd, "MIGRATE"):
		why = "MIGRATE copies keys to another server"
	case eq(cmd, "SHUTDOWN"), eq(cmd, "FLUSHALL"), eq(cmd, "FLUSHDB"):
		why = string(upperASCII(cmd)) + " destroys availability or data"
	case eq(cmd, "ACL") && (eq(arg(0), "SETUSER") || eq(arg(0), "DELUSER") || eq(arg(0), "SAVE") || eq(arg(0), "LOAD")):
		why = "ACL changes the server's users"
	case eq(cmd, "EVAL"), eq(cmd, "EVALSHA_RO"), eq(cmd, "EVAL_RO"), eq(cmd, "FUNCTION"), eq(cmd, "SCRIPT"):
		// Lua is normal; reaching the OS from it is the sandbox escape (CVE-2022-0543).
		for _, a := range args {
			for _, m := range [...]string{"os.execute", "io.popen", "package.loadlib", "loadlib", "luaopen_io", "luaopen_os", "dofile", "loadstring(", "io.open"} {
				if containsFold(a, m) {
					why = "Lua script reaching the OS (" + m + ")"
					break
				}
			}
		}
	}
	if why == "" {
		return dst
	}
	ev := append(append([]byte(nil), upperASCII(cmd)...), ' ')
	for _, a := range args {
		if len(ev) >= MaxEvidence {
			break
		}
		ev = append(append(ev, a...), ' ')
	}
	return append(dst, NewFinding(RedisDangerousCommand, "redis:"+string(upperASCII(cmd)), bytes.TrimSpace(ev), why))
}

func upperASCII(b []byte) []byte {
	out := make([]byte, len(b))
	for i, c := range b {
		if 'a' <= c && c <= 'z' {
			c -= 'a' - 'A'
		}
		out[i] = c
	}
	return out
}

// sqlDanger is a keyword sequence (matched on the normalised statement: upper-case, comments and
// string literals removed, single spaces) and why it is dangerous.
var sqlDanger = [...]struct{ seq, why string }{
	{" DROP TABLE ", "drops a table"}, {" DROP DATABASE ", "drops a database"}, {" DROP SCHEMA ", "drops a schema"},
	{" DROP USER ", "drops a user"}, {" DROP ROLE ", "drops a role"}, {" TRUNCATE ", "empties a table"},
	{" TO PROGRAM ", "COPY ... PROGRAM runs a shell command on the database host"},
	{" FROM PROGRAM ", "COPY ... PROGRAM runs a shell command on the database host"},
	{" LOAD_FILE(", "reads a file on the database host"}, {" INTO OUTFILE ", "writes a file on the database host"},
	{" INTO DUMPFILE ", "writes a file on the database host"}, {" LOAD DATA INFILE ", "reads a server file into a table"},
	{" XP_CMDSHELL", "runs a shell command on the database host"}, {" SP_CONFIGURE ", "changes server configuration"},
	{" PG_READ_FILE(", "reads a file on the database host"}, {" PG_READ_BINARY_FILE(", "reads a file on the database host"},
	{" LO_IMPORT(", "reads a file on the database host"}, {" LO_EXPORT(", "writes a file on the database host"},
	{" ALTER SYSTEM ", "changes server configuration"}, {" SHUTDOWN ", "stops the server"},
	{" LANGUAGE C ", "creates a native-code function"}, {" SYS_EXEC(", "runs a shell command (UDF)"},
	{" SYS_EVAL(", "runs a shell command (UDF)"}, {" DBMS_JAVA", "runs Java in the database"},
	{" UTL_FILE", "reads or writes files on the database host"}, {" OPENROWSET(", "reads external data sources"},
}

// maxSQLInspect bounds the statement text inspected.
const maxSQLInspect = 16 << 10

// InspectSQL checks one SQL statement (dpi's AttrQuery) for destructive or host-reaching
// statements. Keywords inside string literals and comments do not count.
func InspectSQL(query []byte, allowed bool, dst []Finding) []Finding {
	if allowed || len(query) == 0 {
		return dst
	}
	if len(query) > maxSQLInspect {
		query = query[:maxSQLInspect]
	}
	norm := normaliseSQL(query)
	for _, d := range sqlDanger {
		if bytes.Contains(norm, []byte(d.seq)) {
			return append(dst, NewFinding(SQLDangerousStatement, "sql", query, d.why))
		}
	}
	return dst
}

// normaliseSQL upper-cases, drops comments and string literal contents, turns punctuation other
// than '(' and '_' into spaces and collapses spaces, with a space at both ends.
func normaliseSQL(q []byte) []byte {
	out := make([]byte, 1, len(q)+2)
	out[0] = ' '
	space := func() {
		if out[len(out)-1] != ' ' {
			out = append(out, ' ')
		}
	}
	for i := 0; i < len(q); i++ {
		c := q[i]
		switch {
		case c == '-' && i+1 < len(q) && q[i+1] == '-', c == '#':
			for i < len(q) && q[i] != '\n' {
				i++
			}
			space()
		case c == '/' && i+1 < len(q) && q[i+1] == '*':
			end := bytes.Index(q[i+2:], []byte("*/"))
			if end < 0 {
				i = len(q)
			} else {
				i += end + 3
			}
			space()
		case c == '\'' || c == '"' || c == '$' && i+1 < len(q) && q[i+1] == '$':
			// Skip the literal ('' escapes, $$ dollar quotes); keep a placeholder.
			if c == '$' {
				end := bytes.Index(q[i+2:], []byte("$$"))
				if end < 0 {
					i = len(q)
				} else {
					i += end + 3
				}
			} else {
				for i++; i < len(q); i++ {
					if q[i] == c {
						if i+1 < len(q) && q[i+1] == c {
							i++
							continue
						}
						break
					}
				}
			}
			space()
			out = append(out, 'S', ' ')
		case c == '(' || c == '_' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9':
			if c == '(' && out[len(out)-1] == ' ' && len(out) > 1 {
				out = out[:len(out)-1]
			}
			out = append(out, upper(c))
			if c == '(' {
				out = append(out, ' ')
			}
		default:
			space()
		}
	}
	space()
	return out
}

func upper(c byte) byte {
	if 'a' <= c && c <= 'z' {
		return c - ('a' - 'A')
	}
	return c
}
