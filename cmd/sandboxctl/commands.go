package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/spf13/cobra"

	"github.com/sandboxd/sandboxd/client"
)

const defaultServer = "http://127.0.0.1:8080"

// cli holds what every command shares: the flags of the root, the input and the outputs.
type cli struct {
	getenv         func(string) string
	stdin          io.Reader
	stdout, stderr io.Writer

	server  string
	token   string
	json    bool
	timeout time.Duration
}

func newRootCommand(getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) *cobra.Command {
	c := &cli{getenv: getenv, stdin: stdin, stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:           "sandboxctl",
		Short:         "Drive a sandboxd: chat sandboxes, and commands and files in them",
		SilenceErrors: true, // main prints the one-line error
		SilenceUsage:  true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	f := root.PersistentFlags()
	f.StringVar(&c.server, "server", "", "sandboxd URL (default $SANDBOXD_URL or "+defaultServer+")")
	f.StringVar(&c.token, "token", "", "bearer token (default $SANDBOXD_TOKEN)")
	f.BoolVar(&c.json, "json", false, "print JSON instead of a table")
	f.DurationVar(&c.timeout, "timeout", 5*time.Minute, "give up on the server after this long")

	root.AddCommand(c.createCommand(), c.getCommand(), c.deleteCommand(), c.listCommand(),
		c.execCommand(), c.cpCommand(), c.lsCommand(), c.keepaliveCommand(), c.egressCommand(), c.mcpCommand(), c.shellCommand())
	return root
}

// client builds the API client from the flags, falling back to the environment.
func (c *cli) client() (*client.Client, error) {
	server, token := c.endpoint()
	return client.New(server, token, &http.Client{})
}

// endpoint is the server and token from the flags, falling back to the environment.
func (c *cli) endpoint() (server, token string) {
	server, token = c.server, c.token
	if server == "" {
		server = c.getenv("SANDBOXD_URL")
	}
	if server == "" {
		server = defaultServer
	}
	if token == "" {
		token = c.getenv("SANDBOXD_TOKEN")
	}
	return server, token
}

// call runs fn with the client under the command's timeout.
func (c *cli) call(cmd *cobra.Command, fn func(ctx context.Context, api *client.Client) error) error {
	api, err := c.client()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), c.timeout)
	defer cancel()
	return fn(ctx, api)
}

// printSession prints a session, as JSON with --json, with the result of a create when
// there is one.
func (c *cli) printSession(s client.Session, result client.Result) error {
	if !c.json {
		return writeSession(c.stdout, s, string(result))
	}
	if result == "" {
		return writeJSON(c.stdout, s)
	}
	return writeJSON(c.stdout, struct {
		client.Session
		Result client.Result `json:"result"`
	}{s, result})
}

func (c *cli) createCommand() *cobra.Command {
	var body client.CreateBody
	cmd := &cobra.Command{
		Use:   "create <chat>",
		Short: "Create the chat's sandbox, or reuse the live one",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.call(cmd, func(ctx context.Context, api *client.Client) error {
				stop := startSpinner(c.stderr, "waiting for the sandbox of "+args[0])
				s, result, err := api.Create(ctx, args[0], body)
				stop()
				if err != nil {
					return err
				}
				return c.printSession(s, result)
			})
		},
	}
	cmd.Flags().StringVar(&body.AgentID, "agent", "", "the agent the sandbox is for")
	cmd.Flags().StringVar(&body.VolumeHostPath, "volume", "", "host folder to mount as the workspace")
	return cmd
}

func (c *cli) getCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "get <chat>",
		Short: "Show the chat's sandbox",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.call(cmd, func(ctx context.Context, api *client.Client) error {
				s, err := api.Get(ctx, args[0])
				if err != nil {
					return err
				}
				return c.printSession(s, "")
			})
		},
	}
}

func (c *cli) deleteCommand() *cobra.Command {
	var purge bool
	cmd := &cobra.Command{
		Use:   "delete <chat>",
		Short: "Delete the chat's sandbox (no error when it has none); --purge its workspace folder too",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.call(cmd, func(ctx context.Context, api *client.Client) error {
				res, err := api.Delete(ctx, args[0])
				if err != nil {
					return err
				}
				if !purge {
					if c.json {
						return writeJSON(c.stdout, res)
					}
					return writeDelete(c.stdout, res)
				}
				ws, err := api.DeleteWorkspace(ctx, args[0])
				if err != nil {
					return err
				}
				if c.json {
					return writeJSON(c.stdout, struct {
						Sandbox   client.DeleteResult    `json:"sandbox"`
						Workspace client.WorkspaceResult `json:"workspace"`
					}{res, ws})
				}
				if err := writeDelete(c.stdout, res); err != nil {
					return err
				}
				return writeWorkspace(c.stdout, ws)
			})
		},
	}
	cmd.Flags().BoolVar(&purge, "purge", false, "also remove the chat's workspace folder and everything in it")
	return cmd
}

func (c *cli) listCommand() *cobra.Command {
	var (
		opts    client.ListOptions
		expired bool
	)
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List sandboxes, one page at a time",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cmd.Flags().Changed("expired") {
				opts.Expired = &expired
			}
			return c.call(cmd, func(ctx context.Context, api *client.Client) error {
				page, err := api.List(ctx, opts)
				if err != nil {
					return err
				}
				if c.json {
					return writeJSON(c.stdout, page)
				}
				if err := writeList(c.stdout, page.Items); err != nil {
					return err
				}
				if page.Next != "" {
					_, err = fmt.Fprintf(c.stderr, "more: sandboxctl list --after %s\n", page.Next)
				}
				return err
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.AgentID, "agent", "", "only sandboxes of this agent")
	f.BoolVar(&expired, "expired", false, "only expired sandboxes (--expired=false: only live ones)")
	f.IntVar(&opts.Limit, "limit", 0, "page size (server default 100)")
	f.StringVar(&opts.After, "after", "", "start after this chat id (the previous page's last)")
	return cmd
}
