// Package sandboxdproc runs the sandboxd binary as a child process for the end-to-end
// tests (cmd/sandboxd) and the benchmark (cmd/sandboxbench): it builds the binary,
// sets its environment, starts it on a free loopback port, waits until it listens and
// stops it. Not part of the service.
package sandboxdproc

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Timeout is how long Start waits for the child to listen, and Stop for it to end.
const Timeout = 60 * time.Second

// ErrNoStop is returned by Stop when the child did not end in time (it is killed).
var ErrNoStop = errors.New("did not stop in time")

// Build builds cmd/sandboxd of the module the working directory is in into dir (with
// the race detector when race is set), and cmd/sandboxd-agent beside it (static), and
// returns sandboxd's path.
func Build(ctx context.Context, dir string, race bool) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	mod := strings.TrimSpace(string(out))
	if err != nil || mod == "" || mod == os.DevNull {
		return "", fmt.Errorf("build sandboxd: not inside the sandboxd module (go env GOMOD: %q, %v)", mod, err)
	}
	bin := filepath.Join(dir, "sandboxd")
	args := []string{"build", "-o", bin}
	if race {
		args = append(args, "-race")
	}
	build := exec.CommandContext(ctx, "go", append(args, "github.com/sandboxd/sandboxd/cmd/sandboxd")...)
	build.Dir = filepath.Dir(mod)
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build sandboxd: %w\n%s", err, out)
	}
	// The in-sandbox agent beside it, where sandboxd looks for it by default.
	agent := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(dir, "sandboxd-agent"), "github.com/sandboxd/sandboxd/cmd/sandboxd-agent")
	agent.Dir = filepath.Dir(mod)
	agent.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := agent.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build sandboxd-agent: %w\n%s", err, out)
	}
	return bin, nil
}

// Config is one sandboxd's world: its binary, working folder and settings.
type Config struct {
	Binary     string
	Dir        string // the working folder
	Token      string // the one bearer token it accepts
	Registry   string // sqlite:<path> or postgres://...
	Instance   string
	VolumeRoot string
	Image      string   // the default profile's image
	LogLevel   string   // debug, info, ...
	Settings   []string // more SANDBOXD_...=... variables, set after (over) the ones above
}

// Env is the environment sandboxd runs with: this process's, without any SANDBOXD_
// variable, then c's settings, logging JSON to stdout and listening on a free loopback
// port.
func (c Config) Env() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SANDBOXD_") {
			env = append(env, kv)
		}
	}
	env = append(env,
		"SANDBOXD_LISTEN=127.0.0.1:0",
		"SANDBOXD_TOKENS="+c.Token,
		"SANDBOXD_REGISTRY="+c.Registry,
		"SANDBOXD_DOCKER_INSTANCE="+c.Instance,
		"SANDBOXD_DOCKER_VOLUME_ROOT="+c.VolumeRoot,
		"SANDBOXD_AGENTS_DEFAULT_IMAGE="+c.Image,
		"SANDBOXD_LOG_FORMAT=json",
		"SANDBOXD_LOG_LEVEL="+c.LogLevel,
	)
	return append(env, c.Settings...)
}

// Command is c's sandboxd, to Start.
func (c Config) Command() *exec.Cmd {
	cmd := exec.Command(c.Binary)
	cmd.Dir = c.Dir
	cmd.Env = c.Env()
	return cmd
}

// Proc is a started child process that listens on HTTP.
type Proc struct {
	Base string // http://addr, where it listens

	cmd    *exec.Cmd
	exited chan struct{}
	err    error // the exit, once exited is closed
}

// Start runs cmd and waits until it logs the address it listens on: a JSON record
// {"msg":"listening","addr":...} on stdout, as sandboxd writes it. Every line of its
// stdout, and its stderr as it comes, goes to log, which must be safe for concurrent
// use. Errors: the child exited first, did not listen within Timeout, or ctx
// ended (the child is then killed).
func Start(ctx context.Context, cmd *exec.Cmd, log io.Writer) (*Proc, error) {
	p := &Proc{cmd: cmd, exited: make(chan struct{})}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = log
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", cmd.Path, err)
	}
	listening := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Bytes()
			_, _ = log.Write(append(line, '\n'))
			var rec struct{ Msg, Addr string }
			if json.Unmarshal(line, &rec) == nil && rec.Msg == "listening" {
				select {
				case listening <- rec.Addr:
				default:
				}
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
		p.err = cmd.Wait()
		close(p.exited)
	}()
	name := filepath.Base(cmd.Path)
	select {
	case addr := <-listening:
		p.Base = "http://" + addr
		return p, nil
	case <-p.exited:
		return nil, fmt.Errorf("%s exited before listening: %v", name, p.err)
	case <-time.After(Timeout):
		p.Kill()
		return nil, fmt.Errorf("%s did not listen within %s", name, Timeout)
	case <-ctx.Done():
		p.Kill()
		return nil, ctx.Err()
	}
}

// Stop sends sig and waits for the child to end: its exit error (nil when it exited
// with 0), or an error wrapping ErrNoStop when it did not end within Timeout, in
// which case it is killed.
func (p *Proc) Stop(sig os.Signal) error {
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("signal %s: %w", filepath.Base(p.cmd.Path), err)
	}
	select {
	case <-p.exited:
		return p.err
	case <-time.After(Timeout):
		p.Kill()
		return fmt.Errorf("%s after %v within %s: %w", filepath.Base(p.cmd.Path), sig, Timeout, ErrNoStop)
	}
}

// Kill kills the child, if it still runs, and waits for it to end.
func (p *Proc) Kill() {
	_ = p.cmd.Process.Kill()
	<-p.exited
}

// Exited is closed once the child has ended.
func (p *Proc) Exited() <-chan struct{} { return p.exited }

// Pid is the child's process id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }
