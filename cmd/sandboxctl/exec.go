package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/sandboxd/sandboxd/client"
)

// exitError carries the exit code of a command run in a sandbox; main exits with it.
// Its message, when not empty, is printed first.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string {
	if e.msg != "" {
		return e.msg
	}
	return fmt.Sprintf("the command exited with code %d", e.code)
}

// timedOutCode is the exit code of a command killed for its timeout, as timeout(1) has it.
const timedOutCode = 124

func (c *cli) execCommand() *cobra.Command {
	var (
		timeout time.Duration
		body    client.ExecBody
		env     []string
	)
	cmd := &cobra.Command{
		Use:   "exec <chat> [flags] -- <command> [args...]",
		Short: "Run a command in the chat's sandbox; its output streams, and its exit code is sandboxctl's",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if dash := cmd.ArgsLenAtDash(); dash > 1 {
				return fmt.Errorf("exec: one chat before --, got %q", args[:dash])
			}
			body.Cmd = args[1:]
			if timeout > 0 {
				body.TimeoutS = int64((timeout + time.Second - 1) / time.Second)
			}
			for _, kv := range env {
				k, v, ok := strings.Cut(kv, "=")
				if !ok || k == "" {
					return fmt.Errorf("exec: -e %q is not KEY=VALUE", kv)
				}
				if body.Env == nil {
					body.Env = map[string]string{}
				}
				body.Env[k] = v
			}
			api, err := c.client()
			if err != nil {
				return err
			}
			// No deadline of our own: the server kills the command at its timeout,
			// and an interrupt (ctx) kills it too.
			res, err := api.ExecStream(cmd.Context(), args[0], body, c.stdout, c.stderr)
			if err != nil {
				return err
			}
			if res.Truncated {
				fmt.Fprintln(c.stderr, "sandboxctl: output past the server's cap was dropped")
			}
			switch {
			case res.TimedOut:
				return &exitError{code: timedOutCode, msg: "the command was killed at its timeout"}
			case res.ExitCode != 0:
				return &exitError{code: res.ExitCode}
			}
			return nil
		},
	}
	f := cmd.Flags()
	// Shadows the root's --timeout: for exec it is the command's.
	f.DurationVar(&timeout, "timeout", 0, "kill the command after this long (whole seconds; default the server's)")
	f.StringVarP(&body.Workdir, "workdir", "w", "", "working folder in the sandbox (default the workspace)")
	f.StringArrayVarP(&env, "env", "e", nil, "set an environment variable, KEY=VALUE (repeatable)")
	f.StringVar(&body.Stdin, "stdin", "", "text to send to the command's standard input")
	return cmd
}
