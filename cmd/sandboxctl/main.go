// Command sandboxctl drives a sandboxd over its HTTP API: create, get, delete and list
// the sandboxes of chats; run commands and move files in them; keep them alive.
//
//	sandboxctl create <chat> [--agent A] [--volume P]
//	sandboxctl get <chat>
//	sandboxctl delete <chat>
//	sandboxctl list [--agent A] [--expired[=false]] [--limit N] [--after CHAT]
//	sandboxctl exec <chat> [--timeout 30s] [-w DIR] [-e K=V]... [--stdin TEXT] -- <command> [args...]
//	sandboxctl cp <local> <chat>:<path>    (upload; - reads stdin)
//	sandboxctl cp <chat>:<path> <local>    (download; - writes stdout)
//	sandboxctl ls <chat> [path]
//	sandboxctl keepalive <chat> --ttl 10m
//
// exec streams the command's output and exits with its exit code (124 when it was
// killed at its timeout).
//
// The server and token come from --server and --token, or SANDBOXD_URL and
// SANDBOXD_TOKEN. Output is a table for people, JSON with --json.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdin, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		var exit *exitError
		if !errors.As(err, &exit) {
			fmt.Fprintf(os.Stderr, "sandboxctl: %v\n", err)
			os.Exit(1)
		}
		if exit.msg != "" {
			fmt.Fprintf(os.Stderr, "sandboxctl: %s\n", exit.msg)
		}
		os.Exit(exitCode(exit.code))
	}
}

// exitCode is what a process can exit with: codes outside 0-255 (a negative one of a
// killed command) become 255, and 0 (no failure to report) never comes here.
func exitCode(code int) int {
	if code <= 0 || code > 255 {
		return 255
	}
	return code
}

// run executes the command line args with the environment getenv; stdin is what
// "cp - <chat>:<path>" uploads. It returns the error to print: a usage error, a
// transport error or the server's problem; or an *exitError with the exit code of a
// command that exec ran.
func run(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) error {
	root := newRootCommand(getenv, stdin, stdout, stderr)
	root.SetArgs(args)
	return root.ExecuteContext(ctx)
}
