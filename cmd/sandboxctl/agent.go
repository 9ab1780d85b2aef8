package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/sandboxd/sandboxd/internal/client"
	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// The commands that work inside a sandbox: exec, cp, ls, keepalive.

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

// remote is a file in a chat's workspace, written <chat>:<path>.
type remote struct{ chat, path string }

// parseRemote reports whether arg names a file in a chat's workspace: what comes
// before the first colon is a chat id.
func parseRemote(arg string) (remote, bool) {
	chat, p, ok := strings.Cut(arg, ":")
	if !ok {
		return remote{}, false
	}
	if _, err := sandbox.ParseChatID(chat); err != nil {
		return remote{}, false
	}
	return remote{chat: chat, path: p}, true
}

func (c *cli) cpCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "cp <local> <chat>:<path> | cp <chat>:<path> <local>",
		Short: "Copy a file into or out of the chat's workspace (- is stdin or stdout)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			src, srcRemote := parseRemote(args[0])
			dst, dstRemote := parseRemote(args[1])
			if srcRemote == dstRemote {
				return errors.New("cp: exactly one of the two must be <chat>:<path>")
			}
			return c.call(cmd, func(ctx context.Context, api *client.Client) error {
				if dstRemote {
					return c.upload(ctx, api, args[0], dst)
				}
				return c.download(ctx, api, src, args[1])
			})
		},
	}
}

func (c *cli) upload(ctx context.Context, api *client.Client, local string, dst remote) error {
	in := c.stdin
	if local != "-" {
		f, err := os.Open(local)
		if err != nil {
			return err
		}
		defer f.Close()
		in = f
	}
	if dst.path == "" || strings.HasSuffix(dst.path, "/") {
		if local == "-" {
			return errors.New("cp: name the file to write from stdin")
		}
		dst.path += filepath.Base(local)
	}
	_, err := api.Upload(ctx, dst.chat, dst.path, in)
	return err
}

// download writes to a temporary file beside local and renames it into place, so that
// a failed download leaves the local file as it was.
func (c *cli) download(ctx context.Context, api *client.Client, src remote, local string) error {
	if local == "-" {
		_, err := api.Download(ctx, src.chat, src.path, c.stdout)
		return err
	}
	if st, err := os.Stat(local); err == nil && st.IsDir() {
		local = filepath.Join(local, path.Base(src.path))
	}
	tmp, err := os.CreateTemp(filepath.Dir(local), "."+filepath.Base(local)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // fails harmlessly once renamed
	if _, err := api.Download(ctx, src.chat, src.path, tmp); err != nil {
		_ = tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), local)
}

func (c *cli) lsCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "ls <chat> [path]",
		Short: "List a folder of the chat's workspace",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir := ""
			if len(args) == 2 {
				dir = args[1]
			}
			return c.call(cmd, func(ctx context.Context, api *client.Client) error {
				items, err := api.ListFiles(ctx, args[0], dir)
				if err != nil {
					return err
				}
				if c.json {
					if items == nil {
						items = []client.FileInfo{}
					}
					return writeJSON(c.stdout, items)
				}
				return writeFiles(c.stdout, items)
			})
		},
	}
}

func (c *cli) keepaliveCommand() *cobra.Command {
	var ttl time.Duration
	cmd := &cobra.Command{
		Use:   "keepalive <chat> --ttl <duration>",
		Short: "Keep the chat's sandbox alive for ttl from now (within the server's maximum lifetime)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if ttl <= 0 {
				return errors.New("keepalive: --ttl must be positive")
			}
			return c.call(cmd, func(ctx context.Context, api *client.Client) error {
				s, err := api.Keepalive(ctx, args[0], ttl)
				if err != nil {
					return err
				}
				return c.printSession(s, "")
			})
		},
	}
	cmd.Flags().DurationVar(&ttl, "ttl", 0, "how long from now the sandbox is to live, e.g. 10m")
	_ = cmd.MarkFlagRequired("ttl")
	return cmd
}
