package lab

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netns"

	"github.com/meshguard/meshguard/internal/intercept"
)

// SystemSpec describes a lab-managed process that is not a pod's command: the controller now,
// sidecars (in a pod's netns) and agents later. Args are passed to the meshguard binary itself.
type SystemSpec struct {
	Name  string   // unique, e.g. "controller" or "sidecar:shop/web"
	Args  []string // argv after the meshguard executable
	Env   []string // extra environment, KEY=VALUE
	Netns string   // netns path to run in; "" = the host's
	// Credential, when set, runs the process as that uid/gid (e.g. a sidecar uid that the
	// interception rules exclude); nil = root.
	Credential *syscall.Credential
	ReadyLine  string        // wait for an output line containing this; "" = do not wait
	Timeout    time.Duration // bound for ReadyLine; 0 = 60s
	LogFile    string
}

// SidecarLauncher is the seam where sidecars plug into pod start: for a pod with sidecar: true
// the daemon asks for a spec and starts it (in the pod's netns, see PodState.Netns) before the
// pod's command, waiting for its ReadyLine. Nil means pods run without sidecars.
type SidecarLauncher interface {
	SidecarSpec(s *State, pod *PodState) (SystemSpec, error)
}

// DaemonConfig configures the lab daemon.
type DaemonConfig struct {
	StateDir string
	Self     string // the meshguard executable, re-executed as `lab pod-init` and for system processes
	Log      *slog.Logger
	// System returns the system processes to start (in order, each ready before the next)
	// after the network is up and before the pods; nil = none.
	System   func(s *State) []SystemSpec
	Sidecars SidecarLauncher
	// EndpointTimeout bounds the wait for service endpoints to accept connections; 0 = 60s,
	// negative = do not wait.
	EndpointTimeout time.Duration
	// Ready receives "ok\n" once everything runs, or "error: ...\n"; then it is closed.
	Ready io.WriteCloser
}

// Daemon builds the lab from its planned state file, supervises it and tears it down when ctx
// ends (SIGTERM from `lab down`).
type Daemon struct {
	cfg DaemonConfig
	mu  sync.Mutex
	st  *State
	wg  sync.WaitGroup
	// children are the processes this daemon started and has not reaped yet, by pid: they
	// are stopped through their *os.Process, which needs no recorded start time (ProcOf
	// leaves it 0 when /proc could not be read) and cannot hit a reused pid.
	children map[int]child
}

type child struct {
	p      *os.Process
	exited chan struct{} // closed once cmd.Wait returned
}

// Bounds of teardown: a process gets stopGrace after SIGTERM, then killWait after SIGKILL;
// teardown waits at most reapWait for its supervising goroutines before cleaning up anyway.
const (
	stopGrace = 3 * time.Second
	killWait  = 5 * time.Second
	reapWait  = 15 * time.Second
)

// track records a started child; the returned func must be called once cmd.Wait returned.
func (d *Daemon) track(p *os.Process) (reaped func()) {
	c := child{p: p, exited: make(chan struct{})}
	d.mu.Lock()
	if d.children == nil {
		d.children = map[int]child{}
	}
	d.children[p.Pid] = c
	d.mu.Unlock()
	return func() {
		d.mu.Lock()
		delete(d.children, p.Pid)
		d.mu.Unlock()
		close(c.exited)
	}
}

// stop stops a process the lab started: through its *os.Process while the daemon is its
// parent, else (not ours, or already reaped) by pid and start time. Bounded.
func (d *Daemon) stop(p Proc) {
	d.mu.Lock()
	c, ok := d.children[p.PID]
	d.mu.Unlock()
	if !ok || p.PID <= 0 {
		killProc(p)
		return
	}
	if c.p.Signal(syscall.SIGTERM) != nil {
		return // already exited
	}
	t := time.NewTimer(stopGrace)
	defer t.Stop()
	select {
	case <-c.exited:
		return
	case <-t.C:
	}
	_ = c.p.Kill()
	t.Reset(killWait)
	select {
	case <-c.exited:
	case <-t.C:
	}
}

// NewDaemon validates cfg.
func NewDaemon(cfg DaemonConfig) (*Daemon, error) {
	if cfg.StateDir == "" || cfg.Self == "" || cfg.Log == nil {
		return nil, errors.New("lab daemon: state dir, executable and logger are required")
	}
	return &Daemon{cfg: cfg}, nil
}

