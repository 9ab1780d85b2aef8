// Command sandboxctl drives a sandboxd over its HTTP API: create, get, delete and list
// the sandboxes of chats.
//
//	sandboxctl create <chat> [--agent A] [--volume P]
//	sandboxctl get <chat>
//	sandboxctl delete <chat>
//	sandboxctl list [--agent A] [--expired[=false]] [--limit N] [--after CHAT]
//
// The server and token come from --server and --token, or SANDBOXD_URL and
// SANDBOXD_TOKEN. Output is a table for people, JSON with --json.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "sandboxctl: %v\n", err)
		os.Exit(1)
	}
}

// run executes the command line args with the environment getenv. It returns the
// error to print: a usage error, a transport error or the server's problem.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	root := newRootCommand(getenv, stdout, stderr)
	root.SetArgs(args)
	return root.ExecuteContext(ctx)
}
