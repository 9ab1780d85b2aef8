package sandboxdproc_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"testing"

	"go.uber.org/goleak"

	"github.com/sandboxd/sandboxd/internal/testing/sandboxdproc"
	"github.com/sandboxd/sandboxd/internal/testing/syncbuf"
)

// roleEnv makes the test binary a child: "serve" listens and logs it as sandboxd does,
// then serves until SIGTERM; "fail" exits with 3 before listening.
const roleEnv = "SANDBOXDPROC_TEST_ROLE"

func TestMain(m *testing.M) {
	switch os.Getenv(roleEnv) {
	case "serve":
		os.Exit(serve())
	case "fail":
		fmt.Fprintln(os.Stderr, "no config")
		os.Exit(3)
	}
	goleak.VerifyTestMain(m)
}

func serve() int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 1
	}
	fmt.Println(`{"level":"INFO","msg":"starting"}`)
	fmt.Printf(`{"level":"INFO","msg":"listening","addr":%q}`+"\n", ln.Addr().String())
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok"))
	})}
	go func() { _ = srv.Serve(ln) }()
	<-ctx.Done()
	_ = srv.Close()
	return 0
}

func child(t *testing.T, role string) *exec.Cmd {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), roleEnv+"="+role)
	return cmd
}

func TestStartWaitsUntilItListensAndStopEndsIt(t *testing.T) {
	var log syncbuf.Buffer
	p, err := sandboxdproc.Start(context.Background(), child(t, "serve"), &log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Kill)
	res, err := http.Get(p.Base + "/")
	if err != nil {
		t.Fatalf("GET %s: %v", p.Base, err)
	}
	_ = res.Body.Close()
	if err := p.Stop(syscall.SIGTERM); err != nil {
		t.Fatalf("Stop: %v, want a clean exit", err)
	}
	select {
	case <-p.Exited():
	default:
		t.Fatal("Exited is open after Stop")
	}
	if !strings.Contains(log.String(), `"msg":"starting"`) || !strings.Contains(log.String(), `"msg":"listening"`) {
		t.Errorf("log = %q, want every line the child wrote", log.String())
	}
	p.Kill() // harmless once it ended
}

func TestStopReportsAnUncleanExit(t *testing.T) {
	p, err := sandboxdproc.Start(context.Background(), child(t, "serve"), &syncbuf.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	err = p.Stop(syscall.SIGKILL)
	var exit *exec.ExitError
	if !errors.As(err, &exit) || errors.Is(err, sandboxdproc.ErrNoStop) {
		t.Fatalf("Stop(SIGKILL) = %v, want the exit error", err)
	}
}

func TestStartFailsWhenTheChildExitsFirst(t *testing.T) {
	var log syncbuf.Buffer
	_, err := sandboxdproc.Start(context.Background(), child(t, "fail"), &log)
	if err == nil || !strings.Contains(err.Error(), "exited before listening") || !strings.Contains(err.Error(), "exit status 3") {
		t.Fatalf("Start = %v, want an exit before listening with status 3", err)
	}
	if !strings.Contains(log.String(), "no config") {
		t.Errorf("log = %q, want the child's stderr", log.String())
	}
}

func TestStartGivesUpWhenItsContextEnds(t *testing.T) {
	cmd := exec.Command("sleep", "60")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := sandboxdproc.Start(ctx, cmd, &syncbuf.Buffer{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Start = %v, want context.Canceled", err)
	}
	if cmd.ProcessState == nil {
		t.Fatal("the child still runs")
	}
}

func TestEnvDropsInheritedSettingsAndPutsTheCallersLast(t *testing.T) {
	t.Setenv("SANDBOXD_REGISTRY", "postgres://elsewhere")
	t.Setenv("SANDBOXDPROC_KEPT", "1")
	env := sandboxdproc.Config{
		Token: "tok", Registry: "sqlite:/x.db", Instance: "i", VolumeRoot: "/v", Image: "img", LogLevel: "debug",
		Settings: []string{"SANDBOXD_LOG_LEVEL=warn"},
	}.Env()
	if slices.Contains(env, "SANDBOXD_REGISTRY=postgres://elsewhere") {
		t.Error("an inherited SANDBOXD_ variable was kept")
	}
	if !slices.Contains(env, "SANDBOXDPROC_KEPT=1") {
		t.Error("the rest of the environment was dropped")
	}
	for _, kv := range []string{"SANDBOXD_LISTEN=127.0.0.1:0", "SANDBOXD_TOKENS=tok", "SANDBOXD_REGISTRY=sqlite:/x.db",
		"SANDBOXD_DOCKER_INSTANCE=i", "SANDBOXD_DOCKER_VOLUME_ROOT=/v", "SANDBOXD_AGENTS_DEFAULT_IMAGE=img",
		"SANDBOXD_LOG_FORMAT=json", "SANDBOXD_LOG_LEVEL=debug"} {
		if !slices.Contains(env, kv) {
			t.Errorf("env lacks %s", kv)
		}
	}
	if env[len(env)-1] != "SANDBOXD_LOG_LEVEL=warn" {
		t.Errorf("env ends with %q, want the caller's setting last (it wins)", env[len(env)-1])
	}
}