func (d *Daemon) save() {
	if err := WriteState(d.cfg.StateDir, d.st); err != nil {
		d.cfg.Log.Error("save lab state", "err", err)
	}
}

func (d *Daemon) update(f func(s *State)) {
	d.mu.Lock()
	defer d.mu.Unlock()
	f(d.st)
	d.save()
}

func (d *Daemon) ready(msg string) {
	if d.cfg.Ready == nil {
		return
	}
	_, _ = io.WriteString(d.cfg.Ready, msg+"\n")
	_ = d.cfg.Ready.Close()
	d.cfg.Ready = nil
}

// Run builds the lab, reports readiness, and blocks until ctx ends; then it stops every
// process and removes every resource.
func (d *Daemon) Run(ctx context.Context) error {
	st, err := ReadState(d.cfg.StateDir)
	if err != nil {
		d.ready("error: " + err.Error())
		return err
	}
	d.st = st
	d.update(func(s *State) { s.Daemon = ProcOf(os.Getpid()) })
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	if err := d.build(runCtx); err != nil {
		d.cfg.Log.Error("lab failed to start", "err", err)
		cancel()
		d.teardown() // before reporting, so `lab up` returns to a clean machine
		d.ready("error: " + err.Error())
		return err
	}
	d.update(func(s *State) { s.Phase = "ready" })
	d.cfg.Log.Info("lab ready", "pods", len(d.st.Pods), "services", len(d.st.Services))
	d.ready("ok")
	<-ctx.Done()
	d.cfg.Log.Info("lab stopping")
	d.teardown()
	return nil
}

func (d *Daemon) build(ctx context.Context) error {
	was, err := setupBridge(d.st)
	if err != nil {
		return err
	}
	d.update(func(s *State) { s.IPForwardWas = was })
	for i := range d.st.Pods {
		p := &d.st.Pods[i]
		if err := d.preparePodDir(p); err != nil {
			return err
		}
		if err := setupPodNetwork(d.st, p); err != nil {
			return err
		}
	}
	if err := installServices(d.st); err != nil {
		return err
	}
	for i := range d.st.Pods {
		if p := &d.st.Pods[i]; !p.Sidecar {
			if err := installPodServices(d.st, p); err != nil {
				return err
			}
		}
	}
	dnsSrv, err := NewDNSServer(DNSConfig{Addr: d.st.DNS, Records: ServiceRecords(d.st), Upstreams: HostUpstreams("/etc/resolv.conf"), Zones: d.st.DNSZones, Log: d.cfg.Log})
	if err != nil {
		return err
	}
	serve, err := dnsSrv.Listen(ctx)
	if err != nil {
		return err
	}
	d.wg.Add(1)
	go func() { defer d.wg.Done(); _ = serve() }()
	if d.cfg.System != nil {
		for _, spec := range d.cfg.System(d.st) {
			spec = d.withLogFile(spec)
			proc, err := d.startSystem(ctx, spec)
			if err != nil {
				return err
			}
			d.update(func(s *State) {
				s.System = append(s.System, SystemProcess{Name: spec.Name, Proc: proc, LogFile: spec.LogFile, State: "running"})
			})
		}
	}
	for i := range d.st.Pods {
		if err := d.startPod(ctx, i); err != nil {
			return err
		}
	}
	return d.waitEndpoints(ctx)
}

// waitEndpoints waits (bounded) until every service endpoint accepts TCP connections on its
// targetPort, so `lab up` returns a lab whose services answer.
func (d *Daemon) waitEndpoints(ctx context.Context) error {
	timeout := d.cfg.EndpointTimeout
	if timeout < 0 {
		return nil
	}
	if timeout == 0 {
		timeout = 60 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for _, sv := range d.st.Services {
		for _, ep := range sv.Endpoints {
			// A sidecar accepts on every app port (and refuses plaintext in STRICT), so a
			// meshed endpoint is checked from inside its pod, where the app listens.
			dial, host := dialHost, ep
			if ns := d.sidecarNetns(ep); ns != "" {
				dial, host = dialIn(ns), "127.0.0.1"
			}
			for _, sp := range sv.Ports {
				addr := net.JoinHostPort(host, strconv.Itoa(int(sp.TargetPort)))
				if err := waitTCP(ctx, addr, dial, func() error { return d.podFailed(ep) }); err != nil {
					return fmt.Errorf("service %s: endpoint %s: %w", sv.Key(), addr, err)
				}
			}
		}
	}
	return nil
}

// podFailed returns an error when the pod with ip has exited.
func (d *Daemon) podFailed(ip string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, p := range d.st.Pods {
		if p.IP == ip && p.State == "exited" {
			return fmt.Errorf("pod %s exited with code %d: %s", p.Key(), p.ExitCode, lastLine(p.LogFile))
		}
	}
	return nil
}

func lastLine(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return lines[len(lines)-1]
}

// sidecarNetns returns the netns of the pod with ip if it runs a sidecar, else "".
func (d *Daemon) sidecarNetns(ip string) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, p := range d.st.Pods {
		if p.IP == ip && p.SidecarProc != nil {
			return p.Netns
		}
	}
	return ""
}

type dialFunc func(ctx context.Context, addr string) (net.Conn, error)

func dialHost(ctx context.Context, addr string) (net.Conn, error) {
	var dialer net.Dialer
	return dialer.DialContext(ctx, "tcp", addr)
}

// dialIn dials from inside the netns at path: the socket is created on a thread switched
// into it (intercept.Do), and stays there.
func dialIn(path string) dialFunc {
	return func(ctx context.Context, addr string) (net.Conn, error) {
		var c net.Conn
		err := intercept.Do(path, func() (err error) {
			c, err = dialHost(ctx, addr)
			return err
		})
		if err != nil && c != nil {
			c.Close() // dialled, but the thread could not switch back
			c = nil
		}
		return c, err
	}
}

func waitTCP(ctx context.Context, addr string, dial dialFunc, failed func() error) error {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		attempt, cancel := context.WithTimeout(ctx, time.Second)
		c, err := dial(attempt, addr)
		cancel()
		if err == nil {
			c.Close()
			return nil
		}
		if ferr := failed(); ferr != nil {
			return ferr
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not accepting connections in time (is the pod's server listening on that port?): %w", err)
		case <-tick.C:
		}
	}
}

func (d *Daemon) preparePodDir(p *PodState) error {
	if err := os.MkdirAll(filepath.Dir(p.Dir), 0o711); err != nil {
		return fmt.Errorf("pod %s dir: %w", p.Key(), err)
	}
	if err := os.MkdirAll(p.Dir, 0o700); err != nil {
		return fmt.Errorf("pod %s dir: %w", p.Key(), err)
	}
	if err := os.Chown(p.Dir, int(p.UID), int(p.GID)); err != nil {
		return fmt.Errorf("pod %s dir owner: %w", p.Key(), err)
	}
	resolv := fmt.Sprintf("nameserver %s\nsearch %s.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n", d.st.Gateway, p.Namespace)
	hosts := fmt.Sprintf("127.0.0.1\tlocalhost\n::1\tlocalhost\n%s\t%s\n", p.IP, p.Hostname)
	for name, body := range map[string]string{"resolv.conf": resolv, "hosts": hosts} {
		if err := os.WriteFile(filepath.Join(p.Dir, name), []byte(body), 0o644); err != nil {
			return fmt.Errorf("pod %s %s: %w", p.Key(), name, err)
		}
	}
	return nil
}

// PodEnv is the environment of a pod's command and of `lab exec`. LabMarkEnv lets cleanup find
// a pod's processes even before they joined the pod's netns.
func PodEnv(stateDir string, p *PodState) []string {
	return []string{
		LabMarkEnv + "=" + stateDir,
		"PATH=" + PodPath,
		"HOME=" + p.Dir,
		"HOSTNAME=" + p.Hostname,
		"MESHGUARD_POD_DIR=" + p.Dir,
		"MESHGUARD_POD_NAME=" + p.Name,
		"MESHGUARD_POD_NAMESPACE=" + p.Namespace,
		"MESHGUARD_POD_IP=" + p.IP,
		"LANG=C.UTF-8",
	}
}

