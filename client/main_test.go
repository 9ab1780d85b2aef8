package client_test

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/sandboxd/sandboxd/internal/testing/sandboxdtest"
)

// TestMain runs the examples against a real sandboxd (the binary, on the real Docker
// engine), whose address and token they read from SANDBOXD_URL and SANDBOXD_TOKEN as a
// program would. Without an engine the examples are left out, unless CI=true, where
// that is a failure.
func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	flag.Parse()
	ctx := context.Background()
	engine, err := sandboxdtest.Engine(ctx)
	if err != nil {
		if os.Getenv("CI") == "true" {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Fprintf(os.Stderr, "examples left out: %v\n", err)
		if flag.Lookup("test.run").Value.String() == "" {
			_ = flag.Set("test.run", "^Test")
		}
		return runChecked(m)
	}
	defer engine.Close()
	binary, remove, err := sandboxdtest.Build(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer remove()
	srv, err := sandboxdtest.Start(ctx, engine, binary)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	os.Setenv("SANDBOXD_URL", srv.URL)
	os.Setenv("SANDBOXD_TOKEN", sandboxdtest.Token)
	code := runChecked(m)
	if err := srv.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		code = 1
	}
	if code != 0 {
		fmt.Fprintf(os.Stderr, "sandboxd log:\n%s", srv.Log())
	}
	return code
}

// runChecked runs the tests and examples and then looks for goroutines they leaked.
func runChecked(m *testing.M) int {
	before := goleak.IgnoreCurrent() // the engine's client and the server's log reader
	code := m.Run()
	http.DefaultClient.CloseIdleConnections()
	if code == 0 {
		if err := goleak.Find(before); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			return 1
		}
	}
	return code
}