func (d *Daemon) startPod(ctx context.Context, i int) error {
	p := &d.st.Pods[i]
	if p.Sidecar && d.cfg.Sidecars != nil {
		spec, err := d.cfg.Sidecars.SidecarSpec(d.st, p)
		if err != nil {
			return fmt.Errorf("pod %s sidecar: %w", p.Key(), err)
		}
		if spec.Netns == "" {
			spec.Netns = p.Netns
		}
		spec = d.withLogFile(spec)
		proc, err := d.startSystem(ctx, spec)
		if err != nil {
			return fmt.Errorf("pod %s sidecar: %w", p.Key(), err)
		}
		d.update(func(s *State) { s.Pods[i].SidecarProc, s.Pods[i].SidecarLog = &proc, spec.LogFile })
	}
	logf, err := os.OpenFile(p.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("pod %s log: %w", p.Key(), err)
	}
	defer logf.Close()
	// Owned by the pod's uid so the command can reopen /dev/stdout (nginx does).
	if err := logf.Chown(int(p.UID), int(p.GID)); err != nil {
		return fmt.Errorf("pod %s log owner: %w", p.Key(), err)
	}
	// pod-init reports on fd 3 once the pod is in its namespaces, right before it execs the
	// command: `lab exec` right after `lab up` must find the pod in place.
	readyR, readyW, err := os.Pipe()
	if err != nil {
		return err
	}
	defer readyR.Close()
	args := []string{"lab", "pod-init", "--netns", p.Netns, "--hostname", p.Hostname, "--dir", p.Dir,
		"--uid", strconv.FormatUint(uint64(p.UID), 10), "--gid", strconv.FormatUint(uint64(p.GID), 10), "--ready-fd", "3", "--"}
	command, err := stagedCommand(p)
	if err != nil {
		return err
	}
	cmd := exec.Command(d.cfg.Self, append(args, command...)...)
	cmd.Env = PodEnv(d.cfg.StateDir, p)
	cmd.Dir = "/"
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.ExtraFiles = []*os.File{readyW}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWPID | syscall.CLONE_NEWNS | syscall.CLONE_NEWUTS,
		Setsid:     true,
	}
	err = cmd.Start()
	readyW.Close()
	if err != nil {
		return fmt.Errorf("start pod %s: %w", p.Key(), err)
	}
	_ = readyR.SetReadDeadline(time.Now().Add(30 * time.Second))
	buf := make([]byte, 3)
	if n, _ := io.ReadFull(readyR, buf); n < 2 || string(buf[:2]) != "ok" {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return fmt.Errorf("pod %s did not start: %s", p.Key(), lastLine(p.LogFile))
	}
	reaped := d.track(cmd.Process)
	proc := ProcOf(cmd.Process.Pid)
	d.update(func(s *State) { s.Pods[i].Proc = proc; s.Pods[i].State = "running" })
	d.cfg.Log.Info("pod started", "pod", p.Key(), "ip", p.IP, "pid", proc.PID)
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		err := cmd.Wait()
		reaped()
		code := cmd.ProcessState.ExitCode()
		d.update(func(s *State) {
			if s.Phase == "stopping" {
				s.Pods[i].State = "stopped"
				return
			}
			s.Pods[i].State, s.Pods[i].ExitCode = "exited", code
			if err != nil {
				s.Pods[i].Error = err.Error()
			}
		})
		d.cfg.Log.Info("pod exited", "pod", p.Key(), "code", code)
	}()
	return nil
}

// withLogFile fills in the default log file: <state dir>/<name>.log.
func (d *Daemon) withLogFile(spec SystemSpec) SystemSpec {
	if spec.LogFile == "" {
		spec.LogFile = filepath.Join(d.cfg.StateDir, strings.NewReplacer("/", "_", ":", "_").Replace(spec.Name)+".log")
	}
	return spec
}

// startSystem starts a system process, in spec.Netns when set, and waits for its ReadyLine.
func (d *Daemon) startSystem(ctx context.Context, spec SystemSpec) (Proc, error) {
	spec = d.withLogFile(spec)
	logf, err := os.OpenFile(spec.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return Proc{}, fmt.Errorf("%s log: %w", spec.Name, err)
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		logf.Close()
		return Proc{}, err
	}
	cmd := exec.Command(d.cfg.Self, spec.Args...)
	cmd.Env = append([]string{LabMarkEnv + "=" + d.cfg.StateDir, "PATH=" + PodPath}, spec.Env...)
	cmd.Stdout, cmd.Stderr = pw, pw
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Credential: spec.Credential}
	if err := startIn(spec.Netns, cmd); err != nil {
		pr.Close()
		pw.Close()
		logf.Close()
		return Proc{}, fmt.Errorf("start %s: %w", spec.Name, err)
	}
	pw.Close()
	reaped := d.track(cmd.Process)
	proc := ProcOf(cmd.Process.Pid)
	readyc := make(chan struct{})
	d.wg.Add(2)
	go func() { // copy output to the log, watching for the ready line
		defer d.wg.Done()
		defer logf.Close()
		defer pr.Close()
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64*1024), 1<<20)
		seen := spec.ReadyLine == ""
		if seen {
			close(readyc)
		}
		for sc.Scan() {
			line := sc.Bytes()
			_, _ = logf.Write(append(line, '\n'))
			if !seen && strings.Contains(string(line), spec.ReadyLine) {
				seen = true
				close(readyc)
			}
		}
		_, _ = io.Copy(logf, pr)
	}()
	exited := make(chan struct{})
	go func() {
		defer d.wg.Done()
		_ = cmd.Wait()
		reaped()
		close(exited)
		d.update(func(s *State) {
			for i := range s.System {
				if s.System[i].Name == spec.Name && s.Phase != "stopping" {
					s.System[i].State = "exited"
				}
			}
		})
		d.cfg.Log.Info("system process exited", "name", spec.Name, "code", cmd.ProcessState.ExitCode())
	}()
	timeout := spec.Timeout
	if timeout <= 0 {
		timeout = 60 * time.Second
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-readyc:
		d.cfg.Log.Info("system process ready", "name", spec.Name, "pid", proc.PID)
		return proc, nil
	case <-exited:
		return Proc{}, fmt.Errorf("%s exited before it was ready (see %s)", spec.Name, spec.LogFile)
	case <-t.C:
		d.stop(proc)
		return Proc{}, fmt.Errorf("%s not ready within %v (see %s)", spec.Name, timeout, spec.LogFile)
	case <-ctx.Done():
		d.stop(proc)
		return Proc{}, ctx.Err()
	}
}

// StartInNetns starts cmd inside the network namespace at path (e.g. PodState.Netns) without
// moving the caller's threads; the way the daemon starts sidecars, usable by tests and tools.
func StartInNetns(path string, cmd *exec.Cmd) error { return startIn(path, cmd) }

// startIn starts cmd with its network namespace set to path (host's when ""): the child is
// forked from a locked thread switched into the namespace, so it inherits it.
func startIn(path string, cmd *exec.Cmd) error {
	if path == "" {
		return cmd.Start()
	}
	ns, err := netns.GetFromPath(path)
	if err != nil {
		return fmt.Errorf("open netns %s: %w", path, err)
	}
	defer ns.Close()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return err
	}
	defer orig.Close()
	if err := netns.Set(ns); err != nil {
		return fmt.Errorf("enter netns %s: %w", path, err)
	}
	startErr := cmd.Start()
	if err := netns.Set(orig); err != nil {
		runtime.LockOSThread() // leave this thread locked: the runtime will discard it
		return fmt.Errorf("return to host netns: %w", err)
	}
	return startErr
}

// teardown stops pods (and their sidecars), then system processes, then removes resources.
func (d *Daemon) teardown() {
	d.update(func(s *State) { s.Phase = "stopping" })
	d.mu.Lock()
	snapshot := *d.st
	snapshot.Pods = append([]PodState(nil), d.st.Pods...)
	snapshot.System = append([]SystemProcess(nil), d.st.System...)
	d.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range snapshot.Pods {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d.stop(p.Proc)
			if p.SidecarProc != nil {
				d.stop(*p.SidecarProc)
			}
		}()
	}
	wg.Wait()
	for i := len(snapshot.System) - 1; i >= 0; i-- {
		d.stop(snapshot.System[i].Proc)
	}
	// Bounded: a process that survived SIGKILL (stuck in the kernel) must not keep `lab down`
	// waiting forever; cleanup below still removes what can be removed.
	reapedAll := make(chan struct{})
	go func() { d.wg.Wait(); close(reapedAll) }()
	select {
	case <-reapedAll:
	case <-time.After(reapWait):
		d.cfg.Log.Warn("lab processes still running after teardown; cleaning up anyway", "waited", reapWait)
	}
	if err := Cleanup(d.cfg.StateDir, &snapshot); err != nil {
		d.cfg.Log.Error("lab cleanup incomplete", "err", err)
	}
}
